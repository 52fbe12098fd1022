//! SVM and shadow paging: the configurations without a memory-type mask.
//!
//! `svm_x86_ops` has no `get_mt_mask` and `shadow_memtype_mask` is 0 on AMD, so `make_spte()`
//! adds no memory-type bits: NPT leaves select host PAT entry 0 (WB on Linux hosts), and the
//! hardware combines the guest's PAT (loaded into the VMCB's `g_pat`) with it and with the
//! host MTRRs — AMD honors guest PAT natively. Guest CR0.CD reaches the hardware only when the
//! `KVM_X86_QUIRK_CD_NW_CLEARED` quirk is disabled (`svm_set_cr0()` clears CD and NW from the
//! hardware CR0 while it is in force).
//!
//! With TDP off (shadow paging, on either vendor) the shadow PTEs are built from the host's
//! view of the page with no memory-type bits, and the hardware walks them with the host's
//! PAT: the guest's PAT entries and MTRRs never reach the hardware, so every guest type of
//! RAM behaves as WB — what was measured on this project's kvm_pvm hosts (system.md §7).

use uapi::quirk::KVM_X86_QUIRK_CD_NW_CLEARED;

use super::vmx::MtMaskBranch;
use crate::kvm::Kvm;
use crate::profile::{KernelProfile, Vendor};
use crate::vcpu::KvmVcpu;

/// The branch recorded for a leaf built without `get_mt_mask`.
pub fn no_mt_mask(profile: &KernelProfile) -> MtMaskBranch {
    if profile.cpu.tdp {
        MtMaskBranch::SvmNpt
    } else {
        MtMaskBranch::ShadowPaging
    }
}

/// Whether guest CR0.CD reaches the hardware CR0: never on VMX
/// (`KVM_VM_CR0_ALWAYS_OFF`), on SVM unless `KVM_X86_QUIRK_CD_NW_CLEARED` is in force.
pub fn guest_cr0_cd_reaches_hardware(kvm: &Kvm, vcpu: &KvmVcpu) -> bool {
    kvm.profile().vendor == Vendor::Amd
        && vcpu.cr0_cd()
        && !kvm.has_quirk(KVM_X86_QUIRK_CD_NW_CLEARED)
}
