//! [`ModelKvm`]: the [`Backend`] over the reference kernel (`kvm_model::Kvm`), the kernel the
//! proposals exist in. It answers every ioctl in-process, errno for errno, as the
//! [`KernelProfile`] it was created with.

use kvm_model::{DeviceId, KernelProfile, Kvm};
use uapi::cap::kvm_enable_cap;
use uapi::device::kvm_device_attr;
use uapi::memslot::{kvm_userspace_memory_region, kvm_userspace_memory_region2};

use super::{Backend, BackendError, DeviceHandle, Platform, Result};

/// A VM of the reference kernel.
#[derive(Debug)]
pub struct ModelKvm {
    kvm: Kvm,
}

impl ModelKvm {
    /// `KVM_CREATE_VM` on the modeled kernel `profile`.
    ///
    /// # Example
    ///
    /// ```
    /// use kvm_model::{KernelProfile, Vendor};
    /// use uapi::cap::KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA;
    /// use vmm::backend::{Backend, ModelKvm};
    ///
    /// let proposed = ModelKvm::new(KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?);
    /// assert_eq!(proposed.check_extension(KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA), 1);
    /// let host = ModelKvm::new(KernelProfile::this_host());
    /// assert_eq!(host.check_extension(KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA), 0);
    /// # Ok::<(), kvm_model::ProfileError>(())
    /// ```
    pub fn new(profile: KernelProfile) -> ModelKvm {
        ModelKvm {
            kvm: Kvm::new(profile),
        }
    }
}

impl Backend for ModelKvm {
    fn describe(&self) -> String {
        let p = self.kvm.profile();
        format!(
            "model: kernel {} ({:?}, self-snoop {}, TDP {})",
            p.name(),
            p.vendor,
            if p.cpu.self_snoop { "on" } else { "off" },
            if p.cpu.tdp { "on" } else { "off" }
        )
    }

    fn kvm_api_version(&self) -> Result<i32> {
        // The model speaks the one uAPI version there is.
        Ok(uapi::KVM_API_VERSION as i32)
    }

    fn platform(&self) -> Platform {
        Platform::of_profile(&self.kvm.profile())
    }

    fn check_extension(&self, cap: u32) -> i64 {
        self.kvm.check_extension(cap)
    }

    unsafe fn set_user_memory_region(
        &mut self,
        region: &kvm_userspace_memory_region,
    ) -> Result<()> {
        self.kvm
            .set_user_memory_region(region)
            .map_err(BackendError::SetUserMemoryRegion)
    }

    unsafe fn set_user_memory_region2(
        &mut self,
        region: &kvm_userspace_memory_region2,
    ) -> Result<()> {
        self.kvm
            .set_user_memory_region2(region)
            .map_err(BackendError::SetUserMemoryRegion2)
    }

    fn create_device(&mut self, dev_type: u32, flags: u32) -> Result<Option<DeviceHandle>> {
        self.kvm
            .create_device(dev_type, flags)
            .map(|dev| dev.map(|DeviceId(id)| DeviceHandle(id)))
            .map_err(BackendError::CreateDevice)
    }

    fn set_device_attr(&mut self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()> {
        self.kvm
            .set_device_attr(DeviceId(dev.0), attr)
            .map_err(BackendError::SetDeviceAttr)
    }

    fn has_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()> {
        self.kvm
            .has_device_attr(DeviceId(dev.0), attr)
            .map_err(BackendError::HasDeviceAttr)
    }

    fn get_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<u64> {
        self.kvm
            .get_device_attr(DeviceId(dev.0), attr)
            .map_err(BackendError::GetDeviceAttr)
    }

    fn close_device(&mut self, dev: DeviceHandle) -> Result<()> {
        self.kvm
            .close_device(DeviceId(dev.0))
            .map_err(BackendError::CloseDevice)
    }

    fn enable_cap(&mut self, cap: &kvm_enable_cap) -> Result<()> {
        self.kvm.enable_cap(cap).map_err(BackendError::EnableCap)
    }

    fn get_dirty_log(&mut self, slot: u32) -> Result<Vec<u64>> {
        self.kvm
            .get_dirty_log(slot)
            .map_err(BackendError::GetDirtyLog)
    }

    fn noncoherent_dma_count(&self) -> Option<u32> {
        Some(self.kvm.noncoherent_dma_count())
    }
}
