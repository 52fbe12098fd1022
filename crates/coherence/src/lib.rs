//! A simulator of CPU caches, write-combining buffers and DMA that shows what
//! each KVM memory-type design does to real data.
//!
//! The machine is a [`State`]: sparse physical memory (4 KiB pages, 64-byte
//! lines), CPU agents each with a private write-back cache and WC buffers,
//! and DMA agents that snoop CPU caches or not. An [`Action`] is one CPU
//! instruction or DMA transfer; [`State::step`] performs it and records
//! [`Verdict`]s, each naming both sides of the hazard. Every CPU access
//! carries the *effective* memory type of its mapping, which the caller
//! computes with the `memtype` crate; this crate only implements what each
//! type does (`shared/spec/memtypes.md`, "Hazards").
//!
//! # Properties and the truth they are judged against
//!
//! Beside memory the state keeps a ground-truth shadow: per byte, the value
//! of the last **committed** write in simulation order. A write commits when
//! it becomes globally visible under its own memory type:
//!
//! - WB, WT, WP, UC, UC-, CD stores and DMA writes commit when performed
//!   (a WB store is visible to every coherent observer once it is in the
//!   cache; that a non-snooping device cannot see it is the hazard);
//! - WC, WC+ and non-temporal stores commit when their WC buffer drains:
//!   at the latest at the writer's next SFENCE, MFENCE, WBINVD or UC/UC-/CD
//!   access, earlier if the buffer fills, is pushed out by a store to
//!   another line, or the writer itself accesses the line;
//! - a write-back of a dirty line is not a write: it moves a value that was
//!   committed earlier (or, in the hazard, an older one) into memory.
//!
//! The [`Property`]s are then:
//!
//! - `no_stale_read`: every CPU load and DMA read returns the truth;
//! - `no_lost_write`: no write-back replaces, in memory, a committed value
//!   with an older one;
//! - `no_conflicting_alias`: no page is accessed as UC/UC-/WC/WC+/CD while a
//!   CPU caches one of its lines (or cached while a WC buffer holds some);
//! - `no_info_leak`: no read returns a previous owner's bytes (memory never
//!   written in the run, [`Untouched::PreviousOwner`]) in place of the truth.
//!   Such a read is reported as an info leak instead of a stale read.
//!
//! # Timing
//!
//! [`State::step`] is deterministic: lines leave a cache only when flushed,
//! evicted by [`Action::Evict`] or pushed out of a bounded cache in fill
//! order. [`explore()`] runs a small program under every schedule of
//! spontaneous write-backs, evictions and WC drains and reports which
//! outcomes depend on timing.
//!
//! # Simplifications (each a deliberate choice)
//!
//! - Operations are atomic and performed in the given order (sequential
//!   consistency); store buffers and load reordering are not modelled. Only
//!   WC buffers delay stores.
//! - CLFLUSHOPT and CLWB are queued until the agent's next fence (SFENCE,
//!   MFENCE, WBINVD), the latest the architecture lets them complete, so a
//!   missing fence shows its hazard. CLFLUSH takes effect at once.
//! - Every UC, UC- and CD access probes the caches, as a UC from the page
//!   tables must; a UC from the MTRRs alone, which need not, cannot be
//!   expressed by an effective type and is not modelled.
//! - A load or UC access writes dirty copies back and keeps them (clean); a
//!   store invalidates them. A snooping device's read takes a dirty copy's
//!   data without writing it back.
//! - An agent's access to a line drains its own WC buffer for that line
//!   first, so a CPU always sees its own stores.
//! - WBINVD writes back and invalidates the executing CPU's cache only.
//! - Speculative fills through cacheable mappings are not generated; a
//!   program that wants one performs a load.
//! - Stamps (who wrote, which operation) are kept per line, so evidence
//!   names the line's latest write, which may not be the one that wrote the
//!   exact stale byte.
//!
//! # Example: the seeds' failure and its fix
//!
//! ```
//! use coherence::{Action, Capacity, Config, MemType, Property, State, Value, Verdict};
//!
//! let mut s = State::new(Config::default());
//! let guest = s.add_cpu("vcpu0", Capacity::Unbounded)?;
//! let gpu = s.add_dma("gpu", false)?; // does not snoop CPU caches
//! let frame = Value::from_u64(0xfeed_f00d, 4).unwrap();
//!
//! // 1. KVM forces WB+IPAT: the guest's WC mapping is in fact WB.
//! s.step(&Action::Store { agent: guest, addr: 0x1000, value: frame, mem_type: MemType::Wb })?;
//! let out = s.step(&Action::DmaRead { dev: gpu, addr: 0x1000, len: 4 })?;
//! assert_eq!(out.read.unwrap().as_slice(), &[0, 0, 0, 0]); // memory never saw the frame
//! let Err(Verdict::StaleRead(v)) = s.check(Property::NoStaleRead) else { panic!() };
//! assert_eq!((v.op_index, v.expected.as_slice()), (1, &[0x0d, 0xf0, 0xed, 0xfe][..]));
//!
//! // 2. KVM honours the guest PAT: the store is WC and the guest fences.
//! let mut s = State::new(Config::default());
//! let guest = s.add_cpu("vcpu0", Capacity::Unbounded)?;
//! let gpu = s.add_dma("gpu", false)?;
//! s.step(&Action::Store { agent: guest, addr: 0x1000, value: frame, mem_type: MemType::Wc })?;
//! s.step(&Action::Sfence { agent: guest })?;
//! let out = s.step(&Action::DmaRead { dev: gpu, addr: 0x1000, len: 4 })?;
//! assert_eq!(out.read.unwrap().as_slice(), frame.as_slice());
//! assert!(Property::ALL.iter().all(|&p| s.check(p).is_ok()));
//! # Ok::<(), coherence::Error>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod action;
mod addr;
mod cache;
mod error;
mod explore;
mod hash;
mod ids;
mod memory;
mod property;
mod provenance;
mod state;
mod value;
mod verdict;
mod wc;

pub mod bench;

pub use action::{Action, host};
pub use addr::{LINE_SIZE, Line, PAGE_SIZE};
pub use cache::{Capacity, LineState};
pub use error::Error;
pub use explore::{ExploreConfig, ExploreReport, ReadOutcomes, explore};
pub use ids::{Actor, AgentId, DevId};
pub use memory::Untouched;
pub use memtype::MemType;
pub use property::Property;
pub use provenance::WriteRef;
pub use state::{Config, MAX_CPUS, MAX_DEVICES, State, StepOutcome};
pub use value::{MAX_CPU_ACCESS, ReadData, Value};
pub use verdict::{
    ConflictingAlias, Holder, InfoLeak, LostWrite, StaleRead, Verdict, WritebackCause,
};
