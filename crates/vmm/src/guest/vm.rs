//! [`GuestVm`]: a VM with one vCPU and guest memory on the host's `/dev/kvm`, made to run
//! [`Program`](super::program::Program)s (see [`GuestVm::run`]), and the vCPU's
//! cache-control state read back through the uAPI.

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, Msrs, kvm_msr_entry, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use memtype::mtrr::{MSR_MTRR_DEF_TYPE, MSR_MTRR_FIX_64K_00000};
use memtype::pat::MSR_IA32_CR_PAT;
use uapi::Errno;

use super::error::GuestError;
use super::layout::{PAGE_SIZE, SYSTEM_END};
use super::memory::GuestMemory;

/// CR0.CD: caching disabled.
pub const CR0_CD: u64 = 1 << 30;

pub(super) fn errno(e: vmm_sys_util::errno::Error) -> Errno {
    Errno(e.errno())
}

/// A region of host memory mapped into the guest besides the main memory, e.g. a device
/// BAR: the fields of `kvm_userspace_memory_region`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRegion {
    /// The memslot; not 0 (the main memory).
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Where the guest sees it.
    pub guest_phys_addr: u64,
    /// Bytes.
    pub memory_size: u64,
    /// The host address of the first byte.
    pub userspace_addr: u64,
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
    pub(super) vm: VmFd,
    pub(super) vcpu: VcpuFd,
    pub(super) memory: GuestMemory,
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
        if memory_size < SYSTEM_END || !memory_size.is_multiple_of(PAGE_SIZE) {
            return Err(GuestError::MemorySize {
                size: memory_size,
                min: SYSTEM_END,
            });
        }
        let kvm = Kvm::new().map_err(|e| GuestError::OpenKvm(errno(e)))?;
        let vm = kvm
            .create_vm()
            .map_err(|e| GuestError::CreateVm(errno(e)))?;
        let memory = GuestMemory::new(memory_size).map_err(|errno| GuestError::MapMemory {
            size: memory_size,
            errno,
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
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| {
            GuestError::SetUserMemoryRegion {
                slot: 0,
                errno: errno(e),
            }
        })?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| GuestError::CreateVcpu(errno(e)))?;
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| GuestError::GetSupportedCpuid(errno(e)))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| GuestError::SetCpuid(errno(e)))?;
        Ok(GuestVm { vm, vcpu, memory })
    }

    /// Maps `region` into the guest with `KVM_SET_USER_MEMORY_REGION`. The program reaches it
    /// through a [`GuestMapping`](super::program::GuestMapping) of its own.
    ///
    /// # Safety
    ///
    /// `region.userspace_addr .. + memory_size` must stay mapped, readable and writable in
    /// this process for as long as this `GuestVm` lives (or until the slot is deleted), and
    /// must not be memory Rust code holds references into while a program runs.
    pub unsafe fn add_region(&mut self, region: HostRegion) -> Result<(), GuestError> {
        if region.slot == 0 {
            return Err(GuestError::ReservedSlot);
        }
        let raw = kvm_userspace_memory_region {
            slot: region.slot,
            flags: region.flags,
            guest_phys_addr: region.guest_phys_addr,
            memory_size: region.memory_size,
            userspace_addr: region.userspace_addr,
        };
        // SAFETY: the caller guarantees the range's lifetime (this function's `# Safety`).
        unsafe { self.vm.set_user_memory_region(raw) }.map_err(|e| {
            GuestError::SetUserMemoryRegion {
                slot: region.slot,
                errno: errno(e),
            }
        })
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
            .vcpu
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
            .vcpu
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
            .vcpu
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
