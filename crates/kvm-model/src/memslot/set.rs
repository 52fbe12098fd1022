//! `KVM_SET_USER_MEMORY_REGION{,2}`: every rule, in the kernel's order, errno for errno.
//!
//! Models `kvm_vm_ioctl()` (the v1 flag mask), `kvm_vm_ioctl_set_memory_region()`,
//! `check_memory_region_flags()`, `__kvm_set_memory_region()` and `kvm_set_memslot()` of
//! `virt/kvm/kvm_main.c`, plus the x86 `kvm_arch_prepare_memory_region()` (the
//! `kvm_mmu_max_gfn()` bound) and `kvm_mmu_slot_apply_flags()`. The memslot-flag proposal
//! (patch 1/4) adds `KVM_MEM_NON_COHERENT_DMA` to the valid flags of both ioctls and makes it,
//! like `KVM_MEM_READONLY`, impossible to toggle on an existing slot.
//!
//! Differences by era: 6.7 has no v2 ioctl, no v1-only mask and no guest_memfd; 6.8–6.15
//! accept `KVM_MEM_GUEST_MEMFD` only for VM types with private memory (never the default
//! VM); the 6.16 era (as measured on 6.18) accepts it for every VM and then binds the fd,
//! unless the kernel was built without guest_memfd (`KernelProfile::guest_memfd`).
//! `access_ok()` is bounded by `TASK_SIZE_MAX` from 6.12 on, by bit 63 before.

use uapi::Errno;
use uapi::memslot::{
    KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA, KVM_MEM_READONLY,
    KVM_USER_MEM_SLOTS_X86, SlotId, kvm_userspace_memory_region, kvm_userspace_memory_region2,
};

use super::KvmMemorySlot;
use crate::cap::KVM_DIRTY_LOG_INITIALLY_SET;
use crate::kvm::Kvm;
use crate::mmu::ZapReason;
use crate::profile::{Era, Proposal};

/// `PAGE_SIZE`.
const PAGE_SIZE: u64 = uapi::PAGE_SIZE;
/// `TASK_SIZE_MAX` on x86-64 with 4-level paging: the end of user space.
pub const TASK_SIZE_MAX: u64 = 0x7fff_ffff_f000;
/// `KVM_MEM_MAX_NR_PAGES`: a slot's page count must fit in 31 bits.
pub const KVM_MEM_MAX_NR_PAGES: u64 = (1 << 31) - 1;
/// `KVM_MEM_SLOTS_NUM` (`SHRT_MAX`): user slots plus KVM's internal ones.
pub const KVM_MEM_SLOTS_NUM: u16 = 32767;

/// The common content of both region structs (`struct kvm_userspace_memory_region2` without
/// its padding, which the kernel never reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UserMemoryRegion {
    /// `as_id << 16 | id`.
    pub slot: u32,
    /// `KVM_MEM_*`.
    pub flags: u32,
    /// Guest physical address of the first byte.
    pub guest_phys_addr: u64,
    /// Size in bytes; 0 deletes.
    pub memory_size: u64,
    /// Host virtual address of the first byte.
    pub userspace_addr: u64,
    /// Offset into the guest_memfd (v2 only).
    pub guest_memfd_offset: u64,
    /// The guest_memfd fd (v2 only).
    pub guest_memfd: u32,
}

impl UserMemoryRegion {
    /// From the v1 struct: the kernel zeroes the v2-only fields before copying v1 in.
    pub fn from_v1(m: &kvm_userspace_memory_region) -> UserMemoryRegion {
        UserMemoryRegion {
            slot: m.slot,
            flags: m.flags,
            guest_phys_addr: m.guest_phys_addr,
            memory_size: m.memory_size,
            userspace_addr: m.userspace_addr,
            ..UserMemoryRegion::default()
        }
    }

    /// From the v2 struct.
    pub fn from_v2(m: &kvm_userspace_memory_region2) -> UserMemoryRegion {
        UserMemoryRegion {
            slot: m.slot,
            flags: m.flags,
            guest_phys_addr: m.guest_phys_addr,
            memory_size: m.memory_size,
            userspace_addr: m.userspace_addr,
            guest_memfd_offset: m.guest_memfd_offset,
            guest_memfd: m.guest_memfd,
        }
    }
}

/// `enum kvm_mr_change`: what a region call does to its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvmMrChange {
    /// A new slot id.
    Create,
    /// Size 0 on an existing slot.
    Delete,
    /// An existing slot at a new base gfn.
    Move,
    /// An existing slot with new flags (only `KVM_MEM_LOG_DIRTY_PAGES` may change).
    FlagsOnly,
}

impl Kvm {
    /// Flags that can never change on an existing slot: `READONLY`, and the proposal's flag.
    fn immutable_slot_flags(&self) -> u32 {
        match self.profile.proposal {
            Proposal::MemslotFlag => KVM_MEM_READONLY | KVM_MEM_NON_COHERENT_DMA,
            _ => KVM_MEM_READONLY,
        }
    }

    /// The proposal's flag where it is applied, else nothing.
    fn proposal_flag(&self) -> u32 {
        match self.profile.proposal {
            Proposal::MemslotFlag => KVM_MEM_NON_COHERENT_DMA,
            _ => 0,
        }
    }

    /// `KVM_SET_USER_MEMORY_REGION_V1_FLAGS` (6.8+): flags that touch no v2-only field.
    fn v1_flags(&self) -> u32 {
        KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | self.proposal_flag()
    }

    /// `kvm_vm_ioctl()` and `kvm_vm_ioctl_set_memory_region()`: the checks made before
    /// `__kvm_set_memory_region()`.
    pub(crate) fn kvm_vm_ioctl_set_memory_region(
        &mut self,
        mem: &UserMemoryRegion,
        v2: bool,
    ) -> Result<(), Errno> {
        if !v2 && self.profile.era.has_user_memory2() && mem.flags & !self.v1_flags() != 0 {
            return Err(Errno::EINVAL);
        }
        if u32::from(SlotId::from_raw(mem.slot).id) >= KVM_USER_MEM_SLOTS_X86 {
            return Err(Errno::EINVAL);
        }
        self.__kvm_set_memory_region(mem)
    }

    /// `check_memory_region_flags()`.
    fn check_memory_region_flags(&self, mem: &UserMemoryRegion) -> Result<(), Errno> {
        let gmem = mem.flags & KVM_MEM_GUEST_MEMFD != 0;
        let mut valid = KVM_MEM_LOG_DIRTY_PAGES | self.proposal_flag();
        match self.profile.era {
            Era::V6_7 => valid |= KVM_MEM_READONLY,
            // kvm_arch_has_private_mem() is false for the default VM type.
            Era::V6_11SelfSnoop | Era::V6_12 => valid |= KVM_MEM_READONLY,
            Era::V6_16 => {
                // `kvm_arch_supports_gmem()`: every VM type, in a kernel built with it.
                if self.profile.guest_memfd {
                    valid |= KVM_MEM_GUEST_MEMFD;
                }
                // Dirty logging of private memory is unsupported, and writes to read-only
                // slots are emulated MMIO, which private memory cannot have.
                if gmem {
                    valid &= !KVM_MEM_LOG_DIRTY_PAGES;
                } else {
                    valid |= KVM_MEM_READONLY;
                }
            }
        }
        if mem.flags & !valid != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `access_ok(userspace_addr, memory_size)` on x86-64 for the era.
    fn access_ok(&self, addr: u64, size: u64) -> bool {
        if self.profile.era.access_ok_bounded_by_task_size() {
            addr.checked_add(size)
                .is_some_and(|end| end <= TASK_SIZE_MAX)
        } else {
            // valid_user_address(sum) is "(long)sum >= 0", plus the wrap check.
            let end = addr.wrapping_add(size);
            end >= addr && end < 1 << 63
        }
    }

    /// `kvm_arch_nr_memslot_as_ids()`.
    fn nr_memslot_as_ids(&self) -> u16 {
        self.profile.address_spaces()
    }

    /// `__kvm_set_memory_region()`.
    fn __kvm_set_memory_region(&mut self, mem: &UserMemoryRegion) -> Result<(), Errno> {
        self.check_memory_region_flags(mem)?;
        let SlotId { as_id, id } = SlotId::from_raw(mem.slot);

        // General sanity checks.
        if mem.memory_size & (PAGE_SIZE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if mem.guest_phys_addr & (PAGE_SIZE - 1) != 0 {
            return Err(Errno::EINVAL);
        }
        if mem.userspace_addr & (PAGE_SIZE - 1) != 0
            || !self.access_ok(mem.userspace_addr, mem.memory_size)
        {
            return Err(Errno::EINVAL);
        }
        if mem.flags & KVM_MEM_GUEST_MEMFD != 0
            && (mem.guest_memfd_offset & (PAGE_SIZE - 1) != 0
                || mem
                    .guest_memfd_offset
                    .checked_add(mem.memory_size)
                    .is_none())
        {
            return Err(Errno::EINVAL);
        }
        if as_id >= self.nr_memslot_as_ids() || id >= KVM_MEM_SLOTS_NUM {
            return Err(Errno::EINVAL);
        }
        if mem.guest_phys_addr.checked_add(mem.memory_size).is_none() {
            return Err(Errno::EINVAL);
        }
        if mem.memory_size >> uapi::PAGE_SHIFT > KVM_MEM_MAX_NR_PAGES {
            return Err(Errno::EINVAL);
        }

        let old = self.memslots[usize::from(as_id)].id_to_memslot(id).cloned();

        if mem.memory_size == 0 {
            let old = old.ok_or(Errno::EINVAL)?;
            return self.kvm_set_memslot(Some(old), None, KvmMrChange::Delete);
        }

        let base_gfn = mem.guest_phys_addr >> uapi::PAGE_SHIFT;
        let npages = mem.memory_size >> uapi::PAGE_SHIFT;

        let change = match &old {
            None => {
                // The pages of all slots together must fit in an unsigned long.
                if self.nr_memslot_pages.checked_add(npages).is_none() {
                    return Err(Errno::EINVAL);
                }
                KvmMrChange::Create
            }
            Some(old) => {
                // guest_memfd slots are immutable: they can only be deleted.
                if mem.flags & KVM_MEM_GUEST_MEMFD != 0 {
                    return Err(Errno::EINVAL);
                }
                if mem.userspace_addr != old.userspace_addr
                    || npages != old.npages
                    || (mem.flags ^ old.flags) & self.immutable_slot_flags() != 0
                {
                    return Err(Errno::EINVAL);
                }
                if base_gfn != old.base_gfn {
                    KvmMrChange::Move
                } else if mem.flags != old.flags {
                    KvmMrChange::FlagsOnly
                } else {
                    return Ok(());
                }
            }
        };

        if matches!(change, KvmMrChange::Create | KvmMrChange::Move)
            && self.memslots[usize::from(as_id)].overlaps(id, base_gfn, base_gfn + npages)
        {
            return Err(Errno::EEXIST);
        }

        if mem.flags & KVM_MEM_GUEST_MEMFD != 0 {
            return Err(kvm_gmem_bind(mem.guest_memfd));
        }

        let new = KvmMemorySlot {
            base_gfn,
            npages,
            flags: mem.flags,
            userspace_addr: mem.userspace_addr,
            id,
            as_id,
            dirty_bitmap: None,
        };
        self.kvm_set_memslot(old, Some(new), change)
    }

    /// `kvm_mmu_max_gfn()`: the host MAXPHYADDR bounds guest frames under TDP; shadow paging
    /// allows 52 bits.
    pub(crate) fn kvm_mmu_max_gfn(&self) -> u64 {
        let bits = if self.profile.cpu.tdp {
            u32::from(self.profile.host_phys_bits())
        } else {
            52
        };
        (1u64 << (bits - uapi::PAGE_SHIFT)) - 1
    }

    /// `kvm_set_memslot()`: invalidate (and zap) the old slot for DELETE/MOVE, prepare the
    /// new one (dirty bitmap, `kvm_arch_prepare_memory_region()`), commit, apply flags.
    pub(crate) fn kvm_set_memslot(
        &mut self,
        old: Option<KvmMemorySlot>,
        mut new: Option<KvmMemorySlot>,
        change: KvmMrChange,
    ) -> Result<(), Errno> {
        if let (KvmMrChange::Delete | KvmMrChange::Move, Some(old)) = (change, &old) {
            // kvm_invalidate_memslot(): the zap happens before prepare can still fail.
            let reason = match change {
                KvmMrChange::Delete => ZapReason::MemslotDelete,
                _ => ZapReason::MemslotMove,
            };
            self.kvm_arch_flush_shadow_memslot(old, reason);
        }

        if let Some(new) = new.as_mut() {
            self.kvm_prepare_dirty_bitmap(old.as_ref(), new);
            if matches!(change, KvmMrChange::Create | KvmMrChange::Move)
                && new.end_gfn() - 1 > self.kvm_mmu_max_gfn()
            {
                return Err(Errno::EINVAL);
            }
        }

        match change {
            KvmMrChange::Create => self.nr_memslot_pages += new.as_ref().map_or(0, |s| s.npages),
            KvmMrChange::Delete => self.nr_memslot_pages -= old.as_ref().map_or(0, |s| s.npages),
            KvmMrChange::Move | KvmMrChange::FlagsOnly => {}
        }
        let as_id = old.as_ref().or(new.as_ref()).map_or(0, |s| s.as_id);
        let applied = new.clone();
        self.memslots[usize::from(as_id)].replace(old.as_ref().map(|s| s.id), new);

        if let (KvmMrChange::FlagsOnly, Some(old), Some(new)) = (change, &old, &applied) {
            self.kvm_mmu_slot_apply_flags(old, new);
        }
        Ok(())
    }

    /// The dirty-bitmap half of `kvm_prepare_memory_region()`: none without
    /// `LOG_DIRTY_PAGES`, the old one kept when logging stays on, else a fresh one (all ones
    /// with `KVM_DIRTY_LOG_INITIALLY_SET`).
    fn kvm_prepare_dirty_bitmap(&self, old: Option<&KvmMemorySlot>, new: &mut KvmMemorySlot) {
        new.dirty_bitmap = if !new.dirty_track_enabled() {
            None
        } else if let Some(bitmap) = old.and_then(|o| o.dirty_bitmap.clone()) {
            Some(bitmap)
        } else {
            let fill = if self.manual_dirty_log_protect & KVM_DIRTY_LOG_INITIALLY_SET != 0 {
                u64::MAX
            } else {
                0
            };
            let mut bitmap = vec![fill; new.dirty_bitmap_words()];
            if fill != 0 && !new.npages.is_multiple_of(64) {
                // bitmap_set() sets exactly npages bits.
                if let Some(last) = bitmap.last_mut() {
                    *last = (1 << (new.npages % 64)) - 1;
                }
            }
            Some(bitmap)
        };
    }

    /// `kvm_mmu_slot_apply_flags()` for FLAGS_ONLY, where only dirty logging can have changed:
    /// turning it off lets huge pages come back (`kvm_mmu_zap_collapsible_sptes()`), turning
    /// it on write-protects the slot so every write is seen. Read-only slots need neither.
    fn kvm_mmu_slot_apply_flags(&mut self, old: &KvmMemorySlot, new: &KvmMemorySlot) {
        if new.is_readonly() || (old.flags ^ new.flags) & KVM_MEM_LOG_DIRTY_PAGES == 0 {
            return;
        }
        if new.dirty_track_enabled() {
            self.mmu.write_protect_slot(new);
        } else {
            self.kvm_mmu_zap_collapsible_sptes(new);
        }
    }
}

/// `kvm_gmem_bind()`: the model has no guest_memfd files, so binding always fails the way
/// the kernel's `fget()` + file check does: the standard streams (0–2) are open files that
/// are not guest_memfd (`EINVAL`), any other number is taken to be closed (`EBADF`).
fn kvm_gmem_bind(fd: u32) -> Errno {
    if fd <= 2 { Errno::EINVAL } else { Errno::EBADF }
}

#[cfg(test)]
mod tests;
