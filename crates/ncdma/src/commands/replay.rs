//! `ncdma replay FILE --backend model|kvm`: run a JSON list of KVM uAPI calls and print each
//! call's answer (format: docs/replay.md).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use kvm_model::{KernelProfile, Vendor};
use vmm::backend::{Backend, ModelKvm, RealKvm};
use vmm::replay::{self, Replayer};

use crate::Output;
use crate::error::CliError;

/// Which kernel answers the calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendKind {
    /// The reference kernel (kvm-model), as the profile given with --kernel.
    Model,
    /// This host's /dev/kvm.
    Kvm,
}

/// x86 vendor of a modeled kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VendorArg {
    /// Intel VMX (EPT).
    Intel,
    /// AMD SVM (NPT).
    Amd,
}

impl From<VendorArg> for Vendor {
    fn from(v: VendorArg) -> Vendor {
        match v {
            VendorArg::Intel => Vendor::Intel,
            VendorArg::Amd => Vendor::Amd,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The replay file: a JSON list of calls.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Which kernel answers.
    #[arg(long, value_enum, default_value = "model")]
    pub backend: BackendKind,
    /// Kernel profile of the model: 6.7, 6.7+virtio-device, 6.7+memslot-flag,
    /// 6.11-selfsnoop, 6.12, 6.16, 6.16+memslot-flag [default: the profile of this host's
    /// kernel].
    #[arg(long, value_name = "P")]
    pub kernel: Option<String>,
    /// Vendor of the modeled CPU [default: intel with --kernel, else this host's].
    #[arg(long, value_enum)]
    pub vendor: Option<VendorArg>,
}

/// The model profile the arguments name.
fn profile(args: &ReplayArgs) -> Result<KernelProfile, CliError> {
    match (&args.kernel, args.vendor) {
        (Some(name), vendor) => {
            let vendor = vendor.map_or(Vendor::Intel, Vendor::from);
            KernelProfile::parse(name, vendor)
                .map_err(|e| CliError::BadInput(format!("--kernel {name}: {e}")))
        }
        (None, Some(vendor)) => Ok(KernelProfile {
            vendor: vendor.into(),
            ..KernelProfile::this_host()
        }),
        (None, None) => Ok(KernelProfile::this_host()),
    }
}

fn backend(args: &ReplayArgs) -> Result<Box<dyn Backend>, CliError> {
    match args.backend {
        BackendKind::Model => Ok(Box::new(ModelKvm::new(profile(args)?))),
        BackendKind::Kvm if args.kernel.is_some() || args.vendor.is_some() => Err(
            CliError::BadInput("--kernel and --vendor apply to --backend model only".into()),
        ),
        BackendKind::Kvm => RealKvm::open()
            .map(|vm| Box::new(vm) as Box<dyn Backend>)
            .map_err(|e| CliError::Failed(e.to_string())),
    }
}

pub(crate) fn run(args: &ReplayArgs, json: bool) -> Output {
    let name = args.file.display();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::BadInput(format!("{name}: cannot read: {e}")))?;
    let entries = replay::parse(&text).map_err(|e| CliError::BadInput(format!("{name}: {e}")))?;
    let backend = backend(args)?;
    let mut replayer = Replayer::new(backend).map_err(|e| CliError::Failed(e.to_string()))?;
    let report = replayer.run(&entries);
    let out = if json {
        format!("{}\n", report.to_json())
    } else {
        report.to_string()
    };
    let missed: Vec<String> = report.mismatches().map(|s| s.index.to_string()).collect();
    if missed.is_empty() {
        return Ok(out);
    }
    // The answers are the useful part of a failed replay: show them, then fail.
    print!("{out}");
    Err(CliError::Failed(format!(
        "{name}: {} of {} expectation(s) not met (entries {})",
        missed.len(),
        report.checked(),
        missed.join(", ")
    )))
}
