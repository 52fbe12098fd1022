//! The pre-copy live-migration engine, generic over a [`MigrationSource`] and any byte
//! transport (see [`crate::transport`] for TCP).
//!
//! 1. Check the configuration; a `refuse` region fails the migration here, before the
//!    first byte.
//! 2. Start the dirty log; send the header, the configuration and a `RegionSkipped` per
//!    `skip` region; wait for the destination's READY (it accepted the configuration and
//!    its memory is ready); send round 0: every page of every copied region (zero pages as markers,
//!    `flush` pages flushed before they are read).
//! 3. Dirty rounds while the guest runs: take the dirty log, send those pages, measure.
//!    Stop when the pending pages would take no longer than the downtime budget at the
//!    measured throughput (converged), or after `max_rounds` dirty rounds (not converged:
//!    the guest dirties faster than the link sends).
//! 4. Pause; the last dirty pages, vCPU and device state, `End`.
//! 5. Wait for the destination's verdict. ACK: send COMMIT and stay paused (migrated).
//!    NAK, a dropped connection, a timeout, any error: return every dirty bit taken to the
//!    source, stop the dirty log, resume the guest, and report the error.

mod error;
mod summary;
mod transfer;

pub use error::MigrationError;
pub(crate) use error::step;
pub use summary::{Phase, Progress, RegionSummary, Summary};
pub(crate) use transfer::Transfer;
pub use transfer::WriterThread;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::bitmap::DirtyBitmap;
use crate::cache::CacheMaintenance;
use crate::error::EncodeError;
use crate::format::{PAGE_SIZE, Policy, Status, StreamKind, VmConfig};
use crate::source::MigrationSource;

/// Stream bytes of one page with contents (record header + data): the estimate's unit.
const PAGE_WIRE_BYTES: u64 = PAGE_SIZE as u64 + 8;

/// When to stop pre-copying, and how pages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecopyOptions {
    /// The longest the guest may stay paused for the last round (estimated from the
    /// measured throughput).
    pub downtime_budget: Duration,
    /// Most dirty rounds after round 0 before stop-and-copy is forced.
    pub max_rounds: u32,
    /// Which thread writes the runs ([`crate::transport::send`] decides `Auto` by where the
    /// destination is).
    pub writer: WriterThread,
}

impl Default for PrecopyOptions {
    /// 300 ms, 30 rounds, and the writer thread decided by the host.
    fn default() -> Self {
        PrecopyOptions {
            downtime_budget: Duration::from_millis(300),
            max_rounds: 30,
            writer: WriterThread::Auto,
        }
    }
}

/// The source's configuration, if it can be sent: consistent, and without a `refuse`
/// region.
pub fn sendable_config(source: &dyn MigrationSource) -> Result<VmConfig, MigrationError> {
    let config = source.config();
    config.validate()?;
    if let Some(r) = config.regions.iter().find(|r| r.policy == Policy::Refuse) {
        return Err(MigrationError::Refused {
            region: r.name.clone(),
        });
    }
    Ok(config)
}

/// Migrates `source`: the stream goes to `out`, the destination's verdict comes from
/// `replies`. `progress` is called after every round. On success the guest is left paused;
/// on any failure it runs again, as if nothing happened.
pub fn migrate<W: Write + Send, R: Read>(
    out: W,
    mut replies: R,
    source: &mut dyn MigrationSource,
    cache: &dyn CacheMaintenance,
    options: &PrecopyOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, MigrationError> {
    let config = sendable_config(source)?;
    source
        .start_dirty_log()
        .map_err(step("starting the dirty log"))?;
    let mut recovery = Recovery {
        taken: config
            .regions
            .iter()
            .map(|r| DirtyBitmap::new(r.pages()))
            .collect(),
        paused: false,
    };
    let session = Session {
        config: &config,
        options,
        recovery: &mut recovery,
    };
    match session.run(out, &mut replies, source, cache, progress) {
        Ok(summary) => {
            source.stop_dirty_log();
            Ok(summary)
        }
        Err(error) => Err(recovery.recover(source, &config, error)),
    }
}

/// What a failed migration must undo.
struct Recovery {
    /// Every dirty bit taken from the source, by region position.
    taken: Vec<DirtyBitmap>,
    /// Whether the engine paused the guest.
    paused: bool,
}

impl Recovery {
    /// Returns the dirty bits (they were delivered nowhere), stops the dirty log, resumes
    /// the guest if the engine paused it, and passes the error on.
    fn recover(
        self,
        source: &mut dyn MigrationSource,
        config: &VmConfig,
        error: MigrationError,
    ) -> MigrationError {
        for (region, bits) in config.regions.iter().zip(&self.taken) {
            if !bits.is_empty() {
                source.return_dirty_pages(region.id, bits);
            }
        }
        source.stop_dirty_log();
        if self.paused
            && let Err(resume) = source.resume()
        {
            return MigrationError::ResumeFailed {
                error: Box::new(error),
                resume,
            };
        }
        error
    }
}

/// A region that carries pages: its position in the configuration, id and page count.
#[derive(Debug, Clone, Copy)]
struct Copied {
    position: usize,
    id: u32,
    pages: u32,
}

/// One migration's parameters and undo state.
struct Session<'a> {
    config: &'a VmConfig,
    options: &'a PrecopyOptions,
    recovery: &'a mut Recovery,
}

impl Session<'_> {
    fn run<W: Write + Send, R: Read>(
        mut self,
        out: W,
        replies: &mut R,
        source: &mut dyn MigrationSource,
        cache: &dyn CacheMaintenance,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Summary, MigrationError> {
        let started = Instant::now();
        let copied: Vec<Copied> = (self.config.regions.iter().enumerate())
            .filter(|(_, r)| r.carries_pages())
            .map(|(position, r)| Copied {
                position,
                id: r.id,
                pages: r.pages(),
            })
            .collect();
        let mut t = Transfer::start(
            out,
            StreamKind::Live,
            source,
            cache,
            self.config.clone(),
            self.options.writer,
        )?;
        t.writer().flush()?;
        let configured = Instant::now();
        await_ready(replies)?;
        let setup = configured.elapsed();
        let streamed = self.stream(&mut t, &copied, started, progress);
        let (rounds, converged, paused_at) = match streamed {
            Ok(done) => done,
            // A destination that refused the stream sends its reason before it closes;
            // the reason is a better error than the broken pipe it caused.
            Err(MigrationError::Send(error @ EncodeError::Io { .. })) => {
                return Err(match nak(replies) {
                    Some(reason) => MigrationError::DestinationRefused(reason),
                    None => MigrationError::Send(error),
                });
            }
            Err(error) => return Err(error),
        };
        match Status::read_from(replies) {
            Ok(Status::Ack) => {}
            Ok(Status::Nak(reason)) => return Err(MigrationError::DestinationRefused(reason)),
            Ok(other @ (Status::Commit | Status::Ready)) => {
                return Err(MigrationError::DestinationRefused(format!(
                    "the destination sent {other:?} instead of a verdict"
                )));
            }
            Err(error) => return Err(MigrationError::NoVerdict(error)),
        }
        Status::Commit.write_to(t.writer().get_mut())?;
        Ok(Summary {
            setup,
            ..t.summary(started.elapsed(), paused_at.elapsed(), rounds, converged)
        })
    }

    /// Sends everything up to `End`; returns the rounds, whether pre-copy converged, and
    /// when the guest was paused.
    fn stream<W: Write + Send>(
        &mut self,
        t: &mut Transfer<'_, W>,
        copied: &[Copied],
        started: Instant,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(u32, bool, Instant), MigrationError> {
        let mut round = 0;
        let mut clock = Clock {
            started,
            round_started: Instant::now(),
        };
        let mut sent = 0;
        for c in copied {
            sent += t.send_pages(round, c.position, 0..c.pages)?;
        }
        let mut pending = self.take_dirty(t, copied)?;
        let converged = loop {
            let report = self.report(t, round, Phase::Precopy, sent, &pending, &clock);
            progress(&report);
            if report.eta <= self.options.downtime_budget {
                break true;
            }
            if round >= self.options.max_rounds {
                break false;
            }
            round += 1;
            clock.round_started = Instant::now();
            sent = 0;
            for (c, dirty) in copied.iter().zip(&pending) {
                sent += t.send_pages(round, c.position, dirty.iter())?;
            }
            pending = self.take_dirty(t, copied)?;
        };

        t.source().pause().map_err(step("pausing the guest"))?;
        self.recovery.paused = true;
        let paused_at = Instant::now();
        round += 1;
        clock.round_started = paused_at;
        let last = self.take_dirty(t, copied)?;
        sent = 0;
        for ((c, dirty), more) in copied.iter().zip(&mut pending).zip(&last) {
            dirty.union_with(more);
            sent += t.send_pages(round, c.position, dirty.iter())?;
        }
        t.send_state()?;
        t.end(round + 1)?;
        t.writer().flush()?;
        let nothing: Vec<DirtyBitmap> = Vec::new();
        let report = self.report(t, round, Phase::StopAndCopy, sent, &nothing, &clock);
        progress(&report);
        Ok((round + 1, converged, paused_at))
    }

    /// Takes the dirty log of every copied region, with the pages of runs withdrawn since
    /// the last take, remembering every bit taken.
    fn take_dirty<W: Write + Send>(
        &mut self,
        t: &mut Transfer<'_, W>,
        copied: &[Copied],
    ) -> Result<Vec<DirtyBitmap>, MigrationError> {
        let mut out = Vec::with_capacity(copied.len());
        for c in copied {
            let mut bits = t
                .source()
                .dirty_pages(c.id)
                .map_err(step("reading the dirty log"))?;
            if bits.pages() != c.pages {
                // Its bits cannot be mapped to pages here; hand them back as they came.
                t.source().return_dirty_pages(c.id, &bits);
                return Err(MigrationError::BadDirtyLog {
                    region: c.id,
                    expected: c.pages,
                    found: bits.pages(),
                });
            }
            // A withdrawn run's pages go again, written by the guest or not.
            bits.union_with(&t.take_withdrawn(c.position));
            self.recovery.taken[c.position].union_with(&bits);
            out.push(bits);
        }
        Ok(out)
    }

    /// Progress after `round`, whose pages were sent and whose dirty log is `pending`.
    fn report<W: Write + Send>(
        &self,
        t: &Transfer<'_, W>,
        round: u32,
        phase: Phase,
        pages_sent: u64,
        pending: &[DirtyBitmap],
        clock: &Clock,
    ) -> Progress {
        let bytes_sent = t.position();
        // Clamped away from zero: a tiny round on a fast link can take no measurable time.
        let throughput = bytes_sent as f64 / clock.started.elapsed().as_secs_f64().max(1e-9);
        let dirty_pages: u64 = pending.iter().map(DirtyBitmap::count).sum();
        let round_time = clock.round_started.elapsed().as_secs_f64().max(1e-9);
        Progress {
            round,
            phase,
            pages_sent,
            bytes_sent,
            dirty_pages,
            dirty_rate: dirty_pages as f64 / round_time,
            throughput,
            eta: Duration::try_from_secs_f64((dirty_pages * PAGE_WIRE_BYTES) as f64 / throughput)
                .unwrap_or(Duration::MAX),
        }
    }
}

/// When the migration and the current round started.
struct Clock {
    started: Instant,
    round_started: Instant,
}

/// Waits for the destination to accept the configuration and make its memory ready: no
/// page is sent before, so a refused configuration costs no bandwidth and the
/// destination's memory setup does not stall the copy.
fn await_ready(replies: &mut impl Read) -> Result<(), MigrationError> {
    match Status::read_from(replies) {
        Ok(Status::Ready) => Ok(()),
        Ok(Status::Nak(reason)) => Err(MigrationError::DestinationRefused(reason)),
        Ok(other) => Err(MigrationError::DestinationRefused(format!(
            "the destination sent {other:?} instead of READY"
        ))),
        Err(error) => Err(MigrationError::NotReady(error)),
    }
}

/// The destination's NAK reason, if one is waiting on `replies`.
fn nak(replies: &mut impl Read) -> Option<String> {
    match Status::read_from(replies) {
        Ok(Status::Nak(reason)) => Some(reason),
        _ => None,
    }
}
