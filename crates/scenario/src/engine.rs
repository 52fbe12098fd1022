//! One run of a scenario on one kernel: the VM is set up through the modeled kernel
//! (`vm.rs`), then every step is performed on the coherence simulator, each guest access
//! with the effective memory type the modeled KVM gives it (`Kvm::guest_memtype`: the EPT or
//! NPT leaf built by `make_spte → get_mt_mask`, combined with the guest PAT entry), each host
//! access through the VMM's WB mapping.
//!
//! Guest-physical addresses are the simulator's physical addresses: each memslot is backed by
//! its own host memory, so regions never alias each other; the host's mapping and the guest's
//! reach the same bytes. Memory no one has written is zero, unless the scenario gives the slot
//! recycled pages (`host.give`): then it holds a previous owner's bytes, and a read that returns
//! them is an info leak.

use std::collections::HashMap;

use coherence::{
    Action, Actor, AgentId, Capacity, Config, DevId, MemType, Property, State, Untouched, Value,
    Verdict, host,
};
use kvm_model::{Access, KernelProfile, Kvm, VcpuId, Vendor};

use crate::cost::{AccessKind, Cost};
use crate::error::RunError;
use crate::expect;
use crate::hazard::Hazard;
use crate::register::Registration;
use crate::report::{Finding, KeyAccess, Read, RunReport, hex};
use crate::scenario::Scenario;
use crate::step::{Fence, GuestAccess, HostOp, Op, Range, Step, StepKind, repeated_byte};
use crate::vm;

/// Seed of the previous owner's bytes (any value works; fixed so runs repeat exactly).
const PREVIOUS_OWNER_SEED: u64 = 0x5eed_0f01_d0a4_e555;

/// Runs `scenario` on `profile`.
///
/// ```
/// use kvm_model::{KernelProfile, Vendor};
/// let s = scenario::builtin("virtio-gpu-wc-bar").unwrap()?;
/// let flagged = scenario::run(&s, KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?)?;
/// assert!(flagged.hazards().is_empty());
/// let upstream = scenario::run(&s, KernelProfile::parse("6.16", Vendor::Intel)?)?;
/// assert!(upstream.hazards().contains(&scenario::Hazard::StaleRead));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run(scenario: &Scenario, profile: KernelProfile) -> Result<RunReport, RunError> {
    let vm = vm::build(scenario, profile)?;
    let gives = scenario.steps.iter().any(|s| {
        matches!(
            s.op,
            Op::Host {
                op: HostOp::Give,
                ..
            }
        )
    });
    let untouched = if gives {
        Untouched::PreviousOwner {
            seed: PREVIOUS_OWNER_SEED,
        }
    } else {
        Untouched::Zero
    };
    let mut sim = State::new(Config {
        untouched,
        ..Config::default()
    });
    let name = profile.to_string();
    let setup = |source| RunError::Simulator {
        profile: name.clone(),
        step: 0,
        source,
    };
    let guest = sim.add_cpu("vcpu0", Capacity::Unbounded).map_err(setup)?;
    let host = sim.add_cpu("host", Capacity::Unbounded).map_err(setup)?;
    let devices = scenario
        .devices
        .iter()
        .map(|d| sim.add_dma(d.name.clone(), d.snoop))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup)?;
    let mut engine = Engine {
        scenario,
        profile: name,
        kvm: vm.kvm,
        vcpu: vm.vcpu,
        sim,
        guest,
        host,
        devices,
        memtypes: HashMap::new(),
        key: vec![None; scenario.regions.len()],
        cost: Cost::default(),
        first_op: Vec::with_capacity(scenario.steps.len()),
        reads: Vec::new(),
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        engine.first_op.push(engine.sim.ops());
        engine.step(i + 1, step)?;
    }
    Ok(engine.report(profile, vm.registrations))
}

/// Runs `scenario` on every named profile of each of `vendors`, vendor by vendor.
pub fn run_all(scenario: &Scenario, vendors: &[Vendor]) -> Result<Vec<RunReport>, RunError> {
    let all = KernelProfile::all();
    vendors
        .iter()
        .flat_map(|v| all.iter().filter(move |p| p.vendor == *v))
        .map(|p| run(scenario, *p))
        .collect()
}

struct Engine<'s> {
    scenario: &'s Scenario,
    /// The profile, as errors name it.
    profile: String,
    kvm: Kvm,
    vcpu: VcpuId,
    sim: State,
    guest: AgentId,
    host: AgentId,
    devices: Vec<DevId>,
    /// `guest_memtype` answers by (gfn, PAT index): no step changes the kernel's state, so
    /// a page's answer holds for the whole run.
    memtypes: HashMap<(u64, u8), Access>,
    /// The key access of each region, once the guest made one.
    key: Vec<Option<KeyAccess>>,
    cost: Cost,
    /// The simulator's operation index at the start of each step, to attribute verdicts.
    first_op: Vec<u64>,
    /// What each read step returned.
    reads: Vec<Read>,
}

/// 8-byte (or shorter, at the end) pieces of `len` bytes at `gpa`: (address, bytes, position).
fn words(gpa: u64, len: u64) -> impl Iterator<Item = (u64, usize, u64)> {
    (0..len)
        .step_by(8)
        .map(move |pos| (gpa + pos, (len - pos).min(8) as usize, pos))
}

impl Engine<'_> {
    fn gpa(&self, range: Range) -> u64 {
        self.scenario.regions[range.region].gpa + range.offset
    }

    fn sim_error(&self, step: usize) -> impl Fn(coherence::Error) -> RunError + '_ {
        move |source| RunError::Simulator {
            profile: self.profile.clone(),
            step,
            source,
        }
    }

    /// Performs actions on the simulator.
    fn act(&mut self, step: usize, actions: &[Action]) -> Result<(), RunError> {
        self.sim
            .run(actions)
            .map(drop)
            .map_err(self.sim_error(step))
    }

    /// The `n` bytes at position `pos` of data repeating the little-endian 8-byte `value`.
    fn value(
        step: usize,
        profile: &str,
        value: u64,
        pos: u64,
        n: usize,
    ) -> Result<Value, RunError> {
        // Byte `pos` of the data is byte `pos % 8` of `value`: rotate it to the bottom.
        let word = value.rotate_right(8 * (pos % 8) as u32);
        Value::from_u64(word, n).ok_or_else(|| RunError::Simulator {
            profile: profile.to_string(),
            step,
            source: coherence::Error::BadLength {
                len: n,
                min: 1,
                max: coherence::MAX_CPU_ACCESS,
            },
        })
    }

    /// Records what read step `n` returned.
    fn read(&mut self, n: usize, who: String, range: Range, bytes: Vec<u8>) {
        self.reads.push(Read {
            step: n,
            op: self.scenario.steps[n - 1].kind,
            who,
            region: self.scenario.regions[range.region].name.clone(),
            offset: range.offset,
            bytes,
        });
    }

    fn step(&mut self, n: usize, step: &Step) -> Result<(), RunError> {
        let guest = self.guest;
        match step.op {
            Op::Guest {
                access,
                range,
                pat_index,
                value,
            } => self.guest_access(n, step.kind, access, range, pat_index, value),
            Op::GuestFlush { opt, range } => {
                let addr = self.gpa(range);
                let action = if opt {
                    Action::Clflushopt { agent: guest, addr }
                } else {
                    Action::Clflush { agent: guest, addr }
                };
                self.act(n, &[action])
            }
            Op::GuestFence(fence) => {
                let action = match fence {
                    Fence::Sfence => Action::Sfence { agent: guest },
                    Fence::Mfence => Action::Mfence { agent: guest },
                    Fence::Wbinvd => Action::Wbinvd { agent: guest },
                };
                self.act(n, &[action])
            }
            Op::Dma {
                device,
                write,
                range,
                value,
            } => {
                let dev = self.devices[device];
                let addr = self.gpa(range);
                if write {
                    let action = Action::DmaWrite {
                        dev,
                        addr,
                        bytes: (0..range.len).map(|i| repeated_byte(value, i)).collect(),
                    };
                    return self.act(n, &[action]);
                }
                let mut bytes = vec![0; range.len as usize];
                self.sim
                    .dma_read_into(dev, addr, &mut bytes)
                    .map_err(self.sim_error(n))?;
                let who = self.scenario.devices[device].name.clone();
                self.read(n, who, range, bytes);
                Ok(())
            }
            Op::Host {
                op,
                range,
                value,
                flush,
            } => self.host_access(n, op, range, value, flush),
        }
    }

    /// The effective type of a guest access to `gpa` through PAT entry `pat_index`.
    fn memtype(&mut self, step: usize, gpa: u64, pat_index: u8) -> Result<Access, RunError> {
        let key = (gpa >> uapi::PAGE_SHIFT, pat_index);
        if let Some(access) = self.memtypes.get(&key) {
            return Ok(*access);
        }
        let access = self
            .kvm
            .guest_memtype(self.vcpu, gpa, pat_index)
            .map_err(|source| RunError::Guest {
                profile: self.profile.clone(),
                step,
                source,
            })?;
        self.memtypes.insert(key, access);
        Ok(access)
    }

    fn guest_access(
        &mut self,
        n: usize,
        kind: StepKind,
        access: GuestAccess,
        range: Range,
        pat_index: u8,
        value: u64,
    ) -> Result<(), RunError> {
        let gpa = self.gpa(range);
        let first = self.memtype(n, gpa, pat_index)?;
        if self.key[range.region].is_none() {
            self.key[range.region] = Some(KeyAccess {
                region: self.scenario.regions[range.region].name.clone(),
                step: n,
                op: kind,
                offset: range.offset,
                pat_index,
                guest_pat: first.guest_pat,
                effective: first.effective,
                honors_guest_pat: first.honors_guest_pat,
                ept_memtype: first.ept_memtype(),
                ipat: first.ipat(),
                reason: first.reason(),
            });
        }
        let (guest, len) = (self.guest, range.len as usize);
        let result = match access {
            GuestAccess::Load => {
                self.cost.add(AccessKind::Load, first.effective, 1);
                let value = self
                    .sim
                    .load(guest, gpa, len, first.effective)
                    .map_err(self.sim_error(n))?;
                let who = self.sim.name(Actor::Cpu(guest)).to_string();
                self.read(n, who, range, value.as_slice().to_vec());
                return Ok(());
            }
            GuestAccess::Store => {
                self.cost.add(AccessKind::Store, first.effective, 1);
                let v = Engine::value(n, &self.profile, value, 0, len)?;
                self.sim.store(guest, gpa, v, first.effective)
            }
            GuestAccess::NtStore => {
                self.cost.add(AccessKind::NtStore, first.effective, 1);
                let v = Engine::value(n, &self.profile, value, 0, len)?;
                self.sim
                    .step(&Action::NtStore {
                        agent: guest,
                        addr: gpa,
                        value: v,
                        mem_type: first.effective,
                    })
                    .map(drop)
            }
            GuestAccess::Fill => return self.fill(n, gpa, range.len, pat_index, value),
        };
        result.map_err(self.sim_error(n))
    }

    /// A sweep of 8-byte stores, each page with its own effective type.
    fn fill(
        &mut self,
        n: usize,
        gpa: u64,
        len: u64,
        pat_index: u8,
        value: u64,
    ) -> Result<(), RunError> {
        let mut page = u64::MAX;
        let mut mt = MemType::Wb;
        for (addr, bytes, pos) in words(gpa, len) {
            if addr >> uapi::PAGE_SHIFT != page {
                page = addr >> uapi::PAGE_SHIFT;
                mt = self.memtype(n, addr, pat_index)?.effective;
            }
            self.cost.add(AccessKind::Store, mt, 1);
            let v = Engine::value(n, &self.profile, value, pos, bytes)?;
            let guest = self.guest;
            self.sim
                .store(guest, addr, v, mt)
                .map_err(self.sim_error(n))?;
        }
        Ok(())
    }

    /// The host's accesses, all through its WB mapping of guest memory.
    fn host_access(
        &mut self,
        n: usize,
        op: HostOp,
        range: Range,
        value: u64,
        flush: bool,
    ) -> Result<(), RunError> {
        let (gpa, len, agent) = (self.gpa(range), range.len, self.host);
        let flush_range = host::flush_range(agent, gpa, len as usize);
        match op {
            HostOp::Zero => self.act(n, &host::zero_range(agent, gpa, len as usize, MemType::Wb)),
            HostOp::Flush => self.act(n, &flush_range),
            HostOp::Give => {
                self.act(n, &host::zero_range(agent, gpa, len as usize, MemType::Wb))?;
                if flush {
                    self.act(n, &flush_range)?;
                }
                Ok(())
            }
            HostOp::Read | HostOp::Take => {
                if flush {
                    self.act(n, &flush_range)?;
                }
                let mut read = Vec::with_capacity(len as usize);
                for (addr, bytes, _) in words(gpa, len) {
                    let value = self
                        .sim
                        .load(agent, addr, bytes, MemType::Wb)
                        .map_err(self.sim_error(n))?;
                    read.extend_from_slice(value.as_slice());
                }
                let who = self.sim.name(Actor::Cpu(agent)).to_string();
                self.read(n, who, range, read);
                Ok(())
            }
            HostOp::Write => {
                for (addr, bytes, pos) in words(gpa, len) {
                    let v = Engine::value(n, &self.profile, value, pos, bytes)?;
                    self.sim
                        .store(agent, addr, v, MemType::Wb)
                        .map_err(self.sim_error(n))?;
                }
                if flush {
                    self.act(n, &flush_range)?;
                }
                Ok(())
            }
        }
    }

    /// The step (1-based) that performed operation `op`.
    fn step_of(&self, op: u64) -> usize {
        self.first_op.partition_point(|&first| first <= op)
    }

    fn finding(&self, hazard: Hazard, count: u64, v: &Verdict) -> Finding {
        let name = |a: Actor| self.sim.name(a).to_string();
        let (who, addr, expected, got) = match v {
            Verdict::StaleRead(s) => (
                name(s.reader),
                s.addr,
                Some(hex(&s.expected)),
                Some(hex(&s.got)),
            ),
            Verdict::InfoLeak(l) => (
                name(l.reader),
                l.addr,
                Some(hex(&l.expected)),
                Some(hex(&l.leaked)),
            ),
            Verdict::LostWrite(l) => (
                name(Actor::Cpu(l.overwritten_by)),
                l.addr,
                Some(hex(&l.lost)),
                Some(hex(&l.overwritten_with)),
            ),
            Verdict::ConflictingAlias(a) => (
                name(Actor::Cpu(a.uncached_by)),
                a.cached_line.base(),
                None,
                None,
            ),
        };
        let step = self.step_of(v.op_index());
        let place = self.scenario.region_at(addr);
        Finding {
            hazard,
            count,
            step,
            op: self.scenario.steps[step.saturating_sub(1)].kind,
            who,
            region: place.map(|(r, _)| r.name.clone()),
            offset: place.map(|(_, o)| o),
            expected,
            got,
            evidence: self.sim.explain(v),
        }
    }

    fn report(self, profile: KernelProfile, registrations: Vec<Registration>) -> RunReport {
        let mut verdicts: Vec<Finding> = Hazard::ALL
            .iter()
            .filter_map(|&h| {
                let p: Property = h.property();
                let first = self.sim.check(p).err()?;
                Some(self.finding(h, self.sim.verdict_count(p), first))
            })
            .collect();
        // In the order they happened.
        verdicts.sort_by_key(|f| f.step);
        let hazards = verdicts.iter().map(|f| f.hazard).collect();
        RunReport {
            kernel: profile.name(),
            vendor: profile.vendor.name(),
            profile,
            registrations,
            accesses: self.key.into_iter().flatten().collect(),
            verdicts,
            cost: self.cost,
            expectation: expect::check(&self.scenario.expects, &profile, &hazards),
            reads: self.reads,
        }
    }
}
