//! Host cache maintenance for noncoherent regions, provided by the VMM.
//!
//! A device that DMAs without snooping reads and writes memory, not CPU caches. When the
//! host copies such a page through its ordinary write-back mapping it may read a stale
//! cached line (the guest's WC writes went to memory), and when it writes one the data may
//! sit in cache where the device cannot see it. The `flush` policy therefore flushes every
//! line of a noncoherent page (CLFLUSHOPT each line, then SFENCE) on the source before
//! reading it and on the destination after writing it. This crate holds no `unsafe` and
//! knows no instructions: the VMM implements the trait (with
//! `vmm::cache::flush_dcache_range`), and tests implement it with a recorder.

/// Flushes host cache lines.
pub trait CacheMaintenance {
    /// Writes back and invalidates every cache line that covers `bytes`, and returns only
    /// when the flushes are ordered before later stores (CLFLUSHOPT per line, then SFENCE).
    /// `bytes` is guest memory in place, never a copy.
    fn flush_range(&self, bytes: &[u8]);

    /// Starts the flush of every line of `bytes` without waiting for it (CLFLUSHOPT per
    /// line); only a later [`fence`](Self::fence) orders it. The default is
    /// [`flush_range`](Self::flush_range), which waits.
    fn flush_lines(&self, bytes: &[u8]) {
        self.flush_range(bytes);
    }

    /// Orders every [`flush_lines`](Self::flush_lines) so far before later stores
    /// (SFENCE). The default has nothing to order.
    fn fence(&self) {}

    /// This maintenance as one another thread may use, if it can be (real instructions
    /// can; a recorder of calls in a `RefCell` cannot): the engine then flushes a run's
    /// pages on a helper thread while it copies and writes the run before. The helper's
    /// fence completes its flushes before it hands the run over, and CLFLUSHOPT invalidates
    /// a line in every cache of the coherence domain, so the reading thread misses and reads
    /// memory. The default is `None`.
    fn shared(&self) -> Option<&(dyn CacheMaintenance + Sync)> {
        None
    }
}
