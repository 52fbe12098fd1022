//! [`Platform`]: what a VMM needs to know about the machine under a kernel that no ioctl
//! tells it — the CPU vendor, self-snoop, which KVM module serves `/dev/kvm`, and whether
//! that module uses two-dimensional paging (EPT / NPT).
//!
//! These decide whether guest memory types can be honored at all: AMD NPT combines guest PAT
//! with the host's by itself, shadow paging never does, and Intel EPT ignores guest PAT unless
//! KVM is told otherwise. On the real kernel they come from CPUID and `/sys/module`; on the
//! model, from the [`KernelProfile`].

use std::fmt;
use std::path::Path;

use kvm_model::{KernelProfile, Vendor};
use std::arch::x86_64::__cpuid;

/// Where the real kernel's module parameters are.
pub const SYS_MODULE: &str = "/sys/module";

/// Whether the KVM module maps guest memory with two-dimensional paging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tdp {
    /// EPT or NPT is in use.
    On,
    /// Shadow paging: KVM builds page tables from the guest's.
    Off,
    /// Nothing tells.
    Unknown,
}

impl fmt::Display for Tdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tdp::On => "on",
            Tdp::Off => "off",
            Tdp::Unknown => "unknown",
        })
    }
}

/// Facts about the machine behind a backend, each with where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The CPUID vendor string (`GenuineIntel`, `AuthenticAMD`, …).
    pub vendor_id: String,
    /// The vendor it names, if KVM has a vendor module for it (Hygon counts as AMD).
    pub vendor: Option<Vendor>,
    /// CPUID.1:EDX\[27\] self-snoop: gates `KVM_X86_QUIRK_IGNORE_GUEST_PAT` on Intel.
    pub self_snoop: bool,
    /// The KVM vendor module(s) loaded: `kvm_intel`, `kvm_amd`, `kvm_pvm`; empty if none is
    /// found.
    pub modules: Vec<String>,
    /// Whether two-dimensional paging is in use.
    pub tdp: Tdp,
    /// How [`Platform::tdp`] is known, for reports.
    pub tdp_evidence: String,
    /// Where the facts come from.
    pub origin: Origin,
}

/// Where a [`Platform`]'s facts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// CPUID and `/sys/module` of the machine this process runs on.
    Host,
    /// A model profile.
    Model(KernelProfile),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Host => f.write_str("host"),
            Origin::Model(p) => write!(f, "model profile {p}"),
        }
    }
}

/// The CPUID vendor string: leaf 0's EBX, EDX, ECX.
pub fn cpuid_vendor_id() -> String {
    let leaf = __cpuid(0);
    let bytes: Vec<u8> = [leaf.ebx, leaf.edx, leaf.ecx]
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// CPUID.1:EDX\[27\] (`X86_FEATURE_SELFSNOOP`).
pub fn cpuid_self_snoop() -> bool {
    __cpuid(1).edx & (1 << 27) != 0
}

/// The vendor a CPUID vendor string names, for KVM's purposes.
pub fn vendor_of(vendor_id: &str) -> Option<Vendor> {
    match vendor_id {
        "GenuineIntel" => Some(Vendor::Intel),
        // Hygon's Dhyana is a Zen derivative served by kvm_amd.
        "AuthenticAMD" | "HygonGenuine" => Some(Vendor::Amd),
        _ => None,
    }
}

/// The KVM vendor modules this looks for, the one that decides first: `kvm_pvm` can be
/// loaded beside a hardware module, and then it is the one a PVM guest's `/dev/kvm` is.
const VENDOR_MODULES: [&str; 3] = ["kvm_pvm", "kvm_intel", "kvm_amd"];

/// A module parameter's value (`<sys_module>/<module>/parameters/<param>`), trimmed.
pub fn module_param(sys_module: &Path, module: &str, param: &str) -> Option<String> {
    std::fs::read_to_string(sys_module.join(module).join("parameters").join(param))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The KVM vendor modules present under `sys_module`: `kvm_pvm`, `kvm_intel`, `kvm_amd`, in
/// that order.
pub fn vendor_modules(sys_module: &Path) -> Vec<String> {
    VENDOR_MODULES
        .iter()
        .filter(|m| sys_module.join(m).is_dir())
        .map(|m| m.to_string())
        .collect()
}

/// Whether the first of `modules` uses TDP, and how that is known, from its parameters
/// under `sys_module`: `kvm_intel.ept`, `kvm_amd.npt`; `kvm_pvm` is shadow paging by design
/// (it has no such parameter), which `kvm.tdp_mmu=N` corroborates when it is there.
pub fn tdp_of(sys_module: &Path, modules: &[String]) -> (Tdp, String) {
    let Some(module) = modules.first() else {
        return (
            Tdp::Unknown,
            format!(
                "no kvm_intel, kvm_amd or kvm_pvm under {}",
                sys_module.display()
            ),
        );
    };
    let param = match module.as_str() {
        "kvm_intel" => "ept",
        "kvm_amd" => "npt",
        _ => {
            let tdp_mmu = module_param(sys_module, "kvm", "tdp_mmu")
                .map(|v| format!(", and kvm.tdp_mmu={v}"))
                .unwrap_or_default();
            return (
                Tdp::Off,
                format!(
                    "{module} runs guests under shadow paging: it has no ept/npt parameter{tdp_mmu}"
                ),
            );
        }
    };
    match module_param(sys_module, module, param).as_deref() {
        Some(v @ ("Y" | "y" | "1")) => (Tdp::On, format!("{module}.{param}={v}")),
        Some(v @ ("N" | "n" | "0")) => (Tdp::Off, format!("{module}.{param}={v}")),
        Some(v) => (
            Tdp::Unknown,
            format!("{module}.{param}={v} (not a boolean)"),
        ),
        None => (
            Tdp::Unknown,
            format!("{module} has no readable {param} parameter"),
        ),
    }
}

impl Platform {
    /// The host this process runs on: CPUID, and the KVM modules under `sys_module`
    /// (normally [`SYS_MODULE`]).
    pub fn of_host(sys_module: &Path) -> Platform {
        let vendor_id = cpuid_vendor_id();
        let modules = vendor_modules(sys_module);
        let (tdp, tdp_evidence) = tdp_of(sys_module, &modules);
        Platform {
            vendor: vendor_of(&vendor_id),
            vendor_id,
            self_snoop: cpuid_self_snoop(),
            modules,
            tdp,
            tdp_evidence,
            origin: Origin::Host,
        }
    }

    /// The machine a model profile stands for.
    pub fn of_profile(profile: &KernelProfile) -> Platform {
        let (vendor_id, module) = match profile.vendor {
            Vendor::Intel => ("GenuineIntel", "kvm_intel"),
            Vendor::Amd => ("AuthenticAMD", "kvm_amd"),
        };
        let module = if profile.is_pvm_host() {
            "kvm_pvm"
        } else {
            module
        };
        let tdp = if profile.cpu.tdp { Tdp::On } else { Tdp::Off };
        Platform {
            vendor_id: vendor_id.to_string(),
            vendor: Some(profile.vendor),
            self_snoop: profile.cpu.self_snoop,
            modules: vec![module.to_string()],
            tdp,
            tdp_evidence: Origin::Model(*profile).to_string(),
            origin: Origin::Model(*profile),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `/sys/module` with the given `module/parameters/param = value` files.
    fn sys_module(name: &str, params: &[(&str, &str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("vmm-platform-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (module, param, value) in params {
            let dir = root.join(module).join("parameters");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(param), format!("{value}\n")).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn tdp_is_read_from_the_vendor_module() {
        let intel = sys_module(
            "intel",
            &[("kvm_intel", "ept", "Y"), ("kvm", "tdp_mmu", "Y")],
        );
        let mods = vendor_modules(&intel);
        assert_eq!(mods, ["kvm_intel"]);
        assert_eq!(tdp_of(&intel, &mods), (Tdp::On, "kvm_intel.ept=Y".into()));

        let amd = sys_module("amd", &[("kvm_amd", "npt", "N")]);
        let mods = vendor_modules(&amd);
        assert_eq!(tdp_of(&amd, &mods), (Tdp::Off, "kvm_amd.npt=N".into()));

        // kvm_pvm beside kvm_amd: PVM decides, and says why.
        let pvm = sys_module(
            "pvm",
            &[
                ("kvm_pvm", "verbose", "N"),
                ("kvm_amd", "npt", "Y"),
                ("kvm", "tdp_mmu", "N"),
            ],
        );
        let mods = vendor_modules(&pvm);
        assert_eq!(mods, ["kvm_pvm", "kvm_amd"]);
        let (tdp, why) = tdp_of(&pvm, &mods);
        assert_eq!(tdp, Tdp::Off);
        assert!(
            why.contains("shadow paging") && why.ends_with("kvm.tdp_mmu=N"),
            "{why}"
        );

        let none = sys_module("none", &[("kvm", "tdp_mmu", "Y")]);
        let (tdp, why) = tdp_of(&none, &vendor_modules(&none));
        assert_eq!(tdp, Tdp::Unknown);
        assert!(why.starts_with("no kvm_intel, kvm_amd or kvm_pvm"), "{why}");

        let odd = sys_module("odd", &[("kvm_intel", "vpid", "Y")]);
        let (tdp, why) = tdp_of(&odd, &vendor_modules(&odd));
        assert_eq!(
            (tdp, why.as_str()),
            (Tdp::Unknown, "kvm_intel has no readable ept parameter")
        );
        for root in [intel, amd, pvm, none, odd] {
            std::fs::remove_dir_all(root).unwrap();
        }
    }

    #[test]
    fn vendors_and_profiles() {
        assert_eq!(vendor_of("GenuineIntel"), Some(Vendor::Intel));
        assert_eq!(vendor_of("HygonGenuine"), Some(Vendor::Amd));
        assert_eq!(vendor_of("CentaurHauls"), None);
        assert_eq!(cpuid_vendor_id().len(), 12);

        let host = Platform::of_profile(&KernelProfile::this_host());
        assert_eq!(host.modules, ["kvm_pvm"]);
        assert_eq!((host.vendor, host.tdp), (Some(Vendor::Amd), Tdp::Off));
        let intel = Platform::of_profile(&KernelProfile::parse("6.16", Vendor::Intel).unwrap());
        assert_eq!(intel.modules, ["kvm_intel"]);
        assert_eq!(
            (intel.vendor_id.as_str(), intel.tdp),
            ("GenuineIntel", Tdp::On)
        );
        assert_eq!(intel.tdp_evidence, "model profile 6.16/intel");
    }
}
