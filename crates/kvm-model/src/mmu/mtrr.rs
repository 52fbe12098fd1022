//! 6.7's guest MTRR emulation (`arch/x86/kvm/mtrr.c`), the only era that folds guest MTRRs
//! and CR0.CD into EPT leaves, and the zaps that keep those leaves current.
//!
//! - `kvm_mtrr_get_guest_memory_type()`: the type of one guest page under the guest's MTRRs
//!   (SDM precedence; undefined overlaps resolve to WB, as KVM chose). Disabled MTRRs are UC,
//!   or WB when guest CPUID has no MTRRs.
//! - `kvm_mtrr_check_gfn_range_consistency()`: `kvm_tdp_page_fault()` shrinks a huge mapping
//!   until the guest MTRR type is uniform across it, while KVM honors guest MTRRs.
//! - `update_mtrr()` and `kvm_post_set_cr0()`: MTRR writes and CR0.CD toggles zap the affected
//!   SPTEs, again only while KVM honors guest MTRRs.
//!
//! Known divergence from the kernel's iterator, on overlaps only: KVM tests just the later of
//! two conflicting variable ranges for UC (a UC range listed first loses to WB), and its
//! consistency check compares the raw types of every overlapping range. The model applies the
//! SDM's "UC wins" and compares effective types (memtype's lookup), which never keeps a huge
//! page KVM would split for a type that differs inside it.

use memtype::MemType;
use memtype::mtrr::{MtrrRule, OverlapPolicy};

use super::PgLevel;
use super::vmx::GuestMtrrRule;
use super::zap::ZapReason;
use crate::kvm::{Kvm, VcpuId};
use crate::profile::Era;
use crate::vcpu::{KvmVcpu, MtrrMsr, X86_CR0_CD};
use uapi::quirk::KVM_X86_QUIRK_CD_NW_CLEARED;

/// `kvm_mtrr_get_guest_memory_type(vcpu, gfn)`.
pub fn kvm_mtrr_get_guest_memory_type(vcpu: &KvmVcpu, gfn: u64) -> (MemType, GuestMtrrRule) {
    let mtrr = vcpu.mtrr_state();
    if !mtrr.enabled() && !vcpu.cpuid_has_mtrr() {
        return (MemType::Wb, GuestMtrrRule::DisabledNoCpuidMtrr);
    }
    match mtrr.lookup(gfn << uapi::PAGE_SHIFT) {
        Ok(hit) => (hit.mem_type, GuestMtrrRule::Lookup(hit.rule)),
        // Only OverlapPolicy::Reject fails a lookup; the vCPU's state keeps the default, WB.
        Err(_) => (
            MemType::Wb,
            GuestMtrrRule::Lookup(MtrrRule::UndefinedOverlap {
                policy: OverlapPolicy::Wb,
            }),
        ),
    }
}

/// `kvm_mtrr_check_gfn_range_consistency(vcpu, gfn, page_num)`.
pub fn kvm_mtrr_check_gfn_range_consistency(vcpu: &KvmVcpu, gfn: u64, pages: u64) -> bool {
    vcpu.mtrr_state()
        .range_type(gfn << uapi::PAGE_SHIFT, pages << uapi::PAGE_SHIFT)
        .is_ok()
}

impl Kvm {
    /// `kvm_mmu_honors_guest_mtrrs()` (6.7): TDP with a memory-type mask, and noncoherent DMA.
    pub fn kvm_mmu_honors_guest_mtrrs(&self) -> bool {
        self.profile.era.emulates_guest_mtrrs()
            && self.profile.has_ept_memtype()
            && self.kvm_arch_has_noncoherent_dma()
    }

    /// The MTRR half of 6.7's `kvm_tdp_page_fault()`: lowers `level` until the guest MTRR
    /// type is uniform over the mapping.
    pub(crate) fn kvm_tdp_mtrr_level(&mut self, vcpu: VcpuId, gfn: u64, level: PgLevel) -> PgLevel {
        if !self.kvm_mmu_honors_guest_mtrrs() {
            return level;
        }
        let Some(v) = self.vcpus.get(&vcpu.0) else {
            return level;
        };
        let mut level = level;
        let mut demotions = 0;
        while let Some(smaller) = level.smaller() {
            if kvm_mtrr_check_gfn_range_consistency(v, level.round(gfn), level.pages()) {
                break;
            }
            level = smaller;
            demotions += 1;
        }
        self.mmu.stats.mtrr_demotions += demotions;
        level
    }

    /// `update_mtrr()` (6.7): after an MTRR write, zap the guest-physical range whose type
    /// may have changed — everything for MTRRdefType, the fixed range's span, or the
    /// variable range's span.
    pub(crate) fn update_mtrr(&mut self, vcpu: VcpuId, msr: MtrrMsr) {
        if !self.kvm_mmu_honors_guest_mtrrs() {
            return;
        }
        let Some(v) = self.vcpus.get(&vcpu.0) else {
            return;
        };
        let state = v.mtrr_state();
        if !state.enabled() && msr != MtrrMsr::DefType {
            return;
        }
        let (start, end) = match msr {
            MtrrMsr::DefType => (0, u64::MAX),
            MtrrMsr::Fixed(i) => {
                if !state.fixed_enabled() {
                    return;
                }
                fixed_msr_range(i)
            }
            MtrrMsr::VarBase(n) | MtrrMsr::VarMask(n) => v.var_mtrr_range(n),
        };
        let shift = uapi::PAGE_SHIFT;
        self.kvm_zap_gfn_range(start >> shift, end >> shift, ZapReason::GuestMtrr);
    }

    /// `kvm_post_set_cr0()` (6.7): a CR0.CD toggle changes `vmx_get_mt_mask()`'s answer only
    /// while KVM honors guest MTRRs and the `CD_NW_CLEARED` quirk is off.
    pub(crate) fn kvm_post_set_cr0(&mut self, old: u64, new: u64) {
        if self.profile.era == Era::V6_7
            && (old ^ new) & X86_CR0_CD != 0
            && self.kvm_mmu_honors_guest_mtrrs()
            && !self.quirks.has(KVM_X86_QUIRK_CD_NW_CLEARED)
        {
            self.kvm_zap_gfn_range(0, u64::MAX >> uapi::PAGE_SHIFT, ZapReason::GuestCr0Cd);
        }
    }
}

/// `fixed_msr_to_range()`: the guest-physical span of fixed-range MSR `i` (0..11).
fn fixed_msr_range(i: usize) -> (u64, u64) {
    match i {
        0 => (0, 0x8_0000),
        1 => (0x8_0000, 0xA_0000),
        2 => (0xA_0000, 0xC_0000),
        _ => {
            let start = 0xC_0000 + ((i as u64 - 3) << 15);
            (start, start + 0x8000)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_ranges_cover_the_first_megabyte() {
        let mut next = 0;
        for i in 0..11 {
            let (start, end) = fixed_msr_range(i);
            assert_eq!(start, next);
            next = end;
        }
        assert_eq!(next, 0x10_0000);
    }
}
