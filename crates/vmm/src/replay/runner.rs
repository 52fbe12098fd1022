//! [`Replayer`]: runs parsed entries on a [`Backend`], one ioctl per entry, and records each
//! answer beside what the entry expected.
//!
//! The replayer owns the backend and the host pool the entries' `userspace_offset`s point
//! into, and drops the backend (closing the VM, so every slot goes away) before the pool is
//! unmapped. Device names map to the handles the backend returned; a name whose device was
//! never made (its `create_device` failed) or was closed answers `EBADF` without reaching
//! the backend, as an ioctl on fd -1 or on a closed fd does.

use std::collections::HashMap;

use uapi::Errno;
use uapi::cap::kvm_enable_cap;
use uapi::device::kvm_device_attr;
use uapi::memslot::{kvm_userspace_memory_region, kvm_userspace_memory_region2};

use super::call::{Call, DeviceAttr, HostAddr, POOL_SIZE, Region};
use super::format::Entry;
use super::report::{Answer, Report, Step};
use crate::backend::{Backend, BackendError, DeviceHandle};
use crate::mmap::AnonMapping;

/// Setting up a replay failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Mapping the host pool failed.
    #[error("cannot map the {POOL_SIZE:#x}-byte replay pool: {0}")]
    MapPool(Errno),
}

/// Runs replay entries on one VM.
pub struct Replayer {
    // Field order is drop order: the VM and its slots go before the memory they point to.
    backend: Box<dyn Backend>,
    pool: AnonMapping,
    devices: HashMap<String, DeviceHandle>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("backend", &self.backend.describe())
            .field("pool", &self.pool)
            .field("devices", &self.devices)
            .finish()
    }
}

impl Replayer {
    /// Maps the pool and takes the VM to replay on.
    pub fn new(backend: Box<dyn Backend>) -> Result<Replayer, ReplayError> {
        let pool = AnonMapping::new(POOL_SIZE as usize).map_err(ReplayError::MapPool)?;
        Ok(Replayer {
            backend,
            pool,
            devices: HashMap::new(),
        })
    }

    /// Runs `entries` in order; the VM keeps its state between calls to `run`.
    pub fn run(&mut self, entries: &[Entry]) -> Report {
        let steps = entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let result = self.call(&entry.call);
                Step::new(index, entry.clone(), result)
            })
            .collect();
        Report {
            backend: self.backend.describe(),
            steps,
            noncoherent_dma_count: self.backend.noncoherent_dma_count(),
        }
    }

    fn userspace_addr(&self, host: HostAddr) -> u64 {
        match host {
            HostAddr::PoolOffset(offset) => self.pool.addr() + offset,
            HostAddr::Raw(addr) => addr,
        }
    }

    fn device(&self, name: &str) -> Result<DeviceHandle, Errno> {
        self.devices.get(name).copied().ok_or(Errno::EBADF)
    }

    fn call(&mut self, call: &Call) -> Result<Answer, Errno> {
        let errno = |e: BackendError| e.errno();
        match call {
            Call::CheckExtension(c) => Ok(Answer::Value(self.backend.check_extension(c.cap))),
            Call::SetUserMemoryRegion(r) => {
                let region = self.region_v1(r);
                // SAFETY: a pool offset points into `self.pool`, which outlives the backend
                // (field order); a raw address is never accessed, because nothing can run a
                // vCPU on a VM owned by a replayer, and the kernel only validates the range.
                unsafe { self.backend.set_user_memory_region(&region) }
                    .map(|()| Answer::Done)
                    .map_err(errno)
            }
            Call::SetUserMemoryRegion2(r) => {
                let region = self.region_v2(r);
                // SAFETY: as for version 1 above.
                unsafe { self.backend.set_user_memory_region2(&region) }
                    .map(|()| Answer::Done)
                    .map_err(errno)
            }
            Call::CreateDevice(c) => {
                let made = self.backend.create_device(c.dev_type, c.flags);
                if let Some(name) = &c.name {
                    match made {
                        Ok(Some(handle)) => self.devices.insert(name.clone(), handle),
                        _ => self.devices.remove(name),
                    };
                }
                made.map(|h| h.map_or(Answer::Done, |_| Answer::Device))
                    .map_err(errno)
            }
            Call::SetDeviceAttr(a) => {
                let dev = self.device(&a.device)?;
                self.backend
                    .set_device_attr(dev, &device_attr(a))
                    .map(|()| Answer::Done)
                    .map_err(errno)
            }
            Call::HasDeviceAttr(a) => {
                let dev = self.device(&a.device)?;
                self.backend
                    .has_device_attr(dev, &device_attr(a))
                    .map(|()| Answer::Done)
                    .map_err(errno)
            }
            Call::GetDeviceAttr(a) => {
                let dev = self.device(&a.device)?;
                self.backend
                    .get_device_attr(dev, &device_attr(a))
                    .map(Answer::Attr)
                    .map_err(errno)
            }
            Call::CloseDevice(c) => {
                let dev = self.device(&c.device)?;
                self.backend.close_device(dev).map_err(errno)?;
                self.devices.remove(&c.device);
                Ok(Answer::Done)
            }
            Call::EnableCap(c) => {
                let cap = kvm_enable_cap {
                    cap: c.cap,
                    flags: c.flags,
                    args: c.args,
                    ..Default::default()
                };
                self.backend
                    .enable_cap(&cap)
                    .map(|()| Answer::Done)
                    .map_err(errno)
            }
            Call::GetDirtyLog(d) => self
                .backend
                .get_dirty_log(d.slot)
                .map(Answer::DirtyLog)
                .map_err(errno),
        }
    }

    fn region_v1(&self, r: &Region) -> kvm_userspace_memory_region {
        kvm_userspace_memory_region {
            slot: r.slot,
            flags: r.flags,
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_addr: self.userspace_addr(r.host),
        }
    }

    fn region_v2(&self, r: &Region) -> kvm_userspace_memory_region2 {
        kvm_userspace_memory_region2 {
            slot: r.slot,
            flags: r.flags,
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_addr: self.userspace_addr(r.host),
            guest_memfd_offset: r.guest_memfd_offset,
            guest_memfd: r.guest_memfd,
            ..Default::default()
        }
    }
}

fn device_attr(a: &DeviceAttr) -> kvm_device_attr {
    kvm_device_attr {
        flags: a.flags,
        group: a.group,
        attr: a.attr,
        addr: a.addr,
    }
}
