//! The KVM-VFIO pseudo device (`virt/kvm/vfio.c`), as far as noncoherent DMA goes.
//!
//! One per VM (`kvm_vfio_create()`: a second one is `EBUSY` while the first fd is open).
//! `KVM_DEV_VFIO_FILE_ADD`/`_DEL` attach VFIO group or device files; after each change
//! `kvm_vfio_update_coherency()` registers noncoherent DMA once for the whole device while any
//! attached file's IOMMU cannot enforce snoop control, and unregisters when none is left.
//!
//! The kernel reads an `int` fd from user memory at `attr.addr`. The model has no user
//! memory: **`attr.addr` carries the fd number itself**, and 0 stands for a NULL pointer
//! (`EFAULT`). Host VFIO files are made with [`crate::Kvm::vfio_file_new`]; any fd number the
//! model did not hand out is a closed fd (`EBADF`).

use std::collections::BTreeMap;

use uapi::Errno;
use uapi::device::{
    KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL, kvm_device_attr,
};

use super::{KvmDevice, NoncoherentChange};
use crate::kvm::Kvm;

/// A host VFIO file (group or device fd) the model can attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfioFile {
    /// `vfio_file_enforced_coherent()`: the IOMMU enforces snoop control for its DMA.
    pub enforced_coherent: bool,
}

/// `struct kvm_vfio`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvmVfio {
    /// Attached files, by fd, in the order added.
    files: Vec<i32>,
    /// `kv->noncoherent`: this device has registered noncoherent DMA.
    noncoherent: bool,
}

/// Model fd numbers start here, far from anything a test would pass by accident.
pub const FIRST_VFIO_FD: i32 = 1000;

impl KvmVfio {
    /// `kvm_vfio_create()`: "Only one VFIO 'device' per VM".
    pub(crate) fn create<'a>(
        mut existing: impl Iterator<Item = &'a KvmDevice>,
    ) -> Result<KvmVfio, Errno> {
        if existing.any(|d| matches!(d, KvmDevice::Vfio(_))) {
            return Err(Errno::EBUSY);
        }
        Ok(KvmVfio::default())
    }

    /// Whether the device currently holds a noncoherent registration.
    pub fn noncoherent(&self) -> bool {
        self.noncoherent
    }

    /// The attached files' fds.
    pub fn files(&self) -> &[i32] {
        &self.files
    }

    /// `kvm_vfio_set_attr()` → `kvm_vfio_set_file()`.
    pub(crate) fn set_attr(
        &mut self,
        attr: &kvm_device_attr,
        host_files: &BTreeMap<i32, VfioFile>,
    ) -> Result<NoncoherentChange, Errno> {
        if attr.group != KVM_DEV_VFIO_FILE {
            return Err(Errno::ENXIO);
        }
        let add = match attr.attr {
            KVM_DEV_VFIO_FILE_ADD => true,
            KVM_DEV_VFIO_FILE_DEL => false,
            // KVM_DEV_VFIO_GROUP_SET_SPAPR_TCE exists on POWER only.
            _ => return Err(Errno::ENXIO),
        };
        // get_user(fd, argp)
        if attr.addr == 0 {
            return Err(Errno::EFAULT);
        }
        let fd = i32::try_from(attr.addr).map_err(|_| Errno::EBADF)?;
        // fget(fd); every model file is a VFIO file, so kvm_vfio_file_is_valid() holds.
        if !host_files.contains_key(&fd) {
            return Err(Errno::EBADF);
        }
        let result = if add {
            if self.files.contains(&fd) {
                return Err(Errno::EEXIST);
            }
            self.files.push(fd);
            Ok(())
        } else {
            match self.files.iter().position(|f| *f == fd) {
                Some(i) => {
                    self.files.remove(i);
                    Ok(())
                }
                None => Err(Errno::ENOENT),
            }
        };
        // kvm_vfio_file_del() updates coherency even when the file was not attached.
        let change = self.update_coherency(host_files);
        result.map(|()| change)
    }

    /// `kvm_vfio_has_attr()`: FILE_ADD and FILE_DEL of group `KVM_DEV_VFIO_FILE`.
    pub(crate) fn has_attr(attr: &kvm_device_attr) -> Result<(), Errno> {
        match (attr.group, attr.attr) {
            (KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD | KVM_DEV_VFIO_FILE_DEL) => Ok(()),
            _ => Err(Errno::ENXIO),
        }
    }

    /// `kvm_vfio_release()`: detach every file, then update coherency (which unregisters).
    pub(crate) fn release(mut self) -> NoncoherentChange {
        self.files.clear();
        if self.noncoherent {
            NoncoherentChange::Unregister
        } else {
            NoncoherentChange::None
        }
    }

    /// `kvm_vfio_update_coherency()`.
    fn update_coherency(&mut self, host_files: &BTreeMap<i32, VfioFile>) -> NoncoherentChange {
        let noncoherent = self
            .files
            .iter()
            .any(|fd| host_files.get(fd).is_some_and(|f| !f.enforced_coherent));
        if noncoherent == self.noncoherent {
            return NoncoherentChange::None;
        }
        self.noncoherent = noncoherent;
        if noncoherent {
            NoncoherentChange::Register
        } else {
            NoncoherentChange::Unregister
        }
    }
}

impl Kvm {
    /// Opens a host VFIO file (a group or cdev fd) for the KVM-VFIO device; `enforced_coherent`
    /// false models a device whose IOMMU lacks snoop control (`IOMMU_CAP_ENFORCE_CACHE_COHERENCY`
    /// absent), the passthrough case that makes KVM honor guest memory types VM-wide.
    pub fn vfio_file_new(&mut self, enforced_coherent: bool) -> i32 {
        let fd = self
            .vfio_files
            .last_key_value()
            .map_or(FIRST_VFIO_FD, |(fd, _)| fd + 1);
        self.vfio_files.insert(fd, VfioFile { enforced_coherent });
        fd
    }

    /// Convenience for the passthrough comparison: opens a VFIO file whose IOMMU lacks snoop
    /// control and attaches it to KVM-VFIO device `dev` with `KVM_DEV_VFIO_FILE_ADD`. The
    /// VM's count rises once per KVM-VFIO device, however many such files it holds.
    pub fn vfio_add_noncoherent_file(&mut self, dev: crate::DeviceId) -> Result<i32, Errno> {
        let fd = self.vfio_file_new(false);
        let attr = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VFIO_FILE,
            attr: KVM_DEV_VFIO_FILE_ADD,
            addr: fd as u64,
        };
        self.set_device_attr(dev, &attr)?;
        Ok(fd)
    }
}
