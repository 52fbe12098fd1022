//! The model-only boundary's error: operations that are not ioctls (guest MSR and CR0 writes,
//! simulated faults and accesses). Ioctls return [`uapi::Errno`] instead, as the kernel does.

use memtype::CombineError;

/// Why a vCPU-side operation of the model failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VcpuError {
    /// The vCPU id was never created.
    #[error("no vCPU with id {0}")]
    NoSuchVcpu(u32),
    /// The guest's write raised #GP (the value is invalid for the register).
    #[error("writing {value:#x} to {register} raises #GP")]
    GeneralProtection {
        /// The register written.
        register: &'static str,
        /// The value refused.
        value: u64,
    },
    /// The guest-physical address is in no memslot: the access exits to userspace as
    /// emulated MMIO and has no memory type.
    #[error("gpa {gpa:#x} is in no memslot: the access is emulated MMIO (no SPTE, no memory type)")]
    EmulatedMmio {
        /// The address accessed.
        gpa: u64,
    },
    /// The memory types could not be combined (an EPT misconfiguration).
    #[error("combining memory types: {0}")]
    Combine(#[from] CombineError),
}
