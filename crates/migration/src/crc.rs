//! CRC-64/XZ: the checksum of the stream header, of each chunk header, of a run's records
//! and of each status message in every version, and of whole chunks through 1.2
//! ([`crate::checksum`] chooses a chunk's).
//!
//! CRC-64/XZ (also called CRC-64/GO-ECMA) is the ECMA-182 polynomial used reflected:
//! width 64, poly `0x42F0E1EBA9EA3693`, init and xorout all ones, input and output
//! reflected; its check value (the CRC of the ASCII bytes `123456789`) is
//! `0x995DC9BBDF1939FA`. It is computed by `crc-fast`, which folds with carry-less multiplies
//! (PCLMULQDQ / VPCLMULQDQ) where a table CRC manages a GB/s or two. The stream format is
//! the algorithm, not the crate: the tests below hold the crate to the bit-at-a-time
//! definition, so a dependency bump cannot change a stream unnoticed.

use std::fmt;

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
}

/// The CRC-64/XZ of `bytes`.
pub fn crc64(bytes: &[u8]) -> u64 {
    let mut crc = Crc64::new();
    crc.update(bytes);
    crc.finish()
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
