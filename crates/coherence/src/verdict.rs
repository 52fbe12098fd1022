//! The hazards the simulator detects, each with the evidence for both sides:
//! who read or overwrote, which write was missed or lost, where the newer
//! value still lives, and the operation indices of both.

use core::fmt;

use memtype::MemType;

use crate::addr::Line;
use crate::ids::{Actor, AgentId};
use crate::property::Property;
use crate::provenance::WriteRef;
use crate::value::hex;

/// Where the value a stale read missed was at the time of the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// Dirty in this CPU's cache: memory had not seen it (the seeds' case:
    /// the guest's data sits in the cache while the device reads memory).
    DirtyCache(AgentId),
    /// In memory: the reader used an older cached copy (an alias).
    Memory,
    /// Only in this CPU's cache, clean.
    CleanCache(AgentId),
    /// Nowhere any more: it was overwritten by a lost write.
    Nowhere,
}

/// Why a dirty line was written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WritebackCause {
    /// An explicit [`crate::Action::Evict`].
    Evict,
    /// The owning cache was full and picked the line as its victim.
    Capacity,
    /// CLFLUSH, or CLFLUSHOPT/CLWB completed by a fence.
    Flush,
    /// Another agent's access probed the line (a read snoop, a store's
    /// read-for-ownership, an uncached or WC+ access, snooping DMA).
    Snoop,
    /// WBINVD on the owning CPU.
    Wbinvd,
    /// A spontaneous eviction inserted by the explorer.
    Spontaneous,
}

/// A read returned data older than the latest committed write.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StaleRead {
    /// The read's operation index.
    pub op_index: u64,
    /// Who read.
    pub reader: Actor,
    /// Address of the first stale byte.
    pub addr: u64,
    /// The committed bytes from `addr` to the last stale byte of the line.
    pub expected: Vec<u8>,
    /// What the read returned for the same bytes.
    pub got: Vec<u8>,
    /// The line's most recent committed write (stamps are per line, so the
    /// stale bytes may come from an earlier write to the same line).
    pub newer_write: Option<WriteRef>,
    /// Where the expected bytes were.
    pub newer_value_held_by: Holder,
}

/// A write-back of an older dirty line destroyed a newer value in memory
/// (the SDM's WC-aliasing hazard, or a non-snooping DMA write overwritten).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LostWrite {
    /// Operation index at which the write-back happened (for a spontaneous
    /// eviction, the index of the next operation).
    pub op_index: u64,
    /// Address of the first lost byte.
    pub addr: u64,
    /// The committed bytes that were in memory, from `addr` to the last
    /// lost byte of the line.
    pub lost: Vec<u8>,
    /// What the write-back put there instead.
    pub overwritten_with: Vec<u8>,
    /// The write that had put the lost bytes in memory (per line).
    pub writer: Option<WriteRef>,
    /// The CPU whose dirty line was written back.
    pub overwritten_by: AgentId,
    /// Why it was written back.
    pub cause: WritebackCause,
}

/// One physical page used through an uncached type while a CPU cache holds
/// one of its lines: the aliasing the SDM does not support.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConflictingAlias {
    /// The operation that met the alias.
    pub op_index: u64,
    /// Physical address of the page.
    pub page: u64,
    /// The cached line of that page.
    pub cached_line: Line,
    /// The CPU whose cache holds it.
    pub cached_by: AgentId,
    /// The mapping type that cached it (WB, WT or WP).
    pub cached_as: MemType,
    /// The CPU using the page uncached.
    pub uncached_by: AgentId,
    /// Its type (UC, UC-, WC, WC+ or CD).
    pub uncached_as: MemType,
    /// Whether the uncached access probes caches (UC, UC-, CD, WC+), which
    /// keeps the data correct; a WC access does not, and that is the
    /// hazard the stale-read and lost-write verdicts then show.
    pub snooped: bool,
}

/// A read returned the previous owner's bytes where the host had written
/// something else (typically zeroed the page through a cached mapping and
/// not flushed before handing it to a noncoherent device).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InfoLeak {
    /// The read's operation index.
    pub op_index: u64,
    /// Who read.
    pub reader: Actor,
    /// Address of the first leaked byte.
    pub addr: u64,
    /// The previous owner's bytes the read returned, from `addr` to the
    /// last leaked byte of the line.
    pub leaked: Vec<u8>,
    /// The committed bytes (zeros when the host erased the page).
    pub expected: Vec<u8>,
    /// The line's most recent committed write (the erasure).
    pub erased_by: Option<WriteRef>,
}

/// One detected hazard.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// See [`StaleRead`].
    StaleRead(StaleRead),
    /// See [`LostWrite`].
    LostWrite(LostWrite),
    /// See [`ConflictingAlias`].
    ConflictingAlias(ConflictingAlias),
    /// See [`InfoLeak`].
    InfoLeak(InfoLeak),
}

impl Verdict {
    /// The property this verdict violates.
    pub fn property(&self) -> Property {
        match self {
            Verdict::StaleRead(_) => Property::NoStaleRead,
            Verdict::LostWrite(_) => Property::NoLostWrite,
            Verdict::ConflictingAlias(_) => Property::NoConflictingAlias,
            Verdict::InfoLeak(_) => Property::NoInfoLeak,
        }
    }

    /// The operation index at which it was detected.
    pub fn op_index(&self) -> u64 {
        match self {
            Verdict::StaleRead(v) => v.op_index,
            Verdict::LostWrite(v) => v.op_index,
            Verdict::ConflictingAlias(v) => v.op_index,
            Verdict::InfoLeak(v) => v.op_index,
        }
    }

    /// Renders the verdict naming actors with `name` (e.g. the names given
    /// to [`crate::State::add_cpu`]); `Display` uses the ids.
    pub fn render<'a>(&'a self, name: &'a dyn Fn(Actor) -> String) -> impl fmt::Display + 'a {
        Rendered { v: self, name }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Rendered {
            v: self,
            name: &|a: Actor| a.to_string(),
        }
        .fmt(f)
    }
}

struct Rendered<'a> {
    v: &'a Verdict,
    name: &'a dyn Fn(Actor) -> String,
}

impl Rendered<'_> {
    fn write(&self, w: Option<WriteRef>) -> String {
        match w {
            Some(w) => format!("op #{} by {}", w.op_index, (self.name)(w.writer)),
            None => "the initial contents".to_string(),
        }
    }

    fn holder(&self, h: Holder) -> String {
        let cpu = |a: AgentId| (self.name)(Actor::Cpu(a));
        match h {
            Holder::DirtyCache(a) => format!("dirty in {}'s cache", cpu(a)),
            Holder::CleanCache(a) => format!("clean in {}'s cache only", cpu(a)),
            Holder::Memory => "in memory".to_string(),
            Holder::Nowhere => "nowhere (lost)".to_string(),
        }
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.name;
        let cpu = |a: AgentId| n(Actor::Cpu(a));
        match self.v {
            Verdict::StaleRead(v) => write!(
                f,
                "stale read: op #{} {} read {:#x} and got {}, expected {} written by {} (held {})",
                v.op_index,
                n(v.reader),
                v.addr,
                hex(&v.got),
                hex(&v.expected),
                self.write(v.newer_write),
                self.holder(v.newer_value_held_by),
            ),
            Verdict::LostWrite(v) => write!(
                f,
                "lost write: op #{} {}'s write-back ({:?}) overwrote {} at {:#x} (put there by {}) with older {}",
                v.op_index,
                cpu(v.overwritten_by),
                v.cause,
                hex(&v.lost),
                v.addr,
                self.write(v.writer),
                hex(&v.overwritten_with),
            ),
            Verdict::ConflictingAlias(v) => write!(
                f,
                "conflicting alias: op #{} {} accessed page {:#x} as {} while {} holds {} as {}{}",
                v.op_index,
                cpu(v.uncached_by),
                v.page,
                v.uncached_as,
                cpu(v.cached_by),
                v.cached_line,
                v.cached_as,
                if v.snooped {
                    " (the access snoops: data stays correct)"
                } else {
                    " (the access does not snoop)"
                },
            ),
            Verdict::InfoLeak(v) => write!(
                f,
                "info leak: op #{} {} read {:#x} and got the previous owner's {}, expected {} written by {}",
                v.op_index,
                n(v.reader),
                v.addr,
                hex(&v.leaked),
                hex(&v.expected),
                self.write(v.erased_by),
            ),
        }
    }
}

/// The verdicts of a run: the first `limit` in order (always including the
/// first of each kind, so every violated property has evidence), and exact
/// counts of all.
#[derive(Debug, Clone)]
pub(crate) struct VerdictLog {
    kept: Vec<Verdict>,
    counts: [u64; Property::ALL.len()],
    limit: usize,
}

impl VerdictLog {
    pub(crate) fn new(limit: usize) -> VerdictLog {
        VerdictLog {
            kept: Vec::new(),
            counts: [0; Property::ALL.len()],
            limit,
        }
    }

    pub(crate) fn push(&mut self, v: Verdict) {
        let k = v.property() as usize;
        self.counts[k] += 1;
        if self.kept.len() < self.limit || self.counts[k] == 1 {
            self.kept.push(v);
        }
    }

    pub(crate) fn kept(&self) -> &[Verdict] {
        &self.kept
    }

    pub(crate) fn count(&self, p: Property) -> u64 {
        self.counts[p as usize]
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Empties the log, returning what it kept.
    pub(crate) fn drain(&mut self) -> Vec<Verdict> {
        self.counts = [0; Property::ALL.len()];
        std::mem::take(&mut self.kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DevId;

    fn stale(op: u64) -> Verdict {
        Verdict::StaleRead(StaleRead {
            op_index: op,
            reader: Actor::Dma(DevId(0)),
            addr: 0x1000,
            expected: vec![0xab],
            got: vec![0],
            newer_write: Some(WriteRef {
                op_index: 0,
                writer: Actor::Cpu(AgentId(1)),
            }),
            newer_value_held_by: Holder::DirtyCache(AgentId(1)),
        })
    }

    #[test]
    fn display_names_both_sides() {
        let s = stale(3).to_string();
        assert_eq!(
            s,
            "stale read: op #3 dev0 read 0x1000 and got [00], expected [ab] written by op #0 by cpu1 (held dirty in cpu1's cache)"
        );
        let names = |a: Actor| match a {
            Actor::Cpu(_) => "guest".to_string(),
            Actor::Dma(_) => "gpu".to_string(),
        };
        let r = stale(3).render(&names).to_string();
        assert!(
            r.contains("op #3 gpu read") && r.contains("by guest (held dirty in guest's cache)"),
            "{r}"
        );
    }

    #[test]
    fn the_log_keeps_the_first_of_each_kind_past_its_limit() {
        let mut log = VerdictLog::new(1);
        log.push(stale(0));
        log.push(stale(1));
        log.push(Verdict::LostWrite(LostWrite {
            op_index: 2,
            addr: 0,
            lost: vec![1],
            overwritten_with: vec![0],
            writer: None,
            overwritten_by: AgentId(0),
            cause: WritebackCause::Evict,
        }));
        assert_eq!(log.kept().len(), 2);
        assert_eq!(log.count(Property::NoStaleRead), 2);
        assert_eq!(log.total(), 3);
        assert_eq!(log.drain().len(), 2);
        assert_eq!(log.total(), 0);
    }
}
