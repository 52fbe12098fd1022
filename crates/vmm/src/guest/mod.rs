//! The guest runtime: a portable guest program ([`program`]) compiled to x86-64
//! ([`codegen`]) and run at CPL3 on a real vCPU of `/dev/kvm` ([`GuestVm`]), and the
//! measurement of whether guest memory types take effect on this host ([`empirical`]).
//!
//! There is no guest kernel. The VMM writes everything a CPU needs into the first 2 MiB of
//! guest memory ([`layout`]: descriptor tables, exception stubs, identity page tables with the
//! program's memory types, the code) and loads the vCPU's registers so that its first
//! instruction already runs in 64-bit mode at CPL3. Hot loops therefore run natively even on
//! hosts (like kvm_pvm) that emulate guest CPL0 code instruction by instruction.
//!
//! A run ends at the program's `OUT` to the done port. An exception ends it with
//! [`GuestError::Fault`] (vector, error code, RIP, the operation, CR2), a triple fault with
//! [`GuestError::TripleFault`], any other exit with [`GuestError::UnexpectedExit`] naming it,
//! and a program that never ends with [`GuestError::Timeout`].

pub mod codegen;
pub mod descriptors;
pub mod empirical;
mod error;
pub mod exceptions;
pub mod layout;
pub mod memory;
pub mod paging;
pub mod program;
pub(crate) mod run;
pub mod vm;
pub(crate) mod watchdog;

pub use error::GuestError;
pub use exceptions::GuestFault;
pub use program::{GuestMapping, GuestOp, Program, ProgramError};
pub use run::GuestRun;
pub use vm::{CacheState, GuestVm};
