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
    /// Vendor of the modeled CPU, intel or amd [default: intel with --kernel, else this
    /// host's].
    #[arg(long, value_name = "intel|amd")]
    pub vendor: Option<Vendor>,
}

/// The model profile the arguments name.
fn profile(args: &ReplayArgs) -> Result<KernelProfile, CliError> {
    model_profile(args.kernel.as_deref(), args.vendor)
}

/// The model profile `--kernel` and `--vendor` name (shared with `ncdma probe`): the
/// kernel on intel by default, this host's profile (with the vendor given) without one.
pub(crate) fn model_profile(
    kernel: Option<&str>,
    vendor: Option<Vendor>,
) -> Result<KernelProfile, CliError> {
    match (kernel, vendor) {
        (Some(name), vendor) => {
            let vendor = vendor.unwrap_or(Vendor::Intel);
            KernelProfile::parse(name, vendor)
                .map_err(|e| CliError::BadInput(format!("--kernel {name}: {e}")))
        }
        (None, Some(vendor)) => Ok(KernelProfile {
            vendor,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        file: &str,
        backend: BackendKind,
        kernel: Option<&str>,
        vendor: Option<Vendor>,
    ) -> ReplayArgs {
        ReplayArgs {
            file: PathBuf::from(file),
            backend,
            kernel: kernel.map(str::to_string),
            vendor,
        }
    }

    fn example(name: &str) -> String {
        format!(
            "{}/../../examples/replay/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    #[test]
    fn profile_defaults_follow_the_flags() {
        let host = KernelProfile::this_host();
        assert_eq!(
            profile(&args("f", BackendKind::Model, None, None)).unwrap(),
            host
        );
        let amd = profile(&args(
            "f",
            BackendKind::Model,
            Some("6.16"),
            Some(Vendor::Amd),
        ));
        assert_eq!(
            amd.unwrap(),
            KernelProfile::parse("6.16", Vendor::Amd).unwrap()
        );
        let intel = profile(&args("f", BackendKind::Model, Some("6.12"), None)).unwrap();
        assert_eq!(intel.vendor, Vendor::Intel);
        let host_intel = profile(&args("f", BackendKind::Model, None, Some(Vendor::Intel)));
        assert_eq!(
            host_intel.unwrap(),
            KernelProfile {
                vendor: Vendor::Intel,
                ..host
            }
        );
        let bad = profile(&args("f", BackendKind::Model, Some("6.99"), None));
        assert!(matches!(bad, Err(CliError::BadInput(m)) if m.starts_with("--kernel 6.99")));
    }

    #[test]
    fn model_options_are_refused_for_the_real_kernel() {
        let a = args(
            &example("memslot-flag-probe.json"),
            BackendKind::Kvm,
            Some("6.12"),
            None,
        );
        assert!(
            matches!(run(&a, false), Err(CliError::BadInput(m)) if m.contains("--backend model only"))
        );
    }

    #[test]
    fn bad_files_are_bad_input_and_unmet_expectations_fail() {
        let missing = args("/nonexistent/replay.json", BackendKind::Model, None, None);
        assert!(
            matches!(run(&missing, false), Err(CliError::BadInput(m)) if m.contains("cannot read"))
        );
        let rules = example("memslot-flag-rules.json");
        let on_host = args(&rules, BackendKind::Model, None, None);
        assert!(
            matches!(run(&on_host, false), Err(CliError::Failed(m)) if m.contains("expectation(s) not met"))
        );
        let on_proposal = args(&rules, BackendKind::Model, Some("6.16+memslot-flag"), None);
        let out = run(&on_proposal, true).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["mismatches"], 0);
        assert_eq!(doc["steps"][1]["result"], "ok");
    }
}
