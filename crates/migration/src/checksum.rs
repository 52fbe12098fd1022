//! The chunk checksum, the 8-byte trailer over a chunk's 16-byte header and its payload,
//! and the `Read` adapter that computes it while bytes pass through.
//!
//! The trailer covers every byte of guest memory a stream carries, and both ends compute it
//! (the source over its copy of each run, the destination as the run lands), so its speed
//! bounds the stream's: it is the one checksum whose algorithm follows the stream version.
//!
//! - Through 1.2 it is CRC-64/XZ ([`crate::crc`]). Without AVX-512 its accelerated fold runs
//!   at about 12 GB/s, and on such a host it was a fifth of the source's time per byte.
//! - From 1.3 ([`XXH3_SINCE`]) it is XXH3-64 with seed 0 and the default secret, as
//!   `XXH3_64bits` computes it: about 45 GB/s with AVX2 (twox-hash picks AVX2 or SSE2 at run
//!   time). It is not a CRC: it guarantees no minimum Hamming distance, and a random
//!   corruption passes with probability 2⁻⁶⁴, which for a checksum behind TCP's own is what
//!   matters. The tests below hold the crate to the reference implementation's published
//!   values, so a dependency bump cannot change a stream unnoticed.
//!
//! The small checksums keep CRC-64/XZ in every version: the stream header's (it must be
//! checked the same way whatever version the header claims), each chunk header's, a run's
//! records' and each status message's.

use std::fmt;
use std::hash::Hasher as _;
use std::io::{self, Read};

use twox_hash::xxhash3_64::{RawHasher, SecretBuffer};

use crate::crc::Crc64;
use crate::format::Version;

/// The first version whose chunk trailers are XXH3-64.
pub const XXH3_SINCE: Version = Version::new(1, 3);

/// The algorithm of a stream's chunk trailers.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkChecksum {
    /// CRC-64/XZ (versions 1.0 to 1.2).
    Crc64,
    /// XXH3-64, seed 0, default secret (from 1.3 on).
    Xxh3,
}

impl ChunkChecksum {
    /// The algorithm of streams of `version`.
    pub fn of(version: Version) -> Self {
        if version >= XXH3_SINCE {
            ChunkChecksum::Xxh3
        } else {
            ChunkChecksum::Crc64
        }
    }

    /// A running checksum over no bytes yet.
    pub fn start(self) -> ChunkDigest {
        match self {
            ChunkChecksum::Crc64 => ChunkDigest::Crc64(Crc64::new()),
            ChunkChecksum::Xxh3 => ChunkDigest::Xxh3(RawHasher::new(SecretBuffer::default())),
        }
    }

    /// The checksum of `bytes`.
    ///
    /// ```
    /// use migration::checksum::ChunkChecksum;
    ///
    /// assert_eq!(ChunkChecksum::Crc64.of_bytes(b"123456789"), 0x995D_C9BB_DF19_39FA);
    /// assert_eq!(ChunkChecksum::Xxh3.of_bytes(b""), 0x2D06_8005_38D3_94C2);
    /// ```
    pub fn of_bytes(self, bytes: &[u8]) -> u64 {
        let mut digest = self.start();
        digest.update(bytes);
        digest.finish()
    }
}

/// The XXH3 state: its 192-byte default secret is borrowed, so a digest allocates nothing.
type Xxh3 = RawHasher<&'static [u8; twox_hash::xxhash3_64::DEFAULT_SECRET_LENGTH]>;

/// A running chunk checksum, of the algorithm it was started with.
#[derive(Clone)]
pub enum ChunkDigest {
    /// CRC-64/XZ.
    Crc64(Crc64),
    /// XXH3-64.
    Xxh3(Xxh3),
}

impl fmt::Debug for ChunkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ChunkDigest::Crc64(_) => "Crc64",
            ChunkDigest::Xxh3(_) => "Xxh3",
        };
        write!(f, "ChunkDigest::{name}({:#018x})", self.finish())
    }
}

impl ChunkDigest {
    /// Folds `bytes` in.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ChunkDigest::Crc64(crc) => crc.update(bytes),
            ChunkDigest::Xxh3(xxh) => xxh.write(bytes),
        }
    }

    /// The checksum of everything folded in so far (the running state is kept).
    pub fn finish(&self) -> u64 {
        match self {
            ChunkDigest::Crc64(crc) => crc.finish(),
            ChunkDigest::Xxh3(xxh) => xxh.finish(),
        }
    }
}

/// A reader that checksums everything read through it.
///
/// ```
/// use std::io::Read;
/// use migration::checksum::{ChecksumReader, ChunkChecksum};
///
/// let mut stored = b"chunk payload".to_vec();
/// stored.extend_from_slice(&ChunkChecksum::Xxh3.of_bytes(b"chunk payload").to_le_bytes());
/// let mut input = &stored[..];
///
/// let mut reader = ChecksumReader::new(&mut input, ChunkChecksum::Xxh3);
/// let mut payload = [0u8; 13];
/// reader.read_exact(&mut payload)?;
/// // Take the computed checksum before reading the stored one: the trailer must not be fed
/// // into the checksum it is compared with.
/// let computed = reader.checksum();
/// let mut trailer = [0u8; 8];
/// input.read_exact(&mut trailer)?;
/// assert_eq!(computed, u64::from_le_bytes(trailer));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct ChecksumReader<R> {
    inner: R,
    digest: ChunkDigest,
}

impl<R: Read> ChecksumReader<R> {
    /// Wraps `inner` with a fresh checksum of `algorithm`.
    pub fn new(inner: R, algorithm: ChunkChecksum) -> Self {
        ChecksumReader {
            inner,
            digest: algorithm.start(),
        }
    }

    /// The checksum of the bytes delivered so far.
    pub fn checksum(&self) -> u64 {
        self.digest.finish()
    }
}

impl<R: Read> Read for ChecksumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::crc64;

    /// The input of the reference implementation's published XXH3-64 values below: bytes
    /// of a xorshift64 (13, 7, 17) generator started at 1.
    fn xorshift_bytes(len: usize) -> Vec<u8> {
        let mut x = 1u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// `XXH3_64bits` of the first `len` bytes of [`xorshift_bytes`]: every length class of
    /// the algorithm (empty, 1–3, 4–8, 9–16, 17–128, 129–240, one block, several blocks, a
    /// partial last stripe).
    const XXH3_VECTORS: [(usize, u64); 14] = [
        (0, 0x2d06_8005_38d3_94c2),
        (1, 0xd0d4_96e0_5c55_3485),
        (3, 0x6ea2_d59a_ca5c_3778),
        (8, 0xabc1_413d_a6cd_0209),
        (9, 0x8bc8_9400_bfed_51f6),
        (17, 0xed4b_e912_ba5f_836d),
        (64, 0xfa52_71fc_ce0d_b1c3),
        (129, 0xbc71_3812_9bf0_65da),
        (403, 0xcefe_b3ff_a532_ad8c),
        (512, 0xcdfa_6b62_68e3_650f),
        (513, 0x4bb5_d427_42f9_765f),
        (2048, 0x330c_e110_cbb7_9eae),
        (2240, 0xd61d_4d2a_94e9_26a8),
        (2243, 0x0979_f786_a24e_dde7),
    ];

    #[test]
    fn the_algorithm_follows_the_version() {
        for (version, algorithm) in [
            (Version::new(1, 0), ChunkChecksum::Crc64),
            (Version::new(1, 2), ChunkChecksum::Crc64),
            (XXH3_SINCE, ChunkChecksum::Xxh3),
            (crate::format::VERSION, ChunkChecksum::Xxh3),
        ] {
            assert_eq!(ChunkChecksum::of(version), algorithm, "{version}");
        }
    }

    #[test]
    fn xxh3_matches_the_reference_values_in_one_piece_and_streamed() {
        let data = xorshift_bytes(2243);
        for (len, want) in XXH3_VECTORS {
            let bytes = &data[..len];
            assert_eq!(ChunkChecksum::Xxh3.of_bytes(bytes), want, "len {len}");
            // Streamed in pieces that straddle the 64-byte stripes and 256-byte buffer.
            for piece in [1, 7, 63, 64, 65, 255, 256, 1000] {
                let mut digest = ChunkChecksum::Xxh3.start();
                bytes.chunks(piece).for_each(|p| digest.update(p));
                assert_eq!(digest.finish(), want, "len {len} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_run_sized_stream_split_anywhere_checksums_as_one_piece() {
        // A chunk is checksummed as header, records and pages arrive, in reads of any size.
        let data: Vec<u8> = (0u32..(1 << 20) + 48 + 13)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 17) as u8)
            .collect();
        for algorithm in [ChunkChecksum::Crc64, ChunkChecksum::Xxh3] {
            let want = algorithm.of_bytes(&data);
            for split in [0, 16, 48, 4096 + 3, 1 << 19, data.len()] {
                let mut digest = algorithm.start();
                digest.update(&data[..split]);
                digest.update(&data[split..]);
                assert_eq!(digest.finish(), want, "{algorithm:?} split {split}");
            }
        }
        assert_eq!(ChunkChecksum::Crc64.of_bytes(&data), crc64(&data));
    }

    #[test]
    fn every_single_bit_flip_changes_the_checksum() {
        // Past one 512-byte XXH3 block, so both the block and the last-stripe paths see it.
        let page = xorshift_bytes(600);
        for algorithm in [ChunkChecksum::Crc64, ChunkChecksum::Xxh3] {
            let base = algorithm.of_bytes(&page);
            for bit in 0..page.len() * 8 {
                let mut flipped = page.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert_ne!(
                    algorithm.of_bytes(&flipped),
                    base,
                    "{algorithm:?} bit {bit}"
                );
            }
        }
    }
}
