//! Chunk framing: the kind, the fixed 16-byte header with its own CRC, and the per-kind
//! payload caps that bound every allocation a reader makes.

use std::fmt;

use super::{config, device, end, pages, vcpu};
use crate::crc::crc64;
use crate::error::StreamError;

/// Size of a chunk header.
pub const CHUNK_HEADER_LEN: usize = 16;
/// Size of a chunk's CRC trailer.
pub const CHUNK_TRAILER_LEN: usize = 8;

/// What a chunk carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ChunkKind {
    /// Reserved so that a zeroed header is never a chunk; always refused by readers.
    Invalid = 0,
    /// The VM configuration: regions and vCPU count.
    VmConfig = 1,
    /// A run of pages of one region.
    Pages = 2,
    /// One vCPU's state.
    Vcpu = 3,
    /// One device's opaque state.
    Device = 4,
    /// A `skip` region: no pages follow; the destination's device re-creates it.
    RegionSkipped = 5,
    /// The totals; the last chunk.
    End = 6,
    /// Live streams from 1.4 ([`super::TORN_SINCE`]): the `Pages` run just before was
    /// sent from guest memory the guest wrote to meanwhile, so its pages are sent again.
    Torn = 7,
}

impl TryFrom<u16> for ChunkKind {
    type Error = u16;

    fn try_from(v: u16) -> Result<Self, u16> {
        Ok(match v {
            0 => ChunkKind::Invalid,
            1 => ChunkKind::VmConfig,
            2 => ChunkKind::Pages,
            3 => ChunkKind::Vcpu,
            4 => ChunkKind::Device,
            5 => ChunkKind::RegionSkipped,
            6 => ChunkKind::End,
            7 => ChunkKind::Torn,
            other => return Err(other),
        })
    }
}

impl ChunkKind {
    /// The most payload bytes a chunk of this kind may declare. A reader compares the
    /// declared length with this before it allocates or reads anything.
    pub const fn max_payload(self) -> u32 {
        (match self {
            ChunkKind::Invalid => 0,
            ChunkKind::VmConfig => config::MAX_PAYLOAD,
            ChunkKind::Pages => pages::MAX_PAYLOAD,
            ChunkKind::Vcpu => vcpu::MAX_PAYLOAD,
            ChunkKind::Device => device::MAX_PAYLOAD,
            ChunkKind::RegionSkipped => 8,
            ChunkKind::End => end::MAX_PAYLOAD,
            ChunkKind::Torn => 8,
        }) as u32
    }
}

impl fmt::Display for ChunkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A chunk header.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The payload's kind.
    pub kind: ChunkKind,
    /// Reserved; 0 in this version.
    pub flags: u16,
    /// Payload bytes.
    pub length: u32,
}

impl ChunkHeader {
    /// The header's bytes, its own CRC included.
    pub fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut out = [0u8; CHUNK_HEADER_LEN];
        out[0..2].copy_from_slice(&(self.kind as u16).to_le_bytes());
        out[2..4].copy_from_slice(&self.flags.to_le_bytes());
        out[4..8].copy_from_slice(&self.length.to_le_bytes());
        let crc = crc64(&out[..8]);
        out[8..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Checks and decodes a header read at stream offset `offset`. The header's CRC is
    /// checked first: on a connection, believing a corrupt length would make the reader wait
    /// for bytes that never come, or swallow the next chunk.
    pub fn decode(bytes: &[u8; CHUNK_HEADER_LEN], offset: u64) -> Result<Self, StreamError> {
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&bytes[8..]);
        if crc64(&bytes[..8]) != u64::from_le_bytes(stored) {
            return Err(StreamError::ChunkHeaderChecksum { offset });
        }
        let value = u16::from_le_bytes([bytes[0], bytes[1]]);
        let kind = match ChunkKind::try_from(value) {
            Ok(ChunkKind::Invalid) => return Err(StreamError::InvalidChunkKind { offset }),
            Ok(kind) => kind,
            Err(value) => return Err(StreamError::UnknownChunkKind { offset, value }),
        };
        let flags = u16::from_le_bytes([bytes[2], bytes[3]]);
        if flags != 0 {
            return Err(StreamError::UnknownChunkFlags {
                kind,
                offset,
                flags,
            });
        }
        let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if length > kind.max_payload() {
            return Err(StreamError::Oversized {
                kind,
                offset,
                length,
                cap: kind.max_payload(),
            });
        }
        Ok(ChunkHeader {
            kind,
            flags,
            length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header with arbitrary raw fields and a correct header CRC.
    fn raw(kind: u16, flags: u16, length: u32) -> [u8; CHUNK_HEADER_LEN] {
        let mut out = [0u8; CHUNK_HEADER_LEN];
        out[0..2].copy_from_slice(&kind.to_le_bytes());
        out[2..4].copy_from_slice(&flags.to_le_bytes());
        out[4..8].copy_from_slice(&length.to_le_bytes());
        let crc = crc64(&out[..8]);
        out[8..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn kinds_round_trip_and_unknown_values_are_rejected() {
        for v in 0u16..=7 {
            assert_eq!(ChunkKind::try_from(v).map(|k| k as u16), Ok(v));
        }
        assert_eq!(ChunkKind::try_from(8), Err(8));
        assert_eq!(ChunkKind::try_from(u16::MAX), Err(u16::MAX));
    }

    #[test]
    fn header_round_trips() {
        let h = ChunkHeader {
            kind: ChunkKind::Pages,
            flags: 0,
            length: 4104,
        };
        assert_eq!(ChunkHeader::decode(&h.encode(), 0), Ok(h));
        assert_eq!(h.encode(), raw(2, 0, 4104));
    }

    #[test]
    fn each_bad_header_has_its_error() {
        let at = 500;
        assert_eq!(
            ChunkHeader::decode(&raw(0, 0, 0), at),
            Err(StreamError::InvalidChunkKind { offset: at })
        );
        assert_eq!(
            ChunkHeader::decode(&raw(99, 0, 0), at),
            Err(StreamError::UnknownChunkKind {
                offset: at,
                value: 99
            })
        );
        assert_eq!(
            ChunkHeader::decode(&raw(6, 2, 0), at),
            Err(StreamError::UnknownChunkFlags {
                kind: ChunkKind::End,
                offset: at,
                flags: 2
            })
        );
        assert_eq!(
            ChunkHeader::decode(&raw(5, 0, 9), at),
            Err(StreamError::Oversized {
                kind: ChunkKind::RegionSkipped,
                offset: at,
                length: 9,
                cap: 8
            })
        );
        let mut corrupt = raw(2, 0, 16);
        corrupt[6] = 0x10; // the length grew by 1 MiB
        assert_eq!(
            ChunkHeader::decode(&corrupt, at),
            Err(StreamError::ChunkHeaderChecksum { offset: at })
        );
    }

    #[test]
    fn caps_are_the_documented_ones() {
        // docs/migration.md lists these; a change here is a format change.
        let caps = [
            (ChunkKind::VmConfig, 3_592),
            (ChunkKind::Pages, 1_050_648),
            (ChunkKind::Vcpu, 25_048),
            (ChunkKind::Device, 1_048_616),
            (ChunkKind::RegionSkipped, 8),
            (ChunkKind::End, 1_576),
            (ChunkKind::Torn, 8),
            (ChunkKind::Invalid, 0),
        ];
        for (kind, cap) in caps {
            assert_eq!(kind.max_payload(), cap, "{kind}");
        }
    }
}
