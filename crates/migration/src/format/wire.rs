//! Little-endian field encoding for chunk payloads: an appending encoder and a bounded
//! cursor that never reads past the payload it was given and reports what it was reading
//! when the payload ran out.
//!
//! Payloads are decoded from a buffer whose length was already checked against the chunk
//! kind's cap, so nothing here allocates; the decoders of each chunk validate counts before
//! they reserve anything.

use std::io::{self, Read};

use crate::error::{EncodeError, Malformation, StreamError};

/// Fills `buf` from `r`, reporting where a short stream ended: `offset` is the stream
/// position of `buf[0]`, `what` names what was being read.
pub(crate) fn read_full(
    r: &mut impl Read,
    buf: &mut [u8],
    offset: u64,
    what: &'static str,
) -> Result<(), StreamError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(StreamError::Truncated {
                    offset: offset + got as u64,
                    what,
                });
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(StreamError::Io {
                    offset: offset + got as u64,
                    what,
                    kind: e.kind(),
                });
            }
        }
    }
    Ok(())
}

/// Appends fields to a payload buffer.
#[derive(Debug)]
pub(crate) struct Enc<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Enc<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Self {
        Enc { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Explicit padding: always zero, and checked to be zero on decode.
    pub(crate) fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// A fixed-size text field: UTF-8, NUL padded to `len` bytes.
    pub(crate) fn name(
        &mut self,
        field: &'static str,
        value: &str,
        len: usize,
    ) -> Result<(), EncodeError> {
        check_name(field, value, len)?;
        self.bytes(value.as_bytes());
        self.zeros(len - value.len());
        Ok(())
    }
}

/// Refuses text that a fixed-size field cannot carry back unchanged.
pub(crate) fn check_name(field: &'static str, value: &str, len: usize) -> Result<(), EncodeError> {
    if value.len() > len {
        return Err(EncodeError::FieldTooLong {
            field,
            len: value.len(),
            max: len,
        });
    }
    if value.contains('\0') {
        // A NUL would end the name early on decode.
        return Err(EncodeError::NulInName { field });
    }
    Ok(())
}

/// Reads fields from a payload, never past its end.
#[derive(Debug)]
pub(crate) struct Dec<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Dec { bytes, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Malformation> {
        if self.remaining() < n {
            return Err(Malformation::Short { field });
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Malformation> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, Malformation> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, Malformation> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, Malformation> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, Malformation> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// Padding must be zero, so that a later version can give it a meaning.
    pub(crate) fn zeros(&mut self, n: usize, field: &'static str) -> Result<(), Malformation> {
        if self.take(n, field)?.iter().any(|&b| b != 0) {
            return Err(Malformation::NonZeroPadding { field });
        }
        Ok(())
    }

    /// A fixed-size text field (see [`Enc::name`]); `allow_empty` is false for names that
    /// identify something.
    pub(crate) fn name(
        &mut self,
        field: &'static str,
        len: usize,
        allow_empty: bool,
    ) -> Result<String, Malformation> {
        decode_name(self.take(len, field)?, field, allow_empty)
    }

    /// Fails unless the whole payload was consumed: a payload longer than its contents is
    /// as suspect as a shorter one.
    pub(crate) fn finish(self) -> Result<(), Malformation> {
        if self.remaining() != 0 {
            return Err(Malformation::Trailing {
                bytes: self.remaining() as u64,
            });
        }
        Ok(())
    }
}

/// Decodes a NUL-padded UTF-8 field.
pub(crate) fn decode_name(
    raw: &[u8],
    field: &'static str,
    allow_empty: bool,
) -> Result<String, Malformation> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    if raw[end..].iter().any(|&b| b != 0) || (end == 0 && !allow_empty) {
        return Err(Malformation::BadName { field });
    }
    match std::str::from_utf8(&raw[..end]) {
        Ok(s) => Ok(s.to_owned()),
        Err(_) => Err(Malformation::BadName { field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_little_endian() {
        let mut buf = Vec::new();
        let mut enc = Enc::new(&mut buf);
        enc.u8(1);
        enc.u16(0x0203);
        enc.u32(0x0405_0607);
        enc.u64(0x0809_0a0b_0c0d_0e0f);
        enc.zeros(2);
        enc.name("name", "gpu", 8).unwrap();
        assert_eq!(&buf[..3], &[1, 3, 2]);
        let mut dec = Dec::new(&buf);
        assert_eq!(dec.u8("a"), Ok(1));
        assert_eq!(dec.u16("b"), Ok(0x0203));
        assert_eq!(dec.u32("c"), Ok(0x0405_0607));
        assert_eq!(dec.u64("d"), Ok(0x0809_0a0b_0c0d_0e0f));
        assert_eq!(dec.zeros(2, "pad"), Ok(()));
        assert_eq!(dec.name("name", 8, false), Ok("gpu".to_owned()));
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn read_full_reports_where_the_stream_ended() {
        let mut buf = [0u8; 8];
        assert_eq!(
            read_full(&mut &[1u8, 2, 3][..], &mut buf, 100, "thing"),
            Err(StreamError::Truncated {
                offset: 103,
                what: "thing"
            })
        );
        assert_eq!(read_full(&mut &[7u8; 9][..], &mut buf, 0, "thing"), Ok(()));
        assert_eq!(buf, [7; 8]);
    }

    #[test]
    fn short_payload_names_the_field() {
        let mut dec = Dec::new(&[1, 2, 3]);
        assert_eq!(
            dec.u32("count"),
            Err(Malformation::Short { field: "count" })
        );
    }

    #[test]
    fn trailing_bytes_and_nonzero_padding_are_refused() {
        let mut dec = Dec::new(&[0, 1, 9]);
        assert_eq!(
            dec.zeros(2, "pad"),
            Err(Malformation::NonZeroPadding { field: "pad" })
        );
        assert_eq!(
            Dec::new(&[0]).finish(),
            Err(Malformation::Trailing { bytes: 1 })
        );
    }

    #[test]
    fn names_must_be_nul_padded_utf8() {
        let bad = Err(Malformation::BadName { field: "n" });
        assert_eq!(decode_name(b"ab\0c", "n", false), bad);
        assert_eq!(decode_name(b"\xff\0\0\0", "n", false), bad);
        assert_eq!(decode_name(b"\0\0\0\0", "n", false), bad);
        assert_eq!(decode_name(b"\0\0\0\0", "n", true), Ok(String::new()));
        assert_eq!(decode_name(b"abcd", "n", false), Ok("abcd".to_owned()));
    }

    #[test]
    fn encoder_refuses_names_it_cannot_carry() {
        let mut buf = Vec::new();
        let mut enc = Enc::new(&mut buf);
        assert_eq!(
            enc.name("n", "toolong", 4),
            Err(EncodeError::FieldTooLong {
                field: "n",
                len: 7,
                max: 4
            })
        );
        assert_eq!(
            enc.name("n", "a\0b", 4),
            Err(EncodeError::NulInName { field: "n" })
        );
    }
}
