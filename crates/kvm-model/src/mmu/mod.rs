//! The MMU: the SPTE store, the simulated page fault that fills it, and its statistics.
//!
//! Models the TDP MMU's fault path (`kvm_mmu_page_fault()` → `kvm_tdp_page_fault()` →
//! `kvm_tdp_mmu_map()` → `make_spte()`) closely enough for memory types: a fault finds the
//! memslot (`kvm_vcpu_gfn_to_memslot()`), emulates MMIO where there is none, picks the
//! mapping level (`kvm_mmu_max_mapping_level()`, 6.7's MTRR-consistency demotion), asks the
//! vendor for the memory-type bits ([`Kvm::make_spte`] → `get_mt_mask`) and installs one leaf.
//! Leaves are kept in an ordered map keyed by (address space, first gfn); leaves never
//! overlap, so the leaf covering a gfn is the nearest one at or below it.
//!
//! Shadow paging (TDP off) is modeled as the same direct map without memory-type bits: what
//! matters to memory types is that shadow PTEs carry host attributes, not the guest walk.

pub mod access;
pub mod mtrr;
pub mod spte;
pub mod svm;
pub mod vmx;
pub mod zap;

use std::collections::BTreeMap;
use std::fmt;

use crate::error::VcpuError;
use crate::kvm::{Kvm, VcpuId};
use crate::memslot::KvmMemorySlot;

pub use access::Access;
pub use spte::Spte;
pub use vmx::{GuestMtrrRule, MtMaskBranch};
pub use zap::ZapReason;

/// A paging level (`enum pg_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PgLevel {
    /// 4 KiB (`PG_LEVEL_4K`).
    K4,
    /// 2 MiB (`PG_LEVEL_2M`).
    M2,
    /// 1 GiB (`PG_LEVEL_1G`).
    G1,
}

impl PgLevel {
    /// `KVM_PAGES_PER_HPAGE(level)`: 4 KiB pages one leaf maps.
    pub const fn pages(self) -> u64 {
        match self {
            PgLevel::K4 => 1,
            PgLevel::M2 => 512,
            PgLevel::G1 => 512 * 512,
        }
    }

    /// The next smaller level.
    pub const fn smaller(self) -> Option<PgLevel> {
        match self {
            PgLevel::K4 => None,
            PgLevel::M2 => Some(PgLevel::K4),
            PgLevel::G1 => Some(PgLevel::M2),
        }
    }

    /// `gfn_round_for_level()`.
    pub const fn round(self, gfn: u64) -> u64 {
        gfn & !(self.pages() - 1)
    }
}

impl fmt::Display for PgLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PgLevel::K4 => "4K",
            PgLevel::M2 => "2M",
            PgLevel::G1 => "1G",
        })
    }
}

/// Counters the tests and benchmarks read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MmuStats {
    /// Faults that installed or repaired a leaf.
    pub faults: u64,
    /// Faults on a gfn an adequate leaf already mapped (nothing to do).
    pub spurious_faults: u64,
    /// Accesses outside every memslot (or writes to read-only ones): emulated MMIO.
    pub emulated_mmio: u64,
    /// Leaves built by `make_spte()`.
    pub sptes_created: u64,
    /// Calls of the vendor's `get_mt_mask` (VMX with EPT only).
    pub mt_mask_calls: u64,
    /// Level reductions made for guest-MTRR consistency (6.7 `kvm_tdp_page_fault()`).
    pub mtrr_demotions: u64,
    /// Leaves removed by zaps.
    pub sptes_zapped: u64,
    /// Leaves made read-only for dirty logging.
    pub sptes_write_protected: u64,
    /// `kvm_mmu_zap_all_fast()` calls (whole-VM zaps).
    pub zap_all_fast: u64,
    zaps: [u64; ZapReason::ALL.len()],
}

impl MmuStats {
    /// How many zap operations were made for `reason` (whether or not they found leaves).
    pub fn zaps(&self, reason: ZapReason) -> u64 {
        self.zaps[reason as usize]
    }

    /// Zap operations for any reason.
    pub fn total_zaps(&self) -> u64 {
        self.zaps.iter().sum()
    }

    pub(crate) fn count_zap(&mut self, reason: ZapReason) {
        self.zaps[reason as usize] += 1;
    }
}

/// What a fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    /// A leaf maps the gfn (new or already there).
    Mapped {
        /// The leaf's first gfn.
        gfn: u64,
        /// Its level.
        level: PgLevel,
        /// Whether this fault built it.
        created: bool,
    },
    /// No memslot (or a write to a read-only one): the access exits to userspace.
    EmulatedMmio,
}

/// SPTEs, host mappings and counters of one VM.
#[derive(Debug, Clone)]
pub struct Mmu {
    sptes: BTreeMap<(u16, u64), Spte>,
    /// Host virtual ranges mapped `VM_IO | VM_PFNMAP` (device BARs): start → end.
    host_mmio: BTreeMap<u64, u64>,
    /// Largest page the host backs guest memory with (THP: 2M).
    host_max_level: PgLevel,
    pub(crate) stats: MmuStats,
}

impl Mmu {
    pub(crate) fn new() -> Mmu {
        Mmu {
            sptes: BTreeMap::new(),
            host_mmio: BTreeMap::new(),
            host_max_level: PgLevel::M2,
            stats: MmuStats::default(),
        }
    }

    /// The leaf mapping `gfn` in `as_id`, if any.
    pub fn lookup(&self, as_id: u16, gfn: u64) -> Option<&Spte> {
        let (_, spte) = self.sptes.range((as_id, 0)..=(as_id, gfn)).next_back()?;
        (gfn < spte.end_gfn()).then_some(spte)
    }

    /// Every leaf, by address space then gfn.
    pub fn sptes(&self) -> impl Iterator<Item = &Spte> {
        self.sptes.values()
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.sptes.len()
    }

    /// Whether no leaf exists.
    pub fn is_empty(&self) -> bool {
        self.sptes.is_empty()
    }

    /// `kvm_is_mmio_pfn()` for the page behind `hva`.
    pub fn is_host_mmio(&self, hva: u64) -> bool {
        self.host_mmio
            .range(..=hva)
            .next_back()
            .is_some_and(|(_, end)| hva < *end)
    }

    /// Removes every leaf of `as_id` that intersects `[start, end)`; returns how many.
    pub(crate) fn remove_range(&mut self, as_id: u16, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let first = self.lookup(as_id, start).map_or(start, |s| s.gfn);
        let keys: Vec<(u16, u64)> = self
            .sptes
            .range((as_id, first)..(as_id, end))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.sptes.remove(k);
        }
        keys.len() as u64
    }

    /// All leaves, as `kvm_mmu_zap_all_fast()` leaves the VM.
    pub(crate) fn remove_all(&mut self) -> u64 {
        let n = self.sptes.len() as u64;
        self.sptes.clear();
        n
    }

    /// Write-protects every leaf of the slot (dirty logging switched on).
    pub(crate) fn write_protect_slot(&mut self, slot: &KvmMemorySlot) {
        let gfns: Vec<u64> = self
            .sptes
            .range((slot.as_id, slot.base_gfn)..(slot.as_id, slot.end_gfn()))
            .map(|((_, gfn), _)| *gfn)
            .collect();
        self.write_protect_gfns(slot.as_id, gfns);
    }

    /// Write-protects the leaves mapping `gfns` (`kvm_arch_mmu_enable_log_dirty_pt_masked()`).
    pub(crate) fn write_protect_gfns(&mut self, as_id: u16, gfns: impl IntoIterator<Item = u64>) {
        for gfn in gfns {
            let key = self.lookup(as_id, gfn).map(|s| (s.as_id, s.gfn));
            if let Some(spte) = key.and_then(|k| self.sptes.get_mut(&k))
                && spte.writable
            {
                spte.writable = false;
                self.stats.sptes_write_protected += 1;
            }
        }
    }
}

impl Kvm {
    /// The MMU's leaves and counters.
    pub fn mmu(&self) -> &Mmu {
        &self.mmu
    }

    /// The MMU counters.
    pub fn stats(&self) -> &MmuStats {
        &self.mmu.stats
    }

    /// Sets the largest page size the host backs guest memory with (default 2M, THP).
    pub fn set_host_max_level(&mut self, level: PgLevel) {
        self.mmu.host_max_level = level;
    }

    /// Maps `[hva, hva + len)` in the host as `VM_IO | VM_PFNMAP` device memory (a BAR), so
    /// guest frames backed by it are host MMIO (`kvm_is_mmio_pfn()`). As the MMU notifier
    /// would, this zaps leaves that mapped the range before.
    pub fn host_map_mmio(&mut self, hva: u64, len: u64) {
        self.mmu.host_mmio.insert(hva, hva + len);
        self.zap_hva_range(hva, hva + len);
    }

    /// `kvm_vcpu_gfn_to_memslot()`.
    pub fn kvm_vcpu_gfn_to_memslot(&self, vcpu: VcpuId, gfn: u64) -> Option<&KvmMemorySlot> {
        let as_id = self.vcpus.get(&vcpu.0)?.as_id();
        self.gfn_to_memslot(as_id, gfn)
    }

    /// `kvm_mmu_max_mapping_level()` and `kvm_mmu_hugepage_adjust()`: the largest level whose
    /// aligned range lies in the slot with matching host alignment, within the host's page
    /// size; 4K while the slot logs dirty pages.
    pub(crate) fn max_mapping_level(&self, slot: &KvmMemorySlot, gfn: u64) -> PgLevel {
        if slot.dirty_track_enabled() {
            return PgLevel::K4;
        }
        let mut level = self.mmu.host_max_level;
        while let Some(smaller) = level.smaller() {
            let base = level.round(gfn);
            let pages = level.pages();
            let in_slot = base >= slot.base_gfn && base + pages <= slot.end_gfn();
            let host_aligned =
                (slot.base_gfn ^ (slot.userspace_addr >> uapi::PAGE_SHIFT)) & (pages - 1) == 0;
            if in_slot && host_aligned {
                return level;
            }
            level = smaller;
        }
        PgLevel::K4
    }

    /// `kvm_mmu_page_fault()` for an EPT/NPT violation (or a shadow page fault) at `gpa`.
    ///
    /// A gfn in no memslot, or a write to a read-only slot, is emulated MMIO: no leaf. A
    /// fault on an adequate leaf is spurious. A write to a leaf write-protected for dirty
    /// logging makes it writable again (a 4K leaf) or replaces it (a huge one), and logs it.
    pub fn kvm_mmu_page_fault(
        &mut self,
        vcpu: VcpuId,
        gpa: u64,
        write: bool,
    ) -> Result<FaultOutcome, VcpuError> {
        let as_id = self.vcpu_mut(vcpu)?.as_id();
        let gfn = gpa >> uapi::PAGE_SHIFT;
        let Some(slot) = self.gfn_to_memslot(as_id, gfn).cloned() else {
            self.mmu.stats.emulated_mmio += 1;
            return Ok(FaultOutcome::EmulatedMmio);
        };
        if write && slot.is_readonly() {
            self.mmu.stats.emulated_mmio += 1;
            return Ok(FaultOutcome::EmulatedMmio);
        }

        if let Some(existing) = self.mmu.lookup(as_id, gfn).cloned() {
            if !write || existing.writable {
                self.mmu.stats.spurious_faults += 1;
                return Ok(FaultOutcome::Mapped {
                    gfn: existing.gfn,
                    level: existing.level,
                    created: false,
                });
            }
            if existing.level == PgLevel::K4 {
                // fast_page_fault(): restore write access in place.
                if let Some(s) = self.mmu.sptes.get_mut(&(as_id, existing.gfn)) {
                    s.writable = true;
                }
                self.mark_page_dirty_in_as(as_id, gfn);
                self.mmu.stats.faults += 1;
                return Ok(FaultOutcome::Mapped {
                    gfn,
                    level: PgLevel::K4,
                    created: false,
                });
            }
            self.mmu.sptes.remove(&(as_id, existing.gfn));
        }

        let mut level = self.max_mapping_level(&slot, gfn);
        if self.profile.cpu.tdp {
            level = self.kvm_tdp_mtrr_level(vcpu, gfn, level);
        }
        let base = level.round(gfn);
        let hva = slot.gfn_to_hva(base);
        let is_mmio = self.mmu.is_host_mmio(hva);
        let spte = self.make_spte(vcpu, &slot, base, level, is_mmio)?;
        // make_spte() logs a writable leaf at once: with dirty logging every leaf is 4K and
        // writable only if the guest may write it from now on.
        if spte.writable && slot.dirty_track_enabled() {
            self.mark_page_dirty_in_as(as_id, base);
        }
        self.mmu.remove_range(as_id, base, base + level.pages());
        self.mmu.sptes.insert((as_id, base), spte);
        self.mmu.stats.sptes_created += 1;
        self.mmu.stats.faults += 1;
        Ok(FaultOutcome::Mapped {
            gfn: base,
            level,
            created: true,
        })
    }
}

#[cfg(test)]
mod tests;
