//! Snapshot and live migration of VMs whose memory includes noncoherent-DMA regions.
//!
//! No VMM moves noncoherent device memory today (crosvm skips it, QEMU blocks migration).
//! This crate does, with a policy per region chosen by the user and reported: `flush`
//! (flush host cache lines around every copy), `skip` (the device re-creates the region), or
//! `refuse` (the migration fails before anything is sent).
//!
//! - [`mod@format`]: the versioned wire format, drawn in its module documentation: a header
//!   (magic, version, source facts), then checksummed chunks — VM configuration, pages with
//!   zero-page elision, vCPU state (registers, PAT and MTRR MSRs, XSAVE), device state,
//!   skipped regions — and an `End` chunk with totals.
//! - [`stream`]: framing — [`stream::StreamWriter`] and [`stream::StreamReader`], the reader
//!   bounded by per-kind caps before any allocation.
//! - [`checksum`] and [`crc`]: a chunk's checksum, chosen by the stream version (XXH3-64
//!   from 1.3, CRC-64/XZ before), and the CRC-64/XZ of the small checksums.
//! - [`destination`]: the verifying state machine; it hands back a [`destination::VmImage`]
//!   only when everything checked, and touches nothing of the caller's before.
//! - [`precopy`]: the live-migration engine over any [`MigrationSource`]: dirty-log rounds
//!   until the downtime budget or the round cap, then stop-and-copy and the destination's
//!   verdict; on any failure the guest resumes and no dirty bit is lost.
//! - [`snapshot`]: the same stream to a file, atomically.
//! - [`transport`]: the live migration over TCP.
//!
//! # Example
//!
//! 1. Write a stream: header, configuration, one page of each region, the vCPU, `End`.
//! 2. Read it back through the verifying destination.
//!
//! ```
//! use migration::destination::{Limits, receive};
//! use migration::format::*;
//! use migration::stream::{Chunk, StreamReader, StreamWriter};
//!
//! let facts = SourceFacts { kernel_profile: "6.16+memslot-flag".into(), host: "model".into(),
//!                           vendor: Vendor::Intel };
//! let config = VmConfig {
//!     vcpu_count: 1,
//!     regions: vec![RegionConfig::coherent(0, "ram", RegionKind::Ram, 0, 4096)],
//! };
//! let mut vcpu = VcpuState { id: 0, regs: Regs::default(), sregs: Sregs::default(),
//!                            msrs: Vec::new(), xsave: Vec::new() };
//! for index in msr::REQUIRED {
//!     vcpu.msrs.push(Msr { index, value: 0 });
//! }
//!
//! let mut w = StreamWriter::new(Vec::new(), &StreamHeader::new(StreamKind::Snapshot, facts))?;
//! w.write(&Chunk::VmConfig(config))?;
//! let mut run = PageRun::new(0, 0);
//! run.push(0, &[0x5a; PAGE_SIZE])?;
//! w.write(&Chunk::Pages(run))?;
//! w.write(&Chunk::Vcpu(Box::new(vcpu)))?;
//! let totals = Totals { rounds: 1, vcpus: 1, pages: 1, stream_bytes: w.position(),
//!     regions: vec![RegionTotals { id: 0, data_pages: 1, zero_pages: 0 }], ..Totals::default() };
//! w.write(&Chunk::End(totals))?;
//!
//! let bytes = w.into_inner();
//! let image = receive(&mut StreamReader::open(&bytes[..])?, Limits::default())?;
//! assert_eq!(image.regions[0].contents.bytes(), Some(&[0x5a; PAGE_SIZE][..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod bitmap;
pub mod cache;
pub mod checksum;
pub mod crc;
pub mod destination;
pub mod error;
pub mod format;
pub mod precopy;
pub mod snapshot;
pub mod source;
pub mod stream;
pub mod transport;

pub use bitmap::DirtyBitmap;
pub use cache::CacheMaintenance;
pub use error::{ConfigError, EncodeError, Malformation, StreamError};
pub use source::{MigrationSource, SourceError};
