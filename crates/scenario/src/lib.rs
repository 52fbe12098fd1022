//! Scenarios: a VMM's setup and a guest/host/device program, run on every modeled kernel.
//!
//! A scenario (a TOML file, `docs/scenarios.md`) says which memslots a VMM creates, which of
//! them are the target of non-snooping DMA and how the VMM tries to tell KVM so (the memslot
//! flag, the KVM virtio device, a noncoherent VFIO device, disabling the
//! `IGNORE_GUEST_PAT` quirk), how the guest programs its PAT and MTRRs, and then a program:
//! guest loads and stores through a PAT entry, fences and flushes, device DMA, and the host's
//! own accesses through its WB mapping (zeroing, migration reads, handing pages over).
//!
//! [`run`] performs it on one [`kvm_model::KernelProfile`]: the VM is built through the
//! modeled kernel's ioctls, every guest access gets the effective memory type the modeled KVM
//! gives it (`make_spte → get_mt_mask`, then the hardware's combination with the guest PAT),
//! and the coherence simulator performs the accesses and judges them: stale reads, lost
//! writes, conflicting aliases, info leaks. The [`RunReport`] says how each region was
//! registered, what type each region's key access got and why, which hazards occurred with
//! evidence, what the accesses cost (an estimate, [`cost`]), and whether the scenario's
//! expectation holds. [`run_all`] does it for every profile; [`table`], [`svg`] and
//! [`conclusion`] render the results.
//!
//! # Example
//!
//! ```
//! use kvm_model::Vendor;
//!
//! let gpu = scenario::builtin("virtio-gpu-wc-bar").unwrap()?;
//! let rows = scenario::run_all(&gpu, &[Vendor::Intel])?;
//! let clean: Vec<&str> = rows.iter().filter(|r| r.hazards().is_empty()).map(|r| r.kernel).collect();
//! assert!(clean.contains(&"6.16+memslot-flag") && !clean.contains(&"6.16"));
//! assert!(rows.iter().all(|r| !r.expectation_failed()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod builtin;
pub mod conclusion;
pub mod cost;
mod engine;
mod error;
mod expect;
mod format;
mod hazard;
mod location;
mod number;
pub mod real;
mod register;
mod report;
mod scenario;
mod step;
pub mod svg;
pub mod table;
mod validate;
mod vm;

pub use builtin::{builtin, builtin_names, builtins, load};
pub use engine::{run, run_all};
pub use error::{LoadError, RunError, ScenarioError};
pub use expect::{Expect, Expectation};
pub use hazard::Hazard;
pub use register::{Attempt, Mechanism, Registration};
pub use report::{Finding, KeyAccess, Read, RunReport, bytes_summary};
pub use scenario::{Device, Region, RegionKind, Scenario, VmSpec};
pub use step::{Fence, GuestAccess, HostOp, Op, Range, Step, StepKind};
