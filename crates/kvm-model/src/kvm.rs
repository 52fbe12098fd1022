//! `struct kvm`: one VM of the modeled kernel, and its VM-fd ioctls.
//!
//! The state lives here; each ioctl is implemented beside the kernel code it models
//! (`memslot::set`, `memslot::dirty`, `device`, `quirks`, `cap`, `vcpu`, `mmu`). Results carry
//! the kernel's errno ([`uapi::Errno`]) so a conformance test compares errno with errno.

use std::collections::BTreeMap;

use uapi::Errno;
use uapi::cap::{KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, kvm_enable_cap};
use uapi::memslot::{kvm_userspace_memory_region, kvm_userspace_memory_region2};

use crate::cap::{
    KVM_CAP_DISABLE_QUIRKS, KVM_DIRTY_LOG_MANUAL_CAPS, KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
    check_extension,
};
use crate::device::{KvmDevice, VfioFile};
use crate::memslot::{KvmMemorySlot, KvmMemslots, UserMemoryRegion};
use crate::mmu::Mmu;
use crate::profile::KernelProfile;
use crate::quirks::Quirks;
use crate::vcpu::KvmVcpu;

/// A device fd returned by `KVM_CREATE_DEVICE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// A vCPU, named by the id given to `KVM_CREATE_VCPU`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuId(pub u32);

/// `KVM_MAX_VCPU_IDS` on x86 (vCPU ids must be below it).
pub const KVM_MAX_VCPU_IDS: u32 = 4096;
/// `KVM_MAX_VCPUS` on x86.
pub const KVM_MAX_VCPUS: usize = 1024;

/// One VM (`struct kvm`) of the kernel named by its [`KernelProfile`].
///
/// ```
/// use kvm_model::{Kvm, KernelProfile, Vendor};
/// use uapi::Errno;
/// use uapi::memslot::{kvm_userspace_memory_region, KVM_MEM_NON_COHERENT_DMA};
///
/// let region = kvm_userspace_memory_region {
///     slot: 0,
///     flags: KVM_MEM_NON_COHERENT_DMA,
///     guest_phys_addr: 0x1_0000_0000,
///     memory_size: 0x20_0000,
///     userspace_addr: 0x7f00_0000_0000,
/// };
/// // Upstream refuses the proposal's flag; the proposal's kernel accepts it.
/// let mut upstream = Kvm::new(KernelProfile::parse("6.16", Vendor::Intel)?);
/// assert_eq!(upstream.set_user_memory_region(&region), Err(Errno::EINVAL));
/// let mut proposed = Kvm::new(KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?);
/// assert_eq!(proposed.set_user_memory_region(&region), Ok(()));
/// # Ok::<(), kvm_model::ProfileError>(())
/// ```
#[derive(Debug)]
pub struct Kvm {
    pub(crate) profile: KernelProfile,
    /// `kvm->memslots[as_id]`.
    pub(crate) memslots: Vec<KvmMemslots>,
    /// `kvm->nr_memslot_pages`.
    pub(crate) nr_memslot_pages: u64,
    /// `kvm->arch.disabled_quirks`.
    pub(crate) quirks: Quirks,
    /// `kvm->arch.noncoherent_dma_count`.
    pub(crate) noncoherent_dma_count: u32,
    /// `kvm->manual_dirty_log_protect`.
    pub(crate) manual_dirty_log_protect: u64,
    /// `kvm->devices`, by fd.
    pub(crate) devices: BTreeMap<DeviceId, KvmDevice>,
    pub(crate) next_device_id: u32,
    /// Host VFIO files the model can hand to the KVM-VFIO device, by fd number.
    pub(crate) vfio_files: BTreeMap<i32, VfioFile>,
    /// `kvm->vcpus`, by vCPU id.
    pub(crate) vcpus: BTreeMap<u32, KvmVcpu>,
    /// The MMU: SPTEs, host mappings, statistics.
    pub(crate) mmu: Mmu,
}

impl Kvm {
    /// `KVM_CREATE_VM` with the default VM type.
    pub fn new(profile: KernelProfile) -> Kvm {
        Kvm {
            profile,
            memslots: (0..profile.address_spaces())
                .map(|_| KvmMemslots::new())
                .collect(),
            nr_memslot_pages: 0,
            quirks: Quirks::new(&profile),
            noncoherent_dma_count: 0,
            manual_dirty_log_protect: 0,
            devices: BTreeMap::new(),
            next_device_id: 0,
            vfio_files: BTreeMap::new(),
            vcpus: BTreeMap::new(),
            mmu: Mmu::new(),
        }
    }

    /// The kernel this VM runs on.
    pub fn profile(&self) -> KernelProfile {
        self.profile
    }

    /// `KVM_CHECK_EXTENSION` on the VM fd.
    pub fn check_extension(&self, cap: u32) -> i64 {
        check_extension(&self.profile, cap, true)
    }

    /// `KVM_SET_USER_MEMORY_REGION` (v1). See [`crate::memslot::set`] for the rules.
    pub fn set_user_memory_region(
        &mut self,
        mem: &kvm_userspace_memory_region,
    ) -> Result<(), Errno> {
        self.kvm_vm_ioctl_set_memory_region(&UserMemoryRegion::from_v1(mem), false)
    }

    /// `KVM_SET_USER_MEMORY_REGION2`: `ENOTTY` before 6.8 (the 6.7 profiles), where the ioctl
    /// number is unknown. `pad1`/`pad2` are not checked, as upstream does not check them.
    pub fn set_user_memory_region2(
        &mut self,
        mem: &kvm_userspace_memory_region2,
    ) -> Result<(), Errno> {
        if !self.profile.era.has_user_memory2() {
            return Err(Errno::ENOTTY);
        }
        self.kvm_vm_ioctl_set_memory_region(&UserMemoryRegion::from_v2(mem), true)
    }

    /// `KVM_ENABLE_CAP` on the VM fd (`kvm_vm_ioctl_enable_cap_generic()` then the x86
    /// `kvm_vm_ioctl_enable_cap()`): `MANUAL_DIRTY_LOG_PROTECT2`, `DISABLE_QUIRKS` and
    /// `DISABLE_QUIRKS2` are modeled; every other cap is `EINVAL`, as on x86.
    pub fn enable_cap(&mut self, cap: &kvm_enable_cap) -> Result<(), Errno> {
        if cap.cap == KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 {
            let enable = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;
            let allowed = if cap.args[0] & enable != 0 {
                KVM_DIRTY_LOG_MANUAL_CAPS
            } else {
                enable
            };
            if cap.flags != 0 || cap.args[0] & !allowed != 0 {
                return Err(Errno::EINVAL);
            }
            self.manual_dirty_log_protect = cap.args[0];
            return Ok(());
        }
        // The x86 handler refuses any flags before looking at the cap.
        if cap.flags != 0 {
            return Err(Errno::EINVAL);
        }
        match cap.cap {
            KVM_CAP_DISABLE_QUIRKS2 => self.quirks.disable2(&self.profile, cap.args[0]),
            KVM_CAP_DISABLE_QUIRKS => {
                self.quirks.disable(&self.profile, cap.args[0]);
                Ok(())
            }
            _ => Err(Errno::EINVAL),
        }
    }

    /// `KVM_CREATE_VCPU`: ids at or above [`KVM_MAX_VCPU_IDS`], or beyond [`KVM_MAX_VCPUS`]
    /// vCPUs, are `EINVAL`; a duplicate id is `EEXIST`.
    pub fn create_vcpu(&mut self, id: u32) -> Result<VcpuId, Errno> {
        if id >= KVM_MAX_VCPU_IDS || self.vcpus.len() == KVM_MAX_VCPUS {
            return Err(Errno::EINVAL);
        }
        if self.vcpus.contains_key(&id) {
            return Err(Errno::EEXIST);
        }
        self.vcpus
            .insert(id, KvmVcpu::new(id, self.profile.host_phys_bits()));
        Ok(VcpuId(id))
    }

    /// `kvm->arch.noncoherent_dma_count`.
    pub fn noncoherent_dma_count(&self) -> u32 {
        self.noncoherent_dma_count
    }

    /// `kvm_check_has_quirk()`: whether `quirk` (a `KVM_X86_QUIRK_*` bit) is in force.
    pub fn has_quirk(&self, quirk: u64) -> bool {
        self.quirks.has(quirk)
    }

    /// The memslots of address space `as_id`, if the VM has it.
    pub fn memslots(&self, as_id: u16) -> Option<&KvmMemslots> {
        self.memslots.get(usize::from(as_id))
    }

    /// `__gfn_to_memslot(__kvm_memslots(kvm, as_id), gfn)`: the slot holding `gfn`, in
    /// O(log n) with the `last_used_slot` fast path.
    pub fn gfn_to_memslot(&self, as_id: u16, gfn: u64) -> Option<&KvmMemorySlot> {
        self.memslots(as_id)?.__gfn_to_memslot(gfn)
    }
}
