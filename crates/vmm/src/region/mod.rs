//! Guest memory regions with a coherence attribute, and the VM memory that owns them.
//!
//! A [`GuestRegion`] is a range of guest-physical memory backed by host memory it owns: system
//! RAM or a device BAR, coherent or the target of non-snooping DMA (crosvm's
//! `MemCacheType::{CacheCoherent, CacheNonCoherent}`). [`GuestMemory`] owns a backend and its
//! regions, gives each a slot id, and registers it: a coherent region as a plain memslot, a
//! noncoherent one through the [`strategy`] chain.
//!
//! Noncoherent pages are flushed from the CPU caches (see [`crate::cache`]) when they are
//! given to the guest and its device and again when they are taken back:
//!
//! ```text
//! add_region:    populate (the kernel zeroes each page with cached stores)
//!                → flush → create the slot (chain)            guest and device see memory
//! remove_region: delete the slot → flush
//!                → close its virtio device → return the region   the host reads memory
//! drop:          flush every noncoherent region → close the VM → unmap
//! ```
//!
//! Without the first flush a device that does not snoop could read whatever the page held
//! before the host zeroed it (the information leak of system.md §3); without the second the
//! host could read its own stale lines instead of what the device wrote.

use std::collections::BTreeMap;
use std::fmt;

use migration::destination::RegionMemory;
use uapi::memslot::{
    KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA, kvm_userspace_memory_region,
};
use uapi::{Errno, PAGE_SIZE, SlotId};

use crate::backend::{Backend, BackendError, DeviceHandle};
use crate::cache::flush_dcache_range;
use crate::mmap::AnonMapping;
use crate::strategy::{self, Mechanism, Policy, Registration, StrategyError};

/// What a region is to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    /// System RAM: the whole guest may map it, the host reads it (migration) through its
    /// own WB mapping.
    Ram,
    /// A device BAR (a virtio-GPU's host-visible memory): only the device's driver maps it.
    DeviceBar,
}

/// Whether DMA into a region snoops the CPU caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coherence {
    /// DMA snoops: memory types do not matter for correctness.
    Coherent,
    /// The target of non-snooping DMA: the guest maps it WC and KVM must honor that.
    NoncoherentDma,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionKind::Ram => "RAM",
            RegionKind::DeviceBar => "device BAR",
        })
    }
}

impl fmt::Display for Coherence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Coherence::Coherent => "coherent",
            Coherence::NoncoherentDma => "noncoherent DMA",
        })
    }
}

/// A guest-physical range and the host memory behind it (owned, page aligned).
#[derive(Debug)]
pub struct GuestRegion {
    name: String,
    gpa: u64,
    size: u64,
    kind: RegionKind,
    coherence: Coherence,
    host: AnonMapping,
}

impl GuestRegion {
    /// Maps `size` bytes of host memory for the guest range `gpa .. gpa + size`. The memory
    /// is not touched until the region is added to a [`GuestMemory`].
    pub fn new(
        name: impl Into<String>,
        gpa: u64,
        size: u64,
        kind: RegionKind,
        coherence: Coherence,
    ) -> Result<GuestRegion, RegionError> {
        let name = name.into();
        let host = usize::try_from(size)
            .map_err(|_| Errno::ENOMEM)
            .and_then(AnonMapping::for_guest);
        GuestRegion::with_host(name, gpa, size, kind, coherence, host)
    }

    /// A region for `gpa .. gpa + memory.len()` backed by a migration destination's staging
    /// memory, as it is: a restored device region keeps the pages it was received into.
    pub fn adopt(
        name: impl Into<String>,
        gpa: u64,
        memory: RegionMemory,
        kind: RegionKind,
        coherence: Coherence,
    ) -> Result<GuestRegion, RegionError> {
        let size = memory.len() as u64;
        let host = AnonMapping::adopt(memory);
        GuestRegion::with_host(name.into(), gpa, size, kind, coherence, host)
    }

    fn with_host(
        name: String,
        gpa: u64,
        size: u64,
        kind: RegionKind,
        coherence: Coherence,
        host: Result<AnonMapping, Errno>,
    ) -> Result<GuestRegion, RegionError> {
        let host = host.map_err(|errno| RegionError::Map {
            name: name.clone(),
            errno,
        })?;
        Ok(GuestRegion {
            name,
            gpa,
            size,
            kind,
            coherence,
            host,
        })
    }

    /// The name given at creation, for reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// First guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// RAM or device BAR.
    pub fn kind(&self) -> RegionKind {
        self.kind
    }

    /// Coherent or noncoherent DMA.
    pub fn coherence(&self) -> Coherence {
        self.coherence
    }

    /// The host memory behind the region.
    pub fn host(&self) -> &AnonMapping {
        &self.host
    }

    fn is_noncoherent(&self) -> bool {
        self.coherence == Coherence::NoncoherentDma
    }

    /// Faults every page in for writing, so the kernel zeroes it now (with cached stores)
    /// rather than on the guest's first touch, after the flush. Adopted memory was
    /// populated where it was received, and its contents are the guest's: left alone.
    fn populate(&self) {
        if self.host.is_adopted() {
            return;
        }
        for offset in (0..self.size).step_by(PAGE_SIZE as usize) {
            let page = (self.host.addr() + offset) as *mut u8;
            // SAFETY: `page` is inside the mapping this region owns (offset < size), which is
            // readable and writable; it is not registered yet, so neither the guest nor KVM
            // uses it; a volatile write of 0 to fresh anonymous memory changes no contents.
            unsafe { page.write_volatile(0) };
        }
    }

    /// Writes back and invalidates the region's lines in every CPU cache.
    fn flush(&self) {
        // SAFETY: the range is exactly the mapping this region owns. Callers flush when
        // nothing runs on the VM (adding, removing, dropping: each holds the memory
        // exclusively), so no cached store can dirty a line behind the flush.
        unsafe { flush_dcache_range(self.host.addr() as *const u8, self.size as usize) };
    }
}

/// A region's memory could not be set up, registered or taken back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionError {
    /// Mapping the host memory failed.
    #[error("region {name}: mapping its host memory failed: {errno}")]
    Map {
        /// The region.
        name: String,
        /// `mmap`'s errno.
        errno: Errno,
    },
    /// Every slot id of address space 0 is taken.
    #[error("region {0}: no free slot id")]
    NoFreeSlot(String),
    /// Creating the memslot of a coherent region failed.
    #[error("region {name}: {source}")]
    CreateSlot {
        /// The region.
        name: String,
        /// The ioctl and its errno.
        source: BackendError,
    },
    /// Registering a noncoherent region failed (every mechanism refused, or an ioctl).
    #[error("region {name}: {source}")]
    Register {
        /// The region.
        name: String,
        /// Why.
        source: StrategyError,
    },
    /// No region has this slot.
    #[error("no region in slot {0:?}")]
    NoSuchSlot(SlotId),
    /// Deleting the memslot failed; the region stays registered.
    #[error("region {name}: deleting its slot: {source}")]
    DeleteSlot {
        /// The region.
        name: String,
        /// The ioctl and its errno.
        source: BackendError,
    },
    /// Turning dirty logging on or off for the region's slot failed.
    #[error("region {name}: setting KVM_MEM_LOG_DIRTY_PAGES: {source}")]
    DirtyLogging {
        /// The region.
        name: String,
        /// The ioctl and its errno.
        source: BackendError,
    },
    /// Closing the region's virtio device failed; the slot is already gone.
    #[error("region {name}: closing its KVM virtio device: {source}")]
    CloseDevice {
        /// The region.
        name: String,
        /// The errno.
        source: BackendError,
    },
}

/// One registered region.
#[derive(Debug)]
struct Slot {
    region: GuestRegion,
    registration: Option<Registration>,
    /// The virtio device that keeps the region noncoherent, closed on removal.
    device: Option<DeviceHandle>,
}

impl Slot {
    /// The flags the slot was created with: the proposal's flag if that is how the region
    /// was registered.
    fn flags(&self) -> u32 {
        match &self.registration {
            Some(r) if r.mechanism == Mechanism::MemslotFlag => KVM_MEM_NON_COHERENT_DMA,
            _ => 0,
        }
    }
}

/// A VM's guest memory: the backend (the VM) and its regions, each in its own memslot.
pub struct GuestMemory {
    // Field order is drop order: the VM (and with it every slot) goes before the memory the
    // slots point to.
    backend: Box<dyn Backend>,
    slots: BTreeMap<u16, Slot>,
    policy: Policy,
    /// The lowest slot id regions get: ids below it belong to the caller (a guest VM's main
    /// memory is slot 0).
    first_slot: u16,
}

impl fmt::Debug for GuestMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestMemory")
            .field("backend", &self.backend.describe())
            .field("slots", &self.slots)
            .field("policy", &self.policy)
            .field("first_slot", &self.first_slot)
            .finish()
    }
}

impl GuestMemory {
    /// Guest memory of the VM `backend`, registering noncoherent regions under `policy`.
    ///
    /// # Example
    ///
    /// ```
    /// use kvm_model::{KernelProfile, Vendor};
    /// use vmm::backend::ModelKvm;
    /// use vmm::region::{Coherence, GuestMemory, GuestRegion, RegionKind};
    /// use vmm::strategy::{Mechanism, Policy};
    ///
    /// let kernel = KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?;
    /// let mut memory = GuestMemory::new(Box::new(ModelKvm::new(kernel)), Policy::default());
    /// let bar = GuestRegion::new("gpu-bar", 0x1_0000_0000, 0x20_0000, RegionKind::DeviceBar,
    ///                            Coherence::NoncoherentDma)?;
    /// let slot = memory.add_region(bar)?;
    /// assert_eq!(memory.registration(slot).unwrap().mechanism, Mechanism::MemslotFlag);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(backend: Box<dyn Backend>, policy: Policy) -> GuestMemory {
        GuestMemory::with_first_slot(backend, policy, 0)
    }

    /// As [`GuestMemory::new`] for a backend whose slots below `first_slot` are already
    /// taken by the caller: regions get ids from `first_slot` up.
    pub fn with_first_slot(backend: Box<dyn Backend>, policy: Policy, first_slot: u16) -> Self {
        GuestMemory {
            backend,
            slots: BTreeMap::new(),
            policy,
            first_slot,
        }
    }

    /// The policy noncoherent regions are registered under.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The VM.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Adds `region` in the lowest free slot of address space 0: a coherent region as a
    /// plain memslot, a noncoherent one populated, flushed and registered through the
    /// strategy chain. On failure nothing stays registered and the region is dropped.
    pub fn add_region(&mut self, region: GuestRegion) -> Result<SlotId, RegionError> {
        let id = (self.first_slot..=u16::MAX)
            .find(|id| !self.slots.contains_key(id))
            .ok_or_else(|| RegionError::NoFreeSlot(region.name.clone()))?;
        let slot = SlotId { as_id: 0, id };
        let memslot = kvm_userspace_memory_region {
            slot: slot.raw(),
            flags: 0,
            guest_phys_addr: region.gpa,
            memory_size: region.size,
            userspace_addr: region.host.addr(),
        };
        let (registration, device) = if region.is_noncoherent() {
            region.populate();
            region.flush();
            // SAFETY: the mapping is owned by `region`, which moves into `self.slots` below
            // and stays there until the slot is deleted (`remove_region`) or the backend is
            // dropped first (field order).
            let registered = unsafe {
                strategy::register(self.backend.as_mut(), &memslot, region.kind, self.policy)
            }
            .map_err(|source| RegionError::Register {
                name: region.name.clone(),
                source,
            })?;
            (Some(registered.registration), registered.device)
        } else {
            // SAFETY: as above.
            unsafe { self.backend.set_user_memory_region(&memslot) }.map_err(|source| {
                RegionError::CreateSlot {
                    name: region.name.clone(),
                    source,
                }
            })?;
            (None, None)
        };
        self.slots.insert(
            id,
            Slot {
                region,
                registration,
                device,
            },
        );
        Ok(slot)
    }

    /// Deletes the region's slot, flushes a noncoherent region's lines, closes its virtio
    /// device if it has one, and hands the region back. A quirk disabled for it stays
    /// disabled: that is one way.
    pub fn remove_region(&mut self, slot: SlotId) -> Result<GuestRegion, RegionError> {
        let entry = (slot.as_id == 0)
            .then(|| self.slots.remove(&slot.id))
            .flatten()
            .ok_or(RegionError::NoSuchSlot(slot))?;
        let delete = kvm_userspace_memory_region {
            slot: slot.raw(),
            flags: 0,
            guest_phys_addr: entry.region.gpa,
            memory_size: 0,
            userspace_addr: entry.region.host.addr(),
        };
        // SAFETY: deleting a slot maps nothing.
        if let Err(source) = unsafe { self.backend.set_user_memory_region(&delete) } {
            let name = entry.region.name.clone();
            self.slots.insert(slot.id, entry);
            return Err(RegionError::DeleteSlot { name, source });
        }
        let Slot { region, device, .. } = entry;
        // The guest can no longer reach the pages: take them back before anything else.
        if region.is_noncoherent() {
            region.flush();
        }
        if let Some(device) = device {
            self.backend
                .close_device(device)
                .map_err(|source| RegionError::CloseDevice {
                    name: region.name.clone(),
                    source,
                })?;
        }
        Ok(region)
    }

    /// Turns `KVM_MEM_LOG_DIRTY_PAGES` on or off for every region's slot: a FLAGS_ONLY
    /// change that keeps the flags the region was registered with (the proposal's flag is
    /// fixed for the life of a slot, so it must be passed again unchanged).
    pub fn set_dirty_logging(&mut self, on: bool) -> Result<(), RegionError> {
        for (&id, slot) in &self.slots {
            let memslot = kvm_userspace_memory_region {
                slot: SlotId { as_id: 0, id }.raw(),
                flags: slot.flags() | if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
                guest_phys_addr: slot.region.gpa,
                memory_size: slot.region.size,
                userspace_addr: slot.region.host.addr(),
            };
            // SAFETY: the same range as the slot already has (only the flags change), owned
            // by the region for as long as the slot exists.
            unsafe { self.backend.set_user_memory_region(&memslot) }.map_err(|source| {
                RegionError::DirtyLogging {
                    name: slot.region.name.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// `KVM_GET_DIRTY_LOG` of `slot` (which may be one of the caller's, below the first
    /// region slot): one bit per page, set for each page written since the last call.
    pub fn dirty_log(&mut self, slot: SlotId) -> Result<Vec<u64>, BackendError> {
        self.backend.get_dirty_log(slot.raw())
    }

    /// The VM, for the ioctls of slots the caller owns (those below the first region slot).
    pub(crate) fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    /// The region in `slot`.
    pub fn region(&self, slot: SlotId) -> Option<&GuestRegion> {
        self.entry(slot).map(|s| &s.region)
    }

    /// How the noncoherent region in `slot` was registered (`None` for coherent ones).
    pub fn registration(&self, slot: SlotId) -> Option<&Registration> {
        self.entry(slot).and_then(|s| s.registration.as_ref())
    }

    /// Every region with its slot and registration, in slot order.
    pub fn regions(&self) -> impl Iterator<Item = (SlotId, &GuestRegion, Option<&Registration>)> {
        self.slots.iter().map(|(id, s)| {
            (
                SlotId { as_id: 0, id: *id },
                &s.region,
                s.registration.as_ref(),
            )
        })
    }

    fn entry(&self, slot: SlotId) -> Option<&Slot> {
        (slot.as_id == 0)
            .then(|| self.slots.get(&slot.id))
            .flatten()
    }
}

impl Drop for GuestMemory {
    /// Takes the noncoherent pages back: flushed while the VM still exists but nothing runs
    /// on it (this value is its only owner); then the fields drop, the VM first.
    fn drop(&mut self) {
        for slot in self.slots.values() {
            if slot.region.is_noncoherent() {
                slot.region.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ModelKvm;
    use kvm_model::{KernelProfile, Vendor};

    const PAGES: u64 = 16;

    /// How many of the region's pages are resident (`mincore`).
    fn resident(region: &GuestRegion) -> usize {
        let mut vec = vec![0u8; PAGES as usize];
        // SAFETY: the range is the region's own mapping; `vec` has one byte per page.
        let rc = unsafe {
            libc::mincore(
                region.host().addr() as *mut libc::c_void,
                region.size() as usize,
                vec.as_mut_ptr(),
            )
        };
        assert_eq!(rc, 0);
        vec.iter().filter(|b| *b & 1 != 0).count()
    }

    fn memory() -> GuestMemory {
        let kernel = KernelProfile::parse("6.16+memslot-flag", Vendor::Intel).unwrap();
        GuestMemory::new(Box::new(ModelKvm::new(kernel)), Policy::default())
    }

    #[test]
    fn noncoherent_pages_are_populated_before_the_guest_sees_them() {
        let mut memory = memory();
        let size = PAGES * PAGE_SIZE;
        let make = |name, gpa, coherence| {
            GuestRegion::new(name, gpa, size, RegionKind::DeviceBar, coherence).unwrap()
        };
        let nc = make("nc", 0x1_0000_0000, Coherence::NoncoherentDma);
        let plain = make("plain", 0x2_0000_0000, Coherence::Coherent);
        assert_eq!((resident(&nc), resident(&plain)), (0, 0));
        let nc = memory.add_region(nc).unwrap();
        let plain = memory.add_region(plain).unwrap();
        // The kernel zeroed every noncoherent page now, before the flush; the coherent
        // region is left to fault in on use.
        assert_eq!(resident(memory.region(nc).unwrap()), PAGES as usize);
        assert_eq!(resident(memory.region(plain).unwrap()), 0);
    }

    #[test]
    fn slot_ids_are_the_lowest_free() {
        let mut memory = memory();
        let region = |i: u64| {
            GuestRegion::new(
                format!("r{i}"),
                i << 32,
                PAGE_SIZE,
                RegionKind::Ram,
                Coherence::Coherent,
            )
            .unwrap()
        };
        let ids: Vec<u16> = (1..=3)
            .map(|i| memory.add_region(region(i)).unwrap().id)
            .collect();
        assert_eq!(ids, [0, 1, 2]);
        memory.remove_region(SlotId { as_id: 0, id: 1 }).unwrap();
        assert_eq!(memory.add_region(region(4)).unwrap().id, 1);
        let names: Vec<&str> = memory.regions().map(|(_, r, _)| r.name()).collect();
        assert_eq!(names, ["r1", "r4", "r3"]);
        // Address space 1 holds nothing of ours.
        let other = SlotId { as_id: 1, id: 0 };
        assert!(memory.region(other).is_none());
        assert_eq!(
            memory.remove_region(other).unwrap_err(),
            RegionError::NoSuchSlot(other)
        );
    }

    #[test]
    fn impossible_sizes_fail_to_map() {
        let err =
            GuestRegion::new("empty", 0, 0, RegionKind::Ram, Coherence::Coherent).unwrap_err();
        assert_eq!(
            err.to_string(),
            "region empty: mapping its host memory failed: EINVAL"
        );
    }
}
