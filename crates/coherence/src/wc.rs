//! One CPU's write-combining buffers: a few 64-byte buffers with byte masks
//! that gather WC, WC+ and non-temporal stores until something drains them.
//!
//! The buffers only gather; *when* they drain is decided by the state
//! (fences, serializing and uncached accesses, own loads of the line). This
//! module decides the two drains that follow from capacity: a buffer whose
//! 64 bytes are all written leaves at once (a full-line burst), and a store
//! to a new line when every buffer is busy pushes out the oldest one.

use memtype::MemType;

use crate::addr::{LINE_SIZE, Line, byte_mask};
use crate::hash::Fingerprint;

/// A combining buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WcBuf {
    pub(crate) line: Line,
    pub(crate) data: [u8; LINE_SIZE],
    pub(crate) mask: u64,
    /// The mapping type of the last store gathered (WC, WC+, or the WB/WT
    /// type of a non-temporal store).
    pub(crate) via: MemType,
    /// Whether draining must first probe the CPU caches (WC+).
    pub(crate) snoop: bool,
    /// Operation index of the last store gathered.
    pub(crate) last_op: u64,
}

/// One store into a buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WcStore<'a> {
    pub(crate) line: Line,
    pub(crate) off: usize,
    pub(crate) bytes: &'a [u8],
    pub(crate) via: MemType,
    pub(crate) snoop: bool,
    pub(crate) op: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct WcBuffers {
    /// Busy buffers, oldest first.
    bufs: Vec<WcBuf>,
    slots: usize,
}

impl WcBuffers {
    /// `slots` buffers (at least one; the state validates it).
    pub(crate) fn new(slots: usize) -> WcBuffers {
        WcBuffers {
            bufs: Vec::with_capacity(slots),
            slots,
        }
    }

    /// Gathers a store; returns the buffer that must drain now, if any: the
    /// one this store completed, or the oldest, pushed out to make room.
    pub(crate) fn store(&mut self, s: WcStore<'_>) -> Option<WcBuf> {
        let (i, pushed_out) = match self.bufs.iter().position(|b| b.line == s.line) {
            Some(i) => (i, None),
            None => {
                let out = (self.bufs.len() >= self.slots).then(|| self.bufs.remove(0));
                self.bufs.push(WcBuf {
                    line: s.line,
                    data: [0; LINE_SIZE],
                    mask: 0,
                    via: s.via,
                    snoop: false,
                    last_op: s.op,
                });
                (self.bufs.len() - 1, out)
            }
        };
        let b = &mut self.bufs[i];
        b.data[s.off..s.off + s.bytes.len()].copy_from_slice(s.bytes);
        b.mask |= byte_mask(s.off, s.bytes.len());
        b.via = s.via;
        b.snoop |= s.snoop;
        b.last_op = s.op;
        if b.mask == u64::MAX {
            return Some(self.bufs.remove(i));
        }
        pushed_out
    }

    /// Removes the buffer gathering `line`, if any.
    #[inline]
    pub(crate) fn take(&mut self, line: Line) -> Option<WcBuf> {
        if self.bufs.is_empty() {
            return None;
        }
        let i = self.bufs.iter().position(|b| b.line == line)?;
        Some(self.bufs.remove(i))
    }

    /// Removes the oldest buffer, if any.
    pub(crate) fn pop_oldest(&mut self) -> Option<WcBuf> {
        (!self.bufs.is_empty()).then(|| self.bufs.remove(0))
    }

    /// The busy buffers, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &WcBuf> {
        self.bufs.iter()
    }

    pub(crate) fn fingerprint(&self, fp: &mut Fingerprint) {
        fp.word(self.bufs.len() as u64);
        for b in &self.bufs {
            fp.word(b.line.0);
            fp.bytes(&b.data);
            fp.word(b.mask);
            fp.bytes(b.via.name().as_bytes());
            fp.word(u64::from(b.snoop));
            fp.word(b.last_op);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(line: u64, off: usize, bytes: &[u8]) -> WcStore<'_> {
        WcStore {
            line: Line(line),
            off,
            bytes,
            via: MemType::Wc,
            snoop: false,
            op: 0,
        }
    }

    #[test]
    fn stores_to_one_line_combine_until_the_line_is_full() {
        let mut w = WcBuffers::new(2);
        for off in (0..56).step_by(8) {
            assert!(w.store(st(1, off, &[off as u8; 8])).is_none());
        }
        let full = w.store(st(1, 56, &[7; 8])).expect("full line leaves");
        assert_eq!(full.mask, u64::MAX);
        assert_eq!(full.data[8], 8);
        assert_eq!(w.iter().count(), 0);
    }

    #[test]
    fn a_new_line_pushes_out_the_oldest_buffer() {
        let mut w = WcBuffers::new(2);
        assert!(w.store(st(1, 0, &[1])).is_none());
        assert!(w.store(st(2, 0, &[2])).is_none());
        assert!(w.store(st(1, 1, &[1])).is_none());
        let out = w.store(st(3, 0, &[3])).expect("oldest leaves");
        assert_eq!((out.line, out.mask), (Line(1), 0b11));
        let rest: Vec<Line> = core::iter::from_fn(|| w.pop_oldest())
            .map(|b| b.line)
            .collect();
        assert_eq!(rest, vec![Line(2), Line(3)]);
    }

    #[test]
    fn take_removes_only_the_named_line_and_later_bytes_win() {
        let mut w = WcBuffers::new(4);
        w.store(st(1, 0, &[1, 1]));
        w.store(st(1, 1, &[9]));
        w.store(st(2, 0, &[2]));
        let b = w.take(Line(1)).expect("present");
        assert_eq!(&b.data[..2], &[1, 9]);
        assert!(w.take(Line(1)).is_none());
        assert_eq!(w.iter().count(), 1);
    }
}
