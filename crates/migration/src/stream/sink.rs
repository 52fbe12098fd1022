//! [`PageSink`]: where a reader puts a run's pages as it reads them, so that a page goes
//! from the socket to its place in the destination's memory in one copy; and the two ways
//! a run reaches a sink (read straight into it, or delivered from a buffered [`PageRun`]).

use crate::error::StreamError;
use crate::format::{PageRecord, PageRun, PageSlot, RunHeader, page_stretches};

/// Receives the runs of a stream as they are read.
///
/// For each `Pages` chunk the reader calls [`begin_run`](PageSink::begin_run) once its
/// records were read and their CRC checked, [`pages_mut`](PageSink::pages_mut) for each
/// stretch of consecutive data pages, in record order, and
/// [`end_run`](PageSink::end_run) only once the chunk's own CRC verified. A run that is
/// begun and never ended was refused: the reader returned an error, and the sink's memory
/// holds bytes nobody checked.
pub trait PageSink {
    /// Checks a run's header and records against what the sink expects (the region, the
    /// round, every index in range) before any of its contents is read.
    fn begin_run(&mut self, header: RunHeader, records: &[PageRecord]) -> Result<(), StreamError>;

    /// The memory that pages `first .. first + count` of the run begun are read into:
    /// `count * PAGE_SIZE` bytes.
    fn pages_mut(&mut self, first: u32, count: usize) -> Result<&mut [u8], StreamError>;

    /// The run's chunk verified: its pages (zero pages included) count as received.
    fn end_run(&mut self, records: &[PageRecord]);

    /// The run's chunk failed its checksum (`error`, the refusal). The default refuses the
    /// stream. A live destination of 1.4 on ([`crate::format::TORN_SINCE`]) may hold the
    /// run's pages unverified instead, provided the next chunk withdraws the run (`Torn`):
    /// a source sending from the running guest's memory cannot checksum exactly the bytes
    /// the kernel copied when the guest wrote them meanwhile.
    fn unverified_run(
        &mut self,
        records: &[PageRecord],
        error: StreamError,
    ) -> Result<(), StreamError> {
        let _ = records;
        Err(error)
    }
}

/// Hands `run`, read whole, to `sink` as the reader would have.
pub(crate) fn deliver(run: &PageRun, sink: &mut dyn PageSink) -> Result<(), StreamError> {
    sink.begin_run(run.header(), run.records())?;
    for (index, slot) in run.pages() {
        if let PageSlot::Data(page) = slot {
            sink.pages_mut(index, 1)?.copy_from_slice(page);
        }
    }
    sink.end_run(run.records());
    Ok(())
}

/// The sink of [`StreamReader::next_chunk`](super::StreamReader::next_chunk): collects a
/// run into a [`PageRun`].
#[derive(Debug, Default)]
pub(crate) struct Collect {
    pub(crate) run: PageRun,
}

impl PageSink for Collect {
    fn begin_run(&mut self, header: RunHeader, records: &[PageRecord]) -> Result<(), StreamError> {
        self.run.begin(header, records);
        Ok(())
    }

    fn pages_mut(&mut self, _first: u32, count: usize) -> Result<&mut [u8], StreamError> {
        // Stretches come in record order, so the contents stay in record order.
        Ok(self.run.append_data(count))
    }

    fn end_run(&mut self, _records: &[PageRecord]) {}
}

/// The stretches of consecutive data pages of `records`, in order, as (first page index,
/// pages): the reader reads each in one call. A zero page ends a stretch.
pub(crate) fn stretches(records: &[PageRecord]) -> impl Iterator<Item = (u32, usize)> + '_ {
    page_stretches(records.iter().map(|r| r.data.then_some(r.index)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(spec: &[(u32, bool)]) -> Vec<PageRecord> {
        spec.iter()
            .map(|&(index, data)| PageRecord { index, data })
            .collect()
    }

    #[test]
    fn stretches_are_maximal_runs_of_consecutive_data_pages() {
        let r = records(&[
            (5, true),
            (6, true),
            (7, false),
            (8, true),
            (9, true),
            (10, true),
            (2, true),
            (3, true),
            (3, true),
            (u32::MAX, true),
        ]);
        let got: Vec<_> = stretches(&r).collect();
        assert_eq!(got, [(5, 2), (8, 3), (2, 2), (3, 1), (u32::MAX, 1)]);
        assert_eq!(stretches(&records(&[(1, false)])).count(), 0);
        assert_eq!(stretches(&[]).count(), 0);
    }
}
