//! The effective memory type of a guest access: the leaf's bits (or their absence) combined
//! with the guest's PAT by the rules of the vendor's hardware (`memtype::combine`).
//!
//! - VMX with EPT: `intel_ept(leaf, guest PAT type)`; guest CR0.CD never reaches the hardware
//!   on VMX (`KVM_VM_CR0_ALWAYS_OFF`), its only effect is 6.7's choice of EPT type.
//! - SVM with NPT: `amd_npt(guest PAT type, host PAT WB, host MTRR)`; the host MTRR is WB for
//!   RAM and UC for a device BAR (the firmware's usual setting).
//! - Shadow paging: the host's attributes alone (host PAT entry 0 = WB with the host MTRR):
//!   the guest's memory types are not honored.

use memtype::combine::{Decision, amd_bare_metal, amd_npt, intel_bare_metal, intel_ept};
use memtype::{EptLeaf, MemType};

use super::svm::guest_cr0_cd_reaches_hardware;
use super::vmx::MtMaskBranch;
use super::{FaultOutcome, PgLevel, Spte};
use crate::error::VcpuError;
use crate::kvm::{Kvm, VcpuId};
use crate::profile::Vendor;

/// One guest access's memory type, and how it came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The guest PAT entry the access selected.
    pub guest_pat: MemType,
    /// The type the access is performed with.
    pub effective: MemType,
    /// The EPT leaf's type and IPAT bit (VMX with EPT only).
    pub ept: Option<EptLeaf>,
    /// Whether the guest's PAT type takes part in the result.
    pub honors_guest_pat: bool,
    /// The `get_mt_mask` decision behind the leaf.
    pub branch: MtMaskBranch,
    /// The hardware combination and its table cell.
    pub decision: Decision,
    /// Size of the leaf that maps the access.
    pub level: PgLevel,
}

impl Access {
    /// The EPT leaf's IPAT bit, where there is an EPT leaf.
    pub fn ipat(&self) -> Option<bool> {
        self.ept.map(|leaf| leaf.ipat)
    }

    /// The EPT leaf's memory type, where there is an EPT leaf.
    pub fn ept_memtype(&self) -> Option<MemType> {
        self.ept.and_then(|leaf| leaf.mem_type().ok())
    }

    /// The path from the leaf to the effective type:
    /// `make_spte → <branch>; guest PAT <type>: <hardware rule and cell> → <effective>`.
    pub fn reason(&self) -> String {
        format!(
            "make_spte → {}; guest PAT {}: {} → {}",
            self.branch, self.guest_pat, self.decision.reason, self.effective
        )
    }
}

impl Kvm {
    /// The effective memory type of a guest access to `gpa` through guest PAT entry
    /// `pat_index` (0..=7, `4·PAT + 2·PCD + PWT`), faulting the page in first if no leaf maps
    /// it. `EmulatedMmio` when `gpa` is in no memslot.
    pub fn guest_memtype(
        &mut self,
        vcpu: VcpuId,
        gpa: u64,
        pat_index: u8,
    ) -> Result<Access, VcpuError> {
        let as_id = self.vcpu_mut(vcpu)?.as_id();
        let gfn = gpa >> uapi::PAGE_SHIFT;
        let spte = match self.mmu.lookup(as_id, gfn) {
            Some(spte) => *spte,
            None => match self.kvm_mmu_page_fault(vcpu, gpa, false)? {
                FaultOutcome::EmulatedMmio => return Err(VcpuError::EmulatedMmio { gpa }),
                FaultOutcome::Mapped { gfn, .. } => *self
                    .mmu
                    .lookup(as_id, gfn)
                    .ok_or(VcpuError::EmulatedMmio { gpa })?,
            },
        };
        self.access_through(vcpu, &spte, pat_index)
    }

    /// Combines a leaf with the vCPU's PAT entry `pat_index`.
    fn access_through(
        &self,
        vcpu: VcpuId,
        spte: &Spte,
        pat_index: u8,
    ) -> Result<Access, VcpuError> {
        let v = self
            .vcpus
            .get(&vcpu.0)
            .ok_or(VcpuError::NoSuchVcpu(vcpu.0))?;
        let guest_pat = v.pat().entry(pat_index);
        let host_mtrr = if spte.host_mmio {
            MemType::Uc
        } else {
            MemType::Wb
        };
        let cd = guest_cr0_cd_reaches_hardware(self, v);
        let (decision, honors_guest_pat) = match (spte.ept, self.profile.vendor) {
            (Some(leaf), _) => (intel_ept(leaf, guest_pat, false)?, !leaf.ipat),
            (None, Vendor::Amd) if self.profile.cpu.tdp => {
                (amd_npt(guest_pat, MemType::Wb, host_mtrr, cd)?, true)
            }
            (None, Vendor::Amd) => (amd_bare_metal(host_mtrr, MemType::Wb, cd)?, false),
            (None, Vendor::Intel) => (intel_bare_metal(host_mtrr, MemType::Wb, false)?, false),
        };
        Ok(Access {
            guest_pat,
            effective: decision.effective,
            ept: spte.ept,
            honors_guest_pat,
            branch: spte.branch,
            decision,
            level: spte.level,
        })
    }
}
