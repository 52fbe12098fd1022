//! The part of sending shared by live migration and snapshots: header, configuration and
//! skipped regions; page rounds with the `flush` policy and zero-page elision; vCPU and
//! device state; `End` with the totals; and the counts that make the summary.

use std::io::Write;
use std::time::{Duration, Instant};

use super::error::{MigrationError, step};
use super::summary::{RegionSummary, Summary};
use crate::cache::CacheMaintenance;
use crate::format::{
    PAGE_SIZE, PageRun, Policy, RegionTotals, StreamHeader, StreamKind, Totals, VmConfig,
};
use crate::source::MigrationSource;
use crate::stream::{Chunk, StreamWriter};

/// A stream being sent from a source.
pub(crate) struct Transfer<'a, W: Write> {
    writer: StreamWriter<W>,
    source: &'a mut dyn MigrationSource,
    cache: &'a dyn CacheMaintenance,
    config: VmConfig,
    run: PageRun,
    regions: Vec<RegionSummary>,
    pages: u64,
    vcpus: u32,
    devices: u32,
    skipped: u32,
}

impl<'a, W: Write> Transfer<'a, W> {
    /// Writes the header, the configuration and a `RegionSkipped` for each `skip` region.
    pub(crate) fn start(
        out: W,
        kind: StreamKind,
        source: &'a mut dyn MigrationSource,
        cache: &'a dyn CacheMaintenance,
        config: VmConfig,
    ) -> Result<Self, MigrationError> {
        let mut writer = StreamWriter::new(out, &StreamHeader::new(kind, source.facts()))?;
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
                bytes,
                busy: Duration::ZERO,
            });
        }
        Ok(Transfer {
            writer,
            source,
            cache,
            config,
            run: PageRun::new(0, 0),
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
        let flush = self.config.regions[region].policy == Policy::Flush;
        self.run.clear();
        self.run.region = id;
        self.run.round = round;
        let mut sent = 0;
        for index in pages {
            if flush {
                // The guest's non-snooping writes went to memory; a line the host has
                // cached may be older. Flush first, then read.
                self.source
                    .flush_page(id, index, self.cache)
                    .map_err(step("flushing a guest page"))?;
                self.regions[region].flushed_pages += 1;
            }
            let page = read_page(self.source, id, index)?;
            let elided = self.run.push(index, page)?;
            let summary = &mut self.regions[region];
            if elided {
                summary.zero_pages += 1;
            } else {
                summary.data_pages += 1;
            }
            sent += 1;
            if self.run.is_full() {
                self.flush_run(region)?;
            }
        }
        if !self.run.is_empty() {
            self.flush_run(region)?;
        }
        self.pages += sent;
        self.regions[region].busy += started.elapsed();
        Ok(sent)
    }

    fn flush_run(&mut self, region: usize) -> Result<(), MigrationError> {
        self.regions[region].bytes += self.writer.write_pages(&self.run)?;
        self.run.clear();
        Ok(())
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
            rounds,
            converged,
            stream_bytes: self.writer.position(),
            pages_sent: self.pages,
            pages_elided: self.regions.iter().map(|r| r.zero_pages).sum(),
            vcpus: self.vcpus,
            devices: self.devices,
            regions: self.regions.clone(),
        }
    }
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
