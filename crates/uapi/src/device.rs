//! Devices created with `KVM_CREATE_DEVICE` and the attributes set on their fds.
//!
//! Upstream: `enum kvm_device_type` and the VFIO groups in `include/uapi/linux/kvm.h`,
//! `virt/kvm/kvm_main.c` (`kvm_ioctl_create_device()`). The KVM virtio device and its
//! noncoherent attribute are the **proposal** of the RFC (seed `002_…`).

use std::fmt;

pub use kvm_bindings::{kvm_create_device, kvm_device_attr};

/// `KVM_CREATE_DEVICE_TEST`: only check that the type could be created; no fd is made.
pub const KVM_CREATE_DEVICE_TEST: u32 = kvm_bindings::KVM_CREATE_DEVICE_TEST;

/// `KVM_DEV_TYPE_VFIO` (4): the KVM-VFIO pseudo device. Upstream. Adding a VFIO file whose
/// IOMMU cannot enforce snoop control registers noncoherent DMA with the VM.
pub const KVM_DEV_TYPE_VFIO: u32 = kvm_bindings::kvm_device_type_KVM_DEV_TYPE_VFIO;

/// `KVM_DEV_TYPE_VIRTIO` (12). **Proposal** (RFC, seed `002_…`): appended after
/// `KVM_DEV_TYPE_RISCV_AIA` (11), which made it 12 in the RFC's 6.7 tree.
///
/// Collision: upstream later gave 12 to `KVM_DEV_TYPE_LOONGARCH_IPI`. On x86 that type is
/// not registered, so a current kernel answers `ENODEV` — the same answer as "no virtio
/// device". A VMM must probe by creating the device, never infer support from the number.
pub const KVM_DEV_TYPE_VIRTIO: u32 = 12;

/// The upstream holder of number 12 (`KVM_DEV_TYPE_LOONGARCH_IPI`), kept for the note above.
pub const KVM_DEV_TYPE_LOONGARCH_IPI: u32 =
    kvm_bindings::kvm_device_type_KVM_DEV_TYPE_LOONGARCH_IPI;

/// `KVM_DEV_VFIO_FILE` (1): attribute group of the KVM-VFIO device (was `_GROUP`).
pub const KVM_DEV_VFIO_FILE: u32 = kvm_bindings::KVM_DEV_VFIO_FILE;
/// `KVM_DEV_VFIO_FILE_ADD` (1): `addr` points to an `int` fd of a VFIO group or device.
pub const KVM_DEV_VFIO_FILE_ADD: u64 = kvm_bindings::KVM_DEV_VFIO_FILE_ADD as u64;
/// `KVM_DEV_VFIO_FILE_DEL` (2).
pub const KVM_DEV_VFIO_FILE_DEL: u64 = kvm_bindings::KVM_DEV_VFIO_FILE_DEL as u64;

/// `KVM_DEV_VIRTIO_NONCOHERENT` (1): attribute group of the KVM virtio device. **Proposal**.
pub const KVM_DEV_VIRTIO_NONCOHERENT: u32 = 1;
/// `KVM_DEV_VIRTIO_NONCOHERENT_SET` (1): mark the device noncoherent; the first set raises
/// the VM's noncoherent DMA count, later sets do nothing; `addr` is not read. **Proposal**.
pub const KVM_DEV_VIRTIO_NONCOHERENT_SET: u64 = 1;

/// A device type number with its KVM name where one is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// `KVM_DEV_TYPE_VFIO` (4).
    Vfio,
    /// `KVM_DEV_TYPE_VIRTIO` (12, proposal; upstream 12 is LoongArch IPI).
    Virtio,
    /// Any other number, passed through unchanged.
    Other(u32),
}

impl DeviceType {
    /// The number given to `KVM_CREATE_DEVICE`.
    pub const fn raw(self) -> u32 {
        match self {
            DeviceType::Vfio => KVM_DEV_TYPE_VFIO,
            DeviceType::Virtio => KVM_DEV_TYPE_VIRTIO,
            DeviceType::Other(n) => n,
        }
    }

    /// Names a raw number.
    pub const fn from_raw(n: u32) -> DeviceType {
        match n {
            KVM_DEV_TYPE_VFIO => DeviceType::Vfio,
            KVM_DEV_TYPE_VIRTIO => DeviceType::Virtio,
            n => DeviceType::Other(n),
        }
    }
}

impl fmt::Display for DeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceType::Vfio => write!(f, "KVM_DEV_TYPE_VFIO (4)"),
            DeviceType::Virtio => write!(f, "KVM_DEV_TYPE_VIRTIO (12, proposal)"),
            DeviceType::Other(n) => write!(f, "device type {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_the_collision() {
        assert_eq!(KVM_DEV_TYPE_VFIO, 4);
        assert_eq!(KVM_DEV_TYPE_VIRTIO, 12);
        // The RFC appended after RISCV_AIA (11); upstream's 12 went to LoongArch.
        assert_eq!(kvm_bindings::kvm_device_type_KVM_DEV_TYPE_RISCV_AIA + 1, 12);
        assert_eq!(KVM_DEV_TYPE_LOONGARCH_IPI, KVM_DEV_TYPE_VIRTIO);
        assert_eq!(
            (KVM_DEV_VIRTIO_NONCOHERENT, KVM_DEV_VIRTIO_NONCOHERENT_SET),
            (1, 1)
        );
        assert_eq!(KVM_CREATE_DEVICE_TEST, 1);
    }

    #[test]
    fn device_type_round_trips() {
        for n in 0..20 {
            assert_eq!(DeviceType::from_raw(n).raw(), n);
        }
        assert_eq!(DeviceType::from_raw(12), DeviceType::Virtio);
    }
}
