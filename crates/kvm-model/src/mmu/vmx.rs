//! `vmx_get_mt_mask()` (`arch/x86/kvm/vmx/vmx.c`) for each era, with the memslot-flag
//! proposal's branch, and [`MtMaskBranch`]: which decision produced an EPT leaf's type bits.
//!
//! Order of decisions (system.md §3 and §5):
//!
//! 1. host MMIO → UC, IPAT clear (every era);
//! 2. `+memslot-flag` profiles: slot has `KVM_MEM_NON_COHERENT_DMA` → WB, IPAT clear;
//! 3. the era's base logic:
//!    - 6.7: no noncoherent DMA → WB+IPAT; guest CR0.CD=1 → WB (`CD_NW_CLEARED` quirk on) or
//!      UC+IPAT (off); else the emulated guest MTRR type, IPAT clear;
//!    - 6.11 self-snoop: WB+IPAT only without self-snoop and without noncoherent DMA, else WB;
//!    - 6.12: WB+IPAT without noncoherent DMA, else WB;
//!    - 6.16: WB+IPAT while `IGNORE_GUEST_PAT` is in force and there is no noncoherent DMA,
//!      else WB.

use std::fmt;

use memtype::mtrr::MtrrRule;
use memtype::{EptLeaf, MemType};
use uapi::quirk::{KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT};

use super::mtrr::kvm_mtrr_get_guest_memory_type;
use crate::kvm::Kvm;
use crate::memslot::KvmMemorySlot;
use crate::profile::{Era, Proposal};
use crate::vcpu::KvmVcpu;

/// How 6.7 found the guest MTRR type of a gfn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMtrrRule {
    /// The guest's MTRRs decided, by this precedence rule.
    Lookup(MtrrRule),
    /// MTRRs disabled and guest CPUID without MTRRs: KVM picks WB rather than UC
    /// (`mtrr_disabled_type()`).
    DisabledNoCpuidMtrr,
}

impl fmt::Display for GuestMtrrRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestMtrrRule::Lookup(rule) => write!(f, "{rule}"),
            GuestMtrrRule::DisabledNoCpuidMtrr => {
                f.write_str("MTRRs disabled, guest CPUID has no MTRR: WB")
            }
        }
    }
}

/// The decision that produced a leaf's memory-type bits: a branch of `vmx_get_mt_mask()`,
/// or the reason there are none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtMaskBranch {
    /// Host MMIO (`kvm_is_mmio_pfn()`): UC, IPAT clear, so guest PAT may still ask for WC.
    HostMmio,
    /// Proposal B: the slot has `KVM_MEM_NON_COHERENT_DMA`: WB, IPAT clear.
    SlotNonCoherentDma,
    /// 6.7 / 6.12: the VM has no noncoherent DMA: WB + IPAT.
    NoNoncoherentDma,
    /// 6.7: noncoherent DMA, guest CR0.CD=1, `KVM_X86_QUIRK_CD_NW_CLEARED` in force: WB, IPAT
    /// clear.
    Cr0CdQuirk,
    /// 6.7: noncoherent DMA, guest CR0.CD=1, quirk disabled: UC + IPAT.
    Cr0CdNoQuirk,
    /// 6.7: noncoherent DMA: the EPT type is the emulated guest MTRR type, IPAT clear.
    GuestMtrr {
        /// `kvm_mtrr_get_guest_memory_type()`.
        mtrr: MemType,
        /// How it was found.
        rule: GuestMtrrRule,
    },
    /// 6.11: the CPU self-snoops, so KVM always honors guest PAT: WB, IPAT clear.
    SelfSnoop,
    /// 6.11: no self-snoop and no noncoherent DMA: WB + IPAT.
    NoSelfSnoopNoNoncoherentDma,
    /// 6.11 / 6.12 / 6.16: noncoherent DMA: WB, IPAT clear.
    NoncoherentDma,
    /// 6.16: `KVM_X86_QUIRK_IGNORE_GUEST_PAT` in force and no noncoherent DMA: WB + IPAT.
    QuirkIgnoreGuestPat,
    /// 6.16: `KVM_X86_QUIRK_IGNORE_GUEST_PAT` disabled: WB, IPAT clear.
    QuirkDisabled,
    /// SVM with NPT: no `get_mt_mask` (`shadow_memtype_mask == 0`); nested entries carry no
    /// memory type and the hardware combines guest PAT with the host's.
    SvmNpt,
    /// Shadow paging (TDP off): no `get_mt_mask`; shadow PTEs carry the host's attributes.
    ShadowPaging,
}

impl MtMaskBranch {
    /// A stable kebab-case identifier, for JSON and scripts.
    pub const fn name(self) -> &'static str {
        match self {
            MtMaskBranch::HostMmio => "host-mmio",
            MtMaskBranch::SlotNonCoherentDma => "slot-non-coherent-dma",
            MtMaskBranch::NoNoncoherentDma => "no-noncoherent-dma",
            MtMaskBranch::Cr0CdQuirk => "cr0-cd-quirk",
            MtMaskBranch::Cr0CdNoQuirk => "cr0-cd-no-quirk",
            MtMaskBranch::GuestMtrr { .. } => "guest-mtrr",
            MtMaskBranch::SelfSnoop => "self-snoop",
            MtMaskBranch::NoSelfSnoopNoNoncoherentDma => "no-self-snoop-no-noncoherent-dma",
            MtMaskBranch::NoncoherentDma => "noncoherent-dma",
            MtMaskBranch::QuirkIgnoreGuestPat => "quirk-ignore-guest-pat",
            MtMaskBranch::QuirkDisabled => "quirk-ignore-guest-pat-disabled",
            MtMaskBranch::SvmNpt => "svm-npt",
            MtMaskBranch::ShadowPaging => "shadow-paging",
        }
    }

    /// The EPT leaf bits the branch produces (`WB` for the branches without a mask, which
    /// never reach an EPT entry).
    pub fn ept_leaf(self) -> EptLeaf {
        let (t, ipat) = match self {
            MtMaskBranch::HostMmio => (MemType::Uc, false),
            MtMaskBranch::Cr0CdNoQuirk => (MemType::Uc, true),
            MtMaskBranch::GuestMtrr { mtrr, .. } => (mtrr, false),
            MtMaskBranch::NoNoncoherentDma
            | MtMaskBranch::NoSelfSnoopNoNoncoherentDma
            | MtMaskBranch::QuirkIgnoreGuestPat => (MemType::Wb, true),
            MtMaskBranch::SlotNonCoherentDma
            | MtMaskBranch::Cr0CdQuirk
            | MtMaskBranch::SelfSnoop
            | MtMaskBranch::NoncoherentDma
            | MtMaskBranch::QuirkDisabled
            | MtMaskBranch::SvmNpt
            | MtMaskBranch::ShadowPaging => (MemType::Wb, false),
        };
        EptLeaf {
            // Every type above is an MTRR type, so the encoding exists.
            memtype: t.mtrr_encoding().unwrap_or(0),
            ipat,
        }
    }
}

impl fmt::Display for MtMaskBranch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MtMaskBranch::HostMmio => f.write_str("vmx_get_mt_mask: host MMIO → UC, IPAT=0"),
            MtMaskBranch::SlotNonCoherentDma => f.write_str(
                "vmx_get_mt_mask: slot has KVM_MEM_NON_COHERENT_DMA → WB, IPAT=0 (guest PAT decides)",
            ),
            MtMaskBranch::NoNoncoherentDma => {
                f.write_str("vmx_get_mt_mask: no noncoherent DMA → WB+IPAT")
            }
            MtMaskBranch::Cr0CdQuirk => f.write_str(
                "vmx_get_mt_mask: noncoherent DMA, CR0.CD=1 with CD_NW_CLEARED quirk → WB, IPAT=0",
            ),
            MtMaskBranch::Cr0CdNoQuirk => f.write_str(
                "vmx_get_mt_mask: noncoherent DMA, CR0.CD=1 without CD_NW_CLEARED quirk → UC+IPAT",
            ),
            MtMaskBranch::GuestMtrr { mtrr, rule } => write!(
                f,
                "vmx_get_mt_mask: noncoherent DMA → guest MTRR type {mtrr} ({rule}), IPAT=0"
            ),
            MtMaskBranch::SelfSnoop => f.write_str(
                "vmx_get_mt_mask: CPU has self-snoop → WB, IPAT=0 (guest PAT always honored)",
            ),
            MtMaskBranch::NoSelfSnoopNoNoncoherentDma => {
                f.write_str("vmx_get_mt_mask: no self-snoop, no noncoherent DMA → WB+IPAT")
            }
            MtMaskBranch::NoncoherentDma => f.write_str(
                "vmx_get_mt_mask: noncoherent DMA → WB, IPAT=0 (guest PAT decides)",
            ),
            MtMaskBranch::QuirkIgnoreGuestPat => f.write_str(
                "vmx_get_mt_mask: IGNORE_GUEST_PAT quirk enabled, no noncoherent DMA → WB+IPAT",
            ),
            MtMaskBranch::QuirkDisabled => f.write_str(
                "vmx_get_mt_mask: IGNORE_GUEST_PAT quirk disabled → WB, IPAT=0 (guest PAT decides)",
            ),
            MtMaskBranch::SvmNpt => f.write_str(
                "svm: no get_mt_mask (shadow_memtype_mask = 0) → NPT leaf without memory type, guest PAT honored by hardware",
            ),
            MtMaskBranch::ShadowPaging => f.write_str(
                "shadow paging: no get_mt_mask → shadow PTE with host attributes (WB), guest PAT and MTRRs not honored",
            ),
        }
    }
}

/// `vmx_get_mt_mask(vcpu, gfn, is_mmio, slot)` of the profile's era, with the memslot-flag
/// proposal's extra parameter and branch where it is applied.
pub fn vmx_get_mt_mask(
    kvm: &Kvm,
    vcpu: &KvmVcpu,
    gfn: u64,
    is_mmio: bool,
    slot: &KvmMemorySlot,
) -> MtMaskBranch {
    let profile = kvm.profile();
    if is_mmio {
        return MtMaskBranch::HostMmio;
    }
    if profile.proposal == Proposal::MemslotFlag && slot.has_non_coherent_dma() {
        return MtMaskBranch::SlotNonCoherentDma;
    }
    let noncoherent = kvm.kvm_arch_has_noncoherent_dma();
    match profile.era {
        Era::V6_7 => {
            if !noncoherent {
                MtMaskBranch::NoNoncoherentDma
            } else if vcpu.cr0_cd() {
                if kvm.has_quirk(KVM_X86_QUIRK_CD_NW_CLEARED) {
                    MtMaskBranch::Cr0CdQuirk
                } else {
                    MtMaskBranch::Cr0CdNoQuirk
                }
            } else {
                let (mtrr, rule) = kvm_mtrr_get_guest_memory_type(vcpu, gfn);
                MtMaskBranch::GuestMtrr { mtrr, rule }
            }
        }
        Era::V6_11SelfSnoop => {
            if profile.cpu.self_snoop {
                MtMaskBranch::SelfSnoop
            } else if noncoherent {
                MtMaskBranch::NoncoherentDma
            } else {
                MtMaskBranch::NoSelfSnoopNoNoncoherentDma
            }
        }
        Era::V6_12 => {
            if noncoherent {
                MtMaskBranch::NoncoherentDma
            } else {
                MtMaskBranch::NoNoncoherentDma
            }
        }
        Era::V6_16 => {
            if !kvm.has_quirk(KVM_X86_QUIRK_IGNORE_GUEST_PAT) {
                MtMaskBranch::QuirkDisabled
            } else if noncoherent {
                MtMaskBranch::NoncoherentDma
            } else {
                MtMaskBranch::QuirkIgnoreGuestPat
            }
        }
    }
}
