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
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRun {
    /// The region's id.
    pub region: u32,
    /// The pre-copy round the pages belong to (0 = the full copy).
    pub round: u32,
    /// Page indexes, each with the position of its contents in `data` (`None`: zero page).
    entries: Vec<(u32, Option<usize>)>,
    /// The contents of the data pages, concatenated.
    data: Vec<u8>,
}

impl PageRun {
    /// An empty run.
    pub fn new(region: u32, round: u32) -> Self {
        PageRun {
            region,
            round,
            entries: Vec::new(),
            data: Vec::new(),
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
        if zero {
            self.entries.push((index, None));
        } else {
            self.push_data(index, page);
        }
        Ok(zero)
    }

    fn push_data(&mut self, index: u32, page: &[u8]) {
        self.entries
            .push((index, Some(self.data.len() / PAGE_SIZE)));
        self.data.extend_from_slice(page);
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
        self.data.clear();
    }

    /// The pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = (u32, PageSlot<'_>)> {
        self.entries.iter().map(|&(index, at)| {
            let slot = match at {
                Some(k) => PageSlot::Data(&self.data[k * PAGE_SIZE..(k + 1) * PAGE_SIZE]),
                None => PageSlot::Zero,
            };
            (index, slot)
        })
    }

    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        let mut enc = Enc::new(buf);
        enc.u32(self.region);
        enc.u32(self.round);
        enc.u32(self.entries.len() as u32);
        enc.zeros(4);
        for (index, slot) in self.pages() {
            enc.u32(index);
            match slot {
                PageSlot::Zero => enc.u8(CONTENTS_ZERO),
                PageSlot::Data(_) => enc.u8(CONTENTS_DATA),
            }
            enc.zeros(3);
            if let PageSlot::Data(page) = slot {
                enc.bytes(page);
            }
        }
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<Self, Malformation> {
        let mut dec = Dec::new(payload);
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
        let mut run = PageRun {
            region,
            round,
            entries: Vec::with_capacity(count as usize),
            // Bounded by the payload, whose length was checked against the kind's cap.
            data: Vec::with_capacity(dec.remaining()),
        };
        for _ in 0..count {
            let index = dec.u32("page index")?;
            let contents = dec.u8("page contents")?;
            dec.zeros(3, "page padding")?;
            match contents {
                CONTENTS_DATA => run.push_data(index, dec.take(PAGE_SIZE, "page data")?),
                CONTENTS_ZERO => run.entries.push((index, None)),
                other => {
                    return Err(Malformation::BadValue {
                        field: "page contents",
                        value: other.into(),
                    });
                }
            }
        }
        dec.finish()?;
        Ok(run)
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
        let back = PageRun::decode(&bytes).unwrap();
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
            PageRun::decode(&bytes),
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
            PageRun::decode(&bad),
            Err(Malformation::BadValue {
                field: "page contents",
                value: 9
            })
        );
        let mut bad = good.clone();
        bad[8] = 4; // one more record than the payload holds
        assert_eq!(
            PageRun::decode(&bad),
            Err(Malformation::Short {
                field: "page index"
            })
        );
        assert_eq!(
            PageRun::decode(&good[..good.len() - 1]),
            Err(Malformation::Short { field: "page data" })
        );
    }
}
