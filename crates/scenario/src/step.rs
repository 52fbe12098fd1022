//! The operations a scenario performs, in order: guest CPU accesses through the guest's
//! mapping (whose memory type comes from the modeled KVM), device DMA, and the host's own
//! accesses through the VMM's WB mapping. [`StepKind::keys`] says which keys each takes; the
//! engine (`engine.rs`) says what each does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `do` of a `[[step]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StepKind {
    /// A guest store of `len` (≤ 8) bytes of `value`.
    #[serde(rename = "guest.store")]
    GuestStore,
    /// A guest non-temporal store (MOVNTI): the WC protocol unless the type is UC or WP.
    #[serde(rename = "guest.nt-store")]
    GuestNtStore,
    /// A guest load of `len` (≤ 8) bytes.
    #[serde(rename = "guest.load")]
    GuestLoad,
    /// A sweep of 8-byte guest stores of `value` over `len` bytes (a frame, a VRAM clear).
    #[serde(rename = "guest.fill")]
    GuestFill,
    /// Guest CLFLUSH of the line at `offset`.
    #[serde(rename = "guest.clflush")]
    GuestClflush,
    /// Guest CLFLUSHOPT of the line at `offset` (completes at the next fence).
    #[serde(rename = "guest.clflushopt")]
    GuestClflushopt,
    /// Guest SFENCE: drains WC buffers, completes CLFLUSHOPTs.
    #[serde(rename = "guest.sfence")]
    GuestSfence,
    /// Guest MFENCE.
    #[serde(rename = "guest.mfence")]
    GuestMfence,
    /// Guest WBINVD (the vCPU's own cache).
    #[serde(rename = "guest.wbinvd")]
    GuestWbinvd,
    /// A device reads `len` bytes.
    #[serde(rename = "dma.read")]
    DmaRead,
    /// A device writes `len` bytes of the repeated 8-byte `value`.
    #[serde(rename = "dma.write")]
    DmaWrite,
    /// The host zeroes `len` bytes with cached stores (as `clear_page`).
    #[serde(rename = "host.zero")]
    HostZero,
    /// The host flushes `len` bytes: CLFLUSHOPT each line, then SFENCE.
    #[serde(rename = "host.flush")]
    HostFlush,
    /// The host reads `len` bytes through its WB mapping (`flush` first: the migration read).
    #[serde(rename = "host.read")]
    HostRead,
    /// The host writes `len` bytes of the repeated `value` through its WB mapping (`flush`
    /// after: the write the thread asks about).
    #[serde(rename = "host.write")]
    HostWrite,
    /// The host hands `len` bytes of recycled memory to the slot: zeroes them with cached
    /// stores (`flush` after). Memory no one has written then holds a previous owner's bytes.
    #[serde(rename = "host.give")]
    HostGive,
    /// The host takes `len` bytes back for its own use and reads them through its WB mapping
    /// (`flush` first).
    #[serde(rename = "host.take")]
    HostTake,
}

/// Whether a step takes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The key is an error here.
    No,
    /// The key may be left out (its default applies).
    Optional,
    /// The key must be given.
    Required,
}

/// The keys a step kind takes besides `do`. `offset` goes with `region` (default 0); `len`
/// defaults to 8 bytes; `pat_index` to 0; `flush` to false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keys {
    pub(crate) region: Need,
    pub(crate) device: Need,
    pub(crate) value: Need,
    pub(crate) len: Need,
    pub(crate) pat_index: Need,
    pub(crate) flush: Need,
    /// Longest `len` (one CPU access: 8 bytes), if bounded.
    pub(crate) max_len: Option<u64>,
}

impl StepKind {
    /// The name written after `do =`.
    pub const fn name(self) -> &'static str {
        match self {
            StepKind::GuestStore => "guest.store",
            StepKind::GuestNtStore => "guest.nt-store",
            StepKind::GuestLoad => "guest.load",
            StepKind::GuestFill => "guest.fill",
            StepKind::GuestClflush => "guest.clflush",
            StepKind::GuestClflushopt => "guest.clflushopt",
            StepKind::GuestSfence => "guest.sfence",
            StepKind::GuestMfence => "guest.mfence",
            StepKind::GuestWbinvd => "guest.wbinvd",
            StepKind::DmaRead => "dma.read",
            StepKind::DmaWrite => "dma.write",
            StepKind::HostZero => "host.zero",
            StepKind::HostFlush => "host.flush",
            StepKind::HostRead => "host.read",
            StepKind::HostWrite => "host.write",
            StepKind::HostGive => "host.give",
            StepKind::HostTake => "host.take",
        }
    }

    /// The keys this kind takes.
    pub(crate) fn keys(self) -> Keys {
        use Need::{No, Optional as Opt, Required as Req};
        let k = |region, device, value, len, pat_index, flush, max_len| Keys {
            region,
            device,
            value,
            len,
            pat_index,
            flush,
            max_len,
        };
        match self {
            StepKind::GuestStore | StepKind::GuestNtStore => k(Req, No, Req, Opt, Opt, No, Some(8)),
            StepKind::GuestLoad => k(Req, No, No, Opt, Opt, No, Some(8)),
            StepKind::GuestFill => k(Req, No, Req, Req, Opt, No, None),
            StepKind::GuestClflush | StepKind::GuestClflushopt => k(Req, No, No, No, No, No, None),
            StepKind::GuestSfence | StepKind::GuestMfence | StepKind::GuestWbinvd => {
                k(No, No, No, No, No, No, None)
            }
            StepKind::DmaRead => k(Req, Req, No, Opt, No, No, None),
            StepKind::DmaWrite => k(Req, Req, Req, Opt, No, No, None),
            StepKind::HostZero | StepKind::HostFlush => k(Req, No, No, Req, No, No, None),
            StepKind::HostRead | StepKind::HostGive | StepKind::HostTake => {
                k(Req, No, No, Req, No, Opt, None)
            }
            StepKind::HostWrite => k(Req, No, Req, Opt, No, Opt, None),
        }
    }
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `len` bytes at `offset` of region number `region` (validated to lie inside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Index into the scenario's regions.
    pub region: usize,
    /// Offset of the first byte in the region.
    pub offset: u64,
    /// Bytes (1 for a line flush: the line holding `offset`).
    pub len: u64,
}

/// A guest load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestAccess {
    /// `guest.store`.
    Store,
    /// `guest.nt-store`.
    NtStore,
    /// `guest.load`.
    Load,
    /// `guest.fill`: 8-byte stores over the range.
    Fill,
}

/// A guest fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// `guest.sfence`.
    Sfence,
    /// `guest.mfence`.
    Mfence,
    /// `guest.wbinvd`.
    Wbinvd,
}

/// What the host does through its own WB mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOp {
    /// `host.zero`.
    Zero,
    /// `host.flush`.
    Flush,
    /// `host.read`.
    Read,
    /// `host.write`.
    Write,
    /// `host.give`.
    Give,
    /// `host.take`.
    Take,
}

/// A step's operation with exactly the data it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A guest load or store through guest PAT entry `pat_index`.
    Guest {
        /// Which.
        access: GuestAccess,
        /// Where.
        range: Range,
        /// The guest PAT entry of the mapping.
        pat_index: u8,
        /// What a store writes (repeated every 8 bytes).
        value: u64,
    },
    /// A guest cache-line flush; `opt` for CLFLUSHOPT.
    GuestFlush {
        /// CLFLUSHOPT rather than CLFLUSH.
        opt: bool,
        /// The line.
        range: Range,
    },
    /// A guest fence.
    GuestFence(Fence),
    /// A device read, or a write of `value` repeated.
    Dma {
        /// Index into the scenario's devices.
        device: usize,
        /// A write rather than a read.
        write: bool,
        /// Where.
        range: Range,
        /// What a write writes (repeated every 8 bytes).
        value: u64,
    },
    /// A host access.
    Host {
        /// Which.
        op: HostOp,
        /// Where.
        range: Range,
        /// What a write writes (repeated every 8 bytes).
        value: u64,
        /// Flush around the access (see each kind).
        flush: bool,
    },
}

/// One validated step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Its `do`.
    pub kind: StepKind,
    /// Line of its `[[step]]` entry in the file.
    pub line: usize,
    /// What it does.
    pub op: Op,
}

/// The byte at position `i` of data that repeats the little-endian 8-byte `value`.
pub(crate) fn repeated_byte(value: u64, i: u64) -> u8 {
    value.to_le_bytes()[(i % 8) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind, in documentation order.
    const ALL: [StepKind; 17] = [
        StepKind::GuestStore,
        StepKind::GuestNtStore,
        StepKind::GuestLoad,
        StepKind::GuestFill,
        StepKind::GuestClflush,
        StepKind::GuestClflushopt,
        StepKind::GuestSfence,
        StepKind::GuestMfence,
        StepKind::GuestWbinvd,
        StepKind::DmaRead,
        StepKind::DmaWrite,
        StepKind::HostZero,
        StepKind::HostFlush,
        StepKind::HostRead,
        StepKind::HostWrite,
        StepKind::HostGive,
        StepKind::HostTake,
    ];

    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "do")]
        kind: StepKind,
    }

    #[test]
    fn names_match_the_serde_names() {
        for kind in ALL {
            let doc: Doc = toml::from_str(&format!("do = \"{}\"", kind.name())).unwrap();
            assert_eq!(doc.kind, kind);
        }
    }

    #[test]
    fn offsets_go_with_regions_and_cpu_accesses_are_bounded() {
        for kind in ALL {
            let keys = kind.keys();
            assert_ne!(keys.region, Need::Optional, "{kind}");
            if keys.max_len.is_some() {
                assert!(kind.name().starts_with("guest."), "{kind}");
            }
            if keys.device != Need::No {
                assert_eq!(keys.region, Need::Required, "{kind}");
            }
        }
    }

    #[test]
    fn written_data_repeats_the_value() {
        let v = 0x1122_3344_5566_7788;
        assert_eq!(repeated_byte(v, 0), 0x88);
        assert_eq!(repeated_byte(v, 7), 0x11);
        assert_eq!(repeated_byte(v, 8), 0x88);
    }
}
