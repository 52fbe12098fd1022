//! The primitives every memory type is built from: writing a dirty line back
//! (where lost writes are caught), dropping and cleaning copies in one or
//! every CPU, the read snoop that turns other copies shared, cache fills,
//! WC buffer drains, and fences.

use memtype::MemType;

use super::{PendingFlush, State};
use crate::addr::{LINE_SIZE, Line, span};
use crate::cache::Entry;
use crate::ids::{Actor, AgentId};
use crate::provenance::Stamp;
use crate::verdict::{LostWrite, Verdict, WritebackCause};
use crate::wc::WcBuf;

impl State {
    /// Puts a dirty line's data in memory on behalf of `cpu`, recording a
    /// lost write if memory held a newer committed value.
    fn write_to_memory(&mut self, cpu: usize, line: Line, e: &Entry, cause: WritebackCause) {
        let Some(lost) = self.mem.write_back(line, &e.data, e.pristine, e.stamp) else {
            return;
        };
        let (off, len) = span(lost.mask);
        self.log.push(Verdict::LostWrite(LostWrite {
            op_index: self.op,
            addr: line.base() + off as u64,
            lost: lost.lost[off..off + len].to_vec(),
            overwritten_with: e.data[off..off + len].to_vec(),
            writer: lost.stamp.get(),
            overwritten_by: AgentId(cpu as u16),
            cause,
        }));
    }

    /// Writes `cpu`'s copy of `line` back if it is dirty; the copy stays,
    /// clean.
    pub(super) fn write_back(&mut self, cpu: usize, line: Line, cause: WritebackCause) {
        let Some(e) = self.cpus[cpu].cache.get_mut(line) else {
            return;
        };
        if !e.dirty {
            return;
        }
        e.dirty = false;
        let e = e.clone();
        self.write_to_memory(cpu, line, &e, cause);
    }

    /// Accounts for a copy that has left `cpu`'s cache.
    fn retire(&mut self, cpu: usize, line: Line, e: &Entry, cause: WritebackCause) {
        if e.dirty {
            self.write_to_memory(cpu, line, e, cause);
        }
        self.mem.remove_cached(line);
    }

    /// Removes `cpu`'s copy of `line`, writing it back first if dirty.
    pub(crate) fn drop_line(&mut self, cpu: usize, line: Line, cause: WritebackCause) {
        if let Some(e) = self.cpus[cpu].cache.remove(line) {
            self.retire(cpu, line, &e, cause);
        }
    }

    /// Removes every CPU's copy of `line` (dirty ones written back).
    pub(super) fn drop_everywhere(&mut self, line: Line, cause: WritebackCause) {
        for c in 0..self.cpus.len() {
            self.drop_line(c, line, cause);
        }
    }

    /// Removes every copy of `line` but `cpu`'s: a store's read-for-ownership.
    pub(super) fn drop_others(&mut self, cpu: usize, line: Line) {
        for c in (0..self.cpus.len()).filter(|&c| c != cpu) {
            self.drop_line(c, line, WritebackCause::Snoop);
        }
    }

    /// Writes every dirty copy of `line` back, keeping the copies.
    pub(super) fn clean_everywhere(&mut self, line: Line, cause: WritebackCause) {
        for c in 0..self.cpus.len() {
            self.write_back(c, line, cause);
        }
    }

    /// A read miss by `cpu`: other copies supply their dirty data (written
    /// back here, which gives memory the same bytes the cache-to-cache
    /// transfer would give the reader) and become shared.
    pub(super) fn share(&mut self, cpu: usize, line: Line) {
        for c in (0..self.cpus.len()).filter(|&c| c != cpu) {
            if let Some(e) = self.cpus[c].cache.get_mut(line) {
                e.exclusive = false;
            }
            self.write_back(c, line, WritebackCause::Snoop);
        }
    }

    /// Brings `line` into `cpu`'s cache from memory (the caller has snooped
    /// the other CPUs), evicting the oldest line first if the cache is full.
    pub(super) fn fill(&mut self, cpu: usize, line: Line, held_as: MemType) -> &mut Entry {
        if let Some((victim, e)) = self.cpus[cpu].cache.make_room() {
            self.retire(cpu, victim, &e, WritebackCause::Capacity);
        }
        self.check_fill_alias(cpu, line, held_as);
        let r = self.mem.read_line(line);
        self.mem.add_cached(line);
        let mut e = Entry::new(r.data, r.pristine, r.stamp, held_as);
        e.exclusive = !self
            .cpus
            .iter()
            .enumerate()
            .any(|(c, other)| c != cpu && other.cache.get(line).is_some());
        self.cpus[cpu].cache.insert(line, e)
    }

    /// Drains `cpu`'s WC buffer for `line`, if it has one: an agent's own
    /// access to a line sees its own earlier stores.
    #[inline]
    pub(super) fn drain_wc_line(&mut self, cpu: usize, line: Line) {
        if let Some(b) = self.cpus[cpu].wc.take(line) {
            self.drain(cpu, b);
        }
    }

    /// Drains every WC buffer of `cpu`, oldest first.
    pub(super) fn drain_wc_all(&mut self, cpu: usize) {
        while let Some(b) = self.cpus[cpu].wc.pop_oldest() {
            self.drain(cpu, b);
        }
    }

    /// A WC buffer reaches memory: this is when its stores commit.
    pub(super) fn drain(&mut self, cpu: usize, b: WcBuf) {
        if b.snoop {
            self.drop_everywhere(b.line, WritebackCause::Snoop);
        }
        let stamp = Stamp::new(b.last_op, Actor::Cpu(AgentId(cpu as u16)));
        self.mem.commit(b.line, &b.data, b.mask, stamp);
    }

    /// Gathers a store in `cpu`'s WC buffers, draining what that pushes out.
    pub(super) fn wc_gather(
        &mut self,
        cpu: usize,
        line: Line,
        off: usize,
        bytes: &[u8],
        via: MemType,
    ) {
        let store = crate::wc::WcStore {
            line,
            off,
            bytes,
            via,
            snoop: via == MemType::WcPlus,
            op: self.op,
        };
        if let Some(b) = self.cpus[cpu].wc.store(store) {
            self.drain(cpu, b);
        }
    }

    /// A committed write of `bytes` at `off` of `line` straight to memory.
    pub(super) fn commit_bytes(&mut self, line: Line, off: usize, bytes: &[u8], writer: Actor) {
        let mut data = [0u8; LINE_SIZE];
        data[off..off + bytes.len()].copy_from_slice(bytes);
        let mask = crate::addr::byte_mask(off, bytes.len());
        self.mem
            .commit(line, &data, mask, Stamp::new(self.op, writer));
    }

    /// SFENCE / MFENCE: drain the WC buffers, then complete the queued
    /// CLFLUSHOPT / CLWB in issue order.
    pub(super) fn fence(&mut self, cpu: usize) {
        self.drain_wc_all(cpu);
        let mut pending = std::mem::take(&mut self.cpus[cpu].pending);
        for &PendingFlush { line, keep } in &pending {
            if keep {
                self.clean_everywhere(line, WritebackCause::Flush);
            } else {
                self.drop_everywhere(line, WritebackCause::Flush);
            }
        }
        pending.clear();
        self.cpus[cpu].pending = pending;
    }

    /// CLFLUSH: ordered after the agent's own older stores to the line.
    pub(super) fn clflush(&mut self, cpu: usize, line: Line) {
        self.drain_wc_line(cpu, line);
        self.drop_everywhere(line, WritebackCause::Flush);
    }

    /// WBINVD: serializing (a fence), then the agent's own cache is written
    /// back and emptied in address order.
    pub(super) fn wbinvd(&mut self, cpu: usize) {
        self.fence(cpu);
        for line in self.cpus[cpu].cache.lines() {
            self.drop_line(cpu, line, WritebackCause::Wbinvd);
        }
    }
}
