//! A scenario on the real `/dev/kvm`, beside the model: the VMM side of a scenario.
//!
//! [`compare`] runs the scenario three ways: on the model of its kernel profile (the
//! proposal or upstream kernel it is about), on the model of this host with every device
//! snooping ([`as_emulated`]), and on `/dev/kvm` ([`run`]). On `/dev/kvm` the regions are
//! real memslots added through `vmm::region::GuestMemory` and the strategy chain, the guest's
//! PAT and MTRRs come from `[vm]`, each run of consecutive guest steps is one guest program
//! (`vmm::guest::Program`, run at CPL3), and the device and host steps between them go
//! through the VMM's own mapping of the region, with the real CLFLUSHOPT where the scenario
//! flushes (`lower.rs`, `machine.rs`).
//!
//! The [`Comparison`] puts the three side by side per region's key access and per read
//! value, says where this host cannot show a difference (from a guest's measurement of
//! whether memory types take effect, the devices the VMM stands in for, and the
//! registrations), and explains every value the scenario's model reads differently.
//!
//! # Example
//!
//! ```no_run
//! let gpu = scenario::builtin("virtio-gpu-wc-bar").unwrap()?;
//! let side_by_side = scenario::real::compare(&gpu, gpu.vm.kernel)?;
//! assert!(side_by_side.agrees());
//! println!("{side_by_side}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compare;
mod error;
mod lower;
mod machine;
mod render;

pub use compare::{AccessRow, Comparison, ReadRow, as_emulated, compare};
pub use error::RealError;
pub use lower::RELOCATION;
pub use machine::{MemoryTypes, Placement, RealRegistration, RealRun, run};
