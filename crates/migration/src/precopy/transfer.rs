//! The part of sending shared by live migration and snapshots: header, configuration and
//! skipped regions; page rounds with the `flush` policy and zero-page elision; vCPU and
//! device state; `End` with the totals; and the counts that make the summary.
//!
//! A live stream from 1.4 sends a region whose memory is in place, and whose source can
//! tell whether the guest wrote pages while they were sent, straight from guest memory
//! ([`InPlace`]): the only copy of a page is the kernel's, into the socket, as QEMU sends.
//! The run is checksummed after it was handed to the kernel (from the cache that copy left
//! it in), so a guest that wrote to it meanwhile may have made the two differ; the source,
//! which looks at its dirty log just before and just after each run, then withdraws the
//! run with `Torn`, and its pages are sent again in the next round (see
//! [`crate::format::TORN_SINCE`]).
//!
//! Otherwise this thread gathers runs: it flushes a noncoherent page, reads it, checks it
//! for zero and copies it into the run, which is checksummed and sent as copied. Where the
//! host has a CPU for it
//! ([`WriterThread`]), a scoped writer thread hands the previous run to the kernel while
//! the next is gathered, so the gathering, flushes included, hides behind the socket. On
//! a host without that CPU (two CPUs and the destination on the same host, as in the
//! loopback benchmark) the hand-offs between three busy threads cost more than the overlap
//! gains, and this thread writes each run itself; a `flush` region's flushes are then
//! made ahead by a helper thread where the memory is in place (`FlushAhead`). The source
//! stays on this thread; only the stream writer, or the region's bytes and a shareable
//! cache, cross over.

use std::fmt;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;
use std::time::{Duration, Instant};

use super::error::{MigrationError, step};
use super::summary::{RegionSummary, Summary};
use crate::bitmap::DirtyBitmap;
use crate::cache::CacheMaintenance;
use crate::error::EncodeError;
use crate::format::{
    MAX_PAGES_PER_CHUNK, PAGE_SIZE, PageRecord, PageRun, Policy, RegionTotals, RunHeader,
    StreamHeader, StreamKind, TORN_SINCE, Totals, VmConfig, is_zero_page,
};
use crate::source::{MigrationSource, SourceError, flush_in_place};
use crate::stream::{Chunk, StreamWriter};

/// Which thread writes a region's runs to the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriterThread {
    /// [`Own`](Self::Own) if the host has a CPU for every busy thread of the stream (the
    /// gathering, the writing, and the reading when the reader is on this host), else
    /// [`Inline`](Self::Inline).
    #[default]
    Auto,
    /// A thread of its own: the next run is gathered while this one is written. Runs are
    /// then always copied, the copy being what the writing overlaps.
    Own,
    /// The gathering thread writes each run itself, once it is gathered.
    Inline,
}

impl fmt::Display for WriterThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriterThread::Auto => "auto",
            WriterThread::Own => "own",
            WriterThread::Inline => "inline",
        })
    }
}

impl WriterThread {
    /// `Auto` decided for a stream whose reader is (`local_reader`) or is not on this
    /// host; the others as they are.
    pub fn resolve(self, local_reader: bool) -> WriterThread {
        match self {
            WriterThread::Auto => {
                let cpus = thread::available_parallelism().map_or(1, |n| n.get());
                if cpus >= 2 + usize::from(local_reader) {
                    WriterThread::Own
                } else {
                    WriterThread::Inline
                }
            }
            chosen => chosen,
        }
    }
}

/// A stream being sent from a source.
pub(crate) struct Transfer<'a, W: Write> {
    writer: StreamWriter<W>,
    /// Whether runs are written by a thread of their own ([`WriterThread::Own`]).
    own_writer: bool,
    /// Whether a region may be sent from memory in place ([`InPlace`]): a live stream that
    /// can withdraw runs, written inline.
    in_place: bool,
    /// Per region (in configuration order), the pages of runs withdrawn since
    /// [`Transfer::take_withdrawn`] last took them.
    withdrawn: Vec<DirtyBitmap>,
    source: &'a mut dyn MigrationSource,
    cache: &'a dyn CacheMaintenance,
    config: VmConfig,
    regions: Vec<RegionSummary>,
    pages: u64,
    vcpus: u32,
    devices: u32,
    skipped: u32,
}

/// Runs in flight between the gathering and the writing thread: one being written, one
/// being filled.
const RUNS_IN_FLIGHT: usize = 2;

impl<'a, W: Write + Send> Transfer<'a, W> {
    /// Writes the header, the configuration and a `RegionSkipped` for each `skip` region;
    /// runs are then written as `writer` says (`Auto` as for a reader elsewhere).
    pub(crate) fn start(
        out: W,
        kind: StreamKind,
        source: &'a mut dyn MigrationSource,
        cache: &'a dyn CacheMaintenance,
        config: VmConfig,
        writer: WriterThread,
    ) -> Result<Self, MigrationError> {
        let own_writer = writer.resolve(false) == WriterThread::Own;
        let header = StreamHeader::new(kind, source.facts());
        let in_place = !own_writer && kind == StreamKind::Live && header.version >= TORN_SINCE;
        let mut writer = StreamWriter::new(out, &header)?;
        writer.write(&Chunk::VmConfig(config.clone()))?;
        let mut regions = Vec::with_capacity(config.regions.len());
        let mut skipped = 0;
        for r in &config.regions {
            let bytes = if r.policy == Policy::Skip {
                skipped += 1;
                writer.write(&Chunk::RegionSkipped { region: r.id })?
            } else {
                0
            };
            regions.push(RegionSummary {
                id: r.id,
                name: r.name.clone(),
                policy: r.policy,
                data_pages: 0,
                zero_pages: 0,
                flushed_pages: 0,
                in_place: false,
                torn_runs: 0,
                bytes,
                busy: Duration::ZERO,
            });
        }
        let withdrawn = (config.regions.iter())
            .map(|r| DirtyBitmap::new(if r.carries_pages() { r.pages() } else { 0 }))
            .collect();
        Ok(Transfer {
            writer,
            own_writer,
            in_place,
            withdrawn,
            source,
            cache,
            config,
            regions,
            pages: 0,
            vcpus: 0,
            devices: 0,
            skipped,
        })
    }

    pub(crate) fn source(&mut self) -> &mut dyn MigrationSource {
        self.source
    }

    /// Stream bytes written so far.
    pub(crate) fn position(&self) -> u64 {
        self.writer.position()
    }

    /// The pages of the region at position `region` whose runs were withdrawn since the
    /// last call: they must be sent again, like dirty pages.
    pub(crate) fn take_withdrawn(&mut self, region: usize) -> DirtyBitmap {
        let pages = self.withdrawn[region].pages();
        std::mem::replace(&mut self.withdrawn[region], DirtyBitmap::new(pages))
    }

    pub(crate) fn writer(&mut self) -> &mut StreamWriter<W> {
        &mut self.writer
    }

    /// Sends `pages` of the region at position `region` in the configuration as part of
    /// `round`. Returns how many were sent.
    pub(crate) fn send_pages(
        &mut self,
        round: u32,
        region: usize,
        pages: impl IntoIterator<Item = u32>,
    ) -> Result<u64, MigrationError> {
        let started = Instant::now();
        let id = self.config.regions[region].id;
        // The look with no pages also opens the window the first run's look closes.
        let in_place = self.in_place && self.source.written_since_last_check(id, &[]).is_some();
        let mut gather = Gather {
            source: &mut *self.source,
            cache: self.cache,
            summary: &mut self.regions[region],
            flush: self.config.regions[region].policy == Policy::Flush,
            in_place,
            withdrawn: &mut self.withdrawn[region],
            id,
        };
        let (sent, bytes) = if self.own_writer {
            gather.overlapped(&mut self.writer, round, pages)?
        } else {
            gather.inline(&mut self.writer, round, pages)?
        };
        self.regions[region].bytes += bytes;
        self.pages += sent;
        self.regions[region].busy += started.elapsed();
        Ok(sent)
    }

    /// Sends every vCPU's and device's state (the guest must be paused).
    pub(crate) fn send_state(&mut self) -> Result<(), MigrationError> {
        let vcpus = self
            .source
            .vcpu_states()
            .map_err(step("getting vCPU state"))?;
        for vcpu in vcpus {
            self.writer.write(&Chunk::Vcpu(Box::new(vcpu)))?;
            self.vcpus += 1;
        }
        let devices = self
            .source
            .device_states()
            .map_err(step("getting device state"))?;
        for device in devices {
            self.writer.write(&Chunk::Device(device))?;
            self.devices += 1;
        }
        Ok(())
    }

    /// Sends `End` with the totals (the caller flushes).
    pub(crate) fn end(&mut self, rounds: u32) -> Result<(), MigrationError> {
        let totals = Totals {
            rounds,
            vcpus: self.vcpus,
            devices: self.devices,
            skipped: self.skipped,
            pages: self.pages,
            stream_bytes: self.writer.position(),
            regions: self
                .config
                .regions
                .iter()
                .zip(&self.regions)
                .filter(|(r, _)| r.carries_pages())
                .map(|(r, s)| RegionTotals {
                    id: r.id,
                    data_pages: s.data_pages,
                    zero_pages: s.zero_pages,
                })
                .collect(),
        };
        self.writer.write(&Chunk::End(totals))?;
        Ok(())
    }

    /// The summary, given what only the caller measured.
    pub(crate) fn summary(
        &self,
        total_time: Duration,
        downtime: Duration,
        rounds: u32,
        converged: bool,
    ) -> Summary {
        Summary {
            total_time,
            downtime,
            setup: Duration::ZERO,
            rounds,
            converged,
            stream_bytes: self.writer.position(),
            pages_sent: self.pages,
            pages_elided: self.regions.iter().map(|r| r.zero_pages).sum(),
            vcpus: self.vcpus,
            devices: self.devices,
            writer: if self.own_writer {
                WriterThread::Own
            } else {
                WriterThread::Inline
            },
            regions: self.regions.clone(),
        }
    }
}

/// The gathering side of [`Transfer::send_pages`], which also writes in
/// [`WriterThread::Inline`].
struct Gather<'t> {
    source: &'t mut dyn MigrationSource,
    cache: &'t dyn CacheMaintenance,
    summary: &'t mut RegionSummary,
    flush: bool,
    /// Send from memory in place where the source has it ([`InPlace`]).
    in_place: bool,
    /// The region's pages of runs withdrawn, to be sent again.
    withdrawn: &'t mut DirtyBitmap,
    id: u32,
}

impl Gather<'_> {
    /// Sends `pages` in runs written by this thread, each once it is gathered. Returns the
    /// pages sent and the bytes written.
    fn inline<W: Write>(
        &mut self,
        writer: &mut StreamWriter<W>,
        round: u32,
        pages: impl IntoIterator<Item = u32>,
    ) -> Result<(u64, u64), MigrationError> {
        if self.flush
            && let Some(cache) = self.cache.shared()
            && let Some(memory) = self.source.memory(self.id)
        {
            let ahead = FlushAhead {
                memory,
                cache,
                summary: &mut *self.summary,
                id: self.id,
                in_place: self
                    .in_place
                    .then(|| InPlace::new(&*self.source, memory, self.id, round)),
                withdrawn: &mut *self.withdrawn,
            };
            return ahead.send(writer, round, pages);
        }
        if self.in_place
            && !self.flush
            && let Some(memory) = self.source.memory(self.id)
        {
            let mut run = InPlace::new(&*self.source, memory, self.id, round);
            let mut batches = Batches::new(pages);
            let (mut sent, mut bytes) = (0, 0);
            while let Some(batch) = batches.next_batch() {
                bytes += run.send(writer, batch, self.summary, self.withdrawn)?;
                sent += batch.len() as u64;
            }
            return Ok((sent, bytes));
        }
        let mut run = PageRun::new(self.id, round);
        let mut batches = Batches::new(pages);
        let (mut sent, mut bytes) = (0, 0);
        while let Some(batch) = batches.next_batch() {
            self.fill(batch, &mut run)?;
            bytes += writer.write_pages(&mut run)?;
            sent += batch.len() as u64;
            run.clear();
        }
        Ok((sent, bytes))
    }

    /// Sends `pages` in runs handed to a scoped writer thread, gathering the next run while
    /// the writer writes the last. Returns the pages sent and the bytes written.
    fn overlapped<W: Write + Send>(
        &mut self,
        writer: &mut StreamWriter<W>,
        round: u32,
        pages: impl IntoIterator<Item = u32>,
    ) -> Result<(u64, u64), MigrationError> {
        let (full, to_write) = sync_channel::<PageRun>(RUNS_IN_FLIGHT);
        let (written, empty) = sync_channel::<PageRun>(RUNS_IN_FLIGHT);
        for _ in 0..RUNS_IN_FLIGHT {
            written
                .send(PageRun::new(self.id, round))
                .expect("the channel holds every run");
        }
        let (gathered, wrote) = thread::scope(|scope| {
            let writing = thread::Builder::new()
                .name("migration-writer".into())
                .spawn_scoped(scope, move || write_runs(writer, &to_write, &written))
                .map_err(|e| EncodeError::Io { kind: e.kind() })?;
            let gathered = self.runs(pages, &full, &empty);
            // Closing the channel ends the writer once it has written what it was given.
            drop(full);
            let wrote = writing
                .join()
                .expect("the stream writer thread does not panic");
            Ok::<_, EncodeError>((gathered, wrote))
        })?;
        // A failed write is the better error: the gathering stopped because of it.
        let bytes = wrote?;
        Ok((gathered?, bytes))
    }

    /// Fills runs from `pages`, taking empty runs from `empty` and passing each filled one
    /// to `full`. Returns the pages gathered; stops early, without an error of its own, if
    /// the writer went away (it failed and says why).
    fn runs(
        &mut self,
        pages: impl IntoIterator<Item = u32>,
        full: &SyncSender<PageRun>,
        empty: &Receiver<PageRun>,
    ) -> Result<u64, MigrationError> {
        let mut batches = Batches::new(pages);
        let mut gathered = 0;
        while let Some(batch) = batches.next_batch() {
            let Ok(mut run) = empty.recv() else {
                return Ok(gathered);
            };
            self.fill(batch, &mut run)?;
            gathered += batch.len() as u64;
            if full.send(run).is_err() {
                return Ok(gathered);
            }
        }
        Ok(gathered)
    }

    /// Adds the pages `batch` (a run's worth at most) to the empty `run`, flushed together
    /// first under `flush`.
    fn fill(&mut self, batch: &[u32], run: &mut PageRun) -> Result<(), MigrationError> {
        if self.flush {
            // The guest's non-snooping writes went to memory; a line the host has cached
            // may be older. Flush the run's pages first, then read them.
            self.source
                .flush_pages(self.id, batch, self.cache)
                .map_err(step("flushing guest pages"))?;
            self.summary.flushed_pages += batch.len() as u64;
        }
        for &index in batch {
            let page = read_page(self.source, self.id, index)?;
            push_counted(run, self.summary, index, page)?;
        }
        Ok(())
    }
}

/// Adds page `index` to `run` and counts it in `summary` as a zero or a data page.
fn push_counted(
    run: &mut PageRun,
    summary: &mut RegionSummary,
    index: u32,
    page: &[u8],
) -> Result<(), EncodeError> {
    summary.count_page(run.push(index, page)?);
    Ok(())
}

/// Runs of one region of one round sent from its memory in place (see the module
/// documentation): the records are made from the memory (a zero page is a marker), the
/// run is handed to the kernel and then checksummed, and it is withdrawn with `Torn` when
/// the source reports a write to one of its data pages since its previous look, made right
/// after the run before (or, for the first, when the region's runs began): a write in that
/// window may have landed between the kernel's copy and the checksum. A write before it
/// tears nothing, and its page, in the log, goes again next round anyway. A zero page
/// needs no such care: its marker is all that is sent, and a page written after it was
/// checked is in the next round's log like any other.
struct InPlace<'t> {
    source: &'t dyn MigrationSource,
    memory: &'t [u8],
    id: u32,
    round: u32,
    /// Scratch kept across runs.
    records: Vec<PageRecord>,
    data: Vec<u32>,
}

impl<'t> InPlace<'t> {
    fn new(source: &'t dyn MigrationSource, memory: &'t [u8], id: u32, round: u32) -> Self {
        InPlace {
            source,
            memory,
            id,
            round,
            records: Vec::with_capacity(MAX_PAGES_PER_CHUNK),
            data: Vec::with_capacity(MAX_PAGES_PER_CHUNK),
        }
    }

    /// Sends the pages `batch` (a run's worth at most) as one run, counting them in
    /// `summary`; returns the bytes written, a `Torn` included. A withdrawn run's pages are
    /// marked in `withdrawn`, all of them: the destination keeps none of a withdrawn run,
    /// since its checksum no longer vouches for any of its pages.
    fn send<W: Write>(
        &mut self,
        writer: &mut StreamWriter<W>,
        batch: &[u32],
        summary: &mut RegionSummary,
        withdrawn: &mut DirtyBitmap,
    ) -> Result<u64, MigrationError> {
        summary.in_place = true;
        self.records.clear();
        self.data.clear();
        for &index in batch {
            let start = index as usize * PAGE_SIZE;
            let page = self.memory.get(start..start + PAGE_SIZE).ok_or_else(|| {
                let missing = format!("region {} has no page {index}", self.id);
                step("reading a guest page")(SourceError::new(missing))
            })?;
            let zero = is_zero_page(page);
            if !zero {
                self.data.push(index);
            }
            summary.count_page(zero);
            self.records.push(PageRecord { index, data: !zero });
        }
        let header = RunHeader {
            region: self.id,
            round: self.round,
            count: self.records.len() as u32,
        };
        let mut bytes = writer.write_pages_in_place(header, &self.records, self.memory)?;
        // A source that can no longer tell is taken to have seen a write: withdrawing a
        // run that did not tear costs its pages once more, never a byte of the guest's.
        let written = self
            .source
            .written_since_last_check(self.id, &self.data)
            .unwrap_or(Ok(true))
            .map_err(step("checking the pages sent for writes"))?;
        if written {
            bytes += writer.write(&Chunk::Torn {
                region: self.id,
                round: self.round,
            })?;
            summary.torn_runs += 1;
            batch.iter().for_each(|&index| withdrawn.set(index));
        }
        Ok(bytes)
    }
}

/// [`Gather::inline`] for a `flush` region whose memory is in place, with a cache another
/// thread may use: a helper thread flushes the next run's pages while this one copies and
/// writes the last (or sends it in place, [`InPlace`]), so that the flushes, which would
/// otherwise add a sixth to this thread's time, take the idle moments of another CPU
/// instead. A run is read (by the copy, or by the kernel's) only once the helper handed it
/// over, after its fence (see [`CacheMaintenance::shared`]).
struct FlushAhead<'t> {
    memory: &'t [u8],
    cache: &'t (dyn CacheMaintenance + Sync),
    summary: &'t mut RegionSummary,
    id: u32,
    /// Each flushed run is sent in place, not copied.
    in_place: Option<InPlace<'t>>,
    withdrawn: &'t mut DirtyBitmap,
}

/// Runs the helper flushes ahead of the one being copied.
const RUNS_FLUSHED_AHEAD: usize = 8;

impl FlushAhead<'_> {
    fn send<W: Write>(
        self,
        writer: &mut StreamWriter<W>,
        round: u32,
        pages: impl IntoIterator<Item = u32>,
    ) -> Result<(u64, u64), MigrationError> {
        let FlushAhead {
            memory,
            cache,
            summary,
            id,
            mut in_place,
            withdrawn,
        } = self;
        thread::scope(|scope| {
            // Made inside the scope, so that an early return drops them and the helper,
            // seeing the queue closed, ends before the scope joins it.
            let (to_flush, queue) = sync_channel::<Vec<u32>>(RUNS_FLUSHED_AHEAD);
            let (done, flushed) = sync_channel(RUNS_FLUSHED_AHEAD);
            thread::Builder::new()
                .name("migration-flush".into())
                .spawn_scoped(scope, move || {
                    for batch in queue {
                        let result = flush_in_place(memory, id, &batch, cache).map(|()| batch);
                        if done.send(result).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| EncodeError::Io { kind: e.kind() })?;
            // Each batch goes to the helper and back, so it is owned.
            let mut batches = Batches::new(pages);
            let mut next_batch = || batches.next_batch().map(<[u32]>::to_vec);
            let mut queued = 0;
            while queued < RUNS_FLUSHED_AHEAD
                && let Some(batch) = next_batch()
            {
                to_flush
                    .send(batch)
                    .expect("the helper runs until the queue closes");
                queued += 1;
            }
            let mut run = PageRun::new(id, round);
            let (mut sent, mut bytes) = (0, 0);
            while queued > 0 {
                let batch = flushed
                    .recv()
                    .expect("the helper answers every batch it was given")
                    .map_err(step("flushing guest pages"))?;
                queued -= 1;
                summary.flushed_pages += batch.len() as u64;
                if in_place.is_none() {
                    for &index in &batch {
                        let start = index as usize * PAGE_SIZE;
                        // In range: the helper flushed it.
                        let page = &memory[start..start + PAGE_SIZE];
                        push_counted(&mut run, summary, index, page)?;
                    }
                }
                // Queued before the write, so that it is flushed while this run is written.
                if let Some(batch) = next_batch() {
                    to_flush
                        .send(batch)
                        .expect("the helper runs until the queue closes");
                    queued += 1;
                }
                bytes += match &mut in_place {
                    Some(in_place) => in_place.send(writer, &batch, summary, withdrawn)?,
                    None => writer.write_pages(&mut run)?,
                };
                sent += batch.len() as u64;
                run.clear();
            }
            Ok((sent, bytes))
        })
    }
}

/// Page indexes taken a run's worth ([`MAX_PAGES_PER_CHUNK`]) at a time.
struct Batches<I> {
    pages: I,
    batch: Vec<u32>,
}

impl<I: Iterator<Item = u32>> Batches<I> {
    fn new(pages: impl IntoIterator<IntoIter = I>) -> Self {
        Batches {
            pages: pages.into_iter(),
            batch: Vec::with_capacity(MAX_PAGES_PER_CHUNK),
        }
    }

    /// The next run's worth of indexes; `None` once every page was taken.
    fn next_batch(&mut self) -> Option<&[u32]> {
        self.batch.clear();
        self.batch
            .extend(self.pages.by_ref().take(MAX_PAGES_PER_CHUNK));
        (!self.batch.is_empty()).then_some(&self.batch[..])
    }
}

/// The writing side of [`Transfer::send_pages`]: writes every run that arrives on `runs`
/// and hands it back emptied on `emptied`; returns the bytes written.
fn write_runs<W: Write>(
    writer: &mut StreamWriter<W>,
    runs: &Receiver<PageRun>,
    emptied: &SyncSender<PageRun>,
) -> Result<u64, EncodeError> {
    let mut bytes = 0;
    for mut run in runs {
        bytes += writer.write_pages(&mut run)?;
        run.clear();
        // The gatherer may have finished and gone: the run is simply dropped.
        let _ = emptied.send(run);
    }
    Ok(bytes)
}

/// Page `index` of region `id` of `source`, checked to be exactly one page long.
fn read_page(
    source: &mut dyn MigrationSource,
    id: u32,
    index: u32,
) -> Result<&[u8], MigrationError> {
    let page = source
        .page(id, index)
        .map_err(step("reading a guest page"))?;
    if page.len() != PAGE_SIZE {
        return Err(MigrationError::BadPage {
            region: id,
            index,
            len: page.len(),
        });
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::format::{
        DeviceState, HEADER_LEN, RegionConfig, RegionKind, Registration, SourceFacts, VcpuState,
        Vendor,
    };

    /// What happened, in order, on any thread: a page handed out by `page`, a page's lines
    /// flushed, a fence, a write to the stream.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Read(u32),
        Flush(u32),
        Fence,
        Written,
    }

    type Log = Arc<Mutex<Vec<Event>>>;

    fn push(log: &Log, event: Event) {
        log.lock().unwrap().push(event);
    }

    /// One `flush` region of `pages` pages in a buffer; every page read through `page` is
    /// logged. `in_place` offers the buffer as the region's memory; `tells_writes` also
    /// answers `written_since_last_check` (nothing is ever written).
    struct Bar {
        memory: Vec<u8>,
        log: Log,
        in_place: bool,
        tells_writes: bool,
    }

    impl MigrationSource for Bar {
        fn facts(&self) -> SourceFacts {
            SourceFacts {
                kernel_profile: "test".into(),
                host: "test".into(),
                vendor: Vendor::Intel,
            }
        }
        fn config(&self) -> VmConfig {
            config(self.memory.len())
        }
        fn page(&mut self, _: u32, index: u32) -> Result<&[u8], SourceError> {
            push(&self.log, Event::Read(index));
            let at = index as usize * PAGE_SIZE;
            Ok(&self.memory[at..at + PAGE_SIZE])
        }
        fn memory(&self, _: u32) -> Option<&[u8]> {
            self.in_place.then_some(&self.memory[..])
        }
        fn written_since_last_check(&self, _: u32, _: &[u32]) -> Option<Result<bool, SourceError>> {
            self.tells_writes.then_some(Ok(false))
        }
        // Only pages are sent in these tests.
        fn start_dirty_log(&mut self) -> Result<(), SourceError> {
            unreachable!()
        }
        fn dirty_pages(&mut self, _: u32) -> Result<DirtyBitmap, SourceError> {
            unreachable!()
        }
        fn return_dirty_pages(&mut self, _: u32, _: &DirtyBitmap) {
            unreachable!()
        }
        fn stop_dirty_log(&mut self) {
            unreachable!()
        }
        fn pause(&mut self) -> Result<(), SourceError> {
            unreachable!()
        }
        fn resume(&mut self) -> Result<(), SourceError> {
            unreachable!()
        }
        fn vcpu_states(&mut self) -> Result<Vec<VcpuState>, SourceError> {
            unreachable!()
        }
        fn device_states(&mut self) -> Result<Vec<DeviceState>, SourceError> {
            unreachable!()
        }
    }

    /// Logs flushes by page index (of the buffer at `base`) and fences; `shared` lets a
    /// helper thread use it.
    struct Cache {
        base: usize,
        log: Log,
        shared: bool,
    }

    impl CacheMaintenance for Cache {
        fn flush_range(&self, _: &[u8]) {
            panic!("the engine flushes lines and fences once per run");
        }
        fn flush_lines(&self, bytes: &[u8]) {
            assert_eq!(bytes.len() % PAGE_SIZE, 0);
            let first = (bytes.as_ptr() as usize - self.base) / PAGE_SIZE;
            for index in first..first + bytes.len() / PAGE_SIZE {
                push(&self.log, Event::Flush(index as u32));
            }
        }
        fn fence(&self) {
            push(&self.log, Event::Fence);
        }
        fn shared(&self) -> Option<&(dyn CacheMaintenance + Sync)> {
            self.shared
                .then_some(self as &(dyn CacheMaintenance + Sync))
        }
    }

    /// The stream, each write to it logged (a chunk is one gathering write).
    struct Logged {
        bytes: Vec<u8>,
        log: Log,
    }

    impl Write for Logged {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[io::IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            push(&self.log, Event::Written);
            let before = self.bytes.len();
            for buf in bufs {
                self.bytes.extend_from_slice(buf);
            }
            Ok(self.bytes.len() - before)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn config(len: usize) -> VmConfig {
        VmConfig {
            vcpu_count: 1,
            regions: vec![RegionConfig::noncoherent(
                0,
                "bar",
                RegionKind::Bar,
                Registration::MemslotFlag,
                0,
                len as u64,
            )],
        }
    }

    #[test]
    fn a_chosen_writer_stays_and_auto_needs_a_cpu_more_for_a_local_reader() {
        for chosen in [WriterThread::Own, WriterThread::Inline] {
            assert_eq!(chosen.resolve(true), chosen);
            assert_eq!(chosen.resolve(false), chosen);
        }
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let own = |enough: bool| {
            if enough {
                WriterThread::Own
            } else {
                WriterThread::Inline
            }
        };
        assert_eq!(WriterThread::Auto.resolve(false), own(cpus >= 2));
        assert_eq!(WriterThread::Auto.resolve(true), own(cpus >= 3));
    }

    /// One way of sending a `flush` region.
    #[derive(Debug, Clone, Copy)]
    struct Way {
        writer: WriterThread,
        /// The source offers its memory in place.
        in_place: bool,
        /// The cache may be used by a helper thread.
        shared: bool,
        /// A live stream from a source that tells writes: runs are sent from memory in
        /// place where the memory is.
        live: bool,
    }

    #[test]
    fn every_flush_page_is_read_and_written_after_its_flush_was_fenced_one_fence_per_run() {
        // Through `page`, flushed in place by the source, flushed ahead by a helper thread;
        // and in a live stream, sent straight from memory after the helper's fence.
        let way = |writer, in_place, shared, live| Way {
            writer,
            in_place,
            shared,
            live,
        };
        let ways = [
            way(WriterThread::Own, false, false, false),
            way(WriterThread::Inline, false, false, false),
            way(WriterThread::Own, true, true, false),
            way(WriterThread::Inline, true, false, false),
            way(WriterThread::Inline, true, true, false),
            way(WriterThread::Own, true, true, true),
            way(WriterThread::Inline, true, true, true),
        ];
        let streams: Vec<Vec<u8>> = ways.iter().map(|&w| flushes_are_fenced_first(w)).collect();
        // The stream header says whether the stream is live; the chunks are the same.
        assert!(
            streams
                .windows(2)
                .all(|w| w[0][HEADER_LEN..] == w[1][HEADER_LEN..]),
            "every way writes the same chunks"
        );
    }

    /// Sends a `flush` region one way, checks the flushes, returns the stream.
    fn flushes_are_fenced_first(how: Way) -> Vec<u8> {
        let Way {
            writer,
            in_place,
            shared,
            live,
        } = how;
        let way = format!("{how:?}");
        let pages = 2 * MAX_PAGES_PER_CHUNK + 88;
        let log = Log::default();
        let mut bar = Bar {
            memory: (0..pages * PAGE_SIZE).map(|i| (i / 7) as u8 | 1).collect(),
            log: Arc::clone(&log),
            in_place,
            tells_writes: live,
        };
        let cache = Cache {
            base: bar.memory.as_ptr() as usize,
            log: Arc::clone(&log),
            shared,
        };
        let config = bar.config();
        let out = Logged {
            bytes: Vec::new(),
            log: Arc::clone(&log),
        };
        let kind = if live {
            StreamKind::Live
        } else {
            StreamKind::Snapshot
        };
        let mut t = Transfer::start(out, kind, &mut bar, &cache, config, writer).unwrap();
        assert_eq!(t.send_pages(0, 0, 0..pages as u32).unwrap(), pages as u64);
        let summary = t.summary(Duration::ZERO, Duration::ZERO, 1, true);
        assert_eq!(summary.regions[0].flushed_pages, pages as u64, "{way}");
        assert_eq!(summary.writer, writer, "{way}");
        t.writer().flush().unwrap();
        let stream = std::mem::take(&mut t.writer().get_mut().bytes);
        drop(t);

        let log = log.lock().unwrap();
        let count = |e: Event| log.iter().filter(|&&x| x == e).count();
        assert_eq!(count(Event::Fence), 3, "{way}: one fence per run of pages");
        let (mut flushed, mut fenced) = (HashSet::new(), HashSet::new());
        let mut reads = vec![None; pages];
        // Sent in place, each run's checksum, taken after its write, goes out with the next
        // write: the last one with the flush, a write of its own.
        let sent_in_place = live && writer == WriterThread::Inline && in_place && shared;
        let mut writes = 0;
        for (at, event) in log.iter().enumerate() {
            match *event {
                Event::Flush(i) => assert!(flushed.insert(i), "{way}: page {i} flushed twice"),
                Event::Fence => fenced.extend(flushed.iter().copied()),
                Event::Read(i) => reads[i as usize] = Some((at, fenced.contains(&i))),
                // Writes before the first flush are the stream's header and configuration;
                // each later one is a run, whose pages must all have been fenced.
                Event::Written if !flushed.is_empty() => {
                    let run = writes;
                    let first = run * MAX_PAGES_PER_CHUNK;
                    let pages = first..(first + MAX_PAGES_PER_CHUNK).min(pages);
                    assert!(
                        pages.clone().all(|i| fenced.contains(&(i as u32))),
                        "{way}: run {run} written before its fence"
                    );
                    writes += 1;
                }
                Event::Written => {}
            }
        }
        assert_eq!(writes, 3 + usize::from(sent_in_place), "{way}");
        // Through `page` unless a helper flushed ahead (then pages are read in place).
        let through_page = !(writer == WriterThread::Inline && in_place && shared);
        for (i, read) in reads.iter().enumerate() {
            let expected = through_page.then_some(true);
            assert_eq!(read.map(|(_, fenced)| fenced), expected, "{way}: page {i}");
        }
        stream
    }
}
