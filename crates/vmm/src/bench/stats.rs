//! Timing helpers shared by the benchmarks: medians of repetitions, a seeded generator for
//! reproducible "random" inputs, and the human form of a duration.

use std::time::{Duration, Instant};

/// The median of `samples` (the lower middle one for an even count); zero (the default)
/// for none. Durations and ratios alike: values that do not compare (NaN) sort as equal.
pub fn median<T: PartialOrd + Copy + Default>(mut samples: Vec<T>) -> T {
    samples.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    samples
        .get(samples.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

/// How long `f` takes.
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let out = f();
    (start.elapsed(), out)
}

/// Nanoseconds per operation.
pub fn ns_per(d: Duration, ops: u64) -> f64 {
    d.as_nanos() as f64 / ops.max(1) as f64
}

/// SplitMix64: a tiny, seeded generator, so every run looks up the same "random" gfns.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `bytes` with the next values, little-endian, 8 bytes each; a tail shorter than
    /// 8 takes the low bytes of one more value.
    pub fn fill(&mut self, bytes: &mut [u8]) {
        for word in bytes.chunks_mut(8) {
            word.copy_from_slice(&self.next_u64().to_le_bytes()[..word.len()]);
        }
    }

    /// A value in `0..n` (`n > 0`; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// `1.23 ms`, `45.6 µs`, `789 ns`, `1.50 s`.
pub fn human(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_sample() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(vec![ms(4), ms(1), ms(3), ms(2)]), ms(2));
        assert_eq!(median(Vec::<Duration>::new()), Duration::ZERO);
        assert_eq!(median(vec![0.5, 2.0, 1.0, 0.25]), 0.5);
    }

    #[test]
    fn generator_is_reproducible_and_bounded() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |g, _| Some(g.below(10)))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |g, _| Some(g.below(10)))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| *v < 10));
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    #[test]
    fn fill_writes_the_values_in_order() {
        let mut words = SplitMix64::new(3);
        let expected: Vec<u8> = (0..3)
            .flat_map(|_| words.next_u64().to_le_bytes())
            .collect();
        let mut filled = [0u8; 20];
        SplitMix64::new(3).fill(&mut filled);
        assert_eq!(
            filled[..],
            expected[..20],
            "words in order, the tail from the next one"
        );
    }

    #[test]
    fn durations_print_in_the_right_unit() {
        assert_eq!(human(Duration::from_nanos(789)), "789 ns");
        assert_eq!(human(Duration::from_nanos(45_600)), "45.6 µs");
        assert_eq!(human(Duration::from_micros(1_230)), "1.23 ms");
        assert_eq!(human(Duration::from_millis(1_500)), "1.50 s");
        assert_eq!(ns_per(Duration::from_micros(1), 4), 250.0);
    }
}
