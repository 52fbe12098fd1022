//! Explore mode: which outcomes of a small program depend on *when* the
//! hardware writes back dirty lines (and, optionally, evicts clean lines and
//! drains WC buffers early).
//!
//! The deterministic [`State::step`] never evicts on its own. [`explore`]
//! instead runs the program under every schedule of spontaneous events: at
//! each point between two operations (and after the last one), any enabled
//! event may happen, any number of times, in any order. It is a depth-first
//! search over `(position in program, state)` that expands each distinct
//! state once (states are recognised by a 128-bit [`State`] digest), so
//! orders of events that lead to the same state are not re-explored.
//!
//! **Bound.** At most [`ExploreConfig::max_states`] states are expanded;
//! past that the report says `complete: false` and its outcome sets are a
//! subset of the possible ones. Programs of a dozen operations over a few
//! lines stay far below the default.
//!
//! **Not explored** (each is a documented simplification): CLFLUSHOPT/CLWB
//! complete only at the agent's fence, never earlier (the latest the
//! architecture allows, so an unfenced flush shows its hazard); speculative
//! fills of lines through cacheable mappings; reordering of loads. Events
//! are per line, so a partial write-back of a line never happens.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::action::Action;
use crate::error::Error;
use crate::hash::Fingerprint;
use crate::ids::Actor;
use crate::property::Property;
use crate::state::State;
use crate::value::ReadData;
use crate::verdict::Verdict;

/// What the explorer lets the hardware do between operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExploreConfig {
    /// Also evict clean lines (a stale clean copy may then be refetched).
    /// Dirty lines may always be written back.
    pub clean_evictions: bool,
    /// Also drain WC buffers early (WC stores may become visible before the
    /// fence that guarantees it).
    pub wc_drains: bool,
    /// Most states expanded before giving up completeness.
    pub max_states: usize,
}

impl Default for ExploreConfig {
    fn default() -> ExploreConfig {
        ExploreConfig {
            clean_evictions: true,
            wc_drains: true,
            max_states: 200_000,
        }
    }
}

/// Every value one read of the program returned across the schedules
/// explored. A read with more than one outcome is *timing dependent*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcomes {
    /// The read's operation index.
    pub op_index: u64,
    /// Who read.
    pub reader: Actor,
    /// Where.
    pub addr: u64,
    /// The distinct byte strings returned, sorted.
    pub outcomes: Vec<Vec<u8>>,
}

impl ReadOutcomes {
    /// Whether the value depends on the timing of evictions and drains.
    pub fn is_timing_dependent(&self) -> bool {
        self.outcomes.len() > 1
    }
}

/// The result of [`explore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExploreReport {
    /// Distinct states expanded.
    pub states: usize,
    /// Whether every schedule was covered (the bound was not reached).
    pub complete: bool,
    /// One entry per read of the program, in program order (a read no
    /// explored schedule reached is absent).
    pub reads: Vec<ReadOutcomes>,
    /// Every distinct verdict raised by some schedule, in the order first
    /// found.
    pub verdicts: Vec<Verdict>,
}

impl ExploreReport {
    /// Whether some schedule violates `property`.
    pub fn possible(&self, property: Property) -> bool {
        self.verdicts.iter().any(|v| v.property() == property)
    }

    /// The reads whose value depends on timing.
    pub fn timing_dependent(&self) -> impl Iterator<Item = &ReadOutcomes> {
        self.reads.iter().filter(|r| r.is_timing_dependent())
    }

    /// The outcomes of the read at `op_index`.
    pub fn outcomes(&self, op_index: u64) -> Option<&[Vec<u8>]> {
        self.reads
            .iter()
            .find(|r| r.op_index == op_index)
            .map(|r| r.outcomes.as_slice())
    }
}

/// Runs `program` from `initial` under every schedule of spontaneous events
/// (see the module docs). Verdicts `initial` already holds are not
/// reported.
pub fn explore(
    initial: &State,
    program: &[Action],
    config: &ExploreConfig,
) -> Result<ExploreReport, Error> {
    let mut ex = Explorer {
        program,
        config,
        seen: HashSet::new(),
        reads: BTreeMap::new(),
        verdicts: Vec::new(),
        verdict_set: HashSet::new(),
        complete: true,
    };
    let mut start = initial.clone();
    start.take_verdicts();
    ex.visit(start, 0)?;
    Ok(ExploreReport {
        states: ex.seen.len(),
        complete: ex.complete,
        reads: ex
            .reads
            .into_iter()
            .map(|(op_index, (reader, addr, set))| ReadOutcomes {
                op_index,
                reader,
                addr,
                outcomes: set.into_iter().collect(),
            })
            .collect(),
        verdicts: ex.verdicts,
    })
}

struct Explorer<'a> {
    program: &'a [Action],
    config: &'a ExploreConfig,
    seen: HashSet<(usize, Fingerprint)>,
    reads: BTreeMap<u64, (Actor, u64, BTreeSet<Vec<u8>>)>,
    verdicts: Vec<Verdict>,
    verdict_set: HashSet<Verdict>,
    complete: bool,
}

impl Explorer<'_> {
    fn visit(&mut self, mut s: State, at: usize) -> Result<(), Error> {
        if self.seen.len() >= self.config.max_states {
            self.complete = false;
            return Ok(());
        }
        if !self.seen.insert((at, s.fingerprint())) {
            return Ok(());
        }
        for ev in s.events(self.config.clean_evictions, self.config.wc_drains) {
            let mut t = s.clone();
            t.apply(ev);
            self.collect(&mut t);
            self.visit(t, at)?;
        }
        if let Some(action) = self.program.get(at) {
            let out = s.step(action)?;
            if let (Some(read), Some((reader, addr))) = (out.read, reader_of(action)) {
                let bytes = match read {
                    ReadData::Cpu(v) => v.as_slice().to_vec(),
                    ReadData::Dma(b) => b,
                };
                self.reads
                    .entry(out.op_index)
                    .or_insert_with(|| (reader, addr, BTreeSet::new()))
                    .2
                    .insert(bytes);
            }
            self.collect(&mut s);
            self.visit(s, at + 1)?;
        }
        Ok(())
    }

    fn collect(&mut self, s: &mut State) {
        for v in s.take_verdicts() {
            if self.verdict_set.insert(v.clone()) {
                self.verdicts.push(v);
            }
        }
    }
}

/// Who reads where, for the actions that read.
fn reader_of(action: &Action) -> Option<(Actor, u64)> {
    match action {
        Action::Load { agent, addr, .. } => Some((Actor::Cpu(*agent), *addr)),
        Action::DmaRead { dev, addr, .. } => Some((Actor::Dma(*dev), *addr)),
        _ => None,
    }
}
