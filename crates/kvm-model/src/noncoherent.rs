//! Noncoherent DMA accounting: `kvm->arch.noncoherent_dma_count` and the zap on its 0↔1
//! transitions.
//!
//! Models `kvm_arch_register_noncoherent_dma()`, `kvm_arch_unregister_noncoherent_dma()`,
//! `kvm_arch_has_noncoherent_dma()` and `kvm_noncoherent_dma_assignment_start_or_stop()` of
//! `arch/x86/kvm/x86.c`. The first registration and the last unregistration may flip EPT
//! leaves between "ignore guest PAT" and "honor it", so KVM zaps every SPTE then — when that
//! can matter, which each era decides differently:
//!
//! - 6.7: `__kvm_mmu_honors_guest_mtrrs(kvm, true)`, i.e. TDP on with a memtype mask (VMX+EPT);
//! - 6.11 self-snoop: `kvm_mmu_may_ignore_guest_pat()`, VMX+EPT without self-snoop;
//! - 6.12: `kvm_mmu_may_ignore_guest_pat()`, VMX+EPT;
//! - 6.16: while `KVM_X86_QUIRK_IGNORE_GUEST_PAT` is in force (which includes shadow paging,
//!   where the quirk cannot be disabled, and excludes AMD with NPT, where it starts disabled).

use uapi::quirk::KVM_X86_QUIRK_IGNORE_GUEST_PAT;

use crate::kvm::Kvm;
use crate::mmu::ZapReason;
use crate::profile::Era;

impl Kvm {
    /// `kvm_arch_register_noncoherent_dma()`.
    pub(crate) fn kvm_arch_register_noncoherent_dma(&mut self) {
        self.noncoherent_dma_count += 1;
        if self.noncoherent_dma_count == 1 {
            self.kvm_noncoherent_dma_assignment_start_or_stop();
        }
    }

    /// `kvm_arch_unregister_noncoherent_dma()`.
    pub(crate) fn kvm_arch_unregister_noncoherent_dma(&mut self) {
        self.noncoherent_dma_count -= 1;
        if self.noncoherent_dma_count == 0 {
            self.kvm_noncoherent_dma_assignment_start_or_stop();
        }
    }

    /// `kvm_arch_has_noncoherent_dma()`.
    pub fn kvm_arch_has_noncoherent_dma(&self) -> bool {
        self.noncoherent_dma_count > 0
    }

    /// Whether a 0↔1 transition zaps, per era (module docs).
    pub(crate) fn noncoherent_transition_zaps(&self) -> bool {
        let vmx_ept = self.profile.has_ept_memtype();
        match self.profile.era {
            Era::V6_7 | Era::V6_12 => vmx_ept,
            Era::V6_11SelfSnoop => vmx_ept && !self.profile.cpu.self_snoop,
            Era::V6_16 => self.quirks.has(KVM_X86_QUIRK_IGNORE_GUEST_PAT),
        }
    }

    /// `kvm_noncoherent_dma_assignment_start_or_stop()`.
    fn kvm_noncoherent_dma_assignment_start_or_stop(&mut self) {
        if self.noncoherent_transition_zaps() {
            self.kvm_zap_gfn_range(0, u64::MAX >> uapi::PAGE_SHIFT, ZapReason::NoncoherentDma);
        }
    }
}
