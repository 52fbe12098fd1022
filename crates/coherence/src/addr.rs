//! Physical addresses, cache lines and pages: the units the simulator counts
//! in, and the splitting of an access into the per-line pieces every other
//! module works on.

use core::fmt;

/// Bytes in a cache line.
pub const LINE_SIZE: usize = 64;
/// Bytes in a page, the unit of allocation and of alias detection.
pub const PAGE_SIZE: usize = 4096;
/// Lines in a page.
pub(crate) const LINES_PER_PAGE: usize = PAGE_SIZE / LINE_SIZE;

/// A 64-byte cache line of physical memory, named by its line number
/// (`address / 64`). Lines are the simulator's arena ids for memory: caches,
/// WC buffers and verdicts all refer to them by this number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Line(pub u64);

impl Line {
    /// The line holding byte `addr`.
    pub const fn containing(addr: u64) -> Line {
        Line(addr / LINE_SIZE as u64)
    }

    /// The physical address of the line's first byte.
    pub const fn base(self) -> u64 {
        self.0 * LINE_SIZE as u64
    }

    /// The number of the 4 KiB page the line belongs to.
    pub const fn page(self) -> u64 {
        self.0 / LINES_PER_PAGE as u64
    }

    /// Position of the line within its page (0..64).
    pub(crate) const fn index_in_page(self) -> usize {
        (self.0 % LINES_PER_PAGE as u64) as usize
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {:#x}", self.base())
    }
}

/// The part of an access that falls inside one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunk {
    pub(crate) line: Line,
    /// Offset of the first byte within the line.
    pub(crate) off: usize,
    pub(crate) len: usize,
    /// Offset of the first byte within the whole access.
    pub(crate) pos: usize,
}

impl Chunk {
    /// The chunk's bytes as a line-relative byte mask.
    pub(crate) fn mask(&self) -> u64 {
        byte_mask(self.off, self.len)
    }
}

/// Splits `len` bytes at `addr` into per-line chunks, in address order. The
/// caller has checked that `addr + len` does not overflow.
pub(crate) fn chunks(addr: u64, len: usize) -> impl Iterator<Item = Chunk> {
    let mut pos = 0;
    core::iter::from_fn(move || {
        if pos >= len {
            return None;
        }
        let at = addr + pos as u64;
        let off = (at % LINE_SIZE as u64) as usize;
        let take = (LINE_SIZE - off).min(len - pos);
        let c = Chunk {
            line: Line::containing(at),
            off,
            len: take,
            pos,
        };
        pos += take;
        Some(c)
    })
}

/// Bits `off .. off + len` set (a line-relative byte mask); `len <= 64 - off`.
pub(crate) const fn byte_mask(off: usize, len: usize) -> u64 {
    if len >= LINE_SIZE {
        u64::MAX
    } else {
        ((1u64 << len) - 1) << off
    }
}

/// The maximal runs of set bits in a byte mask, as `(offset, length)`.
pub(crate) fn runs(mut mask: u64) -> impl Iterator<Item = (usize, usize)> {
    core::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let start = mask.trailing_zeros() as usize;
        let len = (!(mask >> start)).trailing_zeros() as usize;
        mask &= !byte_mask(start, len);
        Some((start, len))
    })
}

/// The smallest range `(offset, length)` covering every set bit of a
/// non-zero mask.
pub(crate) fn span(mask: u64) -> (usize, usize) {
    let start = mask.trailing_zeros() as usize;
    let end = LINE_SIZE - mask.leading_zeros() as usize;
    (start, end - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_page_arithmetic() {
        let l = Line::containing(0x1043);
        assert_eq!(l, Line(0x41));
        assert_eq!(l.base(), 0x1040);
        assert_eq!(l.page(), 1);
        assert_eq!(l.index_in_page(), 1);
        assert_eq!(l.to_string(), "line 0x1040");
    }

    #[test]
    fn an_access_across_a_line_boundary_is_two_chunks() {
        let c: Vec<_> = chunks(0x3c, 8).collect();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].line, c[0].off, c[0].len, c[0].pos),
            (Line(0), 60, 4, 0)
        );
        assert_eq!(
            (c[1].line, c[1].off, c[1].len, c[1].pos),
            (Line(1), 0, 4, 4)
        );
    }

    #[test]
    fn a_page_is_sixty_four_full_chunks() {
        let c: Vec<_> = chunks(0x2000, PAGE_SIZE).collect();
        assert_eq!(c.len(), LINES_PER_PAGE);
        assert!(c.iter().all(|c| c.off == 0 && c.len == LINE_SIZE));
        assert_eq!(c[0].mask(), u64::MAX);
    }

    #[test]
    fn masks_runs_and_spans() {
        assert_eq!(byte_mask(4, 2), 0b11_0000);
        assert_eq!(byte_mask(0, 64), u64::MAX);
        let m = byte_mask(1, 2) | byte_mask(8, 3) | byte_mask(63, 1);
        assert_eq!(runs(m).collect::<Vec<_>>(), vec![(1, 2), (8, 3), (63, 1)]);
        assert_eq!(span(m), (1, 63));
        assert_eq!(runs(u64::MAX).collect::<Vec<_>>(), vec![(0, 64)]);
    }
}
