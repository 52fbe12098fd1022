//! What the explorer needs from a state: the spontaneous events the
//! hardware may perform between two operations, applying one, and a digest
//! of everything that influences the future.

use super::State;
use crate::addr::Line;
use crate::hash::Fingerprint;
use crate::verdict::{Verdict, WritebackCause};

/// Something the hardware may do at any moment, outside program order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A CPU's cache evicts a line (written back if dirty).
    Evict { cpu: usize, line: Line },
    /// A CPU's WC buffer drains early.
    DrainWc { cpu: usize, line: Line },
}

impl State {
    /// The events enabled now: eviction of every dirty line (and of every
    /// clean line if `clean`), and early drain of every WC buffer if `wc`.
    pub(crate) fn events(&self, clean: bool, wc: bool) -> Vec<Event> {
        let mut v = Vec::new();
        for (cpu, c) in self.cpus.iter().enumerate() {
            for line in c.cache.lines() {
                if clean || c.cache.get(line).is_some_and(|e| e.dirty) {
                    v.push(Event::Evict { cpu, line });
                }
            }
            if wc {
                v.extend(c.wc.iter().map(|b| Event::DrainWc { cpu, line: b.line }));
            }
        }
        v
    }

    /// Performs `event` between operations: verdicts it raises carry the
    /// index of the next operation.
    pub(crate) fn apply(&mut self, event: Event) {
        self.op = self.next_op;
        match event {
            Event::Evict { cpu, line } => self.drop_line(cpu, line, WritebackCause::Spontaneous),
            Event::DrainWc { cpu, line } => self.drain_wc_line(cpu, line),
        }
    }

    /// Takes the verdicts raised so far out of the state.
    pub(crate) fn take_verdicts(&mut self) -> Vec<Verdict> {
        self.log.drain()
    }

    /// A digest of everything that determines the state's future behaviour
    /// (not the verdicts already raised, nor the operation counter).
    pub(crate) fn fingerprint(&mut self) -> Fingerprint {
        let mut fp = Fingerprint::default();
        fp.nest(self.mem.fingerprint());
        for c in &self.cpus {
            c.cache.fingerprint(&mut fp);
            c.wc.fingerprint(&mut fp);
            fp.word(c.pending.len() as u64);
            for p in &c.pending {
                fp.word(p.line.0);
                fp.word(u64::from(p.keep));
            }
        }
        fp
    }
}
