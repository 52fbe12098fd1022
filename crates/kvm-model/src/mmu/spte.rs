//! Leaf SPTEs and `make_spte()` (`arch/x86/kvm/mmu/spte.c`).
//!
//! `make_spte()` is the only caller of the vendor's `get_mt_mask`, and it already holds the
//! memslot — which is why the memslot-flag proposal (patch 2/4) could pass the slot down at no
//! cost. On VMX with EPT the memory-type bits come from [`super::vmx::vmx_get_mt_mask`]; SVM
//! and shadow paging have no memory-type mask (`shadow_memtype_mask == 0`), see [`super::svm`].

use memtype::EptLeaf;

use super::PgLevel;
use super::svm;
use super::vmx::{MtMaskBranch, vmx_get_mt_mask};
use crate::error::VcpuError;
use crate::kvm::{Kvm, VcpuId};
use crate::memslot::KvmMemorySlot;

/// One leaf: what the guest frame range maps to and with which memory-type bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spte {
    /// Address space of the mapping.
    pub as_id: u16,
    /// First gfn mapped (aligned to `level`).
    pub gfn: u64,
    /// Mapping size.
    pub level: PgLevel,
    /// Host virtual address of `gfn`: stands for the pfn.
    pub hva: u64,
    /// The EPT memory type and IPAT bits (bits 6:3), where the leaf is an EPT leaf.
    pub ept: Option<EptLeaf>,
    /// Which `get_mt_mask` decision (or its absence) produced the bits.
    pub branch: MtMaskBranch,
    /// `kvm_is_mmio_pfn()` was true for the backing page.
    pub host_mmio: bool,
    /// Guest writes go through without a fault.
    pub writable: bool,
    /// The memslot the leaf was built from.
    pub slot_id: u16,
    /// That memslot's flags at the time.
    pub slot_flags: u32,
}

impl Spte {
    /// One past the last gfn mapped.
    pub const fn end_gfn(&self) -> u64 {
        self.gfn + self.level.pages()
    }
}

impl Kvm {
    /// `make_spte()`: builds the leaf for `gfn` at `level` from `slot`. Public so a benchmark
    /// can time the memory-type decision itself on flagged and unflagged slots.
    pub fn make_spte(
        &mut self,
        vcpu: VcpuId,
        slot: &KvmMemorySlot,
        gfn: u64,
        level: PgLevel,
        is_mmio: bool,
    ) -> Result<Spte, VcpuError> {
        let v = self
            .vcpus
            .get(&vcpu.0)
            .ok_or(VcpuError::NoSuchVcpu(vcpu.0))?;
        let (ept, branch) = if self.profile.has_ept_memtype() {
            let branch = vmx_get_mt_mask(self, v, gfn, is_mmio, slot);
            self.mmu.stats.mt_mask_calls += 1;
            (Some(branch.ept_leaf()), branch)
        } else {
            (None, svm::no_mt_mask(&self.profile))
        };
        Ok(Spte {
            as_id: slot.as_id,
            gfn,
            level,
            hva: slot.gfn_to_hva(gfn),
            ept,
            branch,
            host_mmio: is_mmio,
            writable: !slot.is_readonly(),
            slot_id: slot.id,
            slot_flags: slot.flags,
        })
    }
}
