//! CRC-64/XZ, the checksum of every stream header, chunk and status message, and the
//! `Read` adapter that computes it while bytes pass through.
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
use std::io::{self, Read};

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
    /// Bytes folded in, appended ones included: what [`Crc64::append`] shifts by.
    len: u64,
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
            len: 0,
        }
    }

    /// Folds `bytes` into the CRC.
    pub fn update(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The CRC of everything folded in so far (the running state is kept).
    pub fn finish(&self) -> u64 {
        self.digest.finalize()
    }

    /// Extends the CRC by the bytes `other` was computed over, without reading them again:
    /// a page checksummed as it was copied (still in the L1 cache) need not be read back
    /// from memory to frame its chunk.
    ///
    /// Appending costs at most one GF(2) matrix-vector product per set bit of `other`'s
    /// length, from operators built once per process (a private `ZeroShift`): well under a
    /// microsecond, where `crc_fast`'s own `Digest::combine` squares its matrices afresh
    /// each call, about 190 µs for a 1 MiB run — a third of the socket's time for it.
    pub fn append(&mut self, other: &Crc64) {
        // With register r_A after A, processing B gives M^|B| r_A ^ g(B), and `other`'s
        // register is M^|B| init ^ g(B), where M shifts in one zero byte; so the joined
        // register is M^|B| (r_A ^ init) ^ r_B.
        let shift = ZeroShift::get();
        let shifted = shift.by(other.len, self.digest.get_state() ^ shift.init);
        self.digest =
            Digest::new_with_init_state(CrcAlgorithm::Crc64Xz, shifted ^ other.digest.get_state());
        self.len += other.len;
    }
}

/// The operators that feed zero bytes through a CRC-64/XZ register: `power[k]` is the
/// 64×64 GF(2) matrix (one column per register bit) of 2^k zero bytes. The register is
/// reflected, so one zero bit shifts it right and folds the polynomial in where a one
/// fell off; squaring that three times gives a byte, and each further squaring doubles it.
struct ZeroShift {
    power: [[u64; 64]; 64],
    /// The register a CRC starts from (crc-fast's, read once).
    init: u64,
}

impl ZeroShift {
    /// The process's operators, built on first use (64 squarings, well under a
    /// millisecond).
    fn get() -> &'static ZeroShift {
        static SHIFT: std::sync::OnceLock<ZeroShift> = std::sync::OnceLock::new();
        SHIFT.get_or_init(|| {
            let mut bit = [0u64; 64];
            bit[0] = POLY_REFLECTED;
            for (i, column) in bit.iter_mut().enumerate().skip(1) {
                *column = 1 << (i - 1);
            }
            let mut op = bit;
            for _ in 0..3 {
                op = square(&op);
            }
            let mut power = [[0u64; 64]; 64];
            for p in &mut power {
                *p = op;
                op = square(&op);
            }
            ZeroShift {
                power,
                init: Digest::new(CrcAlgorithm::Crc64Xz).get_state(),
            }
        })
    }

    /// `register` after `bytes` zero bytes.
    fn by(&self, bytes: u64, mut register: u64) -> u64 {
        let mut rest = bytes;
        while rest != 0 {
            let k = rest.trailing_zeros() as usize;
            register = times(&self.power[k], register);
            rest &= rest - 1;
        }
        register
    }
}

/// The ECMA-182 polynomial, bit-reflected (CRC-64/XZ processes bits LSB first).
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// The GF(2) product of `matrix` (columns) and `vector`.
fn times(matrix: &[u64; 64], vector: u64) -> u64 {
    matrix.iter().enumerate().fold(0, |sum, (i, column)| {
        sum ^ (column & 0u64.wrapping_sub((vector >> i) & 1))
    })
}

/// `matrix` times itself.
fn square(matrix: &[u64; 64]) -> [u64; 64] {
    matrix.map(|column| times(matrix, column))
}

/// The CRC-64/XZ of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut crc = Crc64::new();
    crc.update(bytes);
    crc.finish()
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
    fn appends_of_run_sized_and_odd_lengths_chain_to_the_whole() {
        // Lengths with many bits set reach many operators; a CRC that was itself appended
        // to must still be appended by its full length.
        let data: Vec<u8> = (0u32..(1 << 20) + 4096 * 3 + 21)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 17) as u8)
            .collect();
        let want = crc64(&data);
        for (a, b) in [(8, 4096 * 255 + 7), (24, 1 << 20), (1, (1 << 19) + 4095)] {
            let mut head = Crc64::new();
            head.update(&data[..a]);
            let mut middle = Crc64::new();
            middle.update(&data[a..a + b]);
            let mut tail = Crc64::new();
            tail.update(&data[a + b..]);
            middle.append(&tail);
            head.append(&middle);
            assert_eq!(head.finish(), want, "split at {a} and {}", a + b);
            let mut whole = Crc64::new();
            whole.update(&data);
            let mut empty = Crc64::new();
            empty.append(&whole);
            whole.append(&Crc64::new());
            assert_eq!((empty.finish(), whole.finish()), (want, want));
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
}
