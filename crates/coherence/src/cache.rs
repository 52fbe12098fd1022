//! One CPU's private write-back cache: which lines it holds, their data and
//! MESI-lite state, and the deterministic order in which a full cache picks
//! its victim.
//!
//! Entries are Modified (`dirty`), Exclusive (`exclusive` and clean) or
//! Shared (neither); an absent line is Invalid. `exclusive` is what lets a
//! store hit skip probing the other CPUs: it is true only while no other CPU
//! can hold the line. A bounded cache evicts in fill order (FIFO; hits do not
//! refresh a line), so the victim depends only on the program, never on
//! timing or hashing.

use core::num::NonZeroUsize;
use std::collections::VecDeque;

use memtype::MemType;

use crate::addr::{LINE_SIZE, Line};
use crate::hash::{Fingerprint, FxHashMap};
use crate::provenance::Stamp;

/// How many lines a CPU cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capacity {
    /// Never evicts by itself: dirty lines stay until flushed or evicted
    /// explicitly.
    Unbounded,
    /// At most this many lines; filling one more evicts the line filled
    /// longest ago.
    Lines(NonZeroUsize),
}

/// The state of a line in one CPU's cache, as [`crate::State::line_state`]
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineState {
    /// Not cached.
    Invalid,
    /// Cached, same data as when it was filled or last written back.
    Clean,
    /// Cached and written since: memory has older data.
    Dirty,
}

/// A cached line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) data: [u8; LINE_SIZE],
    /// Bytes that are still the previous owner's (never written).
    pub(crate) pristine: u64,
    /// Last write into this copy (or memory's stamp when it was filled).
    pub(crate) stamp: Stamp,
    pub(crate) dirty: bool,
    pub(crate) exclusive: bool,
    /// The type of the mapping that filled or last wrote the line.
    pub(crate) held_as: MemType,
    seq: u64,
}

impl Entry {
    pub(crate) fn new(
        data: [u8; LINE_SIZE],
        pristine: u64,
        stamp: Stamp,
        held_as: MemType,
    ) -> Entry {
        Entry {
            data,
            pristine,
            stamp,
            dirty: false,
            exclusive: false,
            held_as,
            seq: 0,
        }
    }

    pub(crate) fn state(&self) -> LineState {
        if self.dirty {
            LineState::Dirty
        } else {
            LineState::Clean
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Cache {
    map: FxHashMap<u64, Entry>,
    /// Fill order, `(line, seq)`; an item whose seq no longer matches the
    /// entry's is a leftover of a line removed since, skipped lazily.
    fifo: VecDeque<(u64, u64)>,
    next_seq: u64,
    capacity: Capacity,
}

impl Cache {
    pub(crate) fn new(capacity: Capacity) -> Cache {
        Cache {
            map: FxHashMap::default(),
            fifo: VecDeque::new(),
            next_seq: 0,
            capacity,
        }
    }

    #[inline]
    pub(crate) fn get(&self, line: Line) -> Option<&Entry> {
        self.map.get(&line.0)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, line: Line) -> Option<&mut Entry> {
        self.map.get_mut(&line.0)
    }

    /// If the cache is full, removes and returns the line filled longest ago.
    pub(crate) fn make_room(&mut self) -> Option<(Line, Entry)> {
        let Capacity::Lines(cap) = self.capacity else {
            return None;
        };
        if self.map.len() < cap.get() {
            return None;
        }
        while let Some((line, seq)) = self.fifo.pop_front() {
            if self.map.get(&line).is_some_and(|e| e.seq == seq) {
                let e = self.map.remove(&line)?;
                return Some((Line(line), e));
            }
        }
        None
    }

    /// Adds a line that is not present; the caller made room first.
    pub(crate) fn insert(&mut self, line: Line, mut entry: Entry) -> &mut Entry {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        if let Capacity::Lines(cap) = self.capacity {
            self.fifo.push_back((line.0, entry.seq));
            if self.fifo.len() > 2 * cap.get() + 16 {
                let map = &self.map;
                self.fifo
                    .retain(|(l, s)| map.get(l).is_some_and(|e| e.seq == *s));
            }
        }
        self.map.entry(line.0).insert_entry(entry).into_mut()
    }

    pub(crate) fn remove(&mut self, line: Line) -> Option<Entry> {
        self.map.remove(&line.0)
    }

    /// Every cached line, in address order.
    pub(crate) fn lines(&self) -> Vec<Line> {
        let mut v: Vec<Line> = self.map.keys().map(|&l| Line(l)).collect();
        v.sort_unstable();
        v
    }

    pub(crate) fn fingerprint(&self, fp: &mut Fingerprint) {
        let mut set = Fingerprint::default();
        for (&line, e) in &self.map {
            let mut part = Fingerprint::default();
            part.word(line);
            part.bytes(&e.data);
            part.word(e.pristine);
            part.word(e.stamp.raw());
            part.word(u64::from(e.dirty) | u64::from(e.exclusive) << 1);
            part.bytes(e.held_as.name().as_bytes());
            set.combine_unordered(part);
        }
        fp.nest(set);
        if let Capacity::Lines(_) = self.capacity {
            // The victim order is part of the state; raw seqs are not
            // (equivalent states reached by different paths differ there).
            for (line, seq) in &self.fifo {
                if self.map.get(line).is_some_and(|e| e.seq == *seq) {
                    fp.word(*line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(b: u8) -> Entry {
        Entry::new([b; LINE_SIZE], 0, Stamp::NONE, MemType::Wb)
    }

    #[test]
    fn a_bounded_cache_evicts_in_fill_order_regardless_of_hits() {
        let mut c = Cache::new(Capacity::Lines(NonZeroUsize::new(2).expect("2")));
        assert!(c.make_room().is_none());
        c.insert(Line(10), entry(1));
        c.insert(Line(11), entry(2));
        let _ = c.get_mut(Line(10)); // a hit does not refresh
        let (victim, e) = c.make_room().expect("full");
        assert_eq!((victim, e.data[0]), (Line(10), 1));
        c.insert(Line(12), entry(3));
        assert_eq!(c.make_room().map(|(l, _)| l), Some(Line(11)));
    }

    #[test]
    fn removed_lines_are_skipped_by_the_victim_search() {
        let mut c = Cache::new(Capacity::Lines(NonZeroUsize::new(2).expect("2")));
        c.insert(Line(1), entry(1));
        c.insert(Line(2), entry(2));
        c.remove(Line(1));
        c.insert(Line(1), entry(3));
        // Line 1 was refilled after line 2: line 2 goes first.
        assert_eq!(c.make_room().map(|(l, _)| l), Some(Line(2)));
        // Many remove/insert cycles keep the order list bounded.
        for i in 0..1000 {
            c.remove(Line(1));
            c.insert(Line(1), entry(i as u8));
        }
        assert!(c.fifo.len() <= 2 * 2 + 17);
        assert_eq!(c.lines(), vec![Line(1)]);
    }

    #[test]
    fn an_unbounded_cache_never_evicts() {
        let mut c = Cache::new(Capacity::Unbounded);
        for l in 0..100 {
            assert!(c.make_room().is_none());
            c.insert(Line(l), entry(0));
        }
        assert_eq!(c.lines().len(), 100);
        assert!(c.fifo.is_empty());
    }

    #[test]
    fn fingerprint_ignores_fill_history_but_not_order() {
        let two = || Capacity::Lines(NonZeroUsize::new(2).expect("2"));
        let mut a = Cache::new(two());
        a.insert(Line(1), entry(0));
        a.insert(Line(2), entry(0));
        let mut b = Cache::new(two());
        b.insert(Line(5), entry(0));
        b.remove(Line(5));
        b.insert(Line(1), entry(0));
        b.insert(Line(2), entry(0));
        let fp = |c: &Cache| {
            let mut f = Fingerprint::default();
            c.fingerprint(&mut f);
            f
        };
        assert_eq!(fp(&a), fp(&b));
        let mut c = Cache::new(two());
        c.insert(Line(2), entry(0));
        c.insert(Line(1), entry(0));
        assert_ne!(fp(&a), fp(&c));
    }
}
