//! [`GuestVm`]: a VM with one vCPU and guest memory on the host's `/dev/kvm`, made to run
//! [`Program`](super::program::Program)s (see [`GuestVm::run`]), and the vCPU's
//! cache-control state read back through the uAPI.
//!
//! The VM is a [`RealKvm`] backend: its main memory is slot 0, and every other region goes
//! through [`region::GuestMemory`], so a noncoherent BAR is registered by the same strategy
//! chain (and flushed the same way) as anywhere else in the VMM.

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_LOG_DIRTY_PAGES, Msrs, kvm_msr_entry,
    kvm_userspace_memory_region,
};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use kvm_ioctls::VcpuFd;
use memtype::mtrr::{MSR_MTRR_DEF_TYPE, MSR_MTRR_FIX_64K_00000};
use memtype::pat::MSR_IA32_CR_PAT;
use uapi::{Errno, SlotId};

use super::error::GuestError;
use super::layout::{PAGE_SIZE, SYSTEM_END};
use super::memory::GuestMemory;
use crate::backend::{Backend, BackendError, RealKvm};
use crate::region::{self, GuestRegion, RegionError};
use crate::strategy::{Policy, Registration};

/// CR0.CD: caching disabled.
pub const CR0_CD: u64 = 1 << 30;

pub(crate) fn errno(e: vmm_sys_util::errno::Error) -> Errno {
    Errno(e.errno())
}

/// The vCPU's cache-control state as `KVM_GET_MSRS` and `KVM_GET_SREGS` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheState {
    /// `IA32_PAT` (0x277).
    pub pat: u64,
    /// `IA32_MTRR_DEF_TYPE` (0x2FF).
    pub mtrr_def_type: u64,
    /// `IA32_MTRR_FIX64K_00000` (0x250), the first fixed-range MTRR.
    pub mtrr_fix64k_00000: u64,
    /// CR0.
    pub cr0: u64,
}

/// A VM with one vCPU, its main memory in slot 0 from GPA 0, and any extra regions.
#[derive(Debug)]
pub struct GuestVm {
    /// Behind a lock so that a VMM thread of its own can run it (`crate::live`) while
    /// this value keeps the memory and the VM; only one thread uses it at a time.
    vcpu: Arc<Mutex<VcpuFd>>,
    // Field order is drop order: `regions` owns the VM, which must close before the main
    // memory its slot 0 points into is unmapped.
    regions: region::GuestMemory,
    pub(super) memory: GuestMemory,
}

/// Main memory holds at least the system area, in whole pages.
fn check_memory_size(size: u64) -> Result<(), GuestError> {
    if size < SYSTEM_END || !size.is_multiple_of(PAGE_SIZE) {
        return Err(GuestError::MemorySize {
            size,
            min: SYSTEM_END,
        });
    }
    Ok(())
}

impl GuestVm {
    /// Opens `/dev/kvm` and makes a VM with `memory_size` bytes of main memory (slot 0, from
    /// GPA 0; at least the 2 MiB system area) and one vCPU given the host's supported CPUID.
    ///
    /// Fails with [`GuestError::OpenKvm`] where there is no usable `/dev/kvm`.
    ///
    /// ```no_run
    /// use vmm::guest::{GuestOp, GuestVm, Program};
    /// use std::time::Duration;
    ///
    /// let mut vm = GuestVm::new(4 << 20)?;
    /// let program = Program {
    ///     ops: vec![GuestOp::Load { gpa: 0x10_0000, len: 1 }],
    ///     ..Program::default()
    /// };
    /// let run = vm.run(&program, Duration::from_secs(5))?;
    /// assert_eq!(run.results.len(), 1);
    /// # Ok::<(), vmm::guest::GuestError>(())
    /// ```
    pub fn new(memory_size: u64) -> Result<GuestVm, GuestError> {
        GuestVm::with_policy(memory_size, Policy::default())
    }

    /// As [`GuestVm::new`], registering noncoherent regions under `policy`.
    pub fn with_policy(memory_size: u64, policy: Policy) -> Result<GuestVm, GuestError> {
        check_memory_size(memory_size)?;
        let memory = GuestMemory::new(memory_size).map_err(|errno| GuestError::MapMemory {
            size: memory_size,
            errno,
        })?;
        GuestVm::with_memory(memory, policy)
    }

    /// As [`GuestVm::with_policy`], on main memory the caller made (a restored guest runs
    /// on the memory its migration was received into).
    pub fn with_memory(memory: GuestMemory, policy: Policy) -> Result<GuestVm, GuestError> {
        let memory_size = memory.size();
        check_memory_size(memory_size)?;
        let mut kvm = RealKvm::open().map_err(|e| match e {
            BackendError::OpenKvm(errno) => GuestError::OpenKvm(errno),
            other => GuestError::CreateVm(other.errno()),
        })?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size,
            userspace_addr: memory.host_addr(),
        };
        // SAFETY: the range is `memory`'s own mapping, which lives as long as the VM (both
        // are owned by the returned `GuestVm`, and fields drop in order: the VM first).
        unsafe { kvm.set_user_memory_region(&region) }.map_err(|e| {
            GuestError::SetUserMemoryRegion {
                slot: 0,
                errno: e.errno(),
            }
        })?;
        let vcpu = kvm
            .vm_fd()
            .create_vcpu(0)
            .map_err(|e| GuestError::CreateVcpu(errno(e)))?;
        let cpuid = kvm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| GuestError::GetSupportedCpuid(errno(e)))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| GuestError::SetCpuid(errno(e)))?;
        Ok(GuestVm {
            vcpu: Arc::new(Mutex::new(vcpu)),
            regions: region::GuestMemory::with_first_slot(Box::new(kvm), policy, 1),
            memory,
        })
    }

    /// Adds `region` in its own memslot (from slot 1 up): a coherent region as a plain
    /// slot, a noncoherent one populated, flushed and registered through the strategy chain
    /// under the VM's policy. A program reaches it through a
    /// [`GuestMapping`](super::program::GuestMapping) of its own.
    pub fn add_region(&mut self, region: GuestRegion) -> Result<SlotId, RegionError> {
        self.regions.add_region(region)
    }

    /// The VM's extra regions and how each noncoherent one was registered.
    pub fn regions(&self) -> &region::GuestMemory {
        &self.regions
    }

    /// How the noncoherent region in `slot` was registered.
    pub fn registration(&self, slot: SlotId) -> Option<&Registration> {
        self.regions.registration(slot)
    }

    /// The VM (the ioctls of the [`Backend`] trait: dirty log, capabilities).
    pub fn backend(&self) -> &dyn Backend {
        self.regions.backend()
    }

    /// The bytes of the region in `slot`, as the VMM's own mapping sees them: how a device
    /// model reads what the guest wrote (DMA through the VMM's mapping). The vCPU writes
    /// guest memory only inside [`GuestVm::run`], which needs `&mut self`, so no run overlaps
    /// this borrow.
    pub fn region_bytes(&self, slot: SlotId) -> Option<&[u8]> {
        let region = self.regions.region(slot)?;
        // SAFETY: the mapping is `size` readable bytes owned by the region, which stays in
        // `self.regions` for at least the borrow of `self`; no run can write it meanwhile.
        Some(unsafe {
            std::slice::from_raw_parts(region.host().addr() as *const u8, region.size() as usize)
        })
    }

    /// The bytes of the region in `slot`, writable (a device model's DMA write; same
    /// reasoning as [`GuestVm::region_bytes`], with the borrow exclusive).
    pub fn region_bytes_mut(&mut self, slot: SlotId) -> Option<&mut [u8]> {
        let region = self.regions.region(slot)?;
        // SAFETY: as in `region_bytes`; `&mut self` makes this the only borrow of the
        // mapping, which is writable.
        Some(unsafe {
            std::slice::from_raw_parts_mut(region.host().addr() as *mut u8, region.size() as usize)
        })
    }

    /// The vCPU, locked. (A panic of the thread that held it last leaves nothing half done
    /// in the fd itself, so a poisoned lock is taken over.)
    pub(crate) fn vcpu(&self) -> MutexGuard<'_, VcpuFd> {
        self.vcpu.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The vCPU, shared with a thread that runs it.
    pub(crate) fn shared_vcpu(&self) -> Arc<Mutex<VcpuFd>> {
        Arc::clone(&self.vcpu)
    }

    /// Turns `KVM_MEM_LOG_DIRTY_PAGES` on or off for the main memory (slot 0) and every
    /// region.
    pub fn set_dirty_logging(&mut self, on: bool) -> Result<(), GuestError> {
        let main = kvm_userspace_memory_region {
            slot: 0,
            flags: if on { KVM_MEM_LOG_DIRTY_PAGES } else { 0 },
            guest_phys_addr: 0,
            memory_size: self.memory.size(),
            userspace_addr: self.memory.host_addr(),
        };
        // SAFETY: slot 0's own range (only the flags change), which lives as long as the VM.
        unsafe { self.regions.backend_mut().set_user_memory_region(&main) }.map_err(|e| {
            GuestError::SetUserMemoryRegion {
                slot: 0,
                errno: e.errno(),
            }
        })?;
        self.regions.set_dirty_logging(on).map_err(GuestError::from)
    }

    /// `KVM_GET_DIRTY_LOG` of `slot` (0: the main memory): a bit per page written since the
    /// last call.
    pub fn dirty_log(&mut self, slot: SlotId) -> Result<Vec<u64>, GuestError> {
        self.regions
            .dirty_log(slot)
            .map_err(|e| GuestError::GetDirtyLog {
                slot: slot.raw(),
                errno: e.errno(),
            })
    }

    /// The vCPU's TSC frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub fn tsc_khz(&self) -> Result<u32, GuestError> {
        self.vcpu()
            .get_tsc_khz()
            .map_err(|e| GuestError::GetTscKhz(errno(e)))
    }

    /// The main memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// The main memory, writable (to prepare data before a run).
    pub fn memory_mut(&mut self) -> &mut GuestMemory {
        &mut self.memory
    }

    /// Writes one MSR with `KVM_SET_MSRS`.
    pub fn write_msr(&self, index: u32, value: u64) -> Result<(), GuestError> {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data: value,
            ..Default::default()
        }])
        .map_err(|_| GuestError::SetMsrs(Errno::E2BIG))?;
        let written = self
            .vcpu()
            .set_msrs(&msrs)
            .map_err(|e| GuestError::SetMsrs(errno(e)))?;
        if written != 1 {
            return Err(GuestError::MsrNotWritten { index, value });
        }
        Ok(())
    }

    /// Reads one MSR with `KVM_GET_MSRS`.
    pub fn read_msr(&self, index: u32) -> Result<u64, GuestError> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            ..Default::default()
        }])
        .map_err(|_| GuestError::GetMsrs(Errno::E2BIG))?;
        let read = self
            .vcpu()
            .get_msrs(&mut msrs)
            .map_err(|e| GuestError::GetMsrs(errno(e)))?;
        if read != 1 {
            return Err(GuestError::MsrNotRead { index });
        }
        Ok(msrs.as_slice()[0].data)
    }

    /// CR0, from `KVM_GET_SREGS`.
    pub fn cr0(&self) -> Result<u64, GuestError> {
        let sregs = self
            .vcpu()
            .get_sregs()
            .map_err(|e| GuestError::GetSregs(errno(e)))?;
        Ok(sregs.cr0)
    }

    /// The cache-control state as KVM reports it now.
    pub fn cache_state(&self) -> Result<CacheState, GuestError> {
        Ok(CacheState {
            pat: self.read_msr(MSR_IA32_CR_PAT)?,
            mtrr_def_type: self.read_msr(MSR_MTRR_DEF_TYPE)?,
            mtrr_fix64k_00000: self.read_msr(MSR_MTRR_FIX_64K_00000)?,
            cr0: self.cr0()?,
        })
    }
}
