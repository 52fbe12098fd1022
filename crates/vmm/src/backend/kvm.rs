//! [`RealKvm`]: the [`Backend`] over `/dev/kvm`, through rust-vmm's kvm-ioctls.
//!
//! This module is where kvm-ioctls' `errno::Error` becomes [`BackendError`] (once per call,
//! with the variant of the ioctl that failed) and where the two places kvm-ioctls does not fit
//! the uAPI exactly are handled: `KVM_CREATE_DEVICE_TEST` (no fd is made) and
//! `KVM_GET_DIRTY_LOG` (the caller must know the slot's size to size the bitmap).

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use kvm_ioctls::{DeviceFd, Kvm, VmFd};
use uapi::Errno;
use uapi::cap::kvm_enable_cap;
use uapi::device::{KVM_CREATE_DEVICE_TEST, kvm_create_device, kvm_device_attr};
use uapi::memslot::{kvm_userspace_memory_region, kvm_userspace_memory_region2};
use vmm_sys_util::ioctl::ioctl_with_mut_ref;
use vmm_sys_util::ioctl_iowr_nr;

use super::platform::{Platform, SYS_MODULE};
use super::{Backend, BackendError, DeviceHandle, Result};

/// The KVM device every VMM opens.
pub const KVM_DEVICE: &str = "/dev/kvm";

// `KVM_CREATE_DEVICE` (include/uapi/linux/kvm.h), for the test-only form: kvm-ioctls'
// `create_device` always wraps the returned fd field in a `File`, and with
// `KVM_CREATE_DEVICE_TEST` the kernel returns none.
ioctl_iowr_nr!(
    KVM_CREATE_DEVICE,
    kvm_bindings::KVMIO,
    0xe0,
    kvm_create_device
);

fn errno(e: vmm_sys_util::errno::Error) -> Errno {
    Errno(e.errno())
}

/// A VM on the host's `/dev/kvm`.
#[derive(Debug)]
pub struct RealKvm {
    /// The device the VM was made on, for reports.
    path: PathBuf,
    /// The system fd (`/dev/kvm`), kept for `KVM_GET_API_VERSION`.
    kvm: Kvm,
    vm: VmFd,
    /// Read once when the VM is made: CPUID is a VM exit when the VMM runs in a guest.
    platform: Platform,
    /// Open device fds by handle; a handle is never reused.
    devices: BTreeMap<u32, DeviceFd>,
    next_device: u32,
    /// `memory_size` of every existing slot (raw slot id → bytes), mirrored from successful
    /// region calls: `KVM_GET_DIRTY_LOG` writes one bit per page of the slot into a buffer
    /// the caller sizes.
    slot_sizes: HashMap<u32, u64>,
}

impl RealKvm {
    /// Opens `/dev/kvm` and creates a VM of the default type (`KVM_CREATE_VM`, type 0).
    ///
    /// Fails with [`BackendError::OpenKvm`] (`ENOENT`: no KVM on this host; `EACCES`: no
    /// permission) or [`BackendError::CreateVm`].
    ///
    /// # Example
    ///
    /// ```no_run
    /// use vmm::backend::{Backend, RealKvm};
    ///
    /// let vm = RealKvm::open().unwrap();
    /// // KVM_CAP_NR_MEMSLOTS
    /// assert!(vm.check_extension(10) > 0);
    /// ```
    pub fn open() -> Result<RealKvm> {
        RealKvm::open_path(Path::new(KVM_DEVICE))
    }

    /// As [`RealKvm::open`], on the KVM device at `path` (a VMM's `--device` option, and
    /// how tests point it at a file that is missing or not a KVM device).
    ///
    /// Fails with [`BackendError::OpenKvm`] carrying `open()`'s errno (a path with a NUL
    /// byte is `EINVAL`), or [`BackendError::CreateVm`] (`ENOTTY` when the file is not a
    /// KVM device).
    pub fn open_path(path: &Path) -> Result<RealKvm> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| BackendError::OpenKvm(Errno::EINVAL))?;
        let kvm = Kvm::new_with_path(&c_path).map_err(|e| BackendError::OpenKvm(errno(e)))?;
        let vm = kvm
            .create_vm()
            .map_err(|e| BackendError::CreateVm(errno(e)))?;
        Ok(RealKvm {
            path: path.to_path_buf(),
            kvm,
            vm,
            platform: Platform::of_host(Path::new(SYS_MODULE)),
            devices: BTreeMap::new(),
            next_device: 0,
            slot_sizes: HashMap::new(),
        })
    }

    /// The system fd (`/dev/kvm`): what a VMM needs besides the VM's ioctls, e.g.
    /// `KVM_GET_SUPPORTED_CPUID` for its vCPUs.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The VM fd, for the ioctls the [`Backend`] trait does not carry (creating vCPUs).
    /// Memslots must still go through the trait, which keeps the slot sizes `get_dirty_log`
    /// needs.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm
    }

    fn device(&self, dev: DeviceHandle) -> std::result::Result<&DeviceFd, Errno> {
        self.devices.get(&dev.0).ok_or(Errno::EBADF)
    }

    /// Keeps `slot_sizes` equal to the kernel's view after a successful region call: size 0
    /// deleted the slot, anything else created it or kept its size (KVM refuses to resize).
    fn region_changed(&mut self, slot: u32, memory_size: u64) {
        if memory_size == 0 {
            self.slot_sizes.remove(&slot);
        } else {
            self.slot_sizes.insert(slot, memory_size);
        }
    }

    /// `KVM_GET_DIRTY_LOG`, which needs only the VM fd.
    fn dirty_log(&self, slot: u32) -> Result<Vec<u64>> {
        // A slot we have no size for does not exist, so KVM fails before writing the bitmap
        // (ENOENT, or EINVAL for an id out of range); an empty buffer is then never touched.
        let size = self.slot_sizes.get(&slot).copied().unwrap_or(0);
        let size = usize::try_from(size).map_err(|_| BackendError::GetDirtyLog(Errno::EINVAL))?;
        self.vm
            .get_dirty_log(slot, size)
            .map_err(|e| BackendError::GetDirtyLog(errno(e)))
    }

    fn create_device_test(&self, dev_type: u32, flags: u32) -> std::result::Result<(), Errno> {
        let mut device = kvm_create_device {
            type_: dev_type,
            fd: 0,
            flags,
        };
        // SAFETY: `self.vm` is a VM fd and KVM_CREATE_DEVICE reads and writes only the
        // `kvm_create_device` we pass by exclusive reference; with KVM_CREATE_DEVICE_TEST set
        // the kernel creates no fd, so there is nothing to take ownership of.
        let ret = unsafe { ioctl_with_mut_ref(&self.vm, KVM_CREATE_DEVICE(), &mut device) };
        if ret == 0 {
            Ok(())
        } else {
            Err(errno(vmm_sys_util::errno::Error::last()))
        }
    }
}

impl Backend for RealKvm {
    fn describe(&self) -> String {
        format!(
            "kvm: {} (VM fd {})",
            self.path.display(),
            self.vm.as_raw_fd()
        )
    }

    fn kvm_api_version(&self) -> Result<i32> {
        match self.kvm.get_api_version() {
            v if v < 0 => Err(BackendError::GetApiVersion(errno(
                vmm_sys_util::errno::Error::last(),
            ))),
            v => Ok(v),
        }
    }

    fn platform(&self) -> Platform {
        self.platform.clone()
    }

    fn check_extension(&self, cap: u32) -> i64 {
        i64::from(self.vm.check_extension_raw(libc::c_ulong::from(cap)))
    }

    unsafe fn set_user_memory_region(
        &mut self,
        region: &kvm_userspace_memory_region,
    ) -> Result<()> {
        // SAFETY: the caller keeps the host range mapped while the slot exists (this
        // function's contract); `self.vm` is a VM fd.
        unsafe { self.vm.set_user_memory_region(*region) }
            .map_err(|e| BackendError::SetUserMemoryRegion(errno(e)))?;
        self.region_changed(region.slot, region.memory_size);
        Ok(())
    }

    unsafe fn set_user_memory_region2(
        &mut self,
        region: &kvm_userspace_memory_region2,
    ) -> Result<()> {
        // SAFETY: as above, the caller keeps the host range mapped while the slot exists.
        unsafe { self.vm.set_user_memory_region2(*region) }
            .map_err(|e| BackendError::SetUserMemoryRegion2(errno(e)))?;
        self.region_changed(region.slot, region.memory_size);
        Ok(())
    }

    fn create_device(&mut self, dev_type: u32, flags: u32) -> Result<Option<DeviceHandle>> {
        if flags & KVM_CREATE_DEVICE_TEST != 0 {
            return self
                .create_device_test(dev_type, flags)
                .map(|()| None)
                .map_err(BackendError::CreateDevice);
        }
        let mut device = kvm_create_device {
            type_: dev_type,
            fd: 0,
            flags,
        };
        let fd = self
            .vm
            .create_device(&mut device)
            .map_err(|e| BackendError::CreateDevice(errno(e)))?;
        let handle = DeviceHandle(self.next_device);
        self.next_device += 1;
        self.devices.insert(handle.0, fd);
        Ok(Some(handle))
    }

    fn set_device_attr(&mut self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()> {
        self.device(dev)
            .and_then(|fd| fd.set_device_attr(attr).map_err(errno))
            .map_err(BackendError::SetDeviceAttr)
    }

    fn has_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()> {
        self.device(dev)
            .and_then(|fd| fd.has_device_attr(attr).map_err(errno))
            .map_err(BackendError::HasDeviceAttr)
    }

    fn get_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<u64> {
        let fd = self.device(dev).map_err(BackendError::GetDeviceAttr)?;
        // The attribute decides how much the kernel writes; x86 device attributes are at most
        // 64 bits, and a page of slack keeps an unexpected larger one inside our buffer.
        let mut buf = [0u64; 512];
        let mut attr = kvm_device_attr {
            addr: buf.as_mut_ptr() as u64,
            ..*attr
        };
        // SAFETY: `attr.addr` points to `buf`, 4 KiB that live until the call returns and
        // that nothing else references.
        unsafe { fd.get_device_attr(&mut attr) }
            .map_err(|e| BackendError::GetDeviceAttr(errno(e)))?;
        Ok(buf[0])
    }

    fn close_device(&mut self, dev: DeviceHandle) -> Result<()> {
        // Dropping the DeviceFd closes the fd.
        self.devices
            .remove(&dev.0)
            .map(drop)
            .ok_or(BackendError::CloseDevice(Errno::EBADF))
    }

    fn enable_cap(&mut self, cap: &kvm_enable_cap) -> Result<()> {
        self.vm
            .enable_cap(cap)
            .map_err(|e| BackendError::EnableCap(errno(e)))
    }

    fn get_dirty_log(&mut self, slot: u32) -> Result<Vec<u64>> {
        self.dirty_log(slot)
    }

    fn get_dirty_log_shared(&self, slot: u32) -> Option<Result<Vec<u64>>> {
        Some(self.dirty_log(slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uapi::cap::KVM_CAP_NR_MEMSLOTS;
    use uapi::device::KVM_DEV_TYPE_VFIO;

    /// kvm-ioctls' style: tests use the real kernel; without one they say so and pass.
    fn open() -> Option<RealKvm> {
        match RealKvm::open() {
            Ok(vm) => Some(vm),
            Err(e) => {
                println!("SKIP: {e}: real-KVM backend test not run");
                None
            }
        }
    }

    #[test]
    fn other_paths_fail_at_the_step_that_fails() {
        assert_eq!(
            RealKvm::open_path(Path::new("/nonexistent/kvm")).unwrap_err(),
            BackendError::OpenKvm(Errno::ENOENT)
        );
        assert_eq!(
            RealKvm::open_path(Path::new("/dev/k\0vm")).unwrap_err(),
            BackendError::OpenKvm(Errno::EINVAL)
        );
        // A file of our own opens read-write, but it is no KVM device.
        let file = std::env::temp_dir().join(format!("vmm-not-kvm-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let err = RealKvm::open_path(&file).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(err, BackendError::CreateVm(Errno::ENOTTY));
    }

    #[test]
    fn the_api_version_is_twelve_and_the_platform_is_the_hosts() {
        let Some(vm) = open() else { return };
        assert_eq!(vm.kvm_api_version(), Ok(12));
        let platform = vm.platform();
        assert_eq!(platform.origin, crate::backend::Origin::Host);
        assert_eq!(platform.vendor_id.len(), 12);
        assert!(vm.describe().starts_with("kvm: /dev/kvm (VM fd "));
    }

    #[test]
    fn devices_are_created_tested_and_closed() {
        let Some(mut vm) = open() else { return };
        assert!(vm.check_extension(KVM_CAP_NR_MEMSLOTS) > 0);
        // The test form makes no fd: the next real device still gets handle 0.
        assert_eq!(
            vm.create_device(KVM_DEV_TYPE_VFIO, KVM_CREATE_DEVICE_TEST),
            Ok(None)
        );
        let dev = vm.create_device(KVM_DEV_TYPE_VFIO, 0).unwrap().unwrap();
        assert_eq!(dev, DeviceHandle(0));
        assert_eq!(vm.close_device(dev), Ok(()));
        assert_eq!(
            vm.close_device(dev),
            Err(BackendError::CloseDevice(Errno::EBADF))
        );
        let attr = kvm_device_attr::default();
        assert_eq!(
            vm.has_device_attr(dev, &attr),
            Err(BackendError::HasDeviceAttr(Errno::EBADF))
        );
        assert_eq!(
            vm.create_device(u32::MAX, 0),
            Err(BackendError::CreateDevice(Errno::ENODEV))
        );
    }

    #[test]
    fn dirty_log_is_sized_from_the_slot() {
        // Declared before `vm`, so dropped after it: the slot never outlives its memory.
        let map = crate::mmap::AnonMapping::new(0x10_0000).unwrap();
        let Some(mut vm) = open() else { return };
        let region = kvm_userspace_memory_region {
            slot: 3,
            flags: uapi::memslot::KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr: 0x10_0000,
            memory_size: 0x10_0000,
            userspace_addr: map.addr(),
        };
        // SAFETY: `map` outlives `vm`.
        unsafe { vm.set_user_memory_region(&region) }.unwrap();
        // 256 pages: four 64-bit words, nothing dirty without a running vCPU.
        assert_eq!(vm.get_dirty_log(3), Ok(vec![0; 4]));
        assert_eq!(
            vm.get_dirty_log(4),
            Err(BackendError::GetDirtyLog(Errno::ENOENT))
        );
        let delete = kvm_userspace_memory_region {
            memory_size: 0,
            ..region
        };
        // SAFETY: deleting a slot maps nothing.
        unsafe { vm.set_user_memory_region(&delete) }.unwrap();
        assert_eq!(
            vm.get_dirty_log(3),
            Err(BackendError::GetDirtyLog(Errno::ENOENT))
        );
    }
}
