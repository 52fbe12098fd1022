//! The dirty log: `KVM_GET_DIRTY_LOG` and marking pages dirty.
//!
//! Models `kvm_get_dirty_log_protect()` and `mark_page_dirty_in_slot()` of
//! `virt/kvm/kvm_main.c` (x86 selects `KVM_GENERIC_DIRTYLOG_READ_PROTECT`). Without manual
//! protection the bitmap is handed out and cleared in one step, and the pages it named are
//! write-protected again so their next write is logged. Same in every profile.

use uapi::Errno;
use uapi::memslot::{KVM_USER_MEM_SLOTS_X86, SlotId};

use crate::cap::KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
use crate::kvm::{Kvm, VcpuId};

impl Kvm {
    /// `KVM_GET_DIRTY_LOG`: the slot's bitmap as 64-bit words (`ALIGN(npages, 64) / 64`).
    /// `EINVAL` for an address space the VM lacks or an id ≥ `KVM_USER_MEM_SLOTS`; `ENOENT`
    /// for a missing slot or one without `KVM_MEM_LOG_DIRTY_PAGES` (no bitmap). The
    /// kernel's `EFAULT` for a bad user buffer has no counterpart: the model returns the
    /// bitmap.
    pub fn get_dirty_log(&mut self, slot: u32) -> Result<Vec<u64>, Errno> {
        let SlotId { as_id, id } = SlotId::from_raw(slot);
        if as_id >= self.profile.address_spaces() || u32::from(id) >= KVM_USER_MEM_SLOTS_X86 {
            return Err(Errno::EINVAL);
        }
        let manual = self.manual_dirty_log_protect & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE != 0;
        let memslot = self.memslots[usize::from(as_id)]
            .id_to_memslot_mut(id)
            .ok_or(Errno::ENOENT)?;
        let base_gfn = memslot.base_gfn;
        let bitmap = memslot.dirty_bitmap.as_mut().ok_or(Errno::ENOENT)?;
        if manual {
            return Ok(bitmap.clone());
        }
        let taken = std::mem::replace(bitmap, vec![0; bitmap.len()]);
        // kvm_arch_mmu_enable_log_dirty_pt_masked(): re-arm write tracking for what was read.
        let dirty_gfns = taken.iter().enumerate().flat_map(|(word, bits)| {
            (0..64)
                .filter(move |bit| bits & (1 << bit) != 0)
                .map(move |bit| base_gfn + word as u64 * 64 + bit)
        });
        self.mmu.write_protect_gfns(as_id, dirty_gfns);
        Ok(taken)
    }

    /// `mark_page_dirty()`: a write to `gfn` of address space 0 by something other than a
    /// vCPU's page walk (device emulation, the guest workload interpreter). No-op outside a
    /// slot or in a slot without dirty logging.
    pub fn mark_page_dirty(&mut self, gfn: u64) {
        self.mark_page_dirty_in_as(0, gfn);
    }

    /// `kvm_vcpu_mark_page_dirty()`: as [`Kvm::mark_page_dirty`], in the vCPU's address space.
    pub fn kvm_vcpu_mark_page_dirty(&mut self, vcpu: VcpuId, gfn: u64) {
        let as_id = self.vcpus.get(&vcpu.0).map_or(0, |v| v.as_id());
        self.mark_page_dirty_in_as(as_id, gfn);
    }

    pub(crate) fn mark_page_dirty_in_as(&mut self, as_id: u16, gfn: u64) {
        let Some(slots) = self.memslots.get_mut(usize::from(as_id)) else {
            return;
        };
        let Some(id) = slots.__gfn_to_memslot(gfn).map(|s| s.id) else {
            return;
        };
        if let Some(slot) = slots.id_to_memslot_mut(id) {
            slot.mark_page_dirty(gfn);
        }
    }
}
