//! The destination: a state machine that accepts chunks only in the legal order, verifies
//! each against the declared configuration, stages everything in its own buffers, and hands
//! back a [`VmImage`] only after `End` verified. Until then nothing of the caller's is
//! touched, so a failed restore or migration leaves the destination empty.
//!
//! ```text
//!              VmConfig                     End (verified)
//!  AwaitConfig ---------> Body ---------------------------> Closed (image handed over)
//!       |                 |  ^
//!       |                 |  | Pages | Vcpu | Device | RegionSkipped
//!       |                 +--+
//!       | anything else   | any error, or a chunk out of order
//!       +-----------------+--------------------------------> Closed (error, no image)
//! ```
//!
//! Every allocation is bounded before it is made: staging memory by [`Limits::max_memory`]
//! (checked against the configuration before allocating), vCPU slots by
//! [`Limits::max_vcpus`], devices by [`MAX_DEVICES`]; pages only ever overwrite staged
//! memory. The destination is the reader's [`PageSink`]: a run's records are checked
//! (region, round, every index) before its pages are read, and the pages are read from the
//! stream straight into staging memory, counted as received only once the chunk's checksum
//! verified. Unverified bytes in staging memory are harmless: the stream is then refused
//! and the staging memory dropped with it.
//!
//! One exception, in live streams from 1.4 ([`TORN_SINCE`]): a run the source withdraws
//! with the `Torn` chunk right after it (it sent the pages from the running guest's memory,
//! and the guest wrote to them meanwhile) is not refused, even if it failed its checksum.
//! Its pages are held unverified instead, each until a later run that verifies sends it
//! again, and `End` is refused if any is still unverified then. A run that fails its
//! checksum and is not withdrawn by the very next chunk is refused as always, so a byte
//! corrupted on the way is refused unless it fell in a run the source had already given
//! up on, whose pages the destination never keeps.

mod image;
mod memory;

pub use image::{RegionContents, RegionImage, VmImage};
pub use memory::RegionMemory;

use std::io::Read;

use crate::bitmap::DirtyBitmap;
use crate::error::StreamError;
use crate::format::{
    ChunkKind, DeviceState, MAX_DEVICES, MAX_VCPUS, PAGE_SIZE, PageRecord, Policy, RegionConfig,
    RunHeader, StreamHeader, StreamKind, TORN_SINCE, Totals, VcpuState, VmConfig, msr,
};
use crate::stream::{Chunk, PageSink, StreamReader, deliver};

/// What a destination accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of guest memory (summed over the regions that carry pages).
    pub max_memory: u64,
    /// Most vCPUs.
    pub max_vcpus: u32,
    /// Populate the staging memory when the configuration is accepted, before the first
    /// page (see [`RegionMemory`]): no page fault in the copy loop, but every page of the
    /// declared regions committed. Off, pages fault in as they arrive and a page that
    /// never arrives (a zero page) costs nothing.
    pub prefault: bool,
}

impl Default for Limits {
    /// 16 GiB, the format's vCPU cap, prefaulted.
    fn default() -> Self {
        Limits {
            max_memory: 16 << 30,
            max_vcpus: MAX_VCPUS,
            prefault: true,
        }
    }
}

/// Reads chunks from `reader` into a [`Destination`] until `End` verifies.
pub fn receive<R: Read>(
    reader: &mut StreamReader<R>,
    limits: Limits,
) -> Result<VmImage, StreamError> {
    receive_announcing(reader, limits, || Ok(()))
}

/// [`receive`], calling `configured` once the configuration was accepted and the staging
/// memory is ready, before the first page is read (the live transport says READY there).
pub fn receive_announcing<R: Read>(
    reader: &mut StreamReader<R>,
    limits: Limits,
    mut configured: impl FnMut() -> Result<(), StreamError>,
) -> Result<VmImage, StreamError> {
    let mut destination = Destination::new(reader.header().clone(), limits);
    loop {
        let offset = reader.position();
        // A run goes straight into the staging memory; every other chunk comes back.
        let Some(chunk) = reader.next_chunk_into(&mut destination)? else {
            continue;
        };
        let config = matches!(chunk, Chunk::VmConfig(_));
        if let Some(image) = destination.accept(chunk, offset)? {
            return Ok(image);
        }
        if config {
            configured()?;
        }
    }
}

/// The receiving state machine (see the module documentation).
#[derive(Debug)]
pub struct Destination {
    header: StreamHeader,
    limits: Limits,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    AwaitConfig,
    Body(Box<Body>),
    Closed,
}

/// Everything staged after the configuration.
#[derive(Debug)]
struct Body {
    config: VmConfig,
    staging: Vec<Staging>,
    vcpus: Vec<Option<VcpuState>>,
    devices: Vec<DeviceState>,
    pages: u64,
    newest_round: Option<u32>,
    /// The staging of the run begun and not yet ended, and its header.
    open_run: Option<(usize, RunHeader)>,
    /// Whether a run may be withdrawn with `Torn` (a live stream from [`TORN_SINCE`]).
    withdrawals: bool,
    /// The run just read, while the next chunk may still withdraw it.
    last_run: Option<LastRun>,
}

/// A run that was the last chunk read, which a `Torn` chunk may withdraw.
#[derive(Debug)]
struct LastRun {
    /// Its region's staging.
    staging: usize,
    header: RunHeader,
    /// Its pages' indexes, data and zero pages alike (a run's worth at most).
    pages: Vec<u32>,
    /// Why it failed its checksum, if it did: the stream is refused unless `Torn` follows.
    failed: Option<StreamError>,
}

/// One region's staged contents and counts.
#[derive(Debug)]
struct Staging {
    /// The region's bytes; empty for a `skip` region.
    memory: RegionMemory,
    /// Pages received at least once.
    received: DirtyBitmap,
    /// Pages whose last copy was withdrawn (or failed its checksum and was withdrawn) and
    /// has not been sent again since: all must be clear at `End`.
    unverified: DirtyBitmap,
    data_pages: u64,
    zero_pages: u64,
    skip_announced: bool,
}

const BODY_CHUNKS: &str = "Pages, Vcpu, Device, RegionSkipped or End";
const CLOSED: &str = "nothing: the stream was finished or refused";

impl Destination {
    /// A destination for a stream whose header was read and checked.
    pub fn new(header: StreamHeader, limits: Limits) -> Self {
        Destination {
            header,
            limits,
            phase: Phase::AwaitConfig,
        }
    }

    /// Accepts the chunk that started at stream offset `offset`. Returns the image once
    /// `End` verified. After an error, or after the image, every chunk is refused.
    pub fn accept(&mut self, chunk: Chunk, offset: u64) -> Result<Option<VmImage>, StreamError> {
        let found = chunk.kind();
        // Closed unless a step below succeeds and reopens it.
        match (std::mem::replace(&mut self.phase, Phase::Closed), chunk) {
            (Phase::AwaitConfig, Chunk::VmConfig(config)) => {
                let withdrawals =
                    self.header.kind == StreamKind::Live && self.header.version >= TORN_SINCE;
                let body = Body::new(config, self.limits, withdrawals)?;
                self.phase = Phase::Body(Box::new(body));
                Ok(None)
            }
            (Phase::AwaitConfig, _) => Err(StreamError::OutOfOrder {
                found,
                expected: "VmConfig",
            }),
            (Phase::Body(body), Chunk::End(totals)) => {
                Ok(Some(body.finish(self.header.clone(), &totals, offset)?))
            }
            (Phase::Body(_), Chunk::VmConfig(_)) => Err(StreamError::OutOfOrder {
                found,
                expected: BODY_CHUNKS,
            }),
            (Phase::Body(mut body), chunk) => {
                body.accept(chunk)?;
                self.phase = Phase::Body(body);
                Ok(None)
            }
            (Phase::Closed, _) => Err(StreamError::OutOfOrder {
                found,
                expected: CLOSED,
            }),
        }
    }
}

/// A run read from the stream goes straight into the staging memory of its region, under
/// the checks of a run accepted whole.
impl PageSink for Destination {
    fn begin_run(&mut self, header: RunHeader, records: &[PageRecord]) -> Result<(), StreamError> {
        let begun = match &mut self.phase {
            Phase::Body(body) => body.begin_run(header, records),
            Phase::AwaitConfig => Err(StreamError::OutOfOrder {
                found: ChunkKind::Pages,
                expected: "VmConfig",
            }),
            Phase::Closed => Err(StreamError::OutOfOrder {
                found: ChunkKind::Pages,
                expected: CLOSED,
            }),
        };
        if begun.is_err() {
            self.phase = Phase::Closed;
        }
        begun
    }

    fn pages_mut(&mut self, first: u32, count: usize) -> Result<&mut [u8], StreamError> {
        match &mut self.phase {
            Phase::Body(body) => body.pages_mut(first, count),
            _ => Err(StreamError::OutOfOrder {
                found: ChunkKind::Pages,
                expected: CLOSED,
            }),
        }
    }

    fn end_run(&mut self, records: &[PageRecord]) {
        if let Phase::Body(body) = &mut self.phase {
            body.end_run(records);
        }
    }

    fn unverified_run(
        &mut self,
        records: &[PageRecord],
        error: StreamError,
    ) -> Result<(), StreamError> {
        let Phase::Body(body) = &mut self.phase else {
            return Err(error);
        };
        let held = body.unverified_run(records, error);
        if held.is_err() {
            self.phase = Phase::Closed;
        }
        held
    }
}

/// The checks and the staging of one run, whether it was read whole (an old stream, or a
/// chunk handed to [`Destination::accept`]) or straight into staging memory.
impl PageSink for Body {
    fn begin_run(&mut self, header: RunHeader, records: &[PageRecord]) -> Result<(), StreamError> {
        self.settle()?;
        if self.open_run.is_some() {
            // The run before was never verified: its chunk was refused.
            return Err(StreamError::OutOfOrder {
                found: ChunkKind::Pages,
                expected: CLOSED,
            });
        }
        let (i, region) = self.region(header.region, ChunkKind::Pages)?;
        if !region.carries_pages() {
            return Err(StreamError::PagesForSkippedRegion {
                region: region.name.clone(),
            });
        }
        let pages = region.pages();
        if let Some(previous) = self.newest_round
            && header.round < previous
        {
            return Err(StreamError::RoundWentBack {
                round: header.round,
                previous,
            });
        }
        if let Some(r) = records.iter().find(|r| r.index >= pages) {
            return Err(StreamError::PageOutOfRange {
                region: header.region,
                index: r.index,
                pages,
            });
        }
        self.newest_round = Some(header.round);
        self.open_run = Some((i, header));
        Ok(())
    }

    fn pages_mut(&mut self, first: u32, count: usize) -> Result<&mut [u8], StreamError> {
        let Some((i, _)) = self.open_run else {
            return Err(StreamError::OutOfOrder {
                found: ChunkKind::Pages,
                expected: CLOSED,
            });
        };
        let at = first as usize * PAGE_SIZE;
        let memory = &mut self.staging[i].memory;
        let pages = (memory.len() / PAGE_SIZE) as u32;
        // `begin_run` checked every index; a reader asking past them is refused all the same.
        memory
            .get_mut(at..at + count * PAGE_SIZE)
            .ok_or(StreamError::PageOutOfRange {
                region: self.config.regions[i].id,
                index: first.saturating_add(count as u32).saturating_sub(1),
                pages,
            })
    }

    fn end_run(&mut self, records: &[PageRecord]) {
        self.land(records, None);
    }

    fn unverified_run(
        &mut self,
        records: &[PageRecord],
        error: StreamError,
    ) -> Result<(), StreamError> {
        if !self.withdrawals || self.open_run.is_none() {
            return Err(error);
        }
        self.land(records, Some(error));
        Ok(())
    }
}

impl Body {
    fn new(config: VmConfig, limits: Limits, withdrawals: bool) -> Result<Self, StreamError> {
        config.validate()?;
        if let Some(r) = config.regions.iter().find(|r| r.policy == Policy::Refuse) {
            return Err(StreamError::RefusedRegion {
                region: r.name.clone(),
            });
        }
        if config.vcpu_count > limits.max_vcpus {
            return Err(StreamError::VcpuLimit {
                declared: config.vcpu_count,
                limit: limits.max_vcpus,
            });
        }
        let needed = config.staged_bytes();
        if needed > limits.max_memory {
            return Err(StreamError::MemoryLimit {
                needed,
                limit: limits.max_memory,
            });
        }
        let staging = config
            .regions
            .iter()
            .map(|r| {
                let len = if r.carries_pages() { r.size } else { 0 };
                let memory = if limits.prefault {
                    RegionMemory::populated(len as usize)
                } else {
                    RegionMemory::zeroed(len as usize)
                };
                let memory = memory.map_err(|e| StreamError::StagingMemory {
                    region: r.name.clone(),
                    bytes: len,
                    kind: e.kind(),
                })?;
                Ok(Staging {
                    memory,
                    // A `skip` region receives no page, and its size is not bounded by
                    // `max_memory`: a bitmap for it would be an allocation the stream chooses.
                    received: DirtyBitmap::new(if r.carries_pages() { r.pages() } else { 0 }),
                    unverified: DirtyBitmap::new(if r.carries_pages() { r.pages() } else { 0 }),
                    data_pages: 0,
                    zero_pages: 0,
                    skip_announced: false,
                })
            })
            .collect::<Result<_, StreamError>>()?;
        Ok(Body {
            vcpus: vec![None; config.vcpu_count as usize],
            config,
            staging,
            devices: Vec::new(),
            pages: 0,
            newest_round: None,
            open_run: None,
            withdrawals,
            last_run: None,
        })
    }

    /// Counts and stages the pages of the run begun, which verified (`failed` is `None`)
    /// or failed its checksum under `withdrawals` (it must then be withdrawn by the next
    /// chunk). A zero page is zeroed either way: its marker is in the records, which have
    /// a checksum of their own.
    fn land(&mut self, records: &[PageRecord], failed: Option<StreamError>) {
        let Some((i, header)) = self.open_run.take() else {
            return;
        };
        let staging = &mut self.staging[i];
        for record in records {
            if record.data {
                staging.data_pages += 1;
            } else {
                // A page sent again may have become zero: the marker overwrites it.
                let at = record.index as usize * PAGE_SIZE;
                staging.memory[at..at + PAGE_SIZE].fill(0);
                staging.zero_pages += 1;
            }
            staging.received.set(record.index);
            if failed.is_some() && record.data {
                staging.unverified.set(record.index);
            } else {
                // A copy that verified supersedes a withdrawn one.
                staging.unverified.clear(record.index);
            }
        }
        self.pages += records.len() as u64;
        if self.withdrawals {
            self.last_run = Some(LastRun {
                staging: i,
                header,
                pages: records.iter().map(|r| r.index).collect(),
                failed,
            });
        }
    }

    /// Called for every chunk but `Torn`: the run before it can no longer be withdrawn,
    /// so one that failed its checksum is refused now, with that failure.
    fn settle(&mut self) -> Result<(), StreamError> {
        match self.last_run.take() {
            Some(LastRun {
                failed: Some(error),
                ..
            }) => Err(error),
            _ => Ok(()),
        }
    }

    /// `Torn`: withdraws the run just before, which must be of `region` and `round`; its
    /// pages are unverified until sent again.
    fn torn(&mut self, region: u32, round: u32) -> Result<(), StreamError> {
        if !self.withdrawals {
            return Err(StreamError::TornOutsideLive { region, round });
        }
        let Some(last) = self
            .last_run
            .take()
            .filter(|l| (l.header.region, l.header.round) == (region, round))
        else {
            return Err(StreamError::TornNamesNoRun { region, round });
        };
        let staging = &mut self.staging[last.staging];
        for &index in &last.pages {
            staging.unverified.set(index);
        }
        Ok(())
    }

    /// The position and declaration of region `id`.
    fn region(&self, id: u32, kind: ChunkKind) -> Result<(usize, &RegionConfig), StreamError> {
        self.config
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| r.id == id)
            .ok_or(StreamError::UnknownRegion { kind, region: id })
    }

    fn accept(&mut self, chunk: Chunk) -> Result<(), StreamError> {
        if let Chunk::Torn { region, round } = chunk {
            return self.torn(region, round);
        }
        self.settle()?;
        match chunk {
            Chunk::Pages(run) => deliver(&run, self),
            Chunk::Vcpu(vcpu) => self.vcpu(*vcpu),
            Chunk::Device(device) => self.device(device),
            Chunk::RegionSkipped { region } => self.skipped(region),
            // `Destination::accept` routes these two itself, and `Torn` went above.
            Chunk::VmConfig(_) | Chunk::End(_) | Chunk::Torn { .. } => {
                Err(StreamError::OutOfOrder {
                    found: chunk.kind(),
                    expected: BODY_CHUNKS,
                })
            }
        }
    }

    fn vcpu(&mut self, vcpu: VcpuState) -> Result<(), StreamError> {
        let count = self.config.vcpu_count;
        let slot = self
            .vcpus
            .get_mut(vcpu.id as usize)
            .ok_or(StreamError::VcpuOutOfRange { id: vcpu.id, count })?;
        if slot.is_some() {
            return Err(StreamError::DuplicateVcpu { id: vcpu.id });
        }
        let mut indexes: Vec<u32> = vcpu.msrs.iter().map(|m| m.index).collect();
        indexes.sort_unstable();
        if let Some(pair) = indexes.windows(2).find(|p| p[0] == p[1]) {
            return Err(StreamError::DuplicateMsr {
                vcpu: vcpu.id,
                msr: pair[0],
            });
        }
        if let Some(&missing) = msr::REQUIRED
            .iter()
            .find(|&&m| indexes.binary_search(&m).is_err())
        {
            return Err(StreamError::MissingMsr {
                vcpu: vcpu.id,
                msr: missing,
            });
        }
        *slot = Some(vcpu);
        Ok(())
    }

    fn device(&mut self, device: DeviceState) -> Result<(), StreamError> {
        if self.devices.iter().any(|d| d.name == device.name) {
            return Err(StreamError::DuplicateDevice { name: device.name });
        }
        if self.devices.len() >= MAX_DEVICES {
            return Err(StreamError::TooManyDevices { cap: MAX_DEVICES });
        }
        self.devices.push(device);
        Ok(())
    }

    fn skipped(&mut self, id: u32) -> Result<(), StreamError> {
        let (i, region) = self.region(id, ChunkKind::RegionSkipped)?;
        if region.policy != Policy::Skip {
            return Err(StreamError::SkipForCopiedRegion {
                region: region.name.clone(),
                policy: region.policy,
            });
        }
        if self.staging[i].skip_announced {
            return Err(StreamError::DuplicateSkip {
                region: region.name.clone(),
            });
        }
        self.staging[i].skip_announced = true;
        Ok(())
    }

    /// Verifies completeness and the totals, then builds the image.
    fn finish(
        mut self,
        header: StreamHeader,
        totals: &Totals,
        offset: u64,
    ) -> Result<VmImage, StreamError> {
        self.settle()?;
        for (region, staging) in self.config.regions.iter().zip(&self.staging) {
            if region.policy == Policy::Skip && !staging.skip_announced {
                return Err(StreamError::SkipNotAnnounced {
                    region: region.name.clone(),
                });
            }
            if region.carries_pages()
                && let Some(index) = staging.received.first_clear()
            {
                return Err(StreamError::MissingPage {
                    region: region.name.clone(),
                    index,
                });
            }
            if let Some(index) = staging.unverified.iter().next() {
                return Err(StreamError::TornPageNotResent {
                    region: region.name.clone(),
                    index,
                });
            }
        }
        if let Some(id) = self.vcpus.iter().position(Option::is_none) {
            return Err(StreamError::MissingVcpu { id: id as u32 });
        }
        self.check_totals(totals, offset)?;

        let vcpus = self.vcpus.into_iter().flatten().collect();
        let regions = self
            .config
            .regions
            .into_iter()
            .zip(self.staging)
            .map(|(config, staging)| RegionImage {
                contents: if config.carries_pages() {
                    RegionContents::Memory(staging.memory)
                } else {
                    RegionContents::Recreate
                },
                config,
            })
            .collect();
        Ok(VmImage {
            header,
            vcpu_count: self.config.vcpu_count,
            regions,
            vcpus,
            devices: self.devices,
        })
    }

    fn check_totals(&self, totals: &Totals, offset: u64) -> Result<(), StreamError> {
        let check = |what, declared: u64, received: u64| {
            if declared == received {
                Ok(())
            } else {
                Err(StreamError::TotalsMismatch {
                    what,
                    declared,
                    received,
                })
            }
        };
        // A final round with nothing dirty sends no page, so the rounds seen may be fewer
        // than declared, never more.
        let rounds_seen = self.newest_round.map_or(0, |r| u64::from(r) + 1);
        if rounds_seen > u64::from(totals.rounds) {
            check("rounds", totals.rounds.into(), rounds_seen)?;
        }
        check("vcpus", totals.vcpus.into(), self.vcpus.len() as u64)?;
        check("devices", totals.devices.into(), self.devices.len() as u64)?;
        let skipped = self.staging.iter().filter(|s| s.skip_announced).count();
        check("skipped regions", totals.skipped.into(), skipped as u64)?;
        check("pages", totals.pages, self.pages)?;
        check("stream bytes", totals.stream_bytes, offset)?;
        let copied: Vec<(&RegionConfig, &Staging)> = self
            .config
            .regions
            .iter()
            .zip(&self.staging)
            .filter(|(r, _)| r.carries_pages())
            .collect();
        check(
            "region totals",
            totals.regions.len() as u64,
            copied.len() as u64,
        )?;
        for (declared, (region, staging)) in totals.regions.iter().zip(copied) {
            check("region id", declared.id.into(), region.id.into())?;
            check("data pages", declared.data_pages, staging.data_pages)?;
            check("zero pages", declared.zero_pages, staging.zero_pages)?;
        }
        Ok(())
    }
}
