//! What the pre-copy engine and the snapshot writer need from a running VM: its
//! configuration, its pages in place, its dirty log, pause and resume, and the states of its
//! vCPUs and devices. The VMM implements [`MigrationSource`] over KVM; tests implement it
//! with a fake guest that keeps writing.

use std::error::Error;
use std::fmt;

use crate::bitmap::DirtyBitmap;
use crate::cache::CacheMaintenance;
use crate::format::{DeviceState, PAGE_SIZE, SourceFacts, VcpuState, VmConfig, page_stretches};

/// A failure of the source VM's own operations (an ioctl, a device model), kept opaque.
#[derive(Debug)]
pub struct SourceError(Box<dyn Error + Send + Sync>);

impl SourceError {
    /// Wraps the source's error.
    pub fn new(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        SourceError(error.into())
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Error for SourceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

/// A VM that can be snapshotted or migrated.
pub trait MigrationSource {
    /// Facts about the host, for the stream header.
    fn facts(&self) -> SourceFacts;

    /// The VM's configuration, with the policy the user chose for each noncoherent region
    /// (see [`crate::format::RegionConfig::noncoherent`] for the default).
    fn config(&self) -> VmConfig;

    /// Page `index` of region `region`, in place: exactly
    /// [`PAGE_SIZE`] bytes of guest memory (not a copy), because
    /// the `flush` policy flushes the host cache lines of these very bytes before they are
    /// copied. The guest may be running: a page it changes during the copy is in the next
    /// dirty log and is sent again.
    fn page(&mut self, region: u32, index: u32) -> Result<&[u8], SourceError>;

    /// The bytes of region `region` in place, if this source holds guest memory in this
    /// process (the pages [`page`](Self::page) returns are slices of it); `None` (the
    /// default) for a source whose reads are simulated. In place, `flush` pages can be
    /// flushed by a helper thread while this one copies and writes the pages before them.
    fn memory(&self, region: u32) -> Option<&[u8]> {
        let _ = region;
        None
    }

    /// Whether the guest (or a device) wrote any of the pages `indexes` of region `region`
    /// since the previous call for the region, or since [`dirty_pages`](Self::dirty_pages)
    /// took its log if that came later; asked through a shared borrow, so that the caller
    /// may hold [`memory`](Self::memory) meanwhile. A call with no pages opens the window
    /// the next call looks into. Nothing is taken from the caller's view: a page written
    /// is still in the next `dirty_pages` (a source that must take bits out of its log to
    /// look keeps them for it). With it, a live sender sends pages straight from
    /// [`memory`](Self::memory), looks once before a run and once after it, and withdraws
    /// the run (`Torn`, from stream 1.4) if the guest wrote to it in between: a write
    /// before the run, already in the log, is sent again anyway and tears nothing. `None`,
    /// the default: the source cannot tell, and its pages are copied before they are
    /// checksummed and sent.
    fn written_since_last_check(
        &self,
        region: u32,
        indexes: &[u32],
    ) -> Option<Result<bool, SourceError>> {
        let _ = (region, indexes);
        None
    }

    /// Flushes the host cache lines of the pages `indexes` of region `region` (the
    /// `flush` policy, before they are read with [`page`](Self::page)), then fences once
    /// for the whole batch ([`CacheMaintenance::flush_lines`] then
    /// [`CacheMaintenance::fence`]: a fence per page would wait out each page's flushes in
    /// turn). The default flushes each stretch of consecutive pages of
    /// [`memory`](Self::memory) where the source has it, else the lines of the bytes `page`
    /// returns; a model whose reads are simulated flushes the pages' addresses without
    /// reading them.
    fn flush_pages(
        &mut self,
        region: u32,
        indexes: &[u32],
        cache: &dyn CacheMaintenance,
    ) -> Result<(), SourceError> {
        if let Some(memory) = self.memory(region) {
            return flush_in_place(memory, region, indexes, cache);
        }
        for &index in indexes {
            cache.flush_lines(self.page(region, index)?);
        }
        cache.fence();
        Ok(())
    }

    /// Starts recording writes to guest memory (KVM's dirty log and the device model's
    /// own tracking: KVM does not see device DMA).
    fn start_dirty_log(&mut self) -> Result<(), SourceError>;

    /// Takes the pages of `region` written since the last call (or since
    /// [`start_dirty_log`](Self::start_dirty_log)) and clears them: the union of KVM's log
    /// and the device model's. An implementation that fails after taking one of the two
    /// puts it back, so no dirty bit is ever lost.
    fn dirty_pages(&mut self, region: u32) -> Result<DirtyBitmap, SourceError>;

    /// Puts bits taken by [`dirty_pages`](Self::dirty_pages) back into the log: called
    /// when a migration fails, since what it took was delivered nowhere.
    fn return_dirty_pages(&mut self, region: u32, pages: &DirtyBitmap);

    /// Stops recording writes.
    fn stop_dirty_log(&mut self);

    /// Stops the vCPUs (and device activity) so that memory no longer changes.
    fn pause(&mut self) -> Result<(), SourceError>;

    /// Lets the guest run again.
    fn resume(&mut self) -> Result<(), SourceError>;

    /// Every vCPU's state, taken while paused.
    fn vcpu_states(&mut self) -> Result<Vec<VcpuState>, SourceError>;

    /// Every device's state, taken while paused.
    fn device_states(&mut self) -> Result<Vec<DeviceState>, SourceError>;
}

/// Flushes the pages `indexes` of `memory` (region `region`'s bytes in place), one call per
/// stretch of consecutive pages, then fences once. Fails, having flushed nothing past it,
/// on an index outside the region.
pub(crate) fn flush_in_place(
    memory: &[u8],
    region: u32,
    indexes: &[u32],
    cache: &dyn CacheMaintenance,
) -> Result<(), SourceError> {
    for (first, count) in page_stretches(indexes.iter().copied().map(Some)) {
        let start = first as usize * PAGE_SIZE;
        let stretch = memory
            .get(start..start + count * PAGE_SIZE)
            .ok_or_else(|| SourceError::new(format!("region {region} has no page {first}")))?;
        cache.flush_lines(stretch);
    }
    cache.fence();
    Ok(())
}
