//! The wire format of snapshots and live migration: one stream, drawn here before the code.
//!
//! All integers are little endian; all padding is zero and checked; every text field is
//! UTF-8, NUL padded to its fixed size. The format is the same in a snapshot file and on a
//! TCP connection; only the header's `LIVE` flag and the status reply differ.
//!
//! ```text
//! stream := StreamHeader VmConfig (Pages Torn? | Vcpu | Device | RegionSkipped)* End
//!
//! StreamHeader (128 bytes)
//!   +0    8  magic "NCDMAMIG"
//!   +8    2  version major  \ frozen in every version: read and checked
//!   +10   2  version minor  / before anything else
//!   +12   4  flags          bit 0 LIVE (migration, not snapshot); others 0
//!   +16   4  page size      4096
//!   +20   1  vendor         1 Intel, 2 AMD
//!   +21   3  zero
//!   +24  32  kernel profile of the source ("6.16+memslot-flag", "host")
//!   +56  64  host flavor of the source ("kvm_pvm 6.18", ...)
//!   +120  8  CRC-64/XZ of bytes 0..120
//!
//! Chunk
//!   +0    2  kind           ChunkKind; 0 = Invalid, never sent
//!   +2    2  flags          0
//!   +4    4  length         payload bytes, <= the kind's cap
//!   +8    8  CRC-64/XZ of bytes 0..8: the length is trusted only after this matches
//!   +16   length  payload   (below)
//!   +..   8  checksum of the 16 header bytes and the payload: XXH3-64 from 1.3,
//!              CRC-64/XZ before (see crate::checksum)
//!
//! VmConfig (kind 1)      vcpu_count u32, region_count u32 (<= 64), then per region 56 bytes:
//!   +0 id u32 | +4 kind u8 (1 ram, 2 bar) | +5 coherence u8 (1 coherent, 2 noncoherent)
//!   +6 registration u8 (1 none, 2 memslot-flag, 3 virtio-device, 4 quirk, 5 npt, 6 unsafe)
//!   +7 policy u8 (1 copy, 2 flush, 3 skip, 4 refuse) | +8 gpa u64 | +16 size u64
//!   +24 name [32]
//! Pages (kind 2)         region u32, round u32, count u32 (<= 256), zero u32, then
//!   count x (index u32, contents u8 (1 data, 2 zero page), zero [3]),
//!   CRC-64/XZ of the run header and records, then 4096 bytes per data page, in record
//!   order (from 1.2; in 1.0 and 1.1 each record is followed by its page, and no CRC)
//! Vcpu (kind 3)          id u32, msr_count u32 (<= 512), xsave_len u32 (<= 16 KiB), zero u32,
//!   regs (18 x u64), sregs (8 segments x 24, gdt/idt x 16, 7 control u64, 4 u64 bitmap),
//!   msr_count x (index u32, zero u32, value u64), xsave_len opaque bytes
//! Device (kind 4)        name [32], state_len u32 (<= 1 MiB), zero u32, opaque state
//! RegionSkipped (kind 5) region u32, zero u32
//! End (kind 6)           rounds u32, vcpus u32, devices u32, skipped u32, region_count u32,
//!   zero u32, pages u64, stream_bytes u64 (bytes before End), then per region 24 bytes:
//!   id u32, zero u32, data_pages u64, zero_pages u64
//! Torn (kind 7)          region u32, round u32: those of the `Pages` run just before, whose
//!   pages the guest wrote while they were sent (live streams from 1.4 only; see
//!   TORN_SINCE): the destination holds them unverified until they are sent again
//!
//! Status (live only: ACK or NAK from the destination, then COMMIT from the source)
//!   +0 code u8 (1 ACK, 2 NAK, 3 COMMIT) | +1 zero u8 | +2 reason_len u16 (<= 512, NAK only)
//!   +4 reason | CRC-64/XZ of everything before
//! ```
//!
//! The live protocol (one TCP connection; every arrow is a whole chunk):
//!
//! ```text
//!  source                                            destination
//!    | check config; a `refuse` region fails here,     |
//!    | before anything is sent                         |
//!    | start dirty log                                 |
//!    |--- StreamHeader ------------------------------->| magic, version, CRC
//!    |--- VmConfig ----------------------------------->| validate, limits, stage
//!    |--- RegionSkipped (each `skip` region) --------->| device re-creates it
//!    | round 0: every page of every copied region;     |
//!    |   `flush` region: CLFLUSHOPT+SFENCE the page,   |
//!    |   then read it; zero pages as markers           |
//!    |--- Pages ... ---------------------------------->| bounds, stage (target untouched)
//!    |--- Torn, if the guest wrote a run being sent -->| its pages unverified until resent
//!    | rounds 1..: pages in the dirty log (KVM's and   |
//!    |   the device model's) while the guest runs,     |
//!    |   until the estimate fits the downtime budget   |
//!    |   or the round cap                              |
//!    |--- Pages ... ---------------------------------->|
//!    | pause vCPUs; final dirty round                  |
//!    |--- Pages, Vcpu x n, Device x m ---------------->|
//!    |--- End (totals) ------------------------------->| verify everything
//!    |<-------------------------------- Status ACK ----|
//!    |--- Status COMMIT ------------------------------>| hand over the image; installing
//!    | stay paused: migrated                           |   a `flush` page flushes it after
//!    |                                                 |   writing it
//!    | on NAK, a dropped connection or a timeout       | on any error, or no COMMIT:
//!    |   before COMMIT: resume the guest, put the      |   NAK, no image, nothing runs
//!    |   dirty bits back                               |
//! ```

mod chunk;
mod config;
mod device;
mod end;
mod header;
mod pages;
mod status;
mod vcpu;
pub(crate) mod wire;

pub use chunk::{CHUNK_HEADER_LEN, CHUNK_TRAILER_LEN, ChunkHeader, ChunkKind};
pub use config::{Coherence, Policy, RegionConfig, RegionKind, Registration, VmConfig};
pub use device::DeviceState;
pub use end::{RegionTotals, Totals};
pub use header::{HEADER_LEN, MAGIC, SourceFacts, StreamHeader, StreamKind, Vendor};
pub use pages::{
    Layout, PageRecord, PageRun, PageSlot, RECORDS_FIRST_SINCE, RunHeader, is_zero_page,
};
pub(crate) use pages::{
    RECORD_LEN, RECORDS_CHECKSUM_LEN, RUN_HEADER_LEN, decode_records, encode_head, page_stretches,
};
pub use status::{MAX_REASON_LEN, Status};
pub use vcpu::{DescriptorTable, Msr, Regs, Segment, Sregs, VcpuState, msr};

use std::fmt;

use crate::error::StreamError;

/// The page size of the format (x86 4 KiB pages); a stream with another size is refused.
pub const PAGE_SIZE: usize = 4096;
/// Size of every fixed text field (region, device and profile names).
pub const NAME_LEN: usize = 32;
/// Size of the host flavor field of the header.
pub const HOST_LEN: usize = 64;
/// Most memory regions in one configuration.
pub const MAX_REGIONS: usize = 64;
/// Most vCPUs in one configuration.
pub const MAX_VCPUS: u32 = 256;
/// Most MSRs in one vCPU's state.
pub const MAX_MSRS: usize = 512;
/// Largest FPU/XSAVE blob (KVM_GET_XSAVE2 with AMX state is about 11 KiB).
pub const MAX_XSAVE_BYTES: usize = 16 * 1024;
/// Most devices in one stream.
pub const MAX_DEVICES: usize = 64;
/// Largest opaque device state.
pub const MAX_DEVICE_STATE_BYTES: usize = 1 << 20;
/// Most pages in one `Pages` chunk (1 MiB of data).
pub const MAX_PAGES_PER_CHUNK: usize = 256;

/// A stream format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Incompatible layout changes.
    pub major: u16,
    /// Changes a reader of the same major must still be taught.
    pub minor: u16,
}

impl Version {
    /// A version.
    pub const fn new(major: u16, minor: u16) -> Self {
        Version { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version this build writes. 1.1 added the live READY handshake (the chunks are
/// those of 1.0); 1.2 lays a `Pages` run out records first ([`Layout`]); 1.3 checksums
/// chunks with XXH3-64 instead of CRC-64/XZ ([`crate::checksum`]); 1.4 adds the `Torn`
/// chunk of live streams ([`TORN_SINCE`]). A writer given an older version writes that
/// version's layout, and every version from [`OLDEST_READABLE`] on still reads.
pub const VERSION: Version = Version::new(1, 4);
/// The first version with the `Torn` chunk: a live source may then send a run straight
/// from the running guest's memory (no copy) and withdraw it with `Torn` when the guest
/// wrote to its pages meanwhile; a destination holds a withdrawn run's pages unverified
/// until they are sent again, and refuses the stream if any never is. Before it, a live
/// source copies each page before checksumming it, and a destination knows no `Torn`.
pub const TORN_SINCE: Version = Version::new(1, 4);
/// The first version whose live destination says READY after the configuration; a
/// destination answers an older source as that source expects, without it.
pub const READY_SINCE: Version = Version::new(1, 1);
/// The oldest version this build reads.
pub const OLDEST_READABLE: Version = Version::new(1, 0);

/// The compatibility rule, in its one place: a stream is read if and only if its version
/// lies in `OLDEST_READABLE ..= VERSION` (ordered by major, then minor). A newer minor is
/// refused too, because chunks are not self-describing: an older reader cannot know which
/// fields it would be skipping.
pub fn check_version(found: Version) -> Result<(), StreamError> {
    if found > VERSION {
        Err(StreamError::VersionTooNew {
            found,
            newest: VERSION,
        })
    } else if found < OLDEST_READABLE {
        Err(StreamError::VersionTooOld {
            found,
            oldest: OLDEST_READABLE,
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_matrix() {
        // (version, accepted?) — the current version, a newer minor and major, older ones.
        let cases = [
            (VERSION, true),
            (OLDEST_READABLE, true),
            (Version::new(1, 0), true),
            (Version::new(1, 1), true),
            (Version::new(1, 2), true),
            (Version::new(1, 3), true),
            (Version::new(1, 4), true),
            (Version::new(1, 5), false),
            (Version::new(2, 0), false),
            (Version::new(0, 9), false),
            (Version::new(0, 0), false),
        ];
        for (version, accepted) in cases {
            assert_eq!(check_version(version).is_ok(), accepted, "{version}");
        }
        assert!(matches!(
            check_version(Version::new(1, 5)),
            Err(StreamError::VersionTooNew { .. })
        ));
        assert!(matches!(
            check_version(Version::new(0, 9)),
            Err(StreamError::VersionTooOld { .. })
        ));
    }
}
