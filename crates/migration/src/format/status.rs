//! The control messages of a live migration: the destination's READY once it accepted the
//! configuration and made its memory ready (the source sends no page before it), its
//! verdict, sent after it verified `End` (ACK) or as soon as it refused the stream (NAK,
//! with the reason), and the source's COMMIT in answer to an ACK. The destination runs the guest only after
//! COMMIT: if the ACK is lost the source resumes, and without COMMIT the destination must
//! not run the guest too. They are checksummed: a corrupted NAK must never read as an ACK.

use std::io::{Read, Write};

#[cfg(doc)]
use super::READY_SINCE;
use super::wire::{decode_name, read_full};
use crate::crc::crc64;
use crate::error::{EncodeError, Malformation, StreamError};

/// Longest reason a NAK carries; longer ones are cut at a character boundary.
pub const MAX_REASON_LEN: usize = 512;

const CODE_ACK: u8 = 1;
const CODE_NAK: u8 = 2;
const CODE_COMMIT: u8 = 3;
const CODE_READY: u8 = 4;

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Destination (streams from version [`READY_SINCE`] on): the configuration is
    /// accepted and its memory is ready; the source may send pages.
    Ready,
    /// Destination: everything verified; it will run the guest once the source commits.
    Ack,
    /// Destination: refused, with its error message.
    Nak(String),
    /// Source: the guest stays paused here; the destination may run it.
    Commit,
}

impl Status {
    /// A NAK whose reason is cut to [`MAX_REASON_LEN`] bytes.
    pub fn nak(reason: &str) -> Self {
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Status::Nak(reason[..end].to_owned())
    }

    /// Writes the status and flushes.
    pub fn write_to(&self, w: &mut impl Write) -> Result<(), EncodeError> {
        let (code, reason) = match self {
            Status::Ack => (CODE_ACK, ""),
            Status::Nak(reason) => (CODE_NAK, reason.as_str()),
            Status::Commit => (CODE_COMMIT, ""),
            Status::Ready => (CODE_READY, ""),
        };
        super::wire::check_name("status reason", reason, MAX_REASON_LEN)?;
        let mut buf = vec![code, 0];
        buf.extend_from_slice(&(reason.len() as u16).to_le_bytes());
        buf.extend_from_slice(reason.as_bytes());
        let crc = crc64(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        w.write_all(&buf)?;
        w.flush()?;
        Ok(())
    }

    /// Reads and checks a status.
    pub fn read_from(r: &mut impl Read) -> Result<Self, StreamError> {
        let bad = StreamError::BadStatus;
        let mut head = [0u8; 4];
        read_full(r, &mut head, 0, "the status")?;
        let len = usize::from(u16::from_le_bytes([head[2], head[3]]));
        if len > MAX_REASON_LEN {
            return Err(bad(Malformation::TooMany {
                field: "status reason length",
                count: len as u64,
                cap: MAX_REASON_LEN as u64,
            }));
        }
        let mut rest = vec![0u8; len + 8];
        read_full(r, &mut rest, 4, "the status")?;
        let (reason, trailer) = rest.split_at(len);
        let mut crc = crate::crc::Crc64::new();
        crc.update(&head);
        crc.update(reason);
        let computed = crc.finish();
        let mut stored = [0u8; 8];
        stored.copy_from_slice(trailer);
        let stored = u64::from_le_bytes(stored);
        if stored != computed {
            return Err(StreamError::StatusChecksum { stored, computed });
        }
        if head[1] != 0 {
            return Err(bad(Malformation::NonZeroPadding {
                field: "status padding",
            }));
        }
        match head[0] {
            CODE_ACK if len == 0 => Ok(Status::Ack),
            CODE_COMMIT if len == 0 => Ok(Status::Commit),
            CODE_READY if len == 0 => Ok(Status::Ready),
            CODE_NAK => Ok(Status::Nak(
                decode_name(reason, "status reason", true).map_err(bad)?,
            )),
            other => Err(bad(Malformation::BadValue {
                field: "status code",
                value: other.into(),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &Status) -> Vec<u8> {
        let mut out = Vec::new();
        s.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn ack_and_nak_round_trip() {
        for s in [
            Status::Ready,
            Status::Ack,
            Status::Commit,
            Status::nak("page 9 of region \"ram\" never arrived"),
        ] {
            assert_eq!(Status::read_from(&mut &bytes(&s)[..]), Ok(s));
        }
    }

    #[test]
    fn long_reasons_are_cut_at_a_char_boundary() {
        // "a" then two-byte characters: byte 512 falls inside one, so 511 bytes are kept.
        let long = format!("a{}", "é".repeat(MAX_REASON_LEN));
        assert_eq!(
            Status::nak(&long),
            Status::Nak(format!("a{}", "é".repeat(255)))
        );
    }

    #[test]
    fn a_corrupted_message_never_reads_as_another() {
        for status in [
            Status::nak("no"),
            Status::Ready,
            Status::Ack,
            Status::Commit,
        ] {
            let good = bytes(&status);
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[i] ^= 1 << bit;
                    let read = Status::read_from(&mut &bad[..]);
                    assert!(read.is_err(), "{status:?}, byte {i} bit {bit}: {read:?}");
                }
            }
        }
    }

    #[test]
    fn a_short_status_is_truncated() {
        assert!(matches!(
            Status::read_from(&mut &bytes(&Status::Ack)[..5]),
            Err(StreamError::Truncated { .. })
        ));
    }
}
