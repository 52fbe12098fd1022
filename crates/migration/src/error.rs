//! The stream boundary's errors: what can be wrong with a stream that is read
//! ([`StreamError`], with [`Malformation`] inside one chunk and [`ConfigError`] for a VM
//! configuration), and why a stream could not be written ([`EncodeError`]).
//!
//! Every variant says where (byte offset, chunk kind, region, vCPU) and what, so the
//! destination's refusal is a one-line answer, and all derive `PartialEq` so tests match the
//! exact variant. I/O errors keep their [`std::io::ErrorKind`] rather than the error itself
//! for the same reason.

use std::io;

use crate::format::{ChunkKind, Coherence, Policy, Registration, Version};

/// Why a received stream was refused. A destination that returns one of these produced no
/// image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The first eight bytes are not `NCDMAMIG`.
    #[error("not an ncdma migration stream (magic {found:02x?})")]
    BadMagic {
        /// The bytes found instead.
        found: [u8; 8],
    },
    /// The stream was written by a newer, incompatible version.
    #[error("stream version {found} is newer than the newest this build reads ({newest})")]
    VersionTooNew {
        /// The stream's version.
        found: Version,
        /// [`crate::format::VERSION`].
        newest: Version,
    },
    /// The stream was written by a version this build no longer reads.
    #[error("stream version {found} is older than the oldest this build reads ({oldest})")]
    VersionTooOld {
        /// The stream's version.
        found: Version,
        /// [`crate::format::OLDEST_READABLE`].
        oldest: Version,
    },
    /// The stream header's CRC does not match its contents.
    #[error("stream header checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    HeaderChecksum {
        /// The CRC in the stream.
        stored: u64,
        /// The CRC of the bytes received.
        computed: u64,
    },
    /// A stream header field is invalid (its CRC was correct: the writer is broken or hostile).
    #[error("stream header: {0}")]
    BadHeader(Malformation),
    /// The stream's pages are not 4 KiB.
    #[error("stream page size {found} is not {expected}")]
    PageSize {
        /// The page size declared.
        found: u32,
        /// The only page size this format carries.
        expected: u32,
    },
    /// The destination's status reply fails its CRC.
    #[error("status reply checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    StatusChecksum {
        /// The CRC received.
        stored: u64,
        /// The CRC of the bytes received.
        computed: u64,
    },
    /// The destination's status reply does not decode.
    #[error("status reply: {0}")]
    BadStatus(Malformation),
    /// A chunk header's own CRC does not match: its kind and length cannot be trusted.
    #[error("chunk header at byte {offset}: checksum mismatch")]
    ChunkHeaderChecksum {
        /// Offset of the chunk in the stream.
        offset: u64,
    },
    /// A chunk of kind 0 (`Invalid`, e.g. a zeroed region of a file).
    #[error("chunk at byte {offset}: kind 0 (Invalid)")]
    InvalidChunkKind {
        /// Offset of the chunk in the stream.
        offset: u64,
    },
    /// A chunk kind this version does not know.
    #[error("chunk at byte {offset}: unknown kind {value}")]
    UnknownChunkKind {
        /// Offset of the chunk in the stream.
        offset: u64,
        /// The kind found.
        value: u16,
    },
    /// Chunk flags this version does not know.
    #[error("{kind} chunk at byte {offset}: unknown flags {flags:#06x}")]
    UnknownChunkFlags {
        /// The chunk's kind.
        kind: ChunkKind,
        /// Offset of the chunk in the stream.
        offset: u64,
        /// The flags found.
        flags: u16,
    },
    /// A chunk declares more payload than its kind may carry; refused before anything was
    /// allocated or read.
    #[error("{kind} chunk at byte {offset}: length {length} exceeds the cap of {cap} bytes")]
    Oversized {
        /// The chunk's kind.
        kind: ChunkKind,
        /// Offset of the chunk in the stream.
        offset: u64,
        /// The payload length declared.
        length: u32,
        /// The kind's cap.
        cap: u32,
    },
    /// A chunk's CRC does not match its header and payload.
    #[error(
        "{kind} chunk at byte {offset}: checksum mismatch (stored {stored:#018x}, computed {computed:#018x})"
    )]
    ChunkChecksum {
        /// The chunk's kind.
        kind: ChunkKind,
        /// Offset of the chunk in the stream.
        offset: u64,
        /// The CRC in the stream.
        stored: u64,
        /// The CRC of the bytes received.
        computed: u64,
    },
    /// A chunk's payload does not decode (its CRC was correct, or, for a run's records, is
    /// yet to be checked but the records' own CRC failed).
    #[error("{kind} chunk at byte {offset}: {error}")]
    Malformed {
        /// The chunk's kind.
        kind: ChunkKind,
        /// Offset of the chunk in the stream.
        offset: u64,
        /// What is wrong.
        error: Malformation,
    },
    /// The stream ended early.
    #[error("stream truncated at byte {offset} while reading {what}")]
    Truncated {
        /// Bytes received.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// Reading failed (connection reset, timeout, disk error).
    #[error("reading {what} at byte {offset}: {kind}")]
    Io {
        /// Bytes received before the failure.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
    /// The destination could not map staging memory for a region the limits allowed.
    #[error("mapping {bytes} bytes of staging memory for region {region:?}: {kind}")]
    StagingMemory {
        /// The region's name.
        region: String,
        /// Its size.
        bytes: u64,
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
    /// A control message to the source could not be sent.
    #[error("sending {what} to the source: {kind}")]
    Reply {
        /// The message.
        what: &'static str,
        /// The I/O error's kind (any other encoding error cannot happen for it).
        kind: io::ErrorKind,
    },
    /// Bytes follow the `End` chunk of a snapshot file.
    #[error("{bytes} unexpected byte(s) after the End chunk at byte {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: u64,
        /// How many (at least).
        bytes: u64,
    },
    /// The VM configuration is inconsistent.
    #[error("VM configuration: {0}")]
    Config(#[from] ConfigError),
    /// A chunk arrived where the stream order does not allow it.
    #[error("{found} chunk out of order: expected {expected}")]
    OutOfOrder {
        /// The chunk that arrived.
        found: ChunkKind,
        /// What was allowed at that point.
        expected: &'static str,
    },
    /// The configuration declares more guest memory than the destination accepts.
    #[error("the stream needs {needed} bytes of guest memory, over the limit of {limit}")]
    MemoryLimit {
        /// Bytes of memory the copied regions declare.
        needed: u64,
        /// The destination's limit.
        limit: u64,
    },
    /// The configuration declares more vCPUs than the destination accepts.
    #[error("the stream declares {declared} vCPUs, over the limit of {limit}")]
    VcpuLimit {
        /// vCPUs declared.
        declared: u32,
        /// The destination's limit.
        limit: u32,
    },
    /// A region has the `refuse` policy: a source must never have sent this stream.
    #[error("region {region:?} has the refuse policy and cannot be migrated")]
    RefusedRegion {
        /// The region's name.
        region: String,
    },
    /// A chunk names a region the configuration does not declare.
    #[error("{kind} chunk names region {region}, which is not declared")]
    UnknownRegion {
        /// The chunk's kind.
        kind: ChunkKind,
        /// The region id.
        region: u32,
    },
    /// A page index beyond the end of its region.
    #[error("page {index} of region {region} is outside the region ({pages} pages)")]
    PageOutOfRange {
        /// The region id.
        region: u32,
        /// The page index.
        index: u32,
        /// The region's page count.
        pages: u32,
    },
    /// Pages for a region whose policy sends none (`skip`).
    #[error("pages for region {region:?}, whose policy is skip")]
    PagesForSkippedRegion {
        /// The region's name.
        region: String,
    },
    /// `RegionSkipped` for a region whose policy is not `skip`.
    #[error("region {region:?} announced as skipped, but its policy is {policy}")]
    SkipForCopiedRegion {
        /// The region's name.
        region: String,
        /// Its declared policy.
        policy: Policy,
    },
    /// `RegionSkipped` twice for one region.
    #[error("region {region:?} announced as skipped twice")]
    DuplicateSkip {
        /// The region's name.
        region: String,
    },
    /// A `skip` region never announced: the destination would not know to re-create it.
    #[error("region {region:?} has the skip policy but was never announced as skipped")]
    SkipNotAnnounced {
        /// The region's name.
        region: String,
    },
    /// Pages of an older round after pages of a newer one.
    #[error("pages of round {round} after pages of round {previous}")]
    RoundWentBack {
        /// The round of the chunk.
        round: u32,
        /// The newest round seen before.
        previous: u32,
    },
    /// A vCPU id at or beyond the declared count.
    #[error("vCPU {id} is beyond the {count} vCPUs declared")]
    VcpuOutOfRange {
        /// The vCPU id.
        id: u32,
        /// vCPUs declared.
        count: u32,
    },
    /// Two states for one vCPU.
    #[error("vCPU {id} sent twice")]
    DuplicateVcpu {
        /// The vCPU id.
        id: u32,
    },
    /// A declared vCPU never arrived.
    #[error("vCPU {id} is declared but was never sent")]
    MissingVcpu {
        /// The vCPU id.
        id: u32,
    },
    /// A vCPU's MSR list lacks one that carries memory-type state.
    #[error("vCPU {vcpu} lacks MSR {msr:#x}, which carries guest memory-type state")]
    MissingMsr {
        /// The vCPU id.
        vcpu: u32,
        /// The MSR index.
        msr: u32,
    },
    /// One MSR twice in a vCPU's list.
    #[error("vCPU {vcpu} lists MSR {msr:#x} twice")]
    DuplicateMsr {
        /// The vCPU id.
        vcpu: u32,
        /// The MSR index.
        msr: u32,
    },
    /// Two states for one device.
    #[error("device {name:?} sent twice")]
    DuplicateDevice {
        /// The device's name.
        name: String,
    },
    /// More `Device` chunks than the format allows.
    #[error("more than {cap} devices")]
    TooManyDevices {
        /// [`crate::format::MAX_DEVICES`].
        cap: usize,
    },
    /// A copied region has a page that never arrived.
    #[error("page {index} of region {region:?} never arrived")]
    MissingPage {
        /// The region's name.
        region: String,
        /// The first page missing.
        index: u32,
    },
    /// A `Torn` chunk in a stream that cannot withdraw runs (a snapshot: its guest was
    /// paused, so nothing can have torn).
    #[error(
        "a Torn chunk (region {region}, round {round}) in a snapshot: only a live stream may withdraw a run"
    )]
    TornOutsideLive {
        /// The region it named.
        region: u32,
        /// The round it named.
        round: u32,
    },
    /// A `Torn` chunk that does not follow a run of the region and round it names.
    #[error(
        "a Torn chunk names region {region}, round {round}, but the chunk before it is no run of theirs"
    )]
    TornNamesNoRun {
        /// The region it named.
        region: u32,
        /// The round it named.
        round: u32,
    },
    /// A page whose last copy was withdrawn (`Torn`) was never sent again.
    #[error(
        "region {region}: page {index} was withdrawn as torn and never sent again, so its contents are unverified"
    )]
    TornPageNotResent {
        /// The region's name.
        region: String,
        /// The first such page.
        index: u32,
    },
    /// The `End` chunk's totals disagree with what was received.
    #[error("End totals: {what} declared {declared}, received {received}")]
    TotalsMismatch {
        /// Which total.
        what: &'static str,
        /// The value in `End`.
        declared: u64,
        /// The value counted by the destination.
        received: u64,
    },
}

/// What is wrong inside one chunk payload (or the stream header).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    /// The payload ended inside a field.
    #[error("payload ends inside {field}")]
    Short {
        /// The field being read.
        field: &'static str,
    },
    /// The payload is longer than its contents.
    #[error("{bytes} byte(s) after the last field")]
    Trailing {
        /// How many.
        bytes: u64,
    },
    /// Reserved bytes that are not zero.
    #[error("{field} is not zero")]
    NonZeroPadding {
        /// The padding field.
        field: &'static str,
    },
    /// A name that is empty, not UTF-8 or not NUL padded.
    #[error("{field} is not a NUL-padded UTF-8 name")]
    BadName {
        /// The name field.
        field: &'static str,
    },
    /// A value outside the field's enumeration.
    #[error("{field} has the unknown value {value}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// A run's header and records do not match their own CRC: no record was believed.
    #[error("page records checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    RecordsChecksum {
        /// The CRC in the stream.
        stored: u64,
        /// The CRC of the bytes received.
        computed: u64,
    },
    /// A count over its cap; refused before anything was reserved for it.
    #[error("{field} {count} exceeds the cap of {cap}")]
    TooMany {
        /// The count field.
        field: &'static str,
        /// The count declared.
        count: u64,
        /// Its cap.
        cap: u64,
    },
}

/// Why a VM configuration is inconsistent (checked by the source before it sends anything
/// and by the destination before it allocates anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No vCPU declared.
    #[error("no vCPUs")]
    NoVcpus,
    /// No memory region declared.
    #[error("no memory regions")]
    NoRegions,
    /// Two regions with one id.
    #[error("region id {id} used twice")]
    DuplicateRegionId {
        /// The id.
        id: u32,
    },
    /// Two regions with one name.
    #[error("region name {name:?} used twice")]
    DuplicateRegionName {
        /// The name.
        name: String,
    },
    /// A region's address or size is not page aligned, or its size is zero.
    #[error("region {region:?}: {field} {value:#x} is not a nonzero multiple of the page size")]
    Misaligned {
        /// The region's name.
        region: String,
        /// `gpa` or `size`.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// A region ends past the top of the address space, or has more pages than a page
    /// index can name.
    #[error("region {region:?} is too large or wraps around the address space")]
    TooLarge {
        /// The region's name.
        region: String,
    },
    /// Two regions share guest-physical addresses.
    #[error("regions {first:?} and {second:?} overlap")]
    Overlap {
        /// The lower region.
        first: String,
        /// The region that starts inside it.
        second: String,
    },
    /// A coherent region with a noncoherent policy, or the reverse.
    #[error("region {region:?}: policy {policy} does not apply to {coherence} memory")]
    PolicyMismatch {
        /// The region's name.
        region: String,
        /// Its coherence.
        coherence: Coherence,
        /// Its policy.
        policy: Policy,
    },
    /// A coherent region registered as noncoherent, or a noncoherent one not registered.
    #[error("region {region:?}: registration {registration} does not fit {coherence} memory")]
    RegistrationMismatch {
        /// The region's name.
        region: String,
        /// Its coherence.
        coherence: Coherence,
        /// How it was registered.
        registration: Registration,
    },
}

/// Why a stream could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A text field longer than its fixed size.
    #[error("{field} is {len} bytes, over the {max} the format carries")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The field's size.
        max: usize,
    },
    /// A name with a NUL byte, which the NUL-padded field cannot carry.
    #[error("{field} contains a NUL byte")]
    NulInName {
        /// The field.
        field: &'static str,
    },
    /// More items than the chunk kind's cap (the destination would refuse the chunk).
    #[error("{field} {count} exceeds the cap of {cap}")]
    TooMany {
        /// The count field.
        field: &'static str,
        /// The count.
        count: u64,
        /// Its cap.
        cap: u64,
    },
    /// Page data that is not exactly one page.
    #[error("page data of {len} bytes is not one page")]
    PageSize {
        /// The length given.
        len: usize,
    },
    /// A page to send from memory in place lies beyond the memory.
    #[error("page {index} lies beyond the {pages} pages of the memory it is sent from")]
    PageOutsideMemory {
        /// The page's index.
        index: u32,
        /// Pages in the memory.
        pages: u64,
    },
    /// Writing failed.
    #[error("writing the stream: {kind}")]
    Io {
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
}

impl From<io::Error> for EncodeError {
    fn from(e: io::Error) -> Self {
        EncodeError::Io { kind: e.kind() }
    }
}
