//! The verdict rules that look at a single access: whether a read returned
//! the committed value (else a stale read, or an info leak when the bytes
//! are a previous owner's), and whether an access meets a page used with a
//! conflicting memory type.

use memtype::MemType;

use super::State;
use crate::addr::{Chunk, LINES_PER_PAGE, Line, PAGE_SIZE, span};
use crate::ids::{Actor, AgentId};
use crate::verdict::{ConflictingAlias, Holder, InfoLeak, StaleRead, Verdict};

impl State {
    /// Compares a read's bytes (`got`, covering `ch`) with the truth.
    /// `pristine` is the line-relative mask of bytes the read took from the
    /// previous owner's untouched data.
    #[inline]
    pub(super) fn check_read(&mut self, reader: Actor, ch: Chunk, got: &[u8], pristine: u64) {
        if self.mem.truth_matches(ch.line, ch.off, got) {
            return;
        }
        let truth = self.mem.truth_line(ch.line);
        let (mut stale, mut leak) = (0u64, 0u64);
        for (i, &g) in got.iter().enumerate() {
            let at = ch.off + i;
            if g != truth[at] {
                if pristine & (1 << at) != 0 {
                    leak |= 1 << at;
                } else {
                    stale |= 1 << at;
                }
            }
        }
        let newer = self.mem.truth_stamp(ch.line).get();
        let evidence = |mask: u64| {
            let (off, len) = span(mask);
            let from = off - ch.off;
            (
                ch.line.base() + off as u64,
                truth[off..off + len].to_vec(),
                got[from..from + len].to_vec(),
            )
        };
        if stale != 0 {
            let (addr, expected, got) = evidence(stale);
            let newer_value_held_by = self.holder(ch.line, addr, &expected);
            self.log.push(Verdict::StaleRead(StaleRead {
                op_index: self.op,
                reader,
                addr,
                expected,
                got,
                newer_write: newer,
                newer_value_held_by,
            }));
        }
        if leak != 0 {
            let (addr, expected, leaked) = evidence(leak);
            self.log.push(Verdict::InfoLeak(InfoLeak {
                op_index: self.op,
                reader,
                addr,
                leaked,
                expected,
                erased_by: newer,
            }));
        }
    }

    /// Where the bytes `expected` at `addr` of `line` can be found.
    fn holder(&self, line: Line, addr: u64, expected: &[u8]) -> Holder {
        let off = (addr - line.base()) as usize;
        let has = |data: &[u8]| data[off..off + expected.len()] == *expected;
        let mut clean = None;
        for (c, cpu) in self.cpus.iter().enumerate() {
            if let Some(e) = cpu.cache.get(line).filter(|e| has(&e.data)) {
                let id = AgentId(c as u16);
                if e.dirty {
                    return Holder::DirtyCache(id);
                }
                clean.get_or_insert(id);
            }
        }
        if has(&self.mem.memory_line(line)) {
            return Holder::Memory;
        }
        clean.map_or(Holder::Nowhere, Holder::CleanCache)
    }

    /// An uncached access by `cpu` to `line`: a conflicting alias if any CPU
    /// caches a line of the same page. Reported once per page and uncached
    /// agent until the page's last cached copy goes.
    #[inline]
    pub(super) fn check_uncached_alias(&mut self, cpu: usize, line: Line, mt: MemType) {
        let page = line.page();
        if self.mem.cached_in_page(page) == 0 || self.mem.mark_alias_reported(page, cpu) {
            return;
        }
        let first = page * LINES_PER_PAGE as u64;
        let found = self.cpus.iter().enumerate().find_map(|(c, other)| {
            (first..first + LINES_PER_PAGE as u64)
                .find_map(|l| other.cache.get(Line(l)).map(|e| (c, Line(l), e.held_as)))
        });
        if let Some((holder, cached_line, cached_as)) = found {
            self.log.push(Verdict::ConflictingAlias(ConflictingAlias {
                op_index: self.op,
                page: page * PAGE_SIZE as u64,
                cached_line,
                cached_by: AgentId(holder as u16),
                cached_as,
                uncached_by: AgentId(cpu as u16),
                uncached_as: mt,
                snooped: mt != MemType::Wc,
            }));
        }
    }

    /// A cacheable fill of `line` by `cpu`: a conflicting alias if some
    /// agent's WC buffer holds data of the same page gathered through an
    /// uncached (WC/WC+) mapping.
    pub(super) fn check_fill_alias(&mut self, cpu: usize, line: Line, held_as: MemType) {
        let page = line.page();
        let found = self.cpus.iter().enumerate().find_map(|(c, other)| {
            other
                .wc
                .iter()
                .find(|b| b.line.page() == page && !b.via.is_cacheable())
                .map(|b| (c, b.via, b.snoop))
        });
        let Some((uncached, via, snooped)) = found else {
            return;
        };
        if self.mem.mark_alias_reported(page, uncached) {
            return;
        }
        self.log.push(Verdict::ConflictingAlias(ConflictingAlias {
            op_index: self.op,
            page: page * PAGE_SIZE as u64,
            cached_line: line,
            cached_by: AgentId(cpu as u16),
            cached_as: held_as,
            uncached_by: AgentId(uncached as u16),
            uncached_as: via,
            snooped,
        }));
    }
}
