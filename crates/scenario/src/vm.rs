//! Setting the VM up as a VMM would, through the modeled kernel's ioctls: one memslot per
//! region in order (registered by [`Registrar`]), one vCPU, and the guest's own setup —
//! IA32_PAT and MTRRs with `KVM_SET_MSRS` (as firmware and the guest kernel leave them), and
//! CR0 with caching enabled.

use kvm_model::vcpu::{X86_CR0_ET, X86_CR0_PE, X86_CR0_PG};
use kvm_model::{KernelProfile, Kvm, VcpuId};
use memtype::mtrr::{MSR_MTRR_DEF_TYPE, MTRR_DEF_TYPE_E};
use memtype::pat::MSR_IA32_CR_PAT;

use crate::error::RunError;
use crate::register::{Registrar, Registration};
use crate::scenario::Scenario;

/// Where the VMM's mappings of guest memory start in its address space.
const HVA_BASE: u64 = 0x7f00_0000_0000;
/// Host mappings keep the guest-physical offset within 1 GiB, so huge pages line up.
const HVA_ALIGN: u64 = 1 << 30;

/// A VM set up for a scenario.
#[derive(Debug)]
pub(crate) struct Vm {
    pub(crate) kvm: Kvm,
    pub(crate) vcpu: VcpuId,
    /// One per noncoherent region, in region order.
    pub(crate) registrations: Vec<Registration>,
}

/// Creates the VM on `profile` and sets it up for `scenario`.
pub(crate) fn build(scenario: &Scenario, profile: KernelProfile) -> Result<Vm, RunError> {
    let name = profile.to_string();
    let mut kvm = Kvm::new(profile);
    let mut registrar = Registrar::new();
    let mut registrations = Vec::new();
    let mut hva_next = HVA_BASE;
    for (slot, region) in (0u32..).zip(&scenario.regions) {
        let hva = hva_next + region.gpa % HVA_ALIGN;
        hva_next = (hva + region.size).next_multiple_of(HVA_ALIGN);
        let registration = registrar
            .create(&mut kvm, slot, hva, region)
            .map_err(|errno| RunError::SetUserMemoryRegion {
                profile: name.clone(),
                region: region.name.clone(),
                errno,
            })?;
        if region.noncoherent {
            registrations.push(registration);
        }
    }

    let vcpu = kvm.create_vcpu(0).map_err(|errno| RunError::Vcpu {
        profile: name.clone(),
        ioctl: "KVM_CREATE_VCPU",
        errno,
    })?;
    // Validation admitted MTRR types only, which all have an encoding.
    let mtrr = u64::from(scenario.vm.guest_mtrr.mtrr_encoding().unwrap_or(0)) | MTRR_DEF_TYPE_E;
    let msrs = [
        (MSR_IA32_CR_PAT, scenario.vm.guest_pat.value()),
        (MSR_MTRR_DEF_TYPE, mtrr),
    ];
    let set = kvm.set_msrs(vcpu, &msrs).map_err(|errno| RunError::Vcpu {
        profile: name.clone(),
        ioctl: "KVM_SET_MSRS",
        errno,
    })?;
    if let Some(&(msr, value)) = msrs.get(set) {
        return Err(RunError::GuestMsr {
            profile: name,
            msr,
            value,
        });
    }
    kvm.set_cr0(vcpu, X86_CR0_PG | X86_CR0_PE | X86_CR0_ET)
        .map_err(|source| RunError::Guest {
            profile: name,
            step: 0,
            source,
        })?;
    Ok(Vm {
        kvm,
        vcpu,
        registrations,
    })
}
