//! CRC-64/XZ, the checksum of every stream header, chunk and status message, and the
//! `Read`/`Write` adapters that compute it while bytes pass through.
//!
//! CRC-64/XZ (also called CRC-64/GO-ECMA) is the ECMA-182 polynomial used reflected:
//! width 64, poly `0x42F0E1EBA9EA3693`, init and xorout all ones, input and output
//! reflected; its check value (the CRC of the ASCII bytes `123456789`) is
//! `0x995DC9BBDF1939FA`. Every byte of a migration passes through it twice (sender and
//! destination), so it is computed by `crc-fast`, which folds with carry-less multiplies
//! (PCLMULQDQ / VPCLMULQDQ) at tens of GB/s where a table CRC manages one or two. The stream
//! format is the algorithm, not the crate: the tests below hold the crate to the bit-at-a-
//! time definition, so a dependency bump cannot change a stream unnoticed.

use std::fmt;
use std::io::{self, Read, Write};

use crc_fast::{CrcAlgorithm, Digest};

/// A running CRC-64/XZ.
///
/// ```
/// use migration::crc::Crc64;
///
/// let mut crc = Crc64::new();
/// crc.update(b"1234");
/// crc.update(b"56789");
/// assert_eq!(crc.finish(), 0x995D_C9BB_DF19_39FA);
/// ```
#[derive(Clone, Copy)]
pub struct Crc64 {
    digest: Digest,
}

impl fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Crc64({:#018x})", self.finish())
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64 {
    /// A CRC over no bytes yet.
    pub fn new() -> Self {
        Crc64 {
            digest: Digest::new(CrcAlgorithm::Crc64Xz),
        }
    }

    /// Folds `bytes` into the CRC.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
    }

    /// The CRC of everything folded in so far (the running state is kept).
    pub fn finish(&self) -> u64 {
        self.digest.finalize()
    }

    /// Extends the CRC by the bytes `other` was computed over, without reading them again:
    /// a page checksummed as it was copied (still in the L1 cache) need not be read back
    /// from memory to frame its chunk.
    pub fn append(&mut self, other: &Crc64) {
        self.digest.combine(&other.digest);
    }
}

/// The CRC-64/XZ of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut crc = Crc64::new();
    crc.update(bytes);
    crc.finish()
}

/// A writer that checksums everything written through it.
///
/// ```
/// use std::io::Write;
/// use migration::crc::{CrcWriter, crc64};
///
/// let mut out = Vec::new();
/// let mut writer = CrcWriter::new(&mut out);
/// writer.write_all(b"chunk payload")?;
/// let crc = writer.checksum();
/// // The trailer goes to the inner writer, so it is not part of its own checksum.
/// out.extend_from_slice(&crc.to_le_bytes());
/// assert_eq!(crc, crc64(b"chunk payload"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct CrcWriter<W> {
    inner: W,
    crc: Crc64,
}

impl<W: Write> CrcWriter<W> {
    /// Wraps `inner` with a fresh CRC.
    pub fn new(inner: W) -> Self {
        CrcWriter {
            inner,
            crc: Crc64::new(),
        }
    }

    /// The CRC of the bytes accepted so far.
    pub fn checksum(&self) -> u64 {
        self.crc.finish()
    }

    /// The running CRC of the bytes accepted so far, to be extended.
    pub fn crc(&self) -> Crc64 {
        self.crc
    }
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only the bytes the inner writer took are checksummed: a short write must not count
        // bytes the caller will write again.
        self.crc.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that checksums everything read through it.
///
/// ```
/// use std::io::Read;
/// use migration::crc::{CrcReader, crc64};
///
/// let mut stored = b"chunk payload".to_vec();
/// stored.extend_from_slice(&crc64(b"chunk payload").to_le_bytes());
/// let mut input = &stored[..];
///
/// let mut reader = CrcReader::new(&mut input);
/// let mut payload = [0u8; 13];
/// reader.read_exact(&mut payload)?;
/// // Take the computed CRC before reading the stored one: the trailer must not be fed into
/// // the checksum it is compared with.
/// let computed = reader.checksum();
/// let mut trailer = [0u8; 8];
/// input.read_exact(&mut trailer)?;
/// assert_eq!(computed, u64::from_le_bytes(trailer));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct CrcReader<R> {
    inner: R,
    crc: Crc64,
}

impl<R: Read> CrcReader<R> {
    /// Wraps `inner` with a fresh CRC.
    pub fn new(inner: R) -> Self {
        CrcReader {
            inner,
            crc: Crc64::new(),
        }
    }

    /// The CRC of the bytes delivered so far.
    pub fn checksum(&self) -> u64 {
        self.crc.finish()
    }
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ECMA-182 polynomial, bit-reflected (CRC-64/XZ processes bits LSB first).
    const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

    /// The bit-at-a-time definition, to hold the accelerated CRC to.
    fn reference(bytes: &[u8]) -> u64 {
        let mut crc = !0u64;
        for &b in bytes {
            crc ^= u64::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ POLY_REFLECTED
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn check_value_of_crc64_xz() {
        assert_eq!(crc64(b"123456789"), 0x995D_C9BB_DF19_39FA);
        assert_eq!(crc64(b""), 0);
    }

    #[test]
    fn update_matches_bitwise_definition_at_every_length_and_split() {
        // Past 256 bytes, so the folding paths for long inputs are exercised too.
        let data: Vec<u8> = (0u32..1100)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            let want = reference(&data[..len]);
            assert_eq!(crc64(&data[..len]), want, "len {len}");
            let split = len / 3;
            let mut crc = Crc64::new();
            crc.update(&data[..split]);
            crc.update(&data[split..len]);
            assert_eq!(crc.finish(), want, "len {len} split {split}");
        }
    }

    #[test]
    fn a_page_sized_run_split_anywhere_matches_the_definition() {
        let data: Vec<u8> = (0u32..(64 << 10) + 13)
            .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
            .collect();
        let want = reference(&data);
        for split in [0, 1, 7, 4096, 4103, 40_000, data.len()] {
            let mut crc = Crc64::new();
            crc.update(&data[..split]);
            crc.update(&data[split..]);
            assert_eq!(crc.finish(), want, "split {split}");
            let mut tail = Crc64::new();
            tail.update(&data[split..]);
            let mut head = Crc64::new();
            head.update(&data[..split]);
            head.append(&tail);
            assert_eq!(head.finish(), want, "appended at {split}");
        }
    }

    #[test]
    fn single_bit_flips_change_the_checksum() {
        let data = vec![0x5au8; 64];
        let base = crc64(&data);
        for bit in 0..data.len() * 8 {
            let mut flipped = data.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_ne!(crc64(&flipped), base, "bit {bit}");
        }
    }

    /// A writer that takes at most 3 bytes per call, to exercise short writes.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writer_counts_only_bytes_the_inner_writer_accepted() {
        let mut writer = CrcWriter::new(Dribble(Vec::new()));
        writer.write_all(b"123456789").unwrap();
        assert_eq!(writer.checksum(), 0x995D_C9BB_DF19_39FA);
        assert_eq!(writer.inner.0, b"123456789");
    }
}
