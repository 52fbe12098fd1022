//! Memslots: `struct kvm_memory_slot`, the per-address-space `struct kvm_memslots`, and the
//! gfn → slot lookup.
//!
//! Models `include/linux/kvm_host.h` (`search_memslots()`, `try_get_memslot()`,
//! `____gfn_to_memslot()`, `id_to_memslot()`) and the gfn tree of `virt/kvm/kvm_main.c`: slots
//! are found by id in a map and by gfn in an ordered tree in O(log n), with KVM's
//! `last_used_slot` fast path in front. The update rules live in [`set`], the dirty log in
//! [`dirty`]. Every profile shares this code.

pub mod dirty;
pub mod set;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use uapi::memslot::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA, KVM_MEM_READONLY};

pub use set::{KvmMrChange, UserMemoryRegion};

/// `PAGE_SHIFT`.
const PAGE_SHIFT: u32 = uapi::PAGE_SHIFT;

/// One memslot, `struct kvm_memory_slot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmMemorySlot {
    /// First guest frame.
    pub base_gfn: u64,
    /// Number of 4 KiB pages.
    pub npages: u64,
    /// `KVM_MEM_*` flags as accepted.
    pub flags: u32,
    /// Host virtual address of `base_gfn`.
    pub userspace_addr: u64,
    /// Slot id within the address space.
    pub id: u16,
    /// Address space (0 normal, 1 SMM).
    pub as_id: u16,
    /// One bit per page while `KVM_MEM_LOG_DIRTY_PAGES` is set, as `unsigned long` words.
    pub dirty_bitmap: Option<Vec<u64>>,
}

impl KvmMemorySlot {
    /// One past the last guest frame.
    pub const fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }

    /// Whether `gfn` lies in the slot.
    pub const fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn < self.end_gfn()
    }

    /// `__gfn_to_hva_memslot()`: the host virtual address backing `gfn`.
    pub const fn gfn_to_hva(&self, gfn: u64) -> u64 {
        self.userspace_addr + ((gfn - self.base_gfn) << PAGE_SHIFT)
    }

    /// `kvm_slot_dirty_track_enabled()` for the bitmap flavor.
    pub const fn dirty_track_enabled(&self) -> bool {
        self.flags & KVM_MEM_LOG_DIRTY_PAGES != 0
    }

    /// Whether guest writes must exit to userspace (`KVM_MEM_READONLY`).
    pub const fn is_readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }

    /// `kvm_memslot_has_non_coherent_dma()` (memslot-flag proposal, patch 3/4).
    pub const fn has_non_coherent_dma(&self) -> bool {
        self.flags & KVM_MEM_NON_COHERENT_DMA != 0
    }

    /// `mark_page_dirty_in_slot()`: sets `gfn`'s bit if the slot has a dirty bitmap.
    pub fn mark_page_dirty(&mut self, gfn: u64) {
        if let Some(bitmap) = self.dirty_bitmap.as_mut() {
            let rel = gfn - self.base_gfn;
            bitmap[(rel / 64) as usize] |= 1 << (rel % 64);
        }
    }

    /// `kvm_dirty_bitmap_bytes()` / 8: the bitmap's length in 64-bit words.
    pub const fn dirty_bitmap_words(&self) -> usize {
        self.npages.div_ceil(64) as usize
    }
}

/// `last_used_slot` holds this when no slot was used yet (KVM's NULL pointer).
const NO_SLOT: u32 = u32::MAX;

/// The memslots of one address space, `struct kvm_memslots`.
#[derive(Debug, Default)]
pub struct KvmMemslots {
    /// `id_hash`: slots by id. Ids are below `KVM_USER_MEM_SLOTS`, so a table indexed by id
    /// gives the hash table's O(1) without hashing; it grows to the largest id used.
    by_id: Vec<Option<KvmMemorySlot>>,
    /// Number of `Some` entries in `by_id`.
    nr_slots: usize,
    /// `gfn_tree`: slot ids by base gfn. Slots never overlap, so the slot holding a gfn is
    /// the one with the greatest base at or below it, if it reaches that far.
    gfn_tree: BTreeMap<u64, u16>,
    /// `last_used_slot`: the id of the slot the last successful lookup returned. Atomic, as
    /// lookups run under `srcu` without the slots lock.
    last_used_slot: AtomicU32,
    /// Bumped by every committed change (`kvm_swap_active_memslots()`).
    generation: u64,
}

impl Clone for KvmMemslots {
    fn clone(&self) -> KvmMemslots {
        KvmMemslots {
            by_id: self.by_id.clone(),
            nr_slots: self.nr_slots,
            gfn_tree: self.gfn_tree.clone(),
            last_used_slot: AtomicU32::new(self.last_used_slot.load(Ordering::Relaxed)),
            generation: self.generation,
        }
    }
}

impl KvmMemslots {
    /// An empty address space.
    pub fn new() -> KvmMemslots {
        KvmMemslots {
            last_used_slot: AtomicU32::new(NO_SLOT),
            ..KvmMemslots::default()
        }
    }

    /// `id_to_memslot()`.
    pub fn id_to_memslot(&self, id: u16) -> Option<&KvmMemorySlot> {
        self.by_id.get(usize::from(id))?.as_ref()
    }

    /// `search_memslots(slots, gfn, false)`: the gfn-tree walk, O(log n).
    pub fn search_memslots(&self, gfn: u64) -> Option<&KvmMemorySlot> {
        let (_, id) = self.gfn_tree.range(..=gfn).next_back()?;
        self.id_to_memslot(*id).filter(|s| s.contains(gfn))
    }

    /// `____gfn_to_memslot(slots, gfn, false)`: `last_used_slot` first (`try_get_memslot()`),
    /// then the tree; a hit becomes the new `last_used_slot`.
    pub fn __gfn_to_memslot(&self, gfn: u64) -> Option<&KvmMemorySlot> {
        let last = self.last_used_slot.load(Ordering::Relaxed);
        if last != NO_SLOT {
            let cached = u16::try_from(last)
                .ok()
                .and_then(|id| self.id_to_memslot(id));
            if let Some(slot) = cached.filter(|s| s.contains(gfn)) {
                return Some(slot);
            }
        }
        let slot = self.search_memslots(gfn)?;
        self.last_used_slot
            .store(u32::from(slot.id), Ordering::Relaxed);
        Some(slot)
    }

    /// The id `last_used_slot` points at, if any.
    pub fn last_used_slot(&self) -> Option<u16> {
        u16::try_from(self.last_used_slot.load(Ordering::Relaxed)).ok()
    }

    /// `kvm_check_memslot_overlap()`: whether a slot other than `id` intersects
    /// `[start, end)`.
    pub fn overlaps(&self, id: u16, start: u64, end: u64) -> bool {
        // Slots are disjoint, so only the nearest slot starting below `start` can reach it.
        let below = self.gfn_tree.range(..start).next_back();
        let below_hits = below.is_some_and(|(_, sid)| {
            *sid != id
                && self
                    .id_to_memslot(*sid)
                    .is_some_and(|s| s.end_gfn() > start)
        });
        below_hits || self.gfn_tree.range(start..end).any(|(_, sid)| *sid != id)
    }

    /// The slots in guest-physical order.
    pub fn iter(&self) -> impl Iterator<Item = &KvmMemorySlot> {
        self.gfn_tree
            .values()
            .filter_map(|id| self.id_to_memslot(*id))
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.nr_slots
    }

    /// Whether the address space has no slot.
    pub fn is_empty(&self) -> bool {
        self.nr_slots == 0
    }

    /// The generation, bumped by each committed change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Mutable access by id, for the dirty log.
    pub(crate) fn id_to_memslot_mut(&mut self, id: u16) -> Option<&mut KvmMemorySlot> {
        self.by_id.get_mut(usize::from(id))?.as_mut()
    }

    /// `kvm_replace_memslot()` + `kvm_swap_active_memslots()`: drops `old_id` (if any) and
    /// installs `new` (if any), keeping both indexes in step.
    pub(crate) fn replace(&mut self, old_id: Option<u16>, new: Option<KvmMemorySlot>) {
        let old = old_id.and_then(|id| self.by_id.get_mut(usize::from(id))?.take());
        if let Some(old) = old {
            self.nr_slots -= 1;
            self.gfn_tree.remove(&old.base_gfn);
            if self.last_used_slot() == Some(old.id) {
                self.last_used_slot.store(NO_SLOT, Ordering::Relaxed);
            }
        }
        if let Some(new) = new {
            self.gfn_tree.insert(new.base_gfn, new.id);
            let index = usize::from(new.id);
            if self.by_id.len() <= index {
                self.by_id.resize_with(index + 1, || None);
            }
            if self.by_id[index].replace(new).is_none() {
                self.nr_slots += 1;
            }
        }
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u16, base_gfn: u64, npages: u64) -> KvmMemorySlot {
        KvmMemorySlot {
            base_gfn,
            npages,
            flags: 0,
            userspace_addr: 0x7000_0000_0000 + (base_gfn << 12),
            id,
            as_id: 0,
            dirty_bitmap: None,
        }
    }

    #[test]
    fn lookup_by_gfn_and_last_used_slot() {
        let mut slots = KvmMemslots::new();
        slots.replace(None, Some(slot(3, 0x100, 0x10)));
        slots.replace(None, Some(slot(1, 0x0, 0x10)));
        slots.replace(None, Some(slot(2, 0x1000, 1)));
        assert_eq!(slots.last_used_slot(), None);
        assert_eq!(slots.__gfn_to_memslot(0x105).map(|s| s.id), Some(3));
        assert_eq!(slots.last_used_slot(), Some(3));
        assert_eq!(slots.__gfn_to_memslot(0x10f).map(|s| s.id), Some(3));
        assert!(slots.__gfn_to_memslot(0x110).is_none());
        assert_eq!(slots.last_used_slot(), Some(3), "a miss keeps the cache");
        assert_eq!(slots.__gfn_to_memslot(0).map(|s| s.id), Some(1));
        assert_eq!(slots.__gfn_to_memslot(0x1000).map(|s| s.id), Some(2));
        assert!(slots.search_memslots(0x1001).is_none());
        assert_eq!(
            slots.iter().map(|s| s.id).collect::<Vec<_>>(),
            vec![1, 3, 2]
        );
        slots.replace(Some(2), None);
        assert_eq!(
            slots.last_used_slot(),
            None,
            "deleting the cached slot clears the cache"
        );
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.generation(), 4);
    }

    #[test]
    fn overlap_ignores_the_slot_itself() {
        let mut slots = KvmMemslots::new();
        slots.replace(None, Some(slot(0, 0x10, 0x10)));
        slots.replace(None, Some(slot(1, 0x40, 0x10)));
        assert!(slots.overlaps(5, 0x1f, 0x20));
        assert!(!slots.overlaps(5, 0x20, 0x40));
        assert!(slots.overlaps(5, 0x0, 0x11));
        assert!(
            !slots.overlaps(0, 0x18, 0x30),
            "a slot may move over its own range"
        );
        assert!(slots.overlaps(0, 0x30, 0x41));
        assert!(!slots.overlaps(9, 0x50, 0x60));
    }

    #[test]
    fn dirty_bits() {
        let mut s = slot(0, 0x100, 65);
        s.dirty_bitmap = Some(vec![0; s.dirty_bitmap_words()]);
        s.mark_page_dirty(0x100);
        s.mark_page_dirty(0x140);
        assert_eq!(s.dirty_bitmap, Some(vec![1, 1]));
        assert_eq!(s.gfn_to_hva(0x101), s.userspace_addr + 0x1000);
    }
}
