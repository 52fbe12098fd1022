//! A deliberately simple second implementation of the simulator's
//! semantics, for differential testing: byte maps instead of pages and
//! masks, no exclusive-state shortcut, no stamps, no memoized digests, and
//! an enumeration that tries every spontaneous event before every action.
//! It shares only the vocabulary (`Action`, `MemType`, `Untouched`) with the
//! crate under test.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use coherence::{Action, MemType, Untouched};

const LINE: u64 = 64;
const PAGE: u64 = 4096;

/// What a brute-force run found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Values returned, per operation index.
    pub reads: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    pub stale: bool,
    pub lost: bool,
    pub leak: bool,
    pub alias: bool,
}

/// The fixed parts of a machine.
#[derive(Debug, Clone)]
pub struct Setup {
    pub untouched: Untouched,
    pub cpus: usize,
    /// `None`: unbounded.
    pub capacity: Option<usize>,
    pub wc_slots: usize,
    /// One entry per device.
    pub snooping: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Cached {
    bytes: Vec<u8>,
    pristine: Vec<bool>,
    dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Gathered {
    line: u64,
    bytes: BTreeMap<u64, u8>,
    snoop: bool,
    uncached: bool,
}

/// The machine. Memory bytes absent from `mem` are untouched (the previous
/// owner's); the truth of bytes absent from `truth` is their untouched value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Machine {
    mem: BTreeMap<u64, (u8, bool)>,
    truth: BTreeMap<u64, u8>,
    caches: Vec<BTreeMap<u64, Cached>>,
    fill_order: Vec<Vec<u64>>,
    wc: Vec<Vec<Gathered>>,
    pending: Vec<Vec<(u64, bool)>>,
}

/// Verdict kinds raised by one step.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    pub stale: bool,
    pub lost: bool,
    pub leak: bool,
    pub alias: bool,
}

struct Run<'a> {
    setup: &'a Setup,
    raised: Raised,
}

fn lines(addr: u64, len: u64) -> Vec<u64> {
    let first = addr / LINE;
    let last = (addr + len - 1) / LINE;
    (first..=last).collect()
}

impl Machine {
    pub fn new(setup: &Setup) -> Machine {
        Machine {
            mem: BTreeMap::new(),
            truth: BTreeMap::new(),
            caches: vec![BTreeMap::new(); setup.cpus],
            fill_order: vec![Vec::new(); setup.cpus],
            wc: vec![Vec::new(); setup.cpus],
            pending: vec![Vec::new(); setup.cpus],
        }
    }

    /// Performs one action; returns what it read and the verdicts it raised.
    pub fn step(&mut self, setup: &Setup, action: &Action) -> (Option<Vec<u8>>, Raised) {
        let mut run = Run {
            setup,
            raised: Raised::default(),
        };
        let read = run.action(self, action);
        (read, run.raised)
    }

    /// The spontaneous events enabled now, as closures' inputs.
    fn events(&self, clean: bool, wc: bool) -> Vec<(usize, u64, bool)> {
        let mut v = Vec::new();
        for cpu in 0..self.caches.len() {
            for (&line, c) in &self.caches[cpu] {
                if clean || c.dirty {
                    v.push((cpu, line, false));
                }
            }
            if wc {
                for g in &self.wc[cpu] {
                    v.push((cpu, g.line, true));
                }
            }
        }
        v
    }

    fn apply_event(&mut self, setup: &Setup, (cpu, line, is_wc): (usize, u64, bool)) -> Raised {
        let mut run = Run {
            setup,
            raised: Raised::default(),
        };
        if is_wc {
            run.drain_own_line(self, cpu, line);
        } else {
            run.drop_line(self, cpu, line);
        }
        run.raised
    }
}

impl Run<'_> {
    fn untouched(&self, addr: u64) -> u8 {
        self.setup.untouched.byte_at(addr)
    }

    fn leaks(&self) -> bool {
        matches!(self.setup.untouched, Untouched::PreviousOwner { .. })
    }

    fn mem(&self, m: &Machine, addr: u64) -> (u8, bool) {
        m.mem
            .get(&addr)
            .copied()
            .unwrap_or((self.untouched(addr), true))
    }

    fn truth(&self, m: &Machine, addr: u64) -> u8 {
        m.truth.get(&addr).copied().unwrap_or(self.untouched(addr))
    }

    fn commit(&self, m: &mut Machine, addr: u64, v: u8) {
        m.mem.insert(addr, (v, false));
        m.truth.insert(addr, v);
    }

    fn write_back_data(&mut self, m: &mut Machine, line: u64, c: &Cached) {
        for i in 0..LINE {
            let a = line * LINE + i;
            let t = self.truth(m, a);
            let new = c.bytes[i as usize];
            if self.mem(m, a).0 == t && new != t {
                self.raised.lost = true;
            }
            m.mem.insert(a, (new, c.pristine[i as usize]));
        }
    }

    fn clean(&mut self, m: &mut Machine, cpu: usize, line: u64) {
        if let Some(c) = m.caches[cpu].get(&line).cloned().filter(|c| c.dirty) {
            self.write_back_data(m, line, &c);
            if let Some(c) = m.caches[cpu].get_mut(&line) {
                c.dirty = false;
            }
        }
    }

    fn drop_line(&mut self, m: &mut Machine, cpu: usize, line: u64) {
        if let Some(c) = m.caches[cpu].remove(&line) {
            if c.dirty {
                self.write_back_data(m, line, &c);
            }
            m.fill_order[cpu].retain(|&l| l != line);
        }
    }

    fn drop_everywhere(&mut self, m: &mut Machine, line: u64) {
        for cpu in 0..m.caches.len() {
            self.drop_line(m, cpu, line);
        }
    }

    fn clean_everywhere(&mut self, m: &mut Machine, line: u64) {
        for cpu in 0..m.caches.len() {
            self.clean(m, cpu, line);
        }
    }

    fn fill(&mut self, m: &mut Machine, cpu: usize, line: u64) {
        if self
            .setup
            .capacity
            .is_some_and(|cap| m.caches[cpu].len() >= cap)
        {
            let victim = m.fill_order[cpu][0];
            self.drop_line(m, cpu, victim);
        }
        if m.wc.iter().any(|bufs| {
            bufs.iter()
                .any(|g| g.uncached && g.line * LINE / PAGE == line * LINE / PAGE)
        }) {
            self.raised.alias = true;
        }
        let mut c = Cached {
            bytes: vec![0; LINE as usize],
            pristine: vec![false; LINE as usize],
            dirty: false,
        };
        for i in 0..LINE {
            let (v, p) = self.mem(m, line * LINE + i);
            c.bytes[i as usize] = v;
            c.pristine[i as usize] = p;
        }
        m.caches[cpu].insert(line, c);
        m.fill_order[cpu].push(line);
    }

    fn alias_check(&mut self, m: &Machine, line: u64) {
        let page = line * LINE / PAGE;
        if m.caches
            .iter()
            .any(|c| c.keys().any(|&l| l * LINE / PAGE == page))
        {
            self.raised.alias = true;
        }
    }

    fn drain(&mut self, m: &mut Machine, g: Gathered) {
        if g.snoop {
            self.drop_everywhere(m, g.line);
        }
        for (&a, &v) in &g.bytes {
            self.commit(m, a, v);
        }
    }

    fn drain_own_line(&mut self, m: &mut Machine, cpu: usize, line: u64) {
        if let Some(i) = m.wc[cpu].iter().position(|g| g.line == line) {
            let g = m.wc[cpu].remove(i);
            self.drain(m, g);
        }
    }

    fn drain_all(&mut self, m: &mut Machine, cpu: usize) {
        while !m.wc[cpu].is_empty() {
            let g = m.wc[cpu].remove(0);
            self.drain(m, g);
        }
    }

    fn gather(
        &mut self,
        m: &mut Machine,
        cpu: usize,
        addr: u64,
        v: u8,
        snoop: bool,
        uncached: bool,
    ) {
        let line = addr / LINE;
        let i = match m.wc[cpu].iter().position(|g| g.line == line) {
            Some(i) => i,
            None => {
                if m.wc[cpu].len() >= self.setup.wc_slots {
                    let g = m.wc[cpu].remove(0);
                    self.drain(m, g);
                }
                m.wc[cpu].push(Gathered {
                    line,
                    bytes: BTreeMap::new(),
                    snoop: false,
                    uncached,
                });
                m.wc[cpu].len() - 1
            }
        };
        let g = &mut m.wc[cpu][i];
        g.bytes.insert(addr, v);
        g.snoop |= snoop;
        g.uncached = uncached;
    }

    /// Drains a buffer whose 64 bytes are all written.
    fn drain_if_full(&mut self, m: &mut Machine, cpu: usize, line: u64) {
        if let Some(i) = m.wc[cpu]
            .iter()
            .position(|g| g.line == line && g.bytes.len() == LINE as usize)
        {
            let g = m.wc[cpu].remove(i);
            self.drain(m, g);
        }
    }

    fn check(&mut self, m: &Machine, addr: u64, got: u8, pristine: bool) {
        if got != self.truth(m, addr) {
            if pristine && self.leaks() {
                self.raised.leak = true;
            } else {
                self.raised.stale = true;
            }
        }
    }

    fn cpu_load(
        &mut self,
        m: &mut Machine,
        cpu: usize,
        addr: u64,
        len: u64,
        mt: MemType,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines(addr, len) {
            let lo = addr.max(line * LINE);
            let hi = (addr + len).min((line + 1) * LINE);
            self.drain_own_line(m, cpu, line);
            let from_cache = match mt {
                MemType::Wb | MemType::Wt | MemType::Wp => {
                    if !m.caches[cpu].contains_key(&line) {
                        for other in (0..m.caches.len()).filter(|&c| c != cpu) {
                            self.clean(m, other, line);
                        }
                        self.fill(m, cpu, line);
                    }
                    true
                }
                MemType::Uc | MemType::UcMinus | MemType::Cd => {
                    self.drain_all(m, cpu);
                    self.alias_check(m, line);
                    self.clean_everywhere(m, line);
                    false
                }
                MemType::Wc => {
                    self.alias_check(m, line);
                    false
                }
                MemType::WcPlus => {
                    self.alias_check(m, line);
                    self.clean_everywhere(m, line);
                    false
                }
            };
            for a in lo..hi {
                let (v, p) = if from_cache {
                    let c = &m.caches[cpu][&line];
                    let i = (a - line * LINE) as usize;
                    (c.bytes[i], c.pristine[i])
                } else {
                    self.mem(m, a)
                };
                self.check(m, a, v, p);
                out.push(v);
            }
        }
        out
    }

    fn cpu_store(
        &mut self,
        m: &mut Machine,
        cpu: usize,
        addr: u64,
        bytes: &[u8],
        mt: MemType,
        nt: bool,
    ) {
        let len = bytes.len() as u64;
        for line in lines(addr, len) {
            let lo = addr.max(line * LINE);
            let hi = (addr + len).min((line + 1) * LINE);
            let mine = |a: u64| bytes[(a - addr) as usize];
            let to_memory = |run: &mut Run<'_>, m: &mut Machine| {
                for a in lo..hi {
                    run.commit(m, a, mine(a));
                }
            };
            match (nt, mt) {
                (true, MemType::Wb | MemType::Wt) => {
                    self.drop_everywhere(m, line);
                    for a in lo..hi {
                        self.gather(m, cpu, a, mine(a), false, false);
                    }
                    self.drain_if_full(m, cpu, line);
                }
                (_, MemType::Wb) => {
                    self.drain_own_line(m, cpu, line);
                    for other in (0..m.caches.len()).filter(|&c| c != cpu) {
                        self.drop_line(m, other, line);
                    }
                    if !m.caches[cpu].contains_key(&line) {
                        self.fill(m, cpu, line);
                    }
                    let c = m.caches[cpu].get_mut(&line).expect("filled");
                    for a in lo..hi {
                        let i = (a - line * LINE) as usize;
                        c.bytes[i] = mine(a);
                        c.pristine[i] = false;
                    }
                    c.dirty = true;
                    for a in lo..hi {
                        m.truth.insert(a, mine(a));
                    }
                }
                (_, MemType::Wt) => {
                    self.drain_own_line(m, cpu, line);
                    for other in (0..m.caches.len()).filter(|&c| c != cpu) {
                        self.drop_line(m, other, line);
                    }
                    if let Some(c) = m.caches[cpu].get_mut(&line) {
                        for a in lo..hi {
                            let i = (a - line * LINE) as usize;
                            c.bytes[i] = mine(a);
                            c.pristine[i] = false;
                        }
                    }
                    to_memory(self, m);
                }
                (_, MemType::Wp) => {
                    self.drain_own_line(m, cpu, line);
                    self.drop_everywhere(m, line);
                    to_memory(self, m);
                }
                (_, MemType::Uc | MemType::UcMinus | MemType::Cd) => {
                    self.drain_all(m, cpu);
                    self.alias_check(m, line);
                    self.drop_everywhere(m, line);
                    to_memory(self, m);
                }
                (_, MemType::Wc | MemType::WcPlus) => {
                    self.alias_check(m, line);
                    for a in lo..hi {
                        self.gather(m, cpu, a, mine(a), mt == MemType::WcPlus, true);
                    }
                    self.drain_if_full(m, cpu, line);
                }
            }
        }
    }

    fn fence(&mut self, m: &mut Machine, cpu: usize) {
        self.drain_all(m, cpu);
        for (line, keep) in std::mem::take(&mut m.pending[cpu]) {
            if keep {
                self.clean_everywhere(m, line);
            } else {
                self.drop_everywhere(m, line);
            }
        }
    }

    fn action(&mut self, m: &mut Machine, action: &Action) -> Option<Vec<u8>> {
        match action {
            Action::Load {
                agent,
                addr,
                len,
                mem_type,
            } => Some(self.cpu_load(m, agent.index(), *addr, *len as u64, *mem_type)),
            Action::Store {
                agent,
                addr,
                value,
                mem_type,
            } => {
                self.cpu_store(m, agent.index(), *addr, value.as_slice(), *mem_type, false);
                None
            }
            Action::NtStore {
                agent,
                addr,
                value,
                mem_type,
            } => {
                self.cpu_store(m, agent.index(), *addr, value.as_slice(), *mem_type, true);
                None
            }
            Action::Clflush { agent, addr } => {
                self.drain_own_line(m, agent.index(), addr / LINE);
                self.drop_everywhere(m, addr / LINE);
                None
            }
            Action::Clflushopt { agent, addr } => {
                m.pending[agent.index()].push((addr / LINE, false));
                None
            }
            Action::Clwb { agent, addr } => {
                m.pending[agent.index()].push((addr / LINE, true));
                None
            }
            Action::Sfence { agent } | Action::Mfence { agent } => {
                self.fence(m, agent.index());
                None
            }
            Action::Wbinvd { agent } => {
                let cpu = agent.index();
                self.fence(m, cpu);
                let own: Vec<u64> = m.caches[cpu].keys().copied().collect();
                for line in own {
                    self.drop_line(m, cpu, line);
                }
                None
            }
            Action::DmaRead { dev, addr, len } => {
                let snooping = self.setup.snooping[dev.index()];
                let mut out = Vec::new();
                for a in *addr..*addr + *len as u64 {
                    let line = a / LINE;
                    let dirty = m
                        .caches
                        .iter()
                        .find_map(|c| c.get(&line).filter(|c| c.dirty && snooping));
                    let (v, p) = match dirty {
                        Some(c) => {
                            let i = (a - line * LINE) as usize;
                            (c.bytes[i], c.pristine[i])
                        }
                        None => self.mem(m, a),
                    };
                    self.check(m, a, v, p);
                    out.push(v);
                }
                Some(out)
            }
            Action::DmaWrite { dev, addr, bytes } => {
                let snooping = self.setup.snooping[dev.index()];
                for line in lines(*addr, bytes.len() as u64) {
                    if snooping {
                        self.drop_everywhere(m, line);
                    }
                }
                for (i, &v) in bytes.iter().enumerate() {
                    self.commit(m, addr + i as u64, v);
                }
                None
            }
            Action::Evict { agent, line } => {
                self.drop_line(m, agent.index(), line.0);
                None
            }
        }
    }
}

/// Runs `program` with no spontaneous events; one entry per action.
pub fn run(setup: &Setup, program: &[Action]) -> Vec<(Option<Vec<u8>>, Raised)> {
    let mut m = Machine::new(setup);
    program.iter().map(|a| m.step(setup, a)).collect()
}

/// Every schedule: before each action and after the last, any enabled
/// spontaneous event, any number of times, in any order. Identical
/// (position, machine) pairs are expanded once.
pub fn enumerate(setup: &Setup, program: &[Action], clean: bool, wc: bool) -> Findings {
    let mut f = Findings::default();
    let mut seen = HashSet::new();
    visit(
        setup,
        program,
        clean,
        wc,
        Machine::new(setup),
        0,
        &mut seen,
        &mut f,
    );
    f
}

fn note(f: &mut Findings, r: Raised) {
    f.stale |= r.stale;
    f.lost |= r.lost;
    f.leak |= r.leak;
    f.alias |= r.alias;
}

#[allow(clippy::too_many_arguments)]
fn visit(
    setup: &Setup,
    program: &[Action],
    clean: bool,
    wc: bool,
    m: Machine,
    at: usize,
    seen: &mut HashSet<(usize, Machine)>,
    f: &mut Findings,
) {
    if !seen.insert((at, m.clone())) {
        return;
    }
    for ev in m.events(clean, wc) {
        let mut next = m.clone();
        let r = next.apply_event(setup, ev);
        note(f, r);
        visit(setup, program, clean, wc, next, at, seen, f);
    }
    if let Some(action) = program.get(at) {
        let mut next = m;
        let (read, r) = next.step(setup, action);
        note(f, r);
        if let Some(bytes) = read {
            f.reads.entry(at as u64).or_default().insert(bytes);
        }
        visit(setup, program, clean, wc, next, at + 1, seen, f);
    }
}
