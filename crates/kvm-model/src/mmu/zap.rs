//! Zapping SPTEs: `kvm_zap_gfn_range()`, `kvm_mmu_zap_all_fast()`, `kvm_mmu_zap_memslot()`,
//! `kvm_arch_flush_shadow_memslot()` and `kvm_mmu_zap_collapsible_sptes()`
//! (`arch/x86/kvm/mmu/mmu.c`). Every call is counted by [`ZapReason`].
//!
//! Deleting or moving a memslot zaps the whole VM in 6.7 and 6.11; from 6.12 it does so only
//! while `KVM_X86_QUIRK_SLOT_ZAP_ALL` is in force, else just the slot's range.

use uapi::quirk::KVM_X86_QUIRK_SLOT_ZAP_ALL;

use crate::kvm::Kvm;
use crate::memslot::KvmMemorySlot;
use crate::profile::Era;

/// Why SPTEs were zapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZapReason {
    /// A memslot was deleted (`kvm_arch_flush_shadow_memslot()`).
    MemslotDelete,
    /// A memslot was moved.
    MemslotMove,
    /// The VM's noncoherent DMA count went 0→1 or 1→0.
    NoncoherentDma,
    /// 6.7: the guest toggled CR0.CD.
    GuestCr0Cd,
    /// 6.7: the guest wrote an MTRR.
    GuestMtrr,
    /// Dirty logging was switched off: small leaves give way to huge ones.
    DirtyLogDisabled,
    /// The host changed the mapping behind guest memory (MMU notifier).
    MmuNotifier,
    /// A direct call of [`Kvm::kvm_mmu_zap_all`].
    Explicit,
}

impl ZapReason {
    /// Every reason, in declaration order (the order of [`super::MmuStats`]' counters).
    pub const ALL: [ZapReason; 8] = [
        ZapReason::MemslotDelete,
        ZapReason::MemslotMove,
        ZapReason::NoncoherentDma,
        ZapReason::GuestCr0Cd,
        ZapReason::GuestMtrr,
        ZapReason::DirtyLogDisabled,
        ZapReason::MmuNotifier,
        ZapReason::Explicit,
    ];
}

impl Kvm {
    /// `kvm_zap_gfn_range(kvm, gfn_start, gfn_end)`: removes every leaf, in every address
    /// space, that intersects `[gfn_start, gfn_end)`. Returns how many.
    pub fn kvm_zap_gfn_range(&mut self, gfn_start: u64, gfn_end: u64, reason: ZapReason) -> u64 {
        self.mmu.stats.count_zap(reason);
        let mut zapped = 0;
        for as_id in 0..self.profile.address_spaces() {
            zapped += self.mmu.remove_range(as_id, gfn_start, gfn_end);
        }
        self.mmu.stats.sptes_zapped += zapped;
        zapped
    }

    /// `kvm_mmu_zap_all_fast()`: every leaf of the VM goes.
    fn kvm_mmu_zap_all_fast(&mut self, reason: ZapReason) -> u64 {
        self.mmu.stats.count_zap(reason);
        self.mmu.stats.zap_all_fast += 1;
        let zapped = self.mmu.remove_all();
        self.mmu.stats.sptes_zapped += zapped;
        zapped
    }

    /// Zaps every leaf (`kvm_mmu_zap_all()`), e.g. so a benchmark can fault the same gfn
    /// again and again. Returns how many leaves went.
    pub fn kvm_mmu_zap_all(&mut self) -> u64 {
        self.kvm_mmu_zap_all_fast(ZapReason::Explicit)
    }

    /// `kvm_mmu_zap_memslot()`: only the slot's range, in its address space.
    fn kvm_mmu_zap_memslot(&mut self, slot: &KvmMemorySlot, reason: ZapReason) -> u64 {
        self.mmu.stats.count_zap(reason);
        let zapped = self
            .mmu
            .remove_range(slot.as_id, slot.base_gfn, slot.end_gfn());
        self.mmu.stats.sptes_zapped += zapped;
        zapped
    }

    /// `kvm_arch_flush_shadow_memslot()`, called for DELETE and MOVE.
    pub(crate) fn kvm_arch_flush_shadow_memslot(
        &mut self,
        slot: &KvmMemorySlot,
        reason: ZapReason,
    ) {
        let zap_all = match self.profile.era {
            Era::V6_7 | Era::V6_11SelfSnoop => true,
            Era::V6_12 | Era::V6_16 => self.quirks.has(KVM_X86_QUIRK_SLOT_ZAP_ALL),
        };
        if zap_all {
            self.kvm_mmu_zap_all_fast(reason);
        } else {
            self.kvm_mmu_zap_memslot(slot, reason);
        }
    }

    /// `kvm_mmu_zap_collapsible_sptes()`: after dirty logging stops, small leaves where a
    /// larger mapping is now possible are zapped so the next fault maps huge.
    pub(crate) fn kvm_mmu_zap_collapsible_sptes(&mut self, slot: &KvmMemorySlot) {
        self.mmu.stats.count_zap(ZapReason::DirtyLogDisabled);
        let collapsible: Vec<u64> = self
            .mmu
            .sptes()
            .filter(|s| s.as_id == slot.as_id && slot.contains(s.gfn))
            .filter(|s| s.level < self.max_mapping_level(slot, s.gfn))
            .map(|s| s.gfn)
            .collect();
        for gfn in collapsible {
            self.mmu.stats.sptes_zapped += self.mmu.remove_range(slot.as_id, gfn, gfn + 1);
        }
    }

    /// The MMU notifier's `invalidate_range_start`: the host remapped `[hva_start, hva_end)`.
    pub(crate) fn zap_hva_range(&mut self, hva_start: u64, hva_end: u64) {
        self.mmu.stats.count_zap(ZapReason::MmuNotifier);
        let hit: Vec<(u16, u64)> = self
            .mmu
            .sptes()
            .filter(|s| {
                let len = s.level.pages() << uapi::PAGE_SHIFT;
                s.hva < hva_end && s.hva + len > hva_start
            })
            .map(|s| (s.as_id, s.gfn))
            .collect();
        for (as_id, gfn) in hit {
            self.mmu.stats.sptes_zapped += self.mmu.remove_range(as_id, gfn, gfn + 1);
        }
    }
}
