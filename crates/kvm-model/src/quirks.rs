//! x86 quirks: which ones a kernel lets userspace disable (`KVM_CAP_DISABLE_QUIRKS2`), which
//! start disabled, and `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS{,2})`.
//!
//! Models `arch/x86/kvm/x86.c` (`kvm_x86_vendor_init()`, `kvm_arch_init_vm()`,
//! `kvm_vm_ioctl_enable_cap()`), `vmx_hardware_setup()` and `svm_hardware_setup()`, and
//! `kvm_check_has_quirk()` (`arch/x86/kvm/x86.h`), per era:
//!
//! - 6.7 and 6.11: `KVM_X86_VALID_QUIRKS` = bits 0–6, none starts disabled.
//! - 6.12: adds `SLOT_ZAP_ALL` (bit 7).
//! - 6.16 (as on 6.18): adds `STUFF_FEATURE_MSRS` (8), `IGNORE_GUEST_PAT` (9) and
//!   `VMCS12_ALLOW_FREEZE_IN_SMM` (10). `kvm_caps.supported_quirks` drops `IGNORE_GUEST_PAT`
//!   on Intel without self-snoop and whenever TDP is off. The conditional quirks
//!   (`CD_NW_CLEARED`, `IGNORE_GUEST_PAT`) start disabled where they do not apply:
//!   `CD_NW_CLEARED` on Intel, `IGNORE_GUEST_PAT` on AMD.

use uapi::Errno;
use uapi::quirk::{
    KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT, KVM_X86_QUIRK_SLOT_ZAP_ALL,
    KVM_X86_QUIRK_STUFF_FEATURE_MSRS, KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM,
};

use crate::profile::{Era, KernelProfile, Vendor};

/// Quirks 0–6 (`LINT0_REENABLED` … `MWAIT_NEVER_UD_FAULTS`), valid in every era modeled.
const QUIRKS_6_7: u64 = 0x7f;

/// `KVM_X86_CONDITIONAL_QUIRKS` (6.14+): quirks that start disabled where they do not apply.
const KVM_X86_CONDITIONAL_QUIRKS: u64 =
    KVM_X86_QUIRK_CD_NW_CLEARED | KVM_X86_QUIRK_IGNORE_GUEST_PAT;

/// `KVM_X86_VALID_QUIRKS` of the era.
pub const fn valid_quirks(era: Era) -> u64 {
    match era {
        Era::V6_7 | Era::V6_11SelfSnoop => QUIRKS_6_7,
        Era::V6_12 => QUIRKS_6_7 | KVM_X86_QUIRK_SLOT_ZAP_ALL,
        Era::V6_16 => {
            QUIRKS_6_7
                | KVM_X86_QUIRK_SLOT_ZAP_ALL
                | KVM_X86_QUIRK_STUFF_FEATURE_MSRS
                | KVM_X86_QUIRK_IGNORE_GUEST_PAT
                | KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM
        }
    }
}

/// `kvm_caps.supported_quirks`: what `KVM_CHECK_EXTENSION(KVM_CAP_DISABLE_QUIRKS2)` reports
/// and what `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)` accepts.
pub const fn supported_quirks(p: &KernelProfile) -> u64 {
    let mut q = valid_quirks(p.era);
    // vmx_hardware_setup(): without self-snoop, UC guest mappings of RAM are unsafe to honor.
    if matches!(p.vendor, Vendor::Intel) && !p.cpu.self_snoop {
        q &= !KVM_X86_QUIRK_IGNORE_GUEST_PAT;
    }
    // kvm_x86_vendor_init(): shadow paging never honors guest PAT, so the quirk cannot go.
    if !p.cpu.tdp {
        q &= !KVM_X86_QUIRK_IGNORE_GUEST_PAT;
    }
    q
}

/// `kvm_caps.inapplicable_quirks` (6.16 era; nothing before the conditional quirks existed).
const fn inapplicable_quirks(p: &KernelProfile) -> u64 {
    if !matches!(p.era, Era::V6_16) {
        return 0;
    }
    match p.vendor {
        Vendor::Intel => KVM_X86_CONDITIONAL_QUIRKS & !KVM_X86_QUIRK_IGNORE_GUEST_PAT,
        Vendor::Amd => KVM_X86_CONDITIONAL_QUIRKS & !KVM_X86_QUIRK_CD_NW_CLEARED,
    }
}

/// `kvm->arch.disabled_quirks` of a new VM and its one-way updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    disabled: u64,
}

impl Quirks {
    /// A new VM's quirks (`kvm_arch_init_vm()`: inapplicable ∩ supported start disabled).
    pub const fn new(p: &KernelProfile) -> Quirks {
        Quirks {
            disabled: inapplicable_quirks(p) & supported_quirks(p),
        }
    }

    /// `kvm_check_has_quirk()`: the quirk's legacy behavior is in force.
    pub const fn has(&self, quirk: u64) -> bool {
        self.disabled & quirk == 0
    }

    /// The disabled mask.
    pub const fn disabled(&self) -> u64 {
        self.disabled
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)`: bits outside the supported set are `EINVAL`;
    /// disabling is one way, so repeating or shrinking the mask never brings a quirk back.
    pub fn disable2(&mut self, p: &KernelProfile, mask: u64) -> Result<(), Errno> {
        if mask & !supported_quirks(p) != 0 {
            return Err(Errno::EINVAL);
        }
        self.disable(p, mask);
        Ok(())
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS)`: any mask; 6.16 keeps only supported bits,
    /// older kernels record the mask as given.
    pub fn disable(&mut self, p: &KernelProfile, mask: u64) {
        self.disabled |= match p.era {
            Era::V6_16 => mask & supported_quirks(p),
            _ => mask,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::CpuFacts;

    fn profile(name: &str, vendor: Vendor, self_snoop: bool, tdp: bool) -> KernelProfile {
        KernelProfile::parse(name, vendor)
            .unwrap()
            .with_cpu(CpuFacts { self_snoop, tdp })
    }

    #[test]
    fn supported_sets_per_era_and_vendor() {
        assert_eq!(
            supported_quirks(&profile("6.7", Vendor::Intel, true, true)),
            0x7f
        );
        assert_eq!(
            supported_quirks(&profile("6.11-selfsnoop", Vendor::Amd, true, true)),
            0x7f
        );
        assert_eq!(
            supported_quirks(&profile("6.12", Vendor::Intel, true, true)),
            0xff
        );
        assert_eq!(
            supported_quirks(&profile("6.16", Vendor::Intel, true, true)),
            0x7ff
        );
        assert_eq!(
            supported_quirks(&profile("6.16", Vendor::Intel, false, true)),
            0x5ff
        );
        assert_eq!(
            supported_quirks(&profile("6.16", Vendor::Intel, true, false)),
            0x5ff
        );
        // AMD lists the quirk (it cannot honor or ignore anything by it) unless TDP is off.
        assert_eq!(
            supported_quirks(&profile("6.16", Vendor::Amd, false, true)),
            0x7ff
        );
        assert_eq!(supported_quirks(&KernelProfile::this_host()), 0x5ff);
    }

    #[test]
    fn conditional_quirks_start_disabled_where_inapplicable() {
        let intel = Quirks::new(&profile("6.16", Vendor::Intel, true, true));
        assert!(intel.has(KVM_X86_QUIRK_IGNORE_GUEST_PAT));
        assert!(!intel.has(KVM_X86_QUIRK_CD_NW_CLEARED));
        let amd = Quirks::new(&profile("6.16", Vendor::Amd, true, true));
        assert!(!amd.has(KVM_X86_QUIRK_IGNORE_GUEST_PAT));
        assert!(amd.has(KVM_X86_QUIRK_CD_NW_CLEARED));
        // Not supported, so not in the initial disabled set: the quirk stays in force.
        let host = Quirks::new(&KernelProfile::this_host());
        assert!(host.has(KVM_X86_QUIRK_IGNORE_GUEST_PAT));
        let old = Quirks::new(&profile("6.7", Vendor::Intel, true, true));
        assert_eq!(old.disabled(), 0);
    }

    #[test]
    fn disabling_is_one_way_and_checked() {
        let p = KernelProfile::this_host();
        let mut q = Quirks::new(&p);
        assert_eq!(q.disable2(&p, 0x200), Err(Errno::EINVAL));
        assert_eq!(q.disable2(&p, 0x7ff), Err(Errno::EINVAL));
        assert_eq!(q.disable2(&p, 0x400), Ok(()));
        assert_eq!(q.disable2(&p, 0x2), Ok(()));
        assert_eq!(q.disable2(&p, 0), Ok(()));
        assert_eq!(q.disabled(), 0x402);
        q.disable(&p, 0x800);
        assert_eq!(
            q.disabled(),
            0x402,
            "6.16 masks DISABLE_QUIRKS with the supported set"
        );
        let old = profile("6.7", Vendor::Intel, true, true);
        let mut q = Quirks::new(&old);
        q.disable(&old, 0x800);
        assert_eq!(q.disabled(), 0x800, "6.7 records DISABLE_QUIRKS as given");
    }
}
