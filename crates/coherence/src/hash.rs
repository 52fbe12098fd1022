//! Hashing for the hot maps and for state fingerprints.
//!
//! The caches and the page index are keyed by line and page numbers, small
//! integers that need no DoS protection, so an FxHash-style multiply-rotate
//! hasher (one multiply per key) replaces SipHash. [`Fingerprint`] is the other
//! job: a 128-bit digest of a whole simulator state, used by the explorer to
//! recognise a state it has already expanded. It mixes every word through two
//! independent splitmix64 lanes so that accidental collisions (which would
//! prune an unexplored state) are negligible for the state counts the
//! explorer is bounded to.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Odd multiplier with well-spread bits (a 64-bit fraction of the golden
/// ratio's conjugate, as in many multiplicative hashes).
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// An FxHash-style hasher: rotate, xor the word in, multiply.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(w);
            self.add(u64::from_le_bytes(buf));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// A `HashMap` using [`FxHasher`].
pub(crate) type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The splitmix64 finalizer: a bijective mixer with full avalanche.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 128-bit digest built word by word (order-sensitive), with
/// [`Fingerprint::combine_unordered`] for collections whose iteration order
/// is not canonical (hash maps).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Fingerprint {
    a: u64,
    b: u64,
}

impl Fingerprint {
    /// Folds one word in.
    #[inline]
    pub(crate) fn word(&mut self, w: u64) {
        self.a = mix(self.a ^ w).wrapping_add(SEED);
        self.b = mix(self.b.wrapping_add(w).rotate_left(29) ^ 0x6a09_e667_f3bc_c909);
    }

    /// Folds a byte string in, eight bytes per word.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(w);
            self.word(u64::from_le_bytes(buf));
        }
        for &b in words.remainder() {
            self.word(u64::from(b));
        }
        self.word(bytes.len() as u64);
    }

    /// Folds another digest in, as two words (order-sensitive).
    pub(crate) fn nest(&mut self, inner: Fingerprint) {
        self.word(inner.a);
        self.word(inner.b);
    }

    /// Adds another digest commutatively, so a set of parts gives the same
    /// result whatever order they are visited in.
    pub(crate) fn combine_unordered(&mut self, part: Fingerprint) {
        self.a = self.a.wrapping_add(part.a);
        self.b = self.b.wrapping_add(part.b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fx_distinguishes_neighbouring_keys() {
        let h = |k: u64| {
            let mut s = FxHasher::default();
            s.write_u64(k);
            s.finish()
        };
        assert_ne!(h(1), h(2));
        assert_ne!(h(0x1000), h(0x1001));
    }

    #[test]
    fn fingerprint_is_order_sensitive_but_combine_is_not() {
        let mut ab = Fingerprint::default();
        ab.word(1);
        ab.word(2);
        let mut ba = Fingerprint::default();
        ba.word(2);
        ba.word(1);
        assert_ne!(ab, ba);

        let mut x = Fingerprint::default();
        x.combine_unordered(ab);
        x.combine_unordered(ba);
        let mut y = Fingerprint::default();
        y.combine_unordered(ba);
        y.combine_unordered(ab);
        assert_eq!(x, y);
    }

    #[test]
    fn bytes_length_is_part_of_the_digest() {
        let mut short = Fingerprint::default();
        short.bytes(&[0, 0]);
        let mut long = Fingerprint::default();
        long.bytes(&[0, 0, 0]);
        assert_ne!(short, long);
    }
}
