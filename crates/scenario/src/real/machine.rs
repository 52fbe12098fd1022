//! The real run: the scenario's VM made on `/dev/kvm` as a VMM would make it, its regions
//! added through [`vmm::region::GuestMemory`] and the strategy chain, its guest segments run
//! on the vCPU, and its device and host steps performed through the VMM's own mapping of each
//! region, with the real cache flush where the scenario flushes.
//!
//! The policy: a noncoherent region that no mechanism makes safe is registered as a plain
//! slot marked unsafe ([`Policy::allow_unsafe`]), and the report says so. Refusing would
//! leave nothing to compare on a host like ours, and the unsafety cannot hurt here: the
//! scenario's devices are the VMM's own accesses, which snoop. The region's `register` list
//! only widens the policy: `disable-ignore-guest-pat` allows VM-wide mechanisms, and
//! `memslot-flag` on a RAM region forces the flag onto RAM; the chain itself is the VMM's
//! (`vmm::strategy`), not the list.

use std::time::Duration;

use serde::{Serialize, Serializer};
use uapi::SlotId;
use vmm::cache::flush_bytes;
use vmm::guest::empirical::{EmpiricalReport, Verdict, measure_memory_types};
use vmm::guest::layout::SYSTEM_END;
use vmm::guest::{GuestError, GuestVm};
use vmm::region::{Coherence, GuestRegion, RegionKind as VmmKind};
use vmm::strategy::{Policy, Registration};

use super::error::RealError;
use super::lower::{self, Part, RELOCATION};
use crate::register::Mechanism;
use crate::report::Read;
use crate::scenario::{RegionKind, Scenario};
use crate::step::{HostOp, Op, Range, repeated_byte};

/// How long one guest segment may run.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a region sits in the real VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The region.
    pub region: String,
    /// Its address in the scenario.
    pub scenario_gpa: u64,
    /// Its address in the real VM.
    pub gpa: u64,
    /// Its memslot.
    pub slot: u16,
}

/// How a noncoherent region was registered on `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RealRegistration {
    /// The region.
    pub region: String,
    /// The strategy chain's report.
    #[serde(flatten, serialize_with = "registration_json")]
    pub registration: Registration,
}

fn registration_json<S: Serializer>(r: &Registration, s: S) -> Result<S::Ok, S::Error> {
    r.to_json().serialize(s)
}

/// Whether guest memory types take effect on this host, as a guest measured it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryTypes {
    /// `honored`, `not honored` or `inconclusive`.
    pub verdict: &'static str,
    /// Whether UC loads cost many WB loads.
    pub honored: Option<bool>,
    /// `WB 1.96, UC 1.97, …` TSC ticks per load.
    pub timings: String,
}

impl From<&EmpiricalReport> for MemoryTypes {
    fn from(e: &EmpiricalReport) -> MemoryTypes {
        let timings: Vec<String> = e
            .timings
            .iter()
            .map(|t| format!("{} {:.2}", t.condition, t.cycles_per_load))
            .collect();
        MemoryTypes {
            verdict: e.verdict.name(),
            honored: match e.verdict {
                Verdict::Honored => Some(true),
                Verdict::NotHonored => Some(false),
                Verdict::Inconclusive => None,
            },
            timings: timings.join(", "),
        }
    }
}

/// What the scenario did on `/dev/kvm`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RealRun {
    /// The backend, as it describes itself.
    pub backend: String,
    /// Whether guest memory types take effect here.
    pub memory_types: MemoryTypes,
    /// Where each region sits.
    pub placements: Vec<Placement>,
    /// One per noncoherent region.
    pub registrations: Vec<RealRegistration>,
    /// How many guest programs ran.
    pub guest_runs: usize,
    /// What every read step returned, in step order.
    pub reads: Vec<Read>,
}

impl RealRun {
    /// The registration of the region named `region`, if it is noncoherent.
    pub fn registration(&self, region: &str) -> Option<&Registration> {
        self.registrations
            .iter()
            .find(|r| r.region == region)
            .map(|r| &r.registration)
    }
}

/// The policy the scenario's regions ask for, unsafe allowed (see the module's doc).
fn policy(scenario: &Scenario) -> Policy {
    let lists = |kind: Option<RegionKind>, m: Mechanism| {
        scenario
            .regions
            .iter()
            .any(|r| r.noncoherent && kind.is_none_or(|k| r.kind == k) && r.register.contains(&m))
    };
    Policy {
        allow_vm_wide: lists(None, Mechanism::DisableIgnoreGuestPat),
        allow_unsafe: true,
        force_flag_on_ram: lists(Some(RegionKind::Ram), Mechanism::MemslotFlag),
    }
}

/// Runs `scenario` on this host's `/dev/kvm`.
pub fn run(scenario: &Scenario) -> Result<RealRun, RealError> {
    // Compile everything first: a step the runtime cannot do is refused before any VM.
    let parts = lower::plan(scenario)?;
    let measured = measure_memory_types().map_err(|e| match e {
        GuestError::OpenKvm(errno) => RealError::OpenKvm(errno),
        other => RealError::Measure(other),
    })?;
    let mut vm = GuestVm::with_policy(SYSTEM_END, policy(scenario)).map_err(RealError::Vm)?;
    let mut slots = Vec::with_capacity(scenario.regions.len());
    let mut placements = Vec::new();
    let mut registrations = Vec::new();
    for r in &scenario.regions {
        let kind = match r.kind {
            RegionKind::Ram => VmmKind::Ram,
            RegionKind::Bar => VmmKind::DeviceBar,
        };
        let coherence = if r.noncoherent {
            Coherence::NoncoherentDma
        } else {
            Coherence::Coherent
        };
        let region = GuestRegion::new(r.name.clone(), r.gpa + RELOCATION, r.size, kind, coherence)
            .map_err(RealError::Region)?;
        let slot = vm.add_region(region).map_err(RealError::Region)?;
        if let Some(registration) = vm.registration(slot) {
            registrations.push(RealRegistration {
                region: r.name.clone(),
                registration: registration.clone(),
            });
        }
        placements.push(Placement {
            region: r.name.clone(),
            scenario_gpa: r.gpa,
            gpa: r.gpa + RELOCATION,
            slot: slot.id,
        });
        slots.push(slot);
    }

    let mut reads = Vec::new();
    for part in &parts {
        match part {
            Part::Guest { steps, segment } => {
                let run = vm
                    .run(&segment.program, TIMEOUT)
                    .map_err(|source| RealError::Guest {
                        first: steps.start + 1,
                        last: steps.end,
                        source,
                    })?;
                for (i, range, bytes) in segment.loaded(&run.results) {
                    reads.push(read(scenario, i, "vcpu0".into(), range, bytes));
                }
            }
            Part::Vmm(i) => {
                if let Some(read) = vmm_step(scenario, &mut vm, &slots, *i) {
                    reads.push(read);
                }
            }
        }
    }
    Ok(RealRun {
        backend: vm.backend().describe(),
        memory_types: MemoryTypes::from(&measured),
        placements,
        registrations,
        guest_runs: parts
            .iter()
            .filter(|p| matches!(p, Part::Guest { .. }))
            .count(),
        reads,
    })
}

fn read(scenario: &Scenario, i: usize, who: String, range: Range, bytes: Vec<u8>) -> Read {
    Read {
        step: i + 1,
        op: scenario.steps[i].kind,
        who,
        region: scenario.regions[range.region].name.clone(),
        offset: range.offset,
        bytes,
    }
}

/// Performs device or host step `i` through the VMM's mapping; returns what it read.
fn vmm_step(scenario: &Scenario, vm: &mut GuestVm, slots: &[SlotId], i: usize) -> Option<Read> {
    let (range, who) = match scenario.steps[i].op {
        Op::Dma { device, range, .. } => (range, scenario.devices[device].name.clone()),
        Op::Host { range, .. } => (range, "host".to_string()),
        Op::Guest { .. } | Op::GuestFlush { .. } | Op::GuestFence(_) => return None,
    };
    let (start, end) = (range.offset as usize, (range.offset + range.len) as usize);
    let slot = slots[range.region];
    let fill = |vm: &mut GuestVm, value: u64| {
        if let Some(bytes) = vm.region_bytes_mut(slot) {
            for (k, b) in bytes[start..end].iter_mut().enumerate() {
                *b = repeated_byte(value, k as u64);
            }
        }
    };
    let flush = |vm: &GuestVm| {
        if let Some(bytes) = vm.region_bytes(slot) {
            flush_bytes(&bytes[start..end]);
        }
    };
    let take = |vm: &GuestVm| vm.region_bytes(slot).map(|b| b[start..end].to_vec());
    let read = match scenario.steps[i].op {
        Op::Dma { write: false, .. } => take(vm),
        Op::Dma { value, .. } => {
            fill(vm, value);
            None
        }
        Op::Host {
            op,
            value,
            flush: f,
            ..
        } => match op {
            HostOp::Zero => {
                fill(vm, 0);
                None
            }
            HostOp::Flush => {
                flush(vm);
                None
            }
            HostOp::Give => {
                fill(vm, 0);
                if f {
                    flush(vm);
                }
                None
            }
            HostOp::Write => {
                fill(vm, value);
                if f {
                    flush(vm);
                }
                None
            }
            HostOp::Read | HostOp::Take => {
                if f {
                    flush(vm);
                }
                take(vm)
            }
        },
        Op::Guest { .. } | Op::GuestFlush { .. } | Op::GuestFence(_) => None,
    };
    read.map(|bytes| self::read(scenario, i, who, range, bytes))
}
