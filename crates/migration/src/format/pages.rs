//! The `Pages` chunk: a run of pages of one region from one round, each either its full
//! contents or a zero-page marker (zero-page elision: 8 bytes instead of 4096), and the two
//! layouts the stream versions give it ([`Layout`]).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::wire::{Dec, Enc};
use super::{MAX_PAGES_PER_CHUNK, PAGE_SIZE, Version};
use crate::crc::crc64;
use crate::error::{EncodeError, Malformation};

/// Bytes of the run header: region, round, count, padding.
pub const RUN_HEADER_LEN: usize = 16;
/// Bytes of one page record.
pub const RECORD_LEN: usize = 8;
/// Bytes of the records' own CRC ([`Layout::RecordsFirst`] only).
pub const RECORDS_CHECKSUM_LEN: usize = 8;
/// The largest `Pages` payload: every page with data, in the larger (records-first) layout.
pub(super) const MAX_PAYLOAD: usize =
    RUN_HEADER_LEN + MAX_PAGES_PER_CHUNK * (RECORD_LEN + PAGE_SIZE) + RECORDS_CHECKSUM_LEN;

/// The first version whose runs are laid out [`Layout::RecordsFirst`].
pub const RECORDS_FIRST_SINCE: Version = Version::new(1, 2);

const CONTENTS_DATA: u8 = 1;
const CONTENTS_ZERO: u8 = 2;

/// How a `Pages` payload orders its records and page contents.
///
/// NOTICE: changes require a stream version bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Versions 1.0 and 1.1: the run header, then each record followed by its page's
    /// contents if it has any. A reader must buffer the whole run to know where the
    /// contents are.
    Interleaved,
    /// From 1.2 on: the run header, every record, a CRC-64 of the header and records, then
    /// the contents of the data pages back to back, in record order. A reader checks the
    /// records first, then reads each stretch of consecutive pages straight to where it
    /// belongs: one copy from the socket to the destination's memory.
    RecordsFirst,
}

impl Layout {
    /// The layout of streams of `version`.
    pub fn of(version: Version) -> Self {
        if version >= RECORDS_FIRST_SINCE {
            Layout::RecordsFirst
        } else {
            Layout::Interleaved
        }
    }
}

/// One page of a run: its index in the region, and whether its contents follow (`false`:
/// the page is all zeros).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRecord {
    /// The page's index in its region.
    pub index: u32,
    /// Whether the page's contents are in the run.
    pub data: bool,
}

impl PageRecord {
    fn encode(self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[..4].copy_from_slice(&self.index.to_le_bytes());
        out[4] = if self.data {
            CONTENTS_DATA
        } else {
            CONTENTS_ZERO
        };
        out
    }

    fn decode(dec: &mut Dec<'_>) -> Result<Self, Malformation> {
        let index = dec.u32("page index")?;
        let contents = dec.u8("page contents")?;
        dec.zeros(3, "page padding")?;
        let data = match contents {
            CONTENTS_DATA => true,
            CONTENTS_ZERO => false,
            other => {
                return Err(Malformation::BadValue {
                    field: "page contents",
                    value: other.into(),
                });
            }
        };
        Ok(PageRecord { index, data })
    }
}

/// A run's header, decoded and checked before anything it declares is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunHeader {
    /// The region's id.
    pub region: u32,
    /// The pre-copy round.
    pub round: u32,
    /// Records that follow, at most [`MAX_PAGES_PER_CHUNK`].
    pub count: u32,
}

impl RunHeader {
    fn encode(self, buf: &mut Vec<u8>) {
        let mut enc = Enc::new(buf);
        enc.u32(self.region);
        enc.u32(self.round);
        enc.u32(self.count);
        enc.zeros(4);
    }

    /// Decodes the first `RUN_HEADER_LEN` (16) bytes of a run, the count against its cap.
    pub fn decode(bytes: &[u8]) -> Result<Self, Malformation> {
        let mut dec = Dec::new(bytes);
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
        Ok(RunHeader {
            region,
            round,
            count,
        })
    }
}

/// Decodes the records of a [`Layout::RecordsFirst`] run: `bytes` holds the run header,
/// `header.count` records and their CRC. The CRC is checked before any record is believed.
pub fn decode_records(
    header: RunHeader,
    bytes: &[u8],
    records: &mut Vec<PageRecord>,
) -> Result<(), Malformation> {
    let end = RUN_HEADER_LEN + header.count as usize * RECORD_LEN;
    let Some(stored) = bytes.get(end..end + RECORDS_CHECKSUM_LEN) else {
        return Err(Malformation::Short {
            field: "page records",
        });
    };
    let stored = u64::from_le_bytes(stored.try_into().unwrap_or_default());
    let computed = crc64(&bytes[..end]);
    if stored != computed {
        return Err(Malformation::RecordsChecksum { stored, computed });
    }
    records.clear();
    let mut dec = Dec::new(&bytes[RUN_HEADER_LEN..end]);
    for _ in 0..header.count {
        records.push(PageRecord::decode(&mut dec)?);
    }
    Ok(())
}

/// A page's contents in a run, aligned as guest pages are.
///
/// The alignment is for the copy into the run, not for correctness: with the run's pages
/// at the guest pages' offset within a page, glibc's `rep movsb` copies a 4 KiB page at
/// memory speed; a `Vec<u8>` from malloc starts 16 bytes past a page boundary, and on this
/// project's AMD Zen 3 hosts that offset made the same copy six times slower (59 against
/// 377 ms per GiB, `BENCHMARKS.md`): the largest cost of sending a page.
#[derive(Debug, Clone, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(4096))]
struct PageBlock([u8; PAGE_SIZE]);

impl PageBlock {
    const ZERO: PageBlock = PageBlock([0; PAGE_SIZE]);
}

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
/// The contents of its data pages are kept back to back, as [`Layout::RecordsFirst`] sends
/// them, so a page is copied once on its way from guest memory to the socket: into the run,
/// which the writer then checksums and frames as it stands. The copy is what is checksummed
/// and sent, so a running guest that changes a page meanwhile cannot make the two differ.
#[derive(Debug, Clone, Default)]
pub struct PageRun {
    /// The region's id.
    pub region: u32,
    /// The pre-copy round the pages belong to (0 = the full copy).
    pub round: u32,
    records: Vec<PageRecord>,
    /// One block per data record, in record order: the first `used`; the rest are kept
    /// from earlier runs, so a reused run copies each page once, into memory already there.
    blocks: Vec<PageBlock>,
    used: usize,
    /// Scratch for the encoded header and records, kept across runs.
    head: Vec<u8>,
}

impl PartialEq for PageRun {
    /// Runs are equal when they carry the same pages, whatever their scratch holds.
    fn eq(&self, other: &Self) -> bool {
        (self.region, self.round, &self.records, self.data())
            == (other.region, other.round, &other.records, other.data())
    }
}

impl Eq for PageRun {}

impl PageRun {
    /// An empty run.
    pub fn new(region: u32, round: u32) -> Self {
        PageRun {
            region,
            round,
            ..PageRun::default()
        }
    }

    /// Adds page `index` with contents `page`; an all-zero page becomes a marker. Returns
    /// whether the page was elided.
    pub fn push(&mut self, index: u32, page: &[u8]) -> Result<bool, EncodeError> {
        let zero = is_zero_page(page);
        self.push_record(PageRecord { index, data: !zero }, page)?;
        Ok(zero)
    }

    /// Adds the page `record` names, its contents copied from `page` if it is a data page.
    pub(crate) fn push_record(
        &mut self,
        record: PageRecord,
        page: &[u8],
    ) -> Result<(), EncodeError> {
        if page.len() != PAGE_SIZE {
            return Err(EncodeError::PageSize { len: page.len() });
        }
        if self.is_full() {
            return Err(EncodeError::TooMany {
                field: "page count",
                count: self.records.len() as u64 + 1,
                cap: MAX_PAGES_PER_CHUNK as u64,
            });
        }
        if record.data {
            self.grab(1).copy_from_slice(page);
        }
        self.records.push(record);
        Ok(())
    }

    /// Starts the run `header` announced, with its `records`, for a reader to append the
    /// data pages to ([`PageRun::append_data`]).
    pub(crate) fn begin(&mut self, header: RunHeader, records: &[PageRecord]) {
        self.clear();
        self.region = header.region;
        self.round = header.round;
        self.records.extend_from_slice(records);
    }

    /// `pages` more data pages at the end of the contents, zeroed, to be read into.
    pub(crate) fn append_data(&mut self, pages: usize) -> &mut [u8] {
        let bytes = self.grab(pages);
        bytes.fill(0);
        bytes
    }

    /// The next `pages` blocks, as they are (zero, or a page of an earlier run).
    fn grab(&mut self, pages: usize) -> &mut [u8] {
        let at = self.used;
        self.used += pages;
        if self.blocks.len() < self.used {
            self.blocks.resize(self.used, PageBlock::ZERO);
        }
        self.blocks[at..self.used].as_mut_bytes()
    }

    /// The data pages' contents, back to back.
    fn data(&self) -> &[u8] {
        self.blocks[..self.used].as_bytes()
    }

    /// Pages in the run.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the run has no pages.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether the run holds [`MAX_PAGES_PER_CHUNK`] pages.
    pub fn is_full(&self) -> bool {
        self.records.len() >= MAX_PAGES_PER_CHUNK
    }

    /// Removes every page, keeping the buffers for the next run.
    pub fn clear(&mut self) {
        self.records.clear();
        self.used = 0;
    }

    /// The run's header.
    pub fn header(&self) -> RunHeader {
        RunHeader {
            region: self.region,
            round: self.round,
            count: self.records.len() as u32,
        }
    }

    /// The run's records, in order.
    pub fn records(&self) -> &[PageRecord] {
        &self.records
    }

    /// The pages, in order.
    pub fn pages(&self) -> impl Iterator<Item = (u32, PageSlot<'_>)> {
        let mut contents = self.data().chunks_exact(PAGE_SIZE);
        self.records.iter().map(move |r| {
            // `push` and the reader keep one block per data record.
            let slot = if r.data {
                contents.next().map_or(PageSlot::Zero, PageSlot::Data)
            } else {
                PageSlot::Zero
            };
            (r.index, slot)
        })
    }

    /// The payload in `layout`, appended to `buf`.
    pub(crate) fn encode(&self, layout: Layout, buf: &mut Vec<u8>) {
        match layout {
            Layout::RecordsFirst => {
                encode_head(self.header(), &self.records, buf);
                buf.extend_from_slice(self.data());
            }
            Layout::Interleaved => {
                self.header().encode(buf);
                for (record, (_, slot)) in self.records.iter().zip(self.pages()) {
                    buf.extend_from_slice(&record.encode());
                    if let PageSlot::Data(page) = slot {
                        buf.extend_from_slice(page);
                    }
                }
            }
        }
    }

    /// The payload in [`Layout::RecordsFirst`], as its two parts (header and records with
    /// their CRC; the contents), without copying the contents.
    pub(crate) fn records_first(&mut self) -> [&[u8]; 2] {
        self.head.clear();
        encode_head(self.header(), &self.records, &mut self.head);
        [&self.head, self.data()]
    }

    /// Decodes an [`Layout::Interleaved`] payload.
    pub(crate) fn decode_interleaved(payload: &[u8]) -> Result<Self, Malformation> {
        let header = RunHeader::decode(payload)?;
        let mut dec = Dec::new(&payload[RUN_HEADER_LEN..]);
        let mut run = PageRun::new(header.region, header.round);
        for _ in 0..header.count {
            let record = PageRecord::decode(&mut dec)?;
            if record.data {
                let page = dec.take(PAGE_SIZE, "page data")?;
                run.grab(1).copy_from_slice(page);
            }
            run.records.push(record);
        }
        dec.finish()?;
        Ok(run)
    }
}

/// Whether `page` is all zeros (sent as a marker, not as contents).
pub fn is_zero_page(page: &[u8]) -> bool {
    page.iter().all(|&b| b == 0)
}

/// The run header, the records and their CRC, appended to `buf`.
pub(crate) fn encode_head(header: RunHeader, records: &[PageRecord], buf: &mut Vec<u8>) {
    let start = buf.len();
    header.encode(buf);
    for record in records {
        buf.extend_from_slice(&record.encode());
    }
    let crc = crc64(&buf[start..]);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Maximal stretches of consecutive page indexes, in order, as (first index, pages). Each
/// item is a page's index, or `None` for an entry that ends a stretch without one (a zero
/// page in a run). Consecutive means the next index up, never wrapping past `u32::MAX`.
pub(crate) fn page_stretches(
    indexes: impl IntoIterator<Item = Option<u32>>,
) -> impl Iterator<Item = (u32, usize)> {
    let mut indexes = indexes.into_iter().peekable();
    std::iter::from_fn(move || {
        let first = indexes.by_ref().flatten().next()?;
        let mut count = 1;
        while indexes
            .next_if(|next| next.is_some_and(|i| u64::from(i) == u64::from(first) + count as u64))
            .is_some()
        {
            count += 1;
        }
        Some((first, count))
    })
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

    fn encoded(run: &PageRun, layout: Layout) -> Vec<u8> {
        let mut buf = Vec::new();
        run.encode(layout, &mut buf);
        buf
    }

    /// Decodes a records-first payload held whole, as the stream reader does piecewise.
    fn decode_records_first(payload: &[u8]) -> Result<PageRun, Malformation> {
        let header = RunHeader::decode(payload)?;
        let mut records = Vec::new();
        decode_records(header, payload, &mut records)?;
        let mut run = PageRun::default();
        run.begin(header, &records);
        let data_at = RUN_HEADER_LEN + records.len() * RECORD_LEN + RECORDS_CHECKSUM_LEN;
        let data = &payload[data_at..];
        run.append_data(data.len() / PAGE_SIZE)
            .copy_from_slice(data);
        Ok(run)
    }

    #[test]
    fn layouts_follow_the_version() {
        assert_eq!(Layout::of(Version::new(1, 0)), Layout::Interleaved);
        assert_eq!(Layout::of(Version::new(1, 1)), Layout::Interleaved);
        assert_eq!(Layout::of(RECORDS_FIRST_SINCE), Layout::RecordsFirst);
        assert_eq!(Layout::of(Version::new(1, 2)), Layout::RecordsFirst);
    }

    #[test]
    fn zero_pages_are_elided_and_the_run_round_trips_in_both_layouts() {
        let run = run();
        let interleaved = encoded(&run, Layout::Interleaved);
        assert_eq!(interleaved.len(), 16 + 3 * 8 + 2 * PAGE_SIZE);
        // A data page's record sits just before its contents.
        assert_eq!(interleaved[16 + 8 + 4], CONTENTS_DATA);
        assert_eq!(interleaved[16 + 8 + 8], 0xab);
        let first = encoded(&run, Layout::RecordsFirst);
        assert_eq!(first.len(), 16 + 3 * 8 + 8 + 2 * PAGE_SIZE);
        assert_eq!(&first[16..20], &10u32.to_le_bytes());
        assert_eq!(first[16 + 4], CONTENTS_ZERO);
        assert_eq!(
            u64::from_le_bytes(first[40..48].try_into().unwrap()),
            crc64(&first[..40])
        );
        assert_eq!(first[48], 0xab);
        let mut split = run.clone();
        assert_eq!(split.records_first().concat(), first);

        for back in [
            PageRun::decode_interleaved(&interleaved).unwrap(),
            decode_records_first(&first).unwrap(),
        ] {
            assert_eq!(back, run);
            let slots: Vec<_> = back.pages().collect();
            assert_eq!(slots[0], (10, PageSlot::Zero));
            assert_eq!(slots[1], (11, PageSlot::Data(&[0xab; PAGE_SIZE][..])));
            assert!(matches!(slots[2], (12, PageSlot::Data(p)) if p[PAGE_SIZE - 1] == 1));
        }
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
        let mut bytes = encoded(&run, Layout::RecordsFirst);
        assert_eq!(bytes.len(), MAX_PAYLOAD);
        assert_eq!(
            encoded(&run, Layout::Interleaved).len(),
            MAX_PAYLOAD - RECORDS_CHECKSUM_LEN
        );
        bytes[8..12].copy_from_slice(&(MAX_PAGES_PER_CHUNK as u32 + 1).to_le_bytes());
        assert!(matches!(
            RunHeader::decode(&bytes),
            Err(Malformation::TooMany { .. })
        ));
        assert!(matches!(
            PageRun::decode_interleaved(&bytes),
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
    fn bad_interleaved_records_are_refused() {
        let good = encoded(&run(), Layout::Interleaved);
        let mut bad = good.clone();
        bad[16 + 4] = 9;
        assert_eq!(
            PageRun::decode_interleaved(&bad),
            Err(Malformation::BadValue {
                field: "page contents",
                value: 9
            })
        );
        let mut bad = good.clone();
        bad[8] = 4; // one more record than the payload holds
        assert_eq!(
            PageRun::decode_interleaved(&bad),
            Err(Malformation::Short {
                field: "page index"
            })
        );
        assert_eq!(
            PageRun::decode_interleaved(&good[..good.len() - 1]),
            Err(Malformation::Short { field: "page data" })
        );
    }

    #[test]
    fn records_are_believed_only_after_their_checksum() {
        let good = encoded(&run(), Layout::RecordsFirst);
        let header = RunHeader::decode(&good).unwrap();
        let mut records = Vec::new();
        // Any flipped bit of the header or the records fails the CRC, before a record is
        // decoded: a corrupt index never names a page.
        for byte in 0..40 {
            let mut bad = good.clone();
            bad[byte] ^= 0x04;
            let header = RunHeader::decode(&bad).unwrap_or(header);
            assert!(
                matches!(
                    decode_records(header, &bad, &mut records),
                    Err(Malformation::RecordsChecksum { .. })
                ),
                "byte {byte}"
            );
        }
        // A record that decodes badly under a correct CRC (a broken or hostile writer).
        let mut bad = good.clone();
        bad[16 + 4] = 9;
        let crc = crc64(&bad[..40]);
        bad[40..48].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_records(header, &bad, &mut records),
            Err(Malformation::BadValue {
                field: "page contents",
                value: 9
            })
        );
        assert_eq!(
            decode_records(header, &good[..47], &mut records),
            Err(Malformation::Short {
                field: "page records"
            })
        );
        decode_records(header, &good, &mut records).unwrap();
        assert_eq!(records, run().records());
    }
}
