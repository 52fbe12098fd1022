//! The KVM device framework: `KVM_CREATE_DEVICE`, the device fd's attribute ioctls, and
//! release on close.
//!
//! Models `kvm_ioctl_create_device()`, `kvm_device_ioctl()`, `kvm_device_ioctl_attr()` and
//! `kvm_device_release()` of `virt/kvm/kvm_main.c`. Which types are registered
//! (`kvm_device_ops_table`) depends on the profile: x86 registers only the KVM-VFIO device
//! ([`vfio`]); the `+virtio-device` profiles add the RFC's KVM virtio device ([`virtio`]).
//! A device changes the VM's noncoherent DMA count only through the [`NoncoherentChange`] its
//! callbacks return, which the framework applies (`kvm_arch_{,un}register_noncoherent_dma`).

pub mod vfio;
pub mod virtio;

use uapi::Errno;
use uapi::device::{
    KVM_CREATE_DEVICE_TEST, KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_VIRTIO, kvm_device_attr,
};

use crate::kvm::{DeviceId, Kvm};
use crate::profile::Proposal;

pub use vfio::{KvmVfio, VfioFile};
pub use virtio::KvmVirtio;

/// What a device callback asks of the VM's noncoherent DMA accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoncoherentChange {
    /// Nothing.
    None,
    /// `kvm_arch_register_noncoherent_dma()`.
    Register,
    /// `kvm_arch_unregister_noncoherent_dma()`.
    Unregister,
}

/// A device's private state (`dev->private`), by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmDevice {
    /// `KVM_DEV_TYPE_VFIO` ("kvm-vfio").
    Vfio(KvmVfio),
    /// `KVM_DEV_TYPE_VIRTIO` ("kvm-virtio", proposal).
    Virtio(KvmVirtio),
}

impl KvmDevice {
    /// The `KVM_DEV_TYPE_*` number.
    pub const fn dev_type(&self) -> u32 {
        match self {
            KvmDevice::Vfio(_) => KVM_DEV_TYPE_VFIO,
            KvmDevice::Virtio(_) => KVM_DEV_TYPE_VIRTIO,
        }
    }
}

impl Kvm {
    /// Whether `kvm_device_ops_table[dev_type]` is registered in this profile.
    fn device_type_registered(&self, dev_type: u32) -> bool {
        dev_type == KVM_DEV_TYPE_VFIO
            || (dev_type == KVM_DEV_TYPE_VIRTIO && self.profile.proposal == Proposal::VirtioDevice)
    }

    /// `KVM_CREATE_DEVICE`: `ENODEV` for a type this kernel does not register; with
    /// `KVM_CREATE_DEVICE_TEST` nothing is created (`Ok(None)`) and the type's own create
    /// checks do not run; other flag bits are ignored. The type's `create` may refuse
    /// (KVM-VFIO: `EBUSY` for a second one).
    pub fn create_device(&mut self, dev_type: u32, flags: u32) -> Result<Option<DeviceId>, Errno> {
        if !self.device_type_registered(dev_type) {
            return Err(Errno::ENODEV);
        }
        if flags & KVM_CREATE_DEVICE_TEST != 0 {
            return Ok(None);
        }
        let device = match dev_type {
            KVM_DEV_TYPE_VFIO => KvmDevice::Vfio(KvmVfio::create(self.devices.values())?),
            _ => KvmDevice::Virtio(KvmVirtio::create()),
        };
        let id = DeviceId(self.next_device_id);
        self.next_device_id += 1;
        self.devices.insert(id, device);
        Ok(Some(id))
    }

    /// `KVM_SET_DEVICE_ATTR` on a device fd (`EBADF` if the fd is not open). For the
    /// KVM-VFIO file attributes, see [`vfio`] for how `attr.addr` is read.
    pub fn set_device_attr(&mut self, dev: DeviceId, attr: &kvm_device_attr) -> Result<(), Errno> {
        let device = self.devices.get_mut(&dev).ok_or(Errno::EBADF)?;
        let change = match device {
            KvmDevice::Vfio(v) => v.set_attr(attr, &self.vfio_files)?,
            KvmDevice::Virtio(v) => v.set_attr(attr)?,
        };
        self.apply_noncoherent_change(change);
        Ok(())
    }

    /// `KVM_HAS_DEVICE_ATTR` on a device fd.
    pub fn has_device_attr(&self, dev: DeviceId, attr: &kvm_device_attr) -> Result<(), Errno> {
        match self.devices.get(&dev).ok_or(Errno::EBADF)? {
            KvmDevice::Vfio(_) => KvmVfio::has_attr(attr),
            KvmDevice::Virtio(_) => KvmVirtio::has_attr(attr),
        }
    }

    /// `KVM_GET_DEVICE_ATTR` on a device fd: neither modeled device has a `get_attr`
    /// callback, so `kvm_device_ioctl_attr()` answers `EPERM`.
    pub fn get_device_attr(&self, dev: DeviceId, _attr: &kvm_device_attr) -> Result<u64, Errno> {
        self.devices.get(&dev).ok_or(Errno::EBADF)?;
        Err(Errno::EPERM)
    }

    /// `close()` of a device fd: `kvm_device_release()` calls the type's `release`, which
    /// drops any noncoherent registration the device held.
    pub fn close_device(&mut self, dev: DeviceId) -> Result<(), Errno> {
        let change = match self.devices.remove(&dev).ok_or(Errno::EBADF)? {
            KvmDevice::Vfio(v) => v.release(),
            KvmDevice::Virtio(v) => v.release(),
        };
        self.apply_noncoherent_change(change);
        Ok(())
    }

    /// The open device fds and their state.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceId, &KvmDevice)> {
        self.devices.iter().map(|(id, d)| (*id, d))
    }

    fn apply_noncoherent_change(&mut self, change: NoncoherentChange) {
        match change {
            NoncoherentChange::None => {}
            NoncoherentChange::Register => self.kvm_arch_register_noncoherent_dma(),
            NoncoherentChange::Unregister => self.kvm_arch_unregister_noncoherent_dma(),
        }
    }
}

#[cfg(test)]
mod tests;
