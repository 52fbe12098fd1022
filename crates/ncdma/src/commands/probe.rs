//! `ncdma probe`: what this host's KVM (or a modeled kernel) offers for noncoherent DMA, one
//! line per check, and the mechanism a noncoherent region would get (docs/probe.md).
//!
//! Exit codes: 0 when the probe ran, whatever it found (a "no safe mechanism" verdict
//! included); 1 when the KVM device cannot be opened or an ioctl fails unexpectedly; 2 for
//! bad arguments.

use std::path::PathBuf;

use clap::Args;
use kvm_model::Vendor;
use vmm::backend::KVM_DEVICE;
use vmm::probe::{ProbeOptions, Target, probe};
use vmm::strategy::Policy;

use super::replay::{BackendKind, model_profile};
use crate::Output;
use crate::error::CliError;

#[derive(Debug, Args)]
pub(crate) struct ProbeArgs {
    /// Which kernel is probed: this host's KVM, or the reference kernel.
    #[arg(long, value_enum, default_value = "kvm")]
    pub backend: BackendKind,
    /// The KVM device to open (--backend kvm) [default: /dev/kvm].
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,
    /// Kernel profile of the model (--backend model): 6.7, 6.7+virtio-device,
    /// 6.7+memslot-flag, 6.11-selfsnoop, 6.12, 6.16, 6.16+memslot-flag [default: the
    /// profile of this host's kernel].
    #[arg(long, value_name = "P")]
    pub kernel: Option<String>,
    /// Vendor of the modeled CPU, intel or amd [default: intel with --kernel, else this
    /// host's].
    #[arg(long, value_name = "intel|amd")]
    pub vendor: Option<Vendor>,
    /// Let the verdict use a VM-wide mechanism the policy otherwise refuses (disabling
    /// KVM_X86_QUIRK_IGNORE_GUEST_PAT).
    #[arg(long)]
    pub allow_vm_wide: bool,
    /// When nothing is safe, let the verdict register a plain slot marked unsafe.
    #[arg(long)]
    pub allow_unsafe: bool,
    /// Also run a guest on /dev/kvm that times loads per memory type: whether the guest's
    /// memory types take effect at all (a few seconds).
    #[arg(long)]
    pub empirical: bool,
}

/// The kernel the arguments name.
fn target(args: &ProbeArgs) -> Result<Target, CliError> {
    match args.backend {
        BackendKind::Model if args.device.is_some() => Err(CliError::BadInput(
            "--device applies to --backend kvm only".into(),
        )),
        BackendKind::Model => Ok(Target::Model(model_profile(
            args.kernel.as_deref(),
            args.vendor,
        )?)),
        BackendKind::Kvm if args.kernel.is_some() || args.vendor.is_some() => Err(
            CliError::BadInput("--kernel and --vendor apply to --backend model only".into()),
        ),
        BackendKind::Kvm => Ok(Target::Kvm {
            device: args
                .device
                .clone()
                .unwrap_or_else(|| PathBuf::from(KVM_DEVICE)),
        }),
    }
}

pub(crate) fn run(args: &ProbeArgs, json: bool) -> Output {
    let options = ProbeOptions {
        policy: Policy {
            allow_vm_wide: args.allow_vm_wide,
            allow_unsafe: args.allow_unsafe,
            force_flag_on_ram: false,
        },
        empirical: args.empirical,
    };
    let report = probe(&target(args)?, &options).map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(if json {
        format!("{}\n", report.to_json())
    } else {
        report.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_model::KernelProfile;

    fn args(backend: BackendKind) -> ProbeArgs {
        ProbeArgs {
            backend,
            device: None,
            kernel: None,
            vendor: None,
            allow_vm_wide: false,
            allow_unsafe: false,
            empirical: false,
        }
    }

    #[test]
    fn the_target_follows_the_flags() {
        assert_eq!(
            target(&args(BackendKind::Kvm)).unwrap(),
            Target::Kvm {
                device: PathBuf::from("/dev/kvm")
            }
        );
        let model = ProbeArgs {
            kernel: Some("6.16".into()),
            vendor: Some(Vendor::Amd),
            ..args(BackendKind::Model)
        };
        assert_eq!(
            target(&model).unwrap(),
            Target::Model(KernelProfile::parse("6.16", Vendor::Amd).unwrap())
        );
        assert_eq!(
            target(&args(BackendKind::Model)).unwrap(),
            Target::Model(KernelProfile::this_host())
        );
    }

    #[test]
    fn options_of_the_other_backend_are_bad_input() {
        let kvm_with_kernel = ProbeArgs {
            kernel: Some("6.16".into()),
            ..args(BackendKind::Kvm)
        };
        assert!(
            matches!(target(&kvm_with_kernel), Err(CliError::BadInput(m)) if m.contains("--backend model only"))
        );
        let model_with_device = ProbeArgs {
            device: Some("/dev/kvm".into()),
            ..args(BackendKind::Model)
        };
        assert!(
            matches!(target(&model_with_device), Err(CliError::BadInput(m)) if m.contains("--backend kvm only"))
        );
        let bad_kernel = ProbeArgs {
            kernel: Some("6.99".into()),
            ..args(BackendKind::Model)
        };
        assert!(
            matches!(target(&bad_kernel), Err(CliError::BadInput(m)) if m.starts_with("--kernel 6.99"))
        );
    }
}
