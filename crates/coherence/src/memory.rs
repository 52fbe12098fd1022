//! Physical memory and its ground-truth shadow.
//!
//! Memory is sparse: a 4 KiB page is allocated the first time anything is
//! written to it or cached from it, and reads of absent pages synthesize the
//! untouched contents without allocating (so a DMA sweep over a large BAR
//! stays cheap). Beside each page's bytes the module keeps:
//!
//! - the **truth**: the value of the last *committed* write to every byte
//!   (see the crate docs for when a write commits). Until some committed
//!   write bypasses memory (a WB store that stays in a cache), truth and
//!   memory are equal and the truth copy is not allocated;
//! - per line, the **stamp** of the last committed write (truth) and of the
//!   last write that reached memory, for evidence;
//! - per line, the mask of bytes ever written to memory since the page
//!   appeared. A byte outside it still holds the previous owner's data,
//!   which is what makes a stale read an info leak;
//! - the number of cached copies of the page's lines (alias detection) and
//!   which uncached agents were already reported as aliasing it.

use core::cell::Cell;
use core::fmt;

use crate::addr::{LINE_SIZE, LINES_PER_PAGE, Line, PAGE_SIZE, byte_mask, runs};
use crate::hash::{Fingerprint, FxHashMap};
use crate::provenance::Stamp;

/// What memory the simulation has not written holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Untouched {
    /// Fresh zeroed memory with no previous owner: nothing can leak.
    Zero,
    /// Memory still holding a previous owner's data (a page recycled by the
    /// host): every untouched byte is a secret derived from `seed` and the
    /// address, and a read that returns one instead of a newer committed
    /// value is an info leak.
    PreviousOwner {
        /// Seed of the pseudo-random secret.
        seed: u64,
    },
}

impl Untouched {
    /// The untouched value of the byte at `addr`.
    pub fn byte_at(self, addr: u64) -> u8 {
        match self {
            Untouched::Zero => 0,
            Untouched::PreviousOwner { seed } => secret_word(seed, addr / 8)[(addr % 8) as usize],
        }
    }

    fn fill_line(self, line: Line, out: &mut [u8]) {
        match self {
            Untouched::Zero => out.fill(0),
            Untouched::PreviousOwner { seed } => {
                for (i, w) in out.chunks_mut(8).enumerate() {
                    let word = line.base() / 8 + i as u64;
                    w.copy_from_slice(&secret_word(seed, word)[..w.len()]);
                }
            }
        }
    }

    fn leaks(self) -> bool {
        matches!(self, Untouched::PreviousOwner { .. })
    }
}

fn secret_word(seed: u64, word: u64) -> [u8; 8] {
    let mut z = seed ^ word.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LineMeta {
    truth_stamp: Stamp,
    mem_stamp: Stamp,
    /// Bytes written to memory since the page appeared.
    written: u64,
}

#[derive(Clone)]
struct Page {
    data: Box<[u8; PAGE_SIZE]>,
    truth: Option<Box<[u8; PAGE_SIZE]>>,
    meta: Box<[LineMeta; LINES_PER_PAGE]>,
    cached: u32,
    alias_reported: u64,
    /// Memoized digest; every mutation goes through `Memory::page_mut`,
    /// which clears it.
    digest: Option<Fingerprint>,
}

impl Page {
    fn new(untouched: Untouched, page: u64) -> Page {
        let mut data = Box::new([0u8; PAGE_SIZE]);
        let first = Line(page * LINES_PER_PAGE as u64);
        for (i, l) in data.chunks_mut(LINE_SIZE).enumerate() {
            untouched.fill_line(Line(first.0 + i as u64), l);
        }
        Page {
            data,
            truth: None,
            meta: Box::new([LineMeta::default(); LINES_PER_PAGE]),
            cached: 0,
            alias_reported: 0,
            digest: None,
        }
    }

    fn truth(&self) -> &[u8; PAGE_SIZE] {
        self.truth.as_deref().unwrap_or(&*self.data)
    }

    fn digest(&mut self, page: u64) -> Fingerprint {
        if let Some(d) = self.digest {
            return d;
        }
        let mut fp = Fingerprint::default();
        fp.word(page);
        fp.bytes(&self.data[..]);
        if let Some(t) = &self.truth {
            fp.bytes(&t[..]);
        }
        for m in self.meta.iter() {
            fp.word(m.truth_stamp.raw());
            fp.word(m.mem_stamp.raw());
            fp.word(m.written);
        }
        fp.word(u64::from(self.cached));
        fp.word(self.alias_reported);
        self.digest = Some(fp);
        fp
    }
}

/// Bytes that a write-back destroyed: memory held the committed value and
/// the written-back line did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost {
    pub(crate) mask: u64,
    /// The committed values of the whole line (those under `mask` were in
    /// memory).
    pub(crate) lost: [u8; LINE_SIZE],
    /// Who put them in memory.
    pub(crate) stamp: Stamp,
}

/// A line as read from memory, for a cache fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineRead {
    pub(crate) data: [u8; LINE_SIZE],
    pub(crate) pristine: u64,
    pub(crate) stamp: Stamp,
}

/// Sparse physical memory with its truth shadow.
#[derive(Clone)]
pub(crate) struct Memory {
    index: FxHashMap<u64, u32>,
    pages: Vec<Page>,
    untouched: Untouched,
    /// The last page looked up, `(page number, index)`: sweeps and hit
    /// loops touch the same page many times in a row.
    last: Cell<(u64, u32)>,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("pages", &self.pages.len())
            .field("untouched", &self.untouched)
            .finish_non_exhaustive()
    }
}

impl Memory {
    pub(crate) fn new(untouched: Untouched) -> Memory {
        Memory {
            index: FxHashMap::default(),
            pages: Vec::new(),
            untouched,
            last: Cell::new((u64::MAX, 0)),
        }
    }

    /// Number of pages allocated so far.
    pub(crate) fn pages(&self) -> usize {
        self.pages.len()
    }

    #[inline]
    fn find(&self, page: u64) -> Option<usize> {
        let (p, i) = self.last.get();
        if p == page {
            return Some(i as usize);
        }
        let i = *self.index.get(&page)?;
        self.last.set((page, i));
        Some(i as usize)
    }

    #[inline]
    fn page(&self, page: u64) -> Option<&Page> {
        self.find(page).map(|i| &self.pages[i])
    }

    #[inline]
    fn page_mut(&mut self, page: u64) -> &mut Page {
        let i = match self.find(page) {
            Some(i) => i,
            None => {
                let i = self.pages.len();
                let idx = u32::try_from(i).expect("fewer than 2^32 pages (16 TiB) touched");
                self.pages.push(Page::new(self.untouched, page));
                self.index.insert(page, idx);
                self.last.set((page, idx));
                i
            }
        };
        let p = &mut self.pages[i];
        p.digest = None;
        p
    }

    /// Copies memory bytes `off..off + out.len()` of `line` into `out`;
    /// returns the line-relative mask of those bytes that are still the
    /// previous owner's (always 0 with [`Untouched::Zero`]).
    #[inline]
    pub(crate) fn read(&self, line: Line, off: usize, out: &mut [u8]) -> u64 {
        let mask = byte_mask(off, out.len());
        let Some(p) = self.page(line.page()) else {
            let mut buf = [0u8; LINE_SIZE];
            self.untouched.fill_line(line, &mut buf);
            out.copy_from_slice(&buf[off..off + out.len()]);
            return if self.untouched.leaks() { mask } else { 0 };
        };
        let at = line.index_in_page() * LINE_SIZE + off;
        out.copy_from_slice(&p.data[at..at + out.len()]);
        self.pristine(p, line) & mask
    }

    fn pristine(&self, p: &Page, line: Line) -> u64 {
        if self.untouched.leaks() {
            !p.meta[line.index_in_page()].written
        } else {
            0
        }
    }

    /// A whole line from memory, for a cache fill.
    pub(crate) fn read_line(&self, line: Line) -> LineRead {
        let mut data = [0u8; LINE_SIZE];
        let pristine = self.read(line, 0, &mut data);
        let stamp = self
            .page(line.page())
            .map_or(Stamp::NONE, |p| p.meta[line.index_in_page()].mem_stamp);
        LineRead {
            data,
            pristine,
            stamp,
        }
    }

    /// Whether `got` equals the truth at `off..` of `line`.
    #[inline]
    pub(crate) fn truth_matches(&self, line: Line, off: usize, got: &[u8]) -> bool {
        match self.page(line.page()) {
            Some(p) => {
                let at = line.index_in_page() * LINE_SIZE + off;
                p.truth()[at..at + got.len()] == *got
            }
            None => {
                let mut buf = [0u8; LINE_SIZE];
                self.untouched.fill_line(line, &mut buf);
                buf[off..off + got.len()] == *got
            }
        }
    }

    /// The truth of the whole line.
    pub(crate) fn truth_line(&self, line: Line) -> [u8; LINE_SIZE] {
        let mut buf = [0u8; LINE_SIZE];
        match self.page(line.page()) {
            Some(p) => {
                let at = line.index_in_page() * LINE_SIZE;
                buf.copy_from_slice(&p.truth()[at..at + LINE_SIZE]);
            }
            None => self.untouched.fill_line(line, &mut buf),
        }
        buf
    }

    /// Memory's bytes of the whole line.
    pub(crate) fn memory_line(&self, line: Line) -> [u8; LINE_SIZE] {
        self.read_line(line).data
    }

    /// Stamp of the line's last committed write.
    pub(crate) fn truth_stamp(&self, line: Line) -> Stamp {
        self.page(line.page())
            .map_or(Stamp::NONE, |p| p.meta[line.index_in_page()].truth_stamp)
    }

    /// A committed write that goes to memory (WC drain, uncached store,
    /// write-through, DMA write): memory and truth both take the bytes of
    /// `data` under `mask`.
    pub(crate) fn commit(&mut self, line: Line, data: &[u8; LINE_SIZE], mask: u64, stamp: Stamp) {
        let p = self.page_mut(line.page());
        let base = line.index_in_page() * LINE_SIZE;
        for (off, len) in runs(mask) {
            let src = &data[off..off + len];
            p.data[base + off..base + off + len].copy_from_slice(src);
            if let Some(t) = &mut p.truth {
                t[base + off..base + off + len].copy_from_slice(src);
            }
        }
        let m = &mut p.meta[line.index_in_page()];
        m.written |= mask;
        m.truth_stamp = stamp;
        m.mem_stamp = stamp;
    }

    /// A committed write that stays in a cache (WB store): only the truth
    /// takes the bytes.
    #[inline]
    pub(crate) fn commit_cached(&mut self, line: Line, off: usize, bytes: &[u8], stamp: Stamp) {
        let p = self.page_mut(line.page());
        let data = &p.data;
        let truth = p.truth.get_or_insert_with(|| data.clone());
        let at = line.index_in_page() * LINE_SIZE + off;
        truth[at..at + bytes.len()].copy_from_slice(bytes);
        p.meta[line.index_in_page()].truth_stamp = stamp;
    }

    /// Writes a whole dirty line back. Not a write in program order, so the
    /// truth is untouched; returns the bytes whose committed value was in
    /// memory and is now overwritten by an older one. `pristine` marks the
    /// line's bytes that are still the previous owner's, `stamp` who last
    /// stored into the line.
    pub(crate) fn write_back(
        &mut self,
        line: Line,
        data: &[u8; LINE_SIZE],
        pristine: u64,
        stamp: Stamp,
    ) -> Option<Lost> {
        let p = self.page_mut(line.page());
        let base = line.index_in_page() * LINE_SIZE;
        let mut lost = Lost {
            mask: 0,
            lost: [0; LINE_SIZE],
            stamp: p.meta[line.index_in_page()].mem_stamp,
        };
        lost.lost
            .copy_from_slice(&p.truth()[base..base + LINE_SIZE]);
        for (i, &new) in data.iter().enumerate() {
            let t = lost.lost[i];
            if p.data[base + i] == t && new != t {
                lost.mask |= 1 << i;
            }
        }
        p.data[base..base + LINE_SIZE].copy_from_slice(data);
        let m = &mut p.meta[line.index_in_page()];
        // The whole line is replaced: bytes the cache still held from the
        // previous owner make memory the previous owner's again.
        m.written = !pristine;
        m.mem_stamp = stamp;
        (lost.mask != 0).then_some(lost)
    }

    /// A copy of `line` entered some cache.
    pub(crate) fn add_cached(&mut self, line: Line) {
        self.page_mut(line.page()).cached += 1;
    }

    /// A copy of `line` left some cache.
    pub(crate) fn remove_cached(&mut self, line: Line) {
        let p = self.page_mut(line.page());
        p.cached -= 1;
        if p.cached == 0 {
            // The alias is over; a later one is a new hazard worth reporting.
            p.alias_reported = 0;
        }
    }

    /// Number of cached copies of lines of `page`, across all CPUs.
    #[inline]
    pub(crate) fn cached_in_page(&self, page: u64) -> u32 {
        self.page(page).map_or(0, |p| p.cached)
    }

    /// Records that uncached agent `agent` was reported as aliasing `page`;
    /// returns whether it already was.
    pub(crate) fn mark_alias_reported(&mut self, page: u64, agent: usize) -> bool {
        let p = self.page_mut(page);
        let bit = 1u64 << agent;
        let was = p.alias_reported & bit != 0;
        p.alias_reported |= bit;
        was
    }

    pub(crate) fn fingerprint(&mut self) -> Fingerprint {
        let mut fp = Fingerprint::default();
        for (&page, &i) in &self.index {
            fp.combine_unordered(self.pages[i as usize].digest(page));
        }
        fp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: Untouched = Untouched::PreviousOwner { seed: 7 };

    fn stamp(op: u64) -> Stamp {
        Stamp::new(op, crate::ids::Actor::Cpu(crate::ids::AgentId(0)))
    }

    #[test]
    fn untouched_reads_do_not_allocate_and_report_the_previous_owner() {
        let m = Memory::new(SECRET);
        let mut out = [0u8; 8];
        let pristine = m.read(Line(3), 8, &mut out);
        assert_eq!(m.pages(), 0);
        assert_eq!(pristine, byte_mask(8, 8));
        assert_eq!(out[0], SECRET.byte_at(3 * 64 + 8));
        assert!(m.truth_matches(Line(3), 8, &out));

        let zero = Memory::new(Untouched::Zero);
        assert_eq!(zero.read(Line(3), 8, &mut out), 0);
        assert_eq!(out, [0; 8]);
    }

    #[test]
    fn a_cached_commit_moves_the_truth_only() {
        let mut m = Memory::new(SECRET);
        m.commit_cached(Line(1), 0, &[0; 8], stamp(5));
        let mut out = [0u8; 8];
        m.read(Line(1), 0, &mut out);
        assert_ne!(out, [0; 8]);
        assert!(!m.truth_matches(Line(1), 0, &out));
        assert!(m.truth_matches(Line(1), 0, &[0; 8]));
        assert_eq!(m.truth_stamp(Line(1)).get().map(|w| w.op_index), Some(5));
    }

    #[test]
    fn a_commit_reaches_memory_and_truth_and_ends_pristineness() {
        let mut m = Memory::new(SECRET);
        let mut data = [0u8; LINE_SIZE];
        data[4..6].copy_from_slice(&[0xaa, 0xbb]);
        m.commit(Line(2), &data, byte_mask(4, 2), stamp(1));
        let mut out = [0u8; 2];
        assert_eq!(m.read(Line(2), 4, &mut out), 0);
        assert_eq!(out, [0xaa, 0xbb]);
        assert_eq!(m.read(Line(2), 6, &mut out), byte_mask(6, 2));
    }

    #[test]
    fn writing_back_an_older_line_over_a_committed_value_loses_it() {
        let mut m = Memory::new(Untouched::Zero);
        let old = m.read_line(Line(0));
        let mut newer = [0u8; LINE_SIZE];
        newer[0] = 9;
        m.commit(Line(0), &newer, byte_mask(0, 1), stamp(2));
        let lost = m.write_back(Line(0), &old.data, 0, stamp(1)).expect("lost");
        assert_eq!(lost.mask, 1);
        assert_eq!(lost.lost[0], 9);
        assert_eq!(lost.stamp.get().map(|w| w.op_index), Some(2));
        // Writing the committed value back loses nothing.
        let mut m = Memory::new(Untouched::Zero);
        m.commit_cached(Line(0), 0, &[5], stamp(1));
        let mut line = [0u8; LINE_SIZE];
        line[0] = 5;
        assert!(m.write_back(Line(0), &line, 0, stamp(1)).is_none());
        assert!(m.truth_matches(Line(0), 0, &m.memory_line(Line(0))));
    }

    #[test]
    fn alias_reports_reset_when_the_last_copy_leaves() {
        let mut m = Memory::new(Untouched::Zero);
        m.add_cached(Line(64));
        assert_eq!(m.cached_in_page(1), 1);
        assert!(!m.mark_alias_reported(1, 2));
        assert!(m.mark_alias_reported(1, 2));
        m.remove_cached(Line(64));
        assert_eq!(m.cached_in_page(1), 0);
        assert!(!m.mark_alias_reported(1, 2));
    }

    #[test]
    fn fingerprint_follows_content() {
        let mut a = Memory::new(Untouched::Zero);
        let mut b = Memory::new(Untouched::Zero);
        a.add_cached(Line(0));
        b.add_cached(Line(0));
        assert_eq!(a.fingerprint(), b.fingerprint());
        a.commit_cached(Line(0), 0, &[1], stamp(0));
        assert_ne!(a.fingerprint(), b.fingerprint());
    }
}
