//! The simulator state and its step function: the CPU and device arenas,
//! memory, the verdict log, and the dispatch of each [`Action`] to the
//! semantics in the submodules (`cpu` for loads and stores per memory type,
//! `coherence` for write-backs, snoops, fills and WC drains, `dma` for
//! devices, `check` for the verdict rules, `events` for what the explorer
//! needs).

mod check;
mod coherence;
mod cpu;
mod dma;
mod events;

use core::num::NonZeroUsize;

use memtype::MemType;

use crate::action::Action;
use crate::addr::{Line, chunks};
use crate::cache::{Cache, Capacity, LineState};
use crate::error::Error;
use crate::ids::{Actor, AgentId, DevId};
use crate::memory::{Memory, Untouched};
use crate::property::Property;
use crate::value::{MAX_CPU_ACCESS, ReadData, Value};
use crate::verdict::{Verdict, VerdictLog};
use crate::wc::WcBuffers;

/// Most CPUs a state takes (alias bookkeeping keeps one bit per CPU).
pub const MAX_CPUS: usize = 64;
/// Most devices a state takes.
pub const MAX_DEVICES: usize = 0x7fff;

/// How a [`State`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// What memory nobody has written holds.
    pub untouched: Untouched,
    /// Write-combining buffers per CPU (recent Intel cores have about ten
    /// fill buffers usable for WC).
    pub wc_buffers: NonZeroUsize,
    /// How many verdicts the state keeps (counts are always exact, and the
    /// first verdict of each kind is always kept).
    pub verdict_limit: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            untouched: Untouched::Zero,
            wc_buffers: NonZeroUsize::MIN.saturating_add(3),
            verdict_limit: 10_000,
        }
    }
}

/// A CLFLUSHOPT or CLWB waiting for its agent's next fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingFlush {
    pub(crate) line: Line,
    /// CLWB: keep the (now clean) copies.
    pub(crate) keep: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Cpu {
    name: String,
    pub(crate) cache: Cache,
    pub(crate) wc: WcBuffers,
    pub(crate) pending: Vec<PendingFlush>,
}

#[derive(Debug, Clone)]
pub(crate) struct Device {
    name: String,
    pub(crate) snooping: bool,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    /// The operation's index: 0 for the state's first step, then 1, 2, ...
    pub op_index: u64,
    /// The bytes a load or DMA read returned.
    pub read: Option<ReadData>,
    /// How many verdicts the step raised (see [`State::verdicts`]).
    pub new_verdicts: u64,
}

/// The whole simulated machine: memory and its truth shadow, every CPU's
/// cache, WC buffers and queued flushes, the devices, and the verdicts so
/// far. Cloning it forks the machine (the explorer does that).
#[derive(Debug, Clone)]
pub struct State {
    pub(crate) mem: Memory,
    pub(crate) cpus: Vec<Cpu>,
    pub(crate) devs: Vec<Device>,
    pub(crate) log: VerdictLog,
    /// Index of the next operation.
    next_op: u64,
    /// Index verdicts are attributed to: the operation being performed (or,
    /// for a spontaneous event, the next one).
    pub(crate) op: u64,
    wc_buffers: usize,
}

impl State {
    /// An empty machine: no agents yet, memory untouched.
    pub fn new(config: Config) -> State {
        State {
            mem: Memory::new(config.untouched),
            cpus: Vec::new(),
            devs: Vec::new(),
            log: VerdictLog::new(config.verdict_limit),
            next_op: 0,
            op: 0,
            wc_buffers: config.wc_buffers.get(),
        }
    }

    /// Adds a CPU agent with a private cache of the given capacity.
    pub fn add_cpu(
        &mut self,
        name: impl Into<String>,
        capacity: Capacity,
    ) -> Result<AgentId, Error> {
        if self.cpus.len() >= MAX_CPUS {
            return Err(Error::TooManyCpus { max: MAX_CPUS });
        }
        let id = AgentId(self.cpus.len() as u16);
        self.cpus.push(Cpu {
            name: name.into(),
            cache: Cache::new(capacity),
            wc: WcBuffers::new(self.wc_buffers),
            pending: Vec::new(),
        });
        Ok(id)
    }

    /// Adds a DMA agent; `snooping` devices see and invalidate CPU caches,
    /// the others touch memory only.
    pub fn add_dma(&mut self, name: impl Into<String>, snooping: bool) -> Result<DevId, Error> {
        if self.devs.len() >= MAX_DEVICES {
            return Err(Error::TooManyDevices { max: MAX_DEVICES });
        }
        let id = DevId(self.devs.len() as u16);
        self.devs.push(Device {
            name: name.into(),
            snooping,
        });
        Ok(id)
    }

    /// The name an agent was added with.
    pub fn name(&self, actor: Actor) -> &str {
        match actor {
            Actor::Cpu(a) => self.cpus.get(a.index()).map_or("?", |c| &c.name),
            Actor::Dma(d) => self.devs.get(d.index()).map_or("?", |d| &d.name),
        }
    }

    /// Performs one action.
    pub fn step(&mut self, action: &Action) -> Result<StepOutcome, Error> {
        let before = self.log.total();
        let op_index = self.next_op;
        let read = match action {
            Action::Load {
                agent,
                addr,
                len,
                mem_type,
            } => Some(ReadData::Cpu(self.load(*agent, *addr, *len, *mem_type)?)),
            Action::Store {
                agent,
                addr,
                value,
                mem_type,
            } => {
                self.store(*agent, *addr, *value, *mem_type)?;
                None
            }
            Action::NtStore {
                agent,
                addr,
                value,
                mem_type,
            } => {
                let cpu = self.begin_cpu(*agent, *addr, value.len())?;
                self.cpu_store(cpu, *addr, value.as_slice(), *mem_type, true);
                None
            }
            Action::Clflush { agent, addr } => {
                let cpu = self.begin_cpu(*agent, *addr, 1)?;
                self.clflush(cpu, Line::containing(*addr));
                None
            }
            Action::Clflushopt { agent, addr } | Action::Clwb { agent, addr } => {
                let cpu = self.begin_cpu(*agent, *addr, 1)?;
                self.cpus[cpu].pending.push(PendingFlush {
                    line: Line::containing(*addr),
                    keep: matches!(action, Action::Clwb { .. }),
                });
                None
            }
            Action::Sfence { agent } | Action::Mfence { agent } => {
                let cpu = self.begin_cpu(*agent, 0, 1)?;
                self.fence(cpu);
                None
            }
            Action::Wbinvd { agent } => {
                let cpu = self.begin_cpu(*agent, 0, 1)?;
                self.wbinvd(cpu);
                None
            }
            Action::DmaRead { dev, addr, len } => {
                let mut buf = vec![0u8; *len];
                self.dma_read_into(*dev, *addr, &mut buf)?;
                Some(ReadData::Dma(buf))
            }
            Action::DmaWrite { dev, addr, bytes } => {
                let d = self.begin_dma(*dev, *addr, bytes.len())?;
                self.dma_write(d, *addr, bytes);
                None
            }
            Action::Evict { agent, line } => {
                let cpu = self.begin_cpu(*agent, line.base(), 1)?;
                self.drop_line(cpu, *line, crate::verdict::WritebackCause::Evict);
                None
            }
        };
        Ok(StepOutcome {
            op_index,
            read,
            new_verdicts: self.log.total() - before,
        })
    }

    /// Performs every action in order, stopping at the first refused one.
    pub fn run(&mut self, actions: &[Action]) -> Result<Vec<StepOutcome>, Error> {
        actions.iter().map(|a| self.step(a)).collect()
    }

    /// A load ([`Action::Load`]) without building an action: the fast path.
    #[inline]
    pub fn load(
        &mut self,
        agent: AgentId,
        addr: u64,
        len: usize,
        mem_type: MemType,
    ) -> Result<Value, Error> {
        if !(1..=MAX_CPU_ACCESS).contains(&len) {
            return Err(Error::BadLength {
                len,
                min: 1,
                max: MAX_CPU_ACCESS,
            });
        }
        let cpu = self.begin_cpu(agent, addr, len)?;
        let mut v = Value::zeroed(len);
        self.cpu_load(cpu, addr, v.as_mut_slice(), mem_type);
        Ok(v)
    }

    /// A store ([`Action::Store`]) without building an action.
    #[inline]
    pub fn store(
        &mut self,
        agent: AgentId,
        addr: u64,
        value: Value,
        mem_type: MemType,
    ) -> Result<(), Error> {
        let cpu = self.begin_cpu(agent, addr, value.len())?;
        self.cpu_store(cpu, addr, value.as_slice(), mem_type, false);
        Ok(())
    }

    /// A DMA read ([`Action::DmaRead`]) into the caller's buffer.
    pub fn dma_read_into(&mut self, dev: DevId, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
        let d = self.begin_dma(dev, addr, buf.len())?;
        self.dma_read(d, addr, buf);
        Ok(())
    }

    /// Checks a CPU access and starts an operation; returns the arena index.
    #[inline]
    fn begin_cpu(&mut self, agent: AgentId, addr: u64, len: usize) -> Result<usize, Error> {
        if agent.index() >= self.cpus.len() {
            return Err(Error::UnknownAgent(agent));
        }
        self.begin(addr, len)?;
        Ok(agent.index())
    }

    fn begin_dma(&mut self, dev: DevId, addr: u64, len: usize) -> Result<usize, Error> {
        if dev.index() >= self.devs.len() {
            return Err(Error::UnknownDevice(dev));
        }
        if len == 0 {
            return Err(Error::BadLength {
                len,
                min: 1,
                max: usize::MAX,
            });
        }
        self.begin(addr, len)?;
        Ok(dev.index())
    }

    #[inline]
    fn begin(&mut self, addr: u64, len: usize) -> Result<(), Error> {
        if addr.checked_add(len as u64 - 1).is_none() {
            return Err(Error::AddressOverflow { addr, len });
        }
        self.op = self.next_op;
        self.next_op += 1;
        Ok(())
    }

    /// Number of operations performed so far.
    pub fn ops(&self) -> u64 {
        self.next_op
    }

    /// The verdicts kept so far, in the order found.
    pub fn verdicts(&self) -> &[Verdict] {
        self.log.kept()
    }

    /// How many verdicts violate `property` (exact, even past the limit).
    pub fn verdict_count(&self, property: Property) -> u64 {
        self.log.count(property)
    }

    /// `Ok` if `property` holds so far, else its first counterexample.
    pub fn check(&self, property: Property) -> Result<(), &Verdict> {
        match self.log.kept().iter().find(|v| v.property() == property) {
            Some(v) => Err(v),
            None => Ok(()),
        }
    }

    /// A verdict in words, with agents by the names they were added with.
    pub fn explain(&self, verdict: &Verdict) -> String {
        let name = |a: Actor| self.name(a).to_string();
        verdict.render(&name).to_string()
    }

    /// The state of `line` in `agent`'s cache.
    pub fn line_state(&self, agent: AgentId, line: Line) -> LineState {
        self.cpus
            .get(agent.index())
            .and_then(|c| c.cache.get(line))
            .map_or(LineState::Invalid, |e| e.state())
    }

    /// What memory holds at `addr..addr + len` (what a non-snooping device
    /// would read), without performing an operation.
    pub fn memory(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for c in chunks(addr, len) {
            self.mem.read(c.line, c.off, &mut out[c.pos..c.pos + c.len]);
        }
        out
    }

    /// The committed values at `addr..addr + len`: what every read should
    /// return.
    pub fn truth(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        for c in chunks(addr, len) {
            let t = self.mem.truth_line(c.line);
            out[c.pos..c.pos + c.len].copy_from_slice(&t[c.off..c.off + c.len]);
        }
        out
    }

    /// Pages of memory allocated so far (4 KiB each).
    pub fn pages_allocated(&self) -> usize {
        self.mem.pages()
    }
}
