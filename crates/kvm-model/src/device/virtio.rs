//! The RFC's KVM virtio device (seed `002_…`, `virt/kvm/virtio.c`), `+virtio-device`
//! profiles only.
//!
//! One device per virtio device of the VMM. `KVM_SET_DEVICE_ATTR(KVM_DEV_VIRTIO_NONCOHERENT,
//! KVM_DEV_VIRTIO_NONCOHERENT_SET)` marks it noncoherent and registers noncoherent DMA with
//! the VM the first time only; there is no way back but closing the fd. `attr.addr` is never
//! read. There is no `get_attr`.

use uapi::Errno;
use uapi::device::{KVM_DEV_VIRTIO_NONCOHERENT, KVM_DEV_VIRTIO_NONCOHERENT_SET, kvm_device_attr};

use super::NoncoherentChange;

/// `struct kvm_virtio`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmVirtio {
    noncoherent: bool,
}

impl KvmVirtio {
    /// `kvm_virtio_create()`: a new device starts coherent.
    pub(crate) fn create() -> KvmVirtio {
        KvmVirtio::default()
    }

    /// Whether the device was marked noncoherent.
    pub fn noncoherent(&self) -> bool {
        self.noncoherent
    }

    /// `kvm_virtio_set_attr()` / `kvm_virtio_set_noncoherent()`: `ENXIO` for any other group
    /// or attr; the first SET registers, later ones succeed and do nothing.
    pub(crate) fn set_attr(&mut self, attr: &kvm_device_attr) -> Result<NoncoherentChange, Errno> {
        if attr.group != KVM_DEV_VIRTIO_NONCOHERENT || attr.attr != KVM_DEV_VIRTIO_NONCOHERENT_SET {
            return Err(Errno::ENXIO);
        }
        if self.noncoherent {
            return Ok(NoncoherentChange::None);
        }
        self.noncoherent = true;
        Ok(NoncoherentChange::Register)
    }

    /// `kvm_virtio_has_attr()`: only (1, 1) exists.
    pub(crate) fn has_attr(attr: &kvm_device_attr) -> Result<(), Errno> {
        if attr.group == KVM_DEV_VIRTIO_NONCOHERENT && attr.attr == KVM_DEV_VIRTIO_NONCOHERENT_SET {
            Ok(())
        } else {
            Err(Errno::ENXIO)
        }
    }

    /// `kvm_virtio_release()`: unregisters if the device had registered.
    pub(crate) fn release(self) -> NoncoherentChange {
        if self.noncoherent {
            NoncoherentChange::Unregister
        } else {
            NoncoherentChange::None
        }
    }
}
