//! x86 quirks: the bits of `KVM_CAP_DISABLE_QUIRKS2` (`arch/x86/include/uapi/asm/kvm.h`).
//!
//! A quirk is a legacy behaviour KVM keeps by default; userspace may disable quirks, one way,
//! with `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2, args[0] = mask)`. The three that matter to
//! memory types are [`KVM_X86_QUIRK_CD_NW_CLEARED`], [`KVM_X86_QUIRK_SLOT_ZAP_ALL`] and
//! [`KVM_X86_QUIRK_IGNORE_GUEST_PAT`].

/// `KVM_X86_QUIRK_LINT0_REENABLED` (bit 0).
pub const KVM_X86_QUIRK_LINT0_REENABLED: u64 = kvm_bindings::KVM_X86_QUIRK_LINT0_REENABLED as u64;
/// `KVM_X86_QUIRK_CD_NW_CLEARED` (bit 1): while enabled, guest CR0.CD=1 maps to EPT WB
/// (IPAT clear) in 6.7's `vmx_get_mt_mask` instead of UC+IPAT.
pub const KVM_X86_QUIRK_CD_NW_CLEARED: u64 = kvm_bindings::KVM_X86_QUIRK_CD_NW_CLEARED as u64;
/// `KVM_X86_QUIRK_LAPIC_MMIO_HOLE` (bit 2).
pub const KVM_X86_QUIRK_LAPIC_MMIO_HOLE: u64 = kvm_bindings::KVM_X86_QUIRK_LAPIC_MMIO_HOLE as u64;
/// `KVM_X86_QUIRK_OUT_7E_INC_RIP` (bit 3).
pub const KVM_X86_QUIRK_OUT_7E_INC_RIP: u64 = kvm_bindings::KVM_X86_QUIRK_OUT_7E_INC_RIP as u64;
/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT` (bit 4).
pub const KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT: u64 =
    kvm_bindings::KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT as u64;
/// `KVM_X86_QUIRK_FIX_HYPERCALL_INSN` (bit 5).
pub const KVM_X86_QUIRK_FIX_HYPERCALL_INSN: u64 =
    kvm_bindings::KVM_X86_QUIRK_FIX_HYPERCALL_INSN as u64;
/// `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` (bit 6).
pub const KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS: u64 =
    kvm_bindings::KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS as u64;
/// `KVM_X86_QUIRK_SLOT_ZAP_ALL` (bit 7, 6.12+): deleting or moving a memslot zaps every
/// SPTE of the VM rather than only the slot's.
pub const KVM_X86_QUIRK_SLOT_ZAP_ALL: u64 = kvm_bindings::KVM_X86_QUIRK_SLOT_ZAP_ALL as u64;
/// `KVM_X86_QUIRK_STUFF_FEATURE_MSRS` (bit 8, 6.13+).
pub const KVM_X86_QUIRK_STUFF_FEATURE_MSRS: u64 =
    kvm_bindings::KVM_X86_QUIRK_STUFF_FEATURE_MSRS as u64;
/// `KVM_X86_QUIRK_IGNORE_GUEST_PAT` (bit 9, 6.16+): while enabled, VMX ignores guest PAT
/// (EPT WB+IPAT) unless the VM has noncoherent DMA. Reported as disableable only on Intel
/// with EPT when the CPU has self-snoop; listed but without effect on AMD; dropped from the
/// supported set when TDP is off (shadow paging).
pub const KVM_X86_QUIRK_IGNORE_GUEST_PAT: u64 = 1 << 9;
/// `KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM` (bit 10, 6.18+). Not memory-type related;
/// named because our host reports it (`0x5ff`).
pub const KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM: u64 = 1 << 10;

/// Every quirk by bit, `(mask, KVM name)`.
pub const QUIRK_NAMES: [(u64, &str); 11] = [
    (
        KVM_X86_QUIRK_LINT0_REENABLED,
        "KVM_X86_QUIRK_LINT0_REENABLED",
    ),
    (KVM_X86_QUIRK_CD_NW_CLEARED, "KVM_X86_QUIRK_CD_NW_CLEARED"),
    (
        KVM_X86_QUIRK_LAPIC_MMIO_HOLE,
        "KVM_X86_QUIRK_LAPIC_MMIO_HOLE",
    ),
    (KVM_X86_QUIRK_OUT_7E_INC_RIP, "KVM_X86_QUIRK_OUT_7E_INC_RIP"),
    (
        KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT,
        "KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT",
    ),
    (
        KVM_X86_QUIRK_FIX_HYPERCALL_INSN,
        "KVM_X86_QUIRK_FIX_HYPERCALL_INSN",
    ),
    (
        KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS,
        "KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS",
    ),
    (KVM_X86_QUIRK_SLOT_ZAP_ALL, "KVM_X86_QUIRK_SLOT_ZAP_ALL"),
    (
        KVM_X86_QUIRK_STUFF_FEATURE_MSRS,
        "KVM_X86_QUIRK_STUFF_FEATURE_MSRS",
    ),
    (
        KVM_X86_QUIRK_IGNORE_GUEST_PAT,
        "KVM_X86_QUIRK_IGNORE_GUEST_PAT",
    ),
    (
        KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM,
        "KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM",
    ),
];

/// The names of the quirks set in `mask`, unknown bits as hex.
pub fn quirk_names(mask: u64) -> Vec<String> {
    let mut rest = mask;
    let mut names = Vec::new();
    for (bit, name) in QUIRK_NAMES {
        if rest & bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_match_the_uapi() {
        assert_eq!(KVM_X86_QUIRK_CD_NW_CLEARED, 1 << 1);
        assert_eq!(KVM_X86_QUIRK_SLOT_ZAP_ALL, 1 << 7);
        assert_eq!(KVM_X86_QUIRK_IGNORE_GUEST_PAT, 1 << 9);
        for (i, (bit, _)) in QUIRK_NAMES.iter().enumerate() {
            assert_eq!(*bit, 1 << i, "quirk table is in bit order");
        }
    }

    #[test]
    fn names_our_hosts_mask() {
        // system.md §7: this host reports 0x5ff (no IGNORE_GUEST_PAT: TDP is off).
        let names = quirk_names(0x5ff);
        assert_eq!(names.len(), 10);
        assert!(!names.iter().any(|n| n.contains("IGNORE_GUEST_PAT")));
        assert_eq!(quirk_names(1 << 20), vec!["0x100000".to_string()]);
    }
}
