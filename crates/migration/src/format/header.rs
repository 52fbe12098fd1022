//! The stream header: magic, version, and the facts about the source that a destination
//! (or a person reading a snapshot) needs to judge the stream.

use std::io::{Read, Write};

use super::wire::{Dec, Enc, read_full};
use super::{HOST_LEN, NAME_LEN, PAGE_SIZE, Version, check_version};
use crate::crc::crc64;
use crate::error::{EncodeError, Malformation, StreamError};

/// The first eight bytes of every stream.
pub const MAGIC: [u8; 8] = *b"NCDMAMIG";
/// Size of the stream header, CRC included.
pub const HEADER_LEN: usize = 128;
/// Header flag: the stream is a live migration (a status reply is expected).
const FLAG_LIVE: u32 = 1 << 0;

/// Whether a stream is a snapshot file or a live migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A file written while the guest was paused.
    Snapshot,
    /// A pre-copy migration over a connection; the destination answers with a status.
    Live,
}

/// The CPU vendor of the source host: MSR and XSAVE contents are vendor specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Vendor {
    /// Intel (VMX, EPT).
    Intel = 1,
    /// AMD (SVM, NPT).
    Amd = 2,
}

impl TryFrom<u8> for Vendor {
    type Error = u8;

    fn try_from(v: u8) -> Result<Self, u8> {
        match v {
            1 => Ok(Vendor::Intel),
            2 => Ok(Vendor::Amd),
            other => Err(other),
        }
    }
}

/// What the source says about itself.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFacts {
    /// The kernel profile the source ran on (`6.16+memslot-flag`, or `host` for real KVM);
    /// at most [`NAME_LEN`] bytes.
    pub kernel_profile: String,
    /// The source host's KVM flavor and release; at most [`HOST_LEN`] bytes.
    pub host: String,
    /// The source's CPU vendor.
    pub vendor: Vendor,
}

/// The decoded stream header.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    /// The version the stream was written with ([`super::VERSION`] for streams we write).
    pub version: Version,
    /// Snapshot or live migration.
    pub kind: StreamKind,
    /// Facts about the source.
    pub facts: SourceFacts,
}

impl StreamHeader {
    /// A header of the current version.
    pub fn new(kind: StreamKind, facts: SourceFacts) -> Self {
        StreamHeader {
            version: super::VERSION,
            kind,
            facts,
        }
    }

    /// The header's bytes.
    pub fn encode(&self) -> Result<[u8; HEADER_LEN], EncodeError> {
        let mut buf = Vec::with_capacity(HEADER_LEN);
        let mut enc = Enc::new(&mut buf);
        enc.bytes(&MAGIC);
        enc.u16(self.version.major);
        enc.u16(self.version.minor);
        enc.u32(match self.kind {
            StreamKind::Snapshot => 0,
            StreamKind::Live => FLAG_LIVE,
        });
        enc.u32(PAGE_SIZE as u32);
        enc.u8(self.facts.vendor as u8);
        enc.zeros(3);
        enc.name("kernel profile", &self.facts.kernel_profile, NAME_LEN)?;
        enc.name("host flavor", &self.facts.host, HOST_LEN)?;
        let crc = crc64(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        let mut out = [0u8; HEADER_LEN];
        out.copy_from_slice(&buf);
        Ok(out)
    }

    /// Writes the header.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), EncodeError> {
        w.write_all(&self.encode()?)?;
        Ok(())
    }

    /// Reads and checks a header: magic first, then the version (so an incompatible stream
    /// is reported as such, whatever follows), then the CRC, then the fields.
    pub fn read_from(r: &mut impl Read) -> Result<Self, StreamError> {
        let mut buf = [0u8; HEADER_LEN];
        read_full(r, &mut buf, 0, "the stream header")?;
        Self::decode(&buf)
    }

    /// Checks and decodes header bytes (see [`StreamHeader::read_from`] for the order).
    pub fn decode(buf: &[u8; HEADER_LEN]) -> Result<Self, StreamError> {
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&buf[..8]);
        if magic != MAGIC {
            return Err(StreamError::BadMagic { found: magic });
        }
        let version = Version::new(
            u16::from_le_bytes([buf[8], buf[9]]),
            u16::from_le_bytes([buf[10], buf[11]]),
        );
        check_version(version)?;
        let (body, trailer) = buf.split_at(HEADER_LEN - 8);
        let computed = crc64(body);
        let mut stored = [0u8; 8];
        stored.copy_from_slice(trailer);
        let stored = u64::from_le_bytes(stored);
        if stored != computed {
            return Err(StreamError::HeaderChecksum { stored, computed });
        }

        let mut dec = Dec::new(&body[12..]);
        let bad = StreamError::BadHeader;
        let flags = dec.u32("flags").map_err(bad)?;
        let kind = match flags {
            0 => StreamKind::Snapshot,
            FLAG_LIVE => StreamKind::Live,
            other => {
                return Err(bad(Malformation::BadValue {
                    field: "flags",
                    value: other.into(),
                }));
            }
        };
        let page_size = dec.u32("page size").map_err(bad)?;
        if page_size != PAGE_SIZE as u32 {
            return Err(StreamError::PageSize {
                found: page_size,
                expected: PAGE_SIZE as u32,
            });
        }
        let vendor = dec.u8("vendor").map_err(bad)?;
        let vendor = Vendor::try_from(vendor).map_err(|v| {
            bad(Malformation::BadValue {
                field: "vendor",
                value: v.into(),
            })
        })?;
        dec.zeros(3, "header padding").map_err(bad)?;
        let kernel_profile = dec.name("kernel profile", NAME_LEN, true).map_err(bad)?;
        let host = dec.name("host flavor", HOST_LEN, true).map_err(bad)?;
        dec.finish().map_err(bad)?;
        Ok(StreamHeader {
            version,
            kind,
            facts: SourceFacts {
                kernel_profile,
                host,
                vendor,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> StreamHeader {
        StreamHeader::new(
            StreamKind::Live,
            SourceFacts {
                kernel_profile: "6.16+memslot-flag".into(),
                host: "model".into(),
                vendor: Vendor::Intel,
            },
        )
    }

    /// Re-seals a tampered header so that only the tampered field is wrong.
    fn reseal(mut bytes: [u8; HEADER_LEN]) -> [u8; HEADER_LEN] {
        let crc = crc64(&bytes[..HEADER_LEN - 8]);
        bytes[HEADER_LEN - 8..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn round_trips_and_starts_with_magic() {
        let bytes = header().encode().unwrap();
        assert_eq!(&bytes[..8], b"NCDMAMIG");
        assert_eq!(StreamHeader::decode(&bytes), Ok(header()));
        assert_eq!(StreamHeader::read_from(&mut &bytes[..]), Ok(header()));
    }

    #[test]
    fn bad_magic_is_reported_before_anything_else() {
        let mut bytes = header().encode().unwrap();
        bytes[0] = b'X';
        bytes[9] = 0xff; // an absurd version too: magic is checked first
        assert!(matches!(
            StreamHeader::decode(&bytes),
            Err(StreamError::BadMagic { .. })
        ));
    }

    #[test]
    fn version_is_checked_before_the_crc() {
        let mut h = header();
        h.version = Version::new(9, 0);
        let mut bytes = h.encode().unwrap();
        bytes[HEADER_LEN - 1] ^= 1;
        assert!(matches!(
            StreamHeader::decode(&bytes),
            Err(StreamError::VersionTooNew { .. })
        ));
    }

    #[test]
    fn corrupt_header_fails_its_crc() {
        let mut bytes = header().encode().unwrap();
        bytes[30] ^= 0x10;
        assert!(matches!(
            StreamHeader::decode(&bytes),
            Err(StreamError::HeaderChecksum { .. })
        ));
    }

    #[test]
    fn sealed_but_invalid_fields_are_refused() {
        let good = header().encode().unwrap();
        // (offset, value, expected error)
        let cases: [(usize, u8, StreamError); 4] = [
            (
                12,
                4,
                StreamError::BadHeader(Malformation::BadValue {
                    field: "flags",
                    value: 5,
                }),
            ),
            (
                17,
                0x20,
                StreamError::PageSize {
                    found: 0x2000,
                    expected: 4096,
                },
            ),
            (
                20,
                7,
                StreamError::BadHeader(Malformation::BadValue {
                    field: "vendor",
                    value: 7,
                }),
            ),
            (
                21,
                1,
                StreamError::BadHeader(Malformation::NonZeroPadding {
                    field: "header padding",
                }),
            ),
        ];
        for (offset, value, want) in cases {
            let mut bytes = good;
            bytes[offset] = value;
            if offset == 12 {
                bytes[12] |= 1; // keep LIVE, add an unknown flag
            }
            assert_eq!(
                StreamHeader::decode(&reseal(bytes)),
                Err(want),
                "offset {offset}"
            );
        }
    }

    #[test]
    fn short_header_is_truncated() {
        let bytes = header().encode().unwrap();
        assert_eq!(
            StreamHeader::read_from(&mut &bytes[..100]),
            Err(StreamError::Truncated {
                offset: 100,
                what: "the stream header"
            })
        );
    }

    #[test]
    fn facts_too_long_for_their_field_are_refused_on_encode() {
        let mut h = header();
        h.facts.kernel_profile = "x".repeat(NAME_LEN + 1);
        assert!(matches!(h.encode(), Err(EncodeError::FieldTooLong { .. })));
    }
}
