//! The boundary between the VMM and a kernel: one trait, [`Backend`], whose methods are the
//! KVM ioctls the project uses on a VM file descriptor and on device file descriptors.
//!
//! Two kernels sit behind it: [`RealKvm`] drives `/dev/kvm` through kvm-ioctls, and
//! [`ModelKvm`] drives the reference kernel of the `kvm-model` crate (the proposals that no
//! shipping kernel has). Everything above this module — replay, conformance, the VMM proper —
//! is written once against the trait, so the same call sequence runs on both and their answers
//! can be compared errno for errno.
//!
//! The shape follows cloud-hypervisor's `hypervisor::Vm`, but the methods are named after the
//! ioctls and take the uAPI structs themselves (kvm-bindings, re-exported by `uapi`): the
//! point of this layer is to reproduce the uAPI exactly, including its invalid inputs, not to
//! hide it. Errors keep the errno ([`BackendError::errno`]) so callers can tell `EINVAL` from
//! `ENODEV`.

mod kvm;
mod model;
pub mod platform;

pub use kvm::{KVM_DEVICE, RealKvm};
pub use model::ModelKvm;
pub use platform::{Origin, Platform, Tdp};

use std::path::Path;

use uapi::Errno;
use uapi::cap::kvm_enable_cap;
use uapi::device::kvm_device_attr;
use uapi::memslot::{kvm_userspace_memory_region, kvm_userspace_memory_region2};

/// A device made by [`Backend::create_device`]; it stands for the device's file descriptor.
///
/// A backend never reuses a handle, so a handle kept after [`Backend::close_device`] fails
/// with `EBADF`, as an ioctl on a closed file descriptor does (and never reaches a device
/// created later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceHandle(pub u32);

/// A failed operation on a backend, named after the operation, with the kernel's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// Opening `/dev/kvm` failed.
    #[error("{}", open_message(Path::new(KVM_DEVICE), *.0))]
    OpenKvm(Errno),
    /// `KVM_GET_API_VERSION` failed (`ENOTTY`: the file opened is not a KVM device).
    #[error("KVM_GET_API_VERSION failed: {0}")]
    GetApiVersion(Errno),
    /// `KVM_CREATE_VM` failed.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(Errno),
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("KVM_SET_USER_MEMORY_REGION failed: {0}")]
    SetUserMemoryRegion(Errno),
    /// `KVM_SET_USER_MEMORY_REGION2` failed.
    #[error("KVM_SET_USER_MEMORY_REGION2 failed: {0}")]
    SetUserMemoryRegion2(Errno),
    /// `KVM_CREATE_DEVICE` failed.
    #[error("KVM_CREATE_DEVICE failed: {0}")]
    CreateDevice(Errno),
    /// `KVM_SET_DEVICE_ATTR` failed.
    #[error("KVM_SET_DEVICE_ATTR failed: {0}")]
    SetDeviceAttr(Errno),
    /// `KVM_HAS_DEVICE_ATTR` failed (the attribute is not there, or the fd is bad).
    #[error("KVM_HAS_DEVICE_ATTR failed: {0}")]
    HasDeviceAttr(Errno),
    /// `KVM_GET_DEVICE_ATTR` failed.
    #[error("KVM_GET_DEVICE_ATTR failed: {0}")]
    GetDeviceAttr(Errno),
    /// Closing a device fd failed (`EBADF`: no such device).
    #[error("closing the device fd failed: {0}")]
    CloseDevice(Errno),
    /// `KVM_ENABLE_CAP` failed.
    #[error("KVM_ENABLE_CAP failed: {0}")]
    EnableCap(Errno),
    /// `KVM_GET_DIRTY_LOG` failed.
    #[error("KVM_GET_DIRTY_LOG failed: {0}")]
    GetDirtyLog(Errno),
}

impl BackendError {
    /// The errno the kernel (or the model) answered.
    pub const fn errno(&self) -> Errno {
        match *self {
            BackendError::OpenKvm(e)
            | BackendError::GetApiVersion(e)
            | BackendError::CreateVm(e)
            | BackendError::SetUserMemoryRegion(e)
            | BackendError::SetUserMemoryRegion2(e)
            | BackendError::CreateDevice(e)
            | BackendError::SetDeviceAttr(e)
            | BackendError::HasDeviceAttr(e)
            | BackendError::GetDeviceAttr(e)
            | BackendError::CloseDevice(e)
            | BackendError::EnableCap(e)
            | BackendError::GetDirtyLog(e) => e,
        }
    }
}

/// Why opening the KVM device at `path` failed, in one line. The two usual ways deserve a
/// sentence each: they have different fixes.
pub(crate) fn open_message(path: &Path, e: Errno) -> String {
    let path = path.display();
    match e {
        Errno::ENOENT => format!(
            "cannot open {path}: it does not exist (no KVM on this host: virtualization \
             disabled or the kvm module not loaded)"
        ),
        Errno::EACCES => format!(
            "cannot open {path}: permission denied (run as a user in the group owning \
             {path}, usually `kvm`)"
        ),
        e if e.name().is_some() => format!("cannot open {path}: {e}"),
        e => format!(
            "cannot open {path}: {}",
            std::io::Error::from_raw_os_error(e.0)
        ),
    }
}

/// Results of [`Backend`] methods.
pub type Result<T> = std::result::Result<T, BackendError>;

/// One VM of a KVM-like kernel, driven through its ioctls.
///
/// Each method is one ioctl on the VM fd or on a device fd, with the kernel's semantics:
/// arguments are passed through unchecked (invalid ones are the point of conformance tests)
/// and failures carry the kernel's errno.
pub trait Backend {
    /// A one-line description of the kernel behind this backend, for reports.
    fn describe(&self) -> String;

    /// `KVM_GET_API_VERSION` on the system fd (`/dev/kvm`): 12 on every kernel since
    /// 2.6.22, anything else means the uAPI is not the one this crate speaks.
    fn kvm_api_version(&self) -> Result<i32>;

    /// The machine under the kernel: CPU vendor, self-snoop, vendor module, TDP. KVM has no
    /// ioctl for these; the real backend reads CPUID and `/sys/module`, the model its
    /// profile.
    fn platform(&self) -> Platform;

    /// `KVM_CHECK_EXTENSION` on the VM fd: 0 when `cap` is absent, else a cap-specific value.
    fn check_extension(&self, cap: u32) -> i64;

    /// `KVM_SET_USER_MEMORY_REGION`: create, delete (`memory_size == 0`), move or change the
    /// flags of a memslot.
    ///
    /// # Safety
    ///
    /// If the call succeeds, the host range `userspace_addr .. userspace_addr + memory_size`
    /// becomes guest memory: it must stay mapped (and not be repurposed) for as long as the
    /// slot exists, that is until it is deleted or moved away from it, or the backend is
    /// dropped. KVM reads and writes it on the guest's behalf.
    unsafe fn set_user_memory_region(&mut self, region: &kvm_userspace_memory_region)
    -> Result<()>;

    /// `KVM_SET_USER_MEMORY_REGION2`: as [`Backend::set_user_memory_region`], with the
    /// guest_memfd fields and the flags only version 2 accepts.
    ///
    /// # Safety
    ///
    /// As for [`Backend::set_user_memory_region`]: on success the host range must stay mapped
    /// for as long as the slot exists.
    unsafe fn set_user_memory_region2(
        &mut self,
        region: &kvm_userspace_memory_region2,
    ) -> Result<()>;

    /// `KVM_CREATE_DEVICE`. With `KVM_CREATE_DEVICE_TEST` in `flags` the kernel only checks
    /// that the type could be created, and no device is made (`Ok(None)`).
    fn create_device(&mut self, dev_type: u32, flags: u32) -> Result<Option<DeviceHandle>>;

    /// `KVM_SET_DEVICE_ATTR` on a device fd. The kernel may read from `attr.addr` (the VFIO
    /// device reads an `int` fd there), never write.
    fn set_device_attr(&mut self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()>;

    /// `KVM_HAS_DEVICE_ATTR` on a device fd: `Ok` when the device has the attribute.
    fn has_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()>;

    /// `KVM_GET_DEVICE_ATTR` on a device fd. `attr.addr` is ignored: the backend supplies
    /// the buffer the kernel writes to and returns its first 64 bits.
    fn get_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<u64>;

    /// `close()` of a device fd. Closing a device that registered noncoherent DMA
    /// unregisters it (the virtio-device proposal).
    fn close_device(&mut self, dev: DeviceHandle) -> Result<()>;

    /// `KVM_ENABLE_CAP` on the VM fd (e.g. `KVM_CAP_DISABLE_QUIRKS2`).
    fn enable_cap(&mut self, cap: &kvm_enable_cap) -> Result<()>;

    /// `KVM_GET_DIRTY_LOG` of the raw `slot` (`as_id << 16 | id`): the slot's dirty bitmap
    /// as 64-bit words, one bit per page, cleared by the read.
    fn get_dirty_log(&mut self, slot: u32) -> Result<Vec<u64>>;

    /// [`get_dirty_log`](Self::get_dirty_log) through a shared borrow, for a backend that
    /// can (a real VM fd: the kernel orders the ioctl against the others itself), so that a
    /// sender may look at the log while it holds guest memory borrowed. `None`, the
    /// default: the backend must be borrowed mutably (the model).
    fn get_dirty_log_shared(&self, slot: u32) -> Option<Result<Vec<u64>>> {
        let _ = slot;
        None
    }

    /// The VM's noncoherent DMA count, where the kernel lets one see it. A real kernel does
    /// not export it, so the default is `None`; the model overrides this.
    fn noncoherent_dma_count(&self) -> Option<u32> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_errno_and_name_the_operation() {
        let e = BackendError::SetUserMemoryRegion(Errno::EINVAL);
        assert_eq!(e.errno(), Errno::EINVAL);
        assert_eq!(e.to_string(), "KVM_SET_USER_MEMORY_REGION failed: EINVAL");
        assert_ne!(e, BackendError::SetUserMemoryRegion2(Errno::EINVAL));
        assert_eq!(
            BackendError::CreateDevice(Errno::ENODEV).errno(),
            Errno::ENODEV
        );
    }

    #[test]
    fn opening_kvm_failures_say_what_to_do() {
        let missing = BackendError::OpenKvm(Errno::ENOENT).to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        let denied = BackendError::OpenKvm(Errno::EACCES).to_string();
        assert!(denied.contains("permission denied"), "{denied}");
        assert_eq!(
            BackendError::OpenKvm(Errno::EBUSY).to_string(),
            "cannot open /dev/kvm: EBUSY"
        );
        // Numbers uapi does not name get the C library's words.
        let dir = open_message(Path::new("/tmp"), Errno(libc::EISDIR));
        assert_eq!(dir, "cannot open /tmp: Is a directory (os error 21)");
    }
}
