//! [`GuestError`]: why a guest VM could not be made or a program did not run to its end.

use std::time::Duration;

use uapi::Errno;

use super::exceptions::GuestFault;
use super::program::ProgramError;

/// A failed step of making a guest VM or running a program on it, named after the step (the
/// ioctl, for ioctls) and carrying the errno or what the guest did.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// The program is invalid; nothing was run.
    #[error("invalid guest program: {0}")]
    Program(#[from] ProgramError),
    /// `/dev/kvm` could not be opened.
    #[error("/dev/kvm cannot be opened ({0})")]
    OpenKvm(Errno),
    /// `KVM_CREATE_VM` failed.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(Errno),
    /// The main memory size is below the system area or not whole pages.
    #[error("guest memory of {size:#x} bytes: need whole 4 KiB pages and at least {min:#x}")]
    MemorySize {
        /// The size asked for.
        size: u64,
        /// The least size accepted.
        min: u64,
    },
    /// The host mapping for guest memory failed.
    #[error("mapping {size:#x} bytes of guest memory failed: {errno}")]
    MapMemory {
        /// The size asked for.
        size: u64,
        /// `mmap`'s errno.
        errno: Errno,
    },
    /// `KVM_SET_USER_MEMORY_REGION` failed.
    #[error("KVM_SET_USER_MEMORY_REGION (slot {slot}) failed: {errno}")]
    SetUserMemoryRegion {
        /// The slot.
        slot: u32,
        /// The kernel's errno.
        errno: Errno,
    },
    /// `KVM_CREATE_VCPU` failed.
    #[error("KVM_CREATE_VCPU failed: {0}")]
    CreateVcpu(Errno),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    GetSupportedCpuid(Errno),
    /// `KVM_SET_CPUID2` failed.
    #[error("KVM_SET_CPUID2 failed: {0}")]
    SetCpuid(Errno),
    /// `KVM_GET_SREGS` failed.
    #[error("KVM_GET_SREGS failed: {0}")]
    GetSregs(Errno),
    /// `KVM_SET_SREGS` failed.
    #[error("KVM_SET_SREGS failed: {0}")]
    SetSregs(Errno),
    /// `KVM_GET_REGS` failed.
    #[error("KVM_GET_REGS failed: {0}")]
    GetRegs(Errno),
    /// `KVM_SET_REGS` failed.
    #[error("KVM_SET_REGS failed: {0}")]
    SetRegs(Errno),
    /// `KVM_SET_MSRS` failed outright.
    #[error("KVM_SET_MSRS failed: {0}")]
    SetMsrs(Errno),
    /// `KVM_SET_MSRS` did not write the MSR (the kernel refused the index or the value).
    #[error("KVM_SET_MSRS refused MSR {index:#x} = {value:#x}")]
    MsrNotWritten {
        /// The MSR.
        index: u32,
        /// The value offered.
        value: u64,
    },
    /// `KVM_GET_MSRS` failed outright.
    #[error("KVM_GET_MSRS failed: {0}")]
    GetMsrs(Errno),
    /// `KVM_GET_MSRS` did not read the MSR.
    #[error("KVM_GET_MSRS did not read MSR {index:#x}")]
    MsrNotRead {
        /// The MSR.
        index: u32,
    },
    /// A region could not be set up (its dirty logging, for instance).
    #[error(transparent)]
    Region(#[from] crate::region::RegionError),
    /// `KVM_GET_DIRTY_LOG` failed.
    #[error("KVM_GET_DIRTY_LOG (slot {slot}) failed: {errno}")]
    GetDirtyLog {
        /// The slot.
        slot: u32,
        /// The kernel's errno.
        errno: Errno,
    },
    /// `KVM_GET_TSC_KHZ` failed.
    #[error("KVM_GET_TSC_KHZ failed: {0}")]
    GetTscKhz(Errno),
    /// `KVM_GET_XSAVE` failed.
    #[error("KVM_GET_XSAVE failed: {0}")]
    GetXsave(Errno),
    /// `KVM_SET_XSAVE` failed.
    #[error("KVM_SET_XSAVE failed: {0}")]
    SetXsave(Errno),
    /// The run-timeout signal handler could not be installed.
    #[error("installing the vCPU timeout signal handler failed: {0}")]
    SignalHandler(Errno),
    /// The watchdog thread could not be started.
    #[error("starting the vCPU watchdog thread failed")]
    Watchdog,
    /// `KVM_RUN` failed.
    #[error("KVM_RUN failed: {0}")]
    Run(Errno),
    /// The program raised an exception.
    #[error("guest exception: {0}")]
    Fault(GuestFault),
    /// The vCPU shut down (a triple fault: an exception while delivering one).
    #[error("guest triple fault (KVM_EXIT_SHUTDOWN) at rip {rip:#x}")]
    TripleFault {
        /// RIP when KVM reported it.
        rip: u64,
    },
    /// KVM returned an exit the runtime does not expect; `exit` names it.
    #[error("unexpected exit {exit} at rip {rip:#x}")]
    UnexpectedExit {
        /// The `KVM_EXIT_*` name and its details.
        exit: String,
        /// RIP when KVM reported it.
        rip: u64,
    },
    /// The program did not reach its end in time; it was stopped.
    #[error(
        "guest program still running after {after:?} ({exits} exits), at rip {rip:#x}; stopped"
    )]
    Timeout {
        /// The time allowed.
        after: Duration,
        /// `KVM_RUN` returns until then.
        exits: u64,
        /// RIP when it was stopped.
        rip: u64,
    },
}
