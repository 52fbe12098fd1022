//! What a migration or snapshot reports: progress after each round (for a progress bar)
//! and a summary at the end, with bytes by region and by policy.

use std::time::Duration;

use super::WriterThread;
use crate::format::Policy;

/// Which part of a migration a round belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The guest runs while pages are copied.
    Precopy,
    /// The guest is paused; the last dirty pages and the device state are sent.
    StopAndCopy,
}

/// Progress after one round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The round just sent (0 = the full copy).
    pub round: u32,
    /// Pre-copy or stop-and-copy.
    pub phase: Phase,
    /// Pages sent in this round.
    pub pages_sent: u64,
    /// Stream bytes sent so far.
    pub bytes_sent: u64,
    /// Pages dirtied during this round, to be sent next.
    pub dirty_pages: u64,
    /// Pages dirtied per second during this round.
    pub dirty_rate: f64,
    /// Stream bytes per second, measured since the first page.
    pub throughput: f64,
    /// Time to send the dirty pages at that throughput: the downtime if the guest were
    /// paused now.
    pub eta: Duration,
}

/// One region's share of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSummary {
    /// The region's id.
    pub id: u32,
    /// The region's name.
    pub name: String,
    /// The policy that applied.
    pub policy: Policy,
    /// Pages sent with contents (a page sent in two rounds counts twice).
    pub data_pages: u64,
    /// Zero pages sent as 8-byte markers.
    pub zero_pages: u64,
    /// Pages whose host cache lines were flushed before they were read (`flush` policy).
    pub flushed_pages: u64,
    /// Whether its runs were sent straight from guest memory, the kernel's copy into the
    /// socket the only copy (a live stream from 1.4, from a source that offers its memory
    /// in place and tells writes), rather than copied first.
    pub in_place: bool,
    /// Runs sent straight from guest memory and withdrawn (`Torn`) because the guest wrote
    /// to their pages meanwhile; their pages go again in the next round.
    pub torn_runs: u64,
    /// Stream bytes of this region's chunks (`Pages`, `Torn`, or `RegionSkipped`).
    pub bytes: u64,
    /// Time spent sending this region's pages (flushing, reading, encoding, writing), over
    /// every round: `bytes / busy` is the region's own throughput, comparable between a
    /// coherent and a flushed region of the same migration.
    pub busy: Duration,
}

impl RegionSummary {
    /// Counts one page sent: a zero page (a marker) or a data page.
    pub(crate) fn count_page(&mut self, zero: bool) {
        if zero {
            self.zero_pages += 1;
        } else {
            self.data_pages += 1;
        }
    }
}

/// The outcome of a migration or snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Live: from the first byte to the COMMIT. Snapshot: from the pause to the synced
    /// rename.
    pub total_time: Duration,
    /// Live: from the pause to the COMMIT, after which the destination may run the guest
    /// (the source stays paused). Snapshot: how long the guest was paused.
    pub downtime: Duration,
    /// Live: from the configuration sent to the destination's READY, which it says once it
    /// mapped and populated its memory (part of `total_time`). Zero for a snapshot.
    pub setup: Duration,
    /// Rounds of pages, round 0 and the stop-and-copy round included.
    pub rounds: u32,
    /// Whether pre-copy reached the downtime budget (false: the round cap forced
    /// stop-and-copy). Always true for a snapshot.
    pub converged: bool,
    /// Bytes of the whole stream.
    pub stream_bytes: u64,
    /// Page records sent (data and zero).
    pub pages_sent: u64,
    /// Zero pages sent as markers instead of 4096 bytes.
    pub pages_elided: u64,
    /// vCPU states sent.
    pub vcpus: u32,
    /// Device states sent.
    pub devices: u32,
    /// Which thread wrote the runs: [`WriterThread::Own`] or [`WriterThread::Inline`].
    pub writer: WriterThread,
    /// Per region, in configuration order.
    pub regions: Vec<RegionSummary>,
}

impl Summary {
    /// Stream bytes of the regions under `policy`.
    pub fn bytes_by_policy(&self, policy: Policy) -> u64 {
        self.regions
            .iter()
            .filter(|r| r.policy == policy)
            .map(|r| r.bytes)
            .sum()
    }
}
