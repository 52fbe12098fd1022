//! The `Pages` chunk: a run of pages of one region from one round, each either its full
//! contents or a zero-page marker (zero-page elision: 8 bytes instead of 4096).

use super::wire::{Dec, Enc};
use super::{MAX_PAGES_PER_CHUNK, PAGE_SIZE};
use crate::error::{EncodeError, Malformation};

/// Bytes before the first page record.
const RUN_HEADER_LEN: usize = 16;
/// Bytes of a page record before its data.
const RECORD_LEN: usize = 8;
/// The largest `Pages` payload: every page with data.
pub(super) const MAX_PAYLOAD: usize =
    RUN_HEADER_LEN + MAX_PAGES_PER_CHUNK * (RECORD_LEN + PAGE_SIZE);

const CONTENTS_DATA: u8 = 1;
const CONTENTS_ZERO: u8 = 2;

/// One page of a run, as the destination sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSlot<'a> {
    /// The page is all zeros.
    Zero,
    /// The page's contents ([`PAGE_SIZE`] bytes).
    Data(&'a [u8]),
}

/// A run of pages of one region, at most [`MAX_PAGES_PER_CHUNK`].
///
/// The run is kept as its wire payload (the run header's place, then each page's record
/// and contents), so a page is copied once on its way from guest memory to the socket: into
/// the run, which the writer then frames as it stands.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone)]
pub struct PageRun {
    /// The region's id.
    pub region: u32,
    /// The pre-copy round the pages belong to (0 = the full copy).
    pub round: u32,
    /// Page indexes, each with the offset of its contents in `wire` (`None`: zero page).
    entries: Vec<(u32, Option<usize>)>,
    /// The payload: [`RUN_HEADER_LEN`] bytes for the header (written by [`PageRun::payload`]
    /// from the fields above), then the records.
    wire: Vec<u8>,
}

impl PartialEq for PageRun {
    /// Runs are equal when they carry the same pages, whatever their buffers hold.
    fn eq(&self, other: &Self) -> bool {
        self.region == other.region && self.round == other.round && self.pages().eq(other.pages())
    }
}

impl Eq for PageRun {}

impl PageRun {
    /// An empty run.
    pub fn new(region: u32, round: u32) -> Self {
        PageRun {
            region,
            round,
            entries: Vec::new(),
            wire: vec![0; RUN_HEADER_LEN],
        }
    }

    /// Adds page `index` with contents `page`; an all-zero page becomes a marker. Returns
    /// whether the page was elided.
    pub fn push(&mut self, index: u32, page: &[u8]) -> Result<bool, EncodeError> {
        if page.len() != PAGE_SIZE {
            return Err(EncodeError::PageSize { len: page.len() });
        }
        if self.is_full() {
            return Err(EncodeError::TooMany {
                field: "page count",
                count: self.entries.len() as u64 + 1,
                cap: MAX_PAGES_PER_CHUNK as u64,
            });
        }
        let zero = page.iter().all(|&b| b == 0);
        self.push_record(index, if zero { None } else { Some(page) });
        Ok(zero)
    }

    fn push_record(&mut self, index: u32, data: Option<&[u8]>) {
        let mut record = [0u8; RECORD_LEN];
        record[..4].copy_from_slice(&index.to_le_bytes());
        record[4] = if data.is_some() {
            CONTENTS_DATA
        } else {
            CONTENTS_ZERO
        };
        self.wire.extend_from_slice(&record);
        let at = data.map(|page| {
            let at = self.wire.len();
            self.wire.extend_from_slice(page);
            at
        });
        self.entries.push((index, at));
    }

    /// Pages in the run.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the run has no pages.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the run holds [`MAX_PAGES_PER_CHUNK`] pages.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= MAX_PAGES_PER_CHUNK
    }

    /// Removes every page, keeping the buffers for the next run.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.wire.truncate(RUN_HEADER_LEN);
    }

    /// The pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = (u32, PageSlot<'_>)> {
        self.entries.iter().map(|&(index, at)| {
            let slot = match at {
                Some(at) => PageSlot::Data(&self.wire[at..at + PAGE_SIZE]),
                None => PageSlot::Zero,
            };
            (index, slot)
        })
    }

    /// The run's payload as it goes on the wire, its header written from the fields.
    pub(crate) fn payload(&mut self) -> &[u8] {
        let header = self.header();
        self.wire[..RUN_HEADER_LEN].copy_from_slice(&header);
        &self.wire
    }

    fn header(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(RUN_HEADER_LEN);
        let mut enc = Enc::new(&mut header);
        enc.u32(self.region);
        enc.u32(self.round);
        enc.u32(self.entries.len() as u32);
        enc.zeros(4);
        header
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&self.header());
        buf.extend_from_slice(&self.wire[RUN_HEADER_LEN..]);
    }

    /// Decodes `payload` in place: the run keeps the buffer as its wire form, so a page is
    /// not copied again on its way from the socket to the destination's memory.
    pub(crate) fn decode(payload: Vec<u8>) -> Result<Self, Malformation> {
        let mut dec = Dec::new(&payload);
        let region = dec.u32("region id")?;
        let round = dec.u32("round")?;
        let count = dec.u32("page count")?;
        dec.zeros(4, "run padding")?;
        if count as usize > MAX_PAGES_PER_CHUNK {
            return Err(Malformation::TooMany {
                field: "page count",
                count: count.into(),
                cap: MAX_PAGES_PER_CHUNK as u64,
            });
        }
        let mut entries = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let index = dec.u32("page index")?;
            let contents = dec.u8("page contents")?;
            dec.zeros(3, "page padding")?;
            match contents {
                CONTENTS_DATA => {
                    let at = payload.len() - dec.remaining();
                    dec.take(PAGE_SIZE, "page data")?;
                    entries.push((index, Some(at)));
                }
                CONTENTS_ZERO => entries.push((index, None)),
                other => {
                    return Err(Malformation::BadValue {
                        field: "page contents",
                        value: other.into(),
                    });
                }
            }
        }
        dec.finish()?;
        Ok(PageRun {
            region,
            round,
            entries,
            wire: payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> PageRun {
        let mut run = PageRun::new(3, 7);
        assert_eq!(run.push(10, &[0u8; PAGE_SIZE]), Ok(true));
        assert_eq!(run.push(11, &[0xabu8; PAGE_SIZE]), Ok(false));
        let mut last_byte = [0u8; PAGE_SIZE];
        last_byte[PAGE_SIZE - 1] = 1;
        assert_eq!(run.push(12, &last_byte), Ok(false));
        run
    }

    fn encoded(run: &PageRun) -> Vec<u8> {
        let mut buf = Vec::new();
        run.encode(&mut buf);
        buf
    }

    #[test]
    fn zero_pages_are_elided_and_the_run_round_trips() {
        let run = run();
        let bytes = encoded(&run);
        assert_eq!(bytes.len(), 16 + 3 * 8 + 2 * PAGE_SIZE);
        let back = PageRun::decode(bytes.clone()).unwrap();
        assert_eq!(back, run);
        let slots: Vec<_> = back.pages().collect();
        assert_eq!(slots[0], (10, PageSlot::Zero));
        assert_eq!(slots[1], (11, PageSlot::Data(&[0xab; PAGE_SIZE][..])));
        assert!(matches!(slots[2], (12, PageSlot::Data(p)) if p[PAGE_SIZE - 1] == 1));
    }

    #[test]
    fn runs_are_capped() {
        let mut run = PageRun::new(0, 0);
        for i in 0..MAX_PAGES_PER_CHUNK as u32 {
            run.push(i, &[1u8; PAGE_SIZE]).unwrap();
        }
        assert!(run.is_full());
        assert!(matches!(
            run.push(999, &[1u8; PAGE_SIZE]),
            Err(EncodeError::TooMany { .. })
        ));
        let mut bytes = encoded(&run);
        assert_eq!(bytes.len(), MAX_PAYLOAD);
        bytes[8..12].copy_from_slice(&(MAX_PAGES_PER_CHUNK as u32 + 1).to_le_bytes());
        assert!(matches!(
            PageRun::decode(bytes.clone()),
            Err(Malformation::TooMany { .. })
        ));
    }

    #[test]
    fn wrong_sized_pages_are_refused_on_encode() {
        assert_eq!(
            PageRun::new(0, 0).push(0, &[0u8; 100]),
            Err(EncodeError::PageSize { len: 100 })
        );
    }

    #[test]
    fn bad_records_are_refused() {
        let good = encoded(&run());
        let mut bad = good.clone();
        bad[16 + 4] = 9;
        assert_eq!(
            PageRun::decode(bad.clone()),
            Err(Malformation::BadValue {
                field: "page contents",
                value: 9
            })
        );
        let mut bad = good.clone();
        bad[8] = 4; // one more record than the payload holds
        assert_eq!(
            PageRun::decode(bad.clone()),
            Err(Malformation::Short {
                field: "page index"
            })
        );
        assert_eq!(
            PageRun::decode(good[..good.len() - 1].to_vec()),
            Err(Malformation::Short { field: "page data" })
        );
    }
}
