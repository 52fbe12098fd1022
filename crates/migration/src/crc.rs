//! CRC-64/XZ, the checksum of every stream header, chunk and status message, and the
//! `Read`/`Write` adapters that compute it while bytes pass through.
//!
//! CRC-64/XZ (also called CRC-64/GO-ECMA) is the ECMA-182 polynomial used reflected:
//! width 64, poly `0x42F0E1EBA9EA3693`, init and xorout all ones, input and output
//! reflected; its check value (the CRC of the ASCII bytes `123456789`) is
//! `0x995DC9BBDF1939FA`. It is written here rather than taken from a crate because it is
//! forty lines and the stream format must not change under us with a dependency bump.
//! Tables are built at compile time; [`Crc64::update`] consumes eight bytes per step
//! ("slicing by 8") so checksumming does not dominate a multi-gigabyte migration.

use std::io::{self, Read, Write};

/// The ECMA-182 polynomial, bit-reflected (CRC-64/XZ processes bits LSB first).
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// `TABLES[0]` is the classic byte table; `TABLES[k][b]` is the CRC of byte `b` followed by
/// `k` zero bytes, which lets eight input bytes be folded in one step. A `static`, not a
/// `const`: a const array may be materialized at each use, which made unoptimized builds
/// fifty times slower.
static TABLES: [[u64; 256]; 8] = build_tables();

const fn build_tables() -> [[u64; 256]; 8] {
    let mut tables = [[0u64; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY_REFLECTED
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            i += 1;
        }
        k += 1;
    }
    tables
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crc64 {
    state: u64,
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64 {
    /// A CRC over no bytes yet.
    pub const fn new() -> Self {
        Crc64 { state: !0 }
    }

    /// Folds `bytes` into the CRC.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut crc = self.state;
        let mut blocks = bytes.chunks_exact(8);
        for block in &mut blocks {
            let mut word = [0u8; 8];
            word.copy_from_slice(block);
            crc ^= u64::from_le_bytes(word);
            crc = TABLES[7][(crc & 0xff) as usize]
                ^ TABLES[6][((crc >> 8) & 0xff) as usize]
                ^ TABLES[5][((crc >> 16) & 0xff) as usize]
                ^ TABLES[4][((crc >> 24) & 0xff) as usize]
                ^ TABLES[3][((crc >> 32) & 0xff) as usize]
                ^ TABLES[2][((crc >> 40) & 0xff) as usize]
                ^ TABLES[1][((crc >> 48) & 0xff) as usize]
                ^ TABLES[0][(crc >> 56) as usize];
        }
        for &byte in blocks.remainder() {
            crc = (crc >> 8) ^ TABLES[0][((crc ^ u64::from(byte)) & 0xff) as usize];
        }
        self.state = crc;
    }

    /// The CRC of everything folded in so far (the running state is kept).
    pub const fn finish(&self) -> u64 {
        !self.state
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

    /// The bit-at-a-time definition, to check the sliced tables against.
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
    fn sliced_update_matches_bitwise_definition_at_every_length_and_split() {
        let data: Vec<u8> = (0u32..300)
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
