//! The model beside the real run: the scenario on its kernel profile (what the proposal or
//! the upstream kernel would do), the model of this host, and `/dev/kvm`, per region's key
//! access and per read value; where this host cannot show a difference, and why each value
//! the model predicts differently is different.
//!
//! The model of this host is [`KernelProfile::this_host`] running the scenario with every
//! device snooping ([`as_emulated`]): on `/dev/kvm` a device is the VMM's own access through
//! its mapping of the region, which is a CPU access and snoops the caches. The real run must
//! read exactly what that model predicts ([`Comparison::agrees`]).

use kvm_model::KernelProfile;
use memtype::MemType;
use serde::Serialize;

use super::error::RealError;
use super::machine::{self, RealRun};
use crate::engine;
use crate::report::{KeyAccess, Read, RunReport, bytes_summary, memtype_name};
use crate::scenario::Scenario;
use crate::step::{HostOp, Op, StepKind};

/// `scenario` as `/dev/kvm` runs it: every device snoops (it is the VMM's own mapping).
pub fn as_emulated(scenario: &Scenario) -> Scenario {
    let mut emulated = scenario.clone();
    for d in &mut emulated.devices {
        d.snoop = true;
    }
    emulated
}

/// One region's key access, three ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    /// The region.
    pub region: String,
    /// The step (1-based).
    pub step: usize,
    /// Its kind.
    pub op: StepKind,
    /// Offset in the region.
    pub offset: u64,
    /// The guest PAT entry used.
    pub pat_index: u8,
    /// The type that entry holds: what the guest asks for.
    #[serde(serialize_with = "memtype_name")]
    pub guest_pat: MemType,
    /// The model of the scenario's profile: `WC (guest PAT honored)`.
    pub model: String,
    /// The model of this host.
    pub host_model: Option<String>,
    /// What `/dev/kvm` does with it, from the measurement and the registration.
    pub real: String,
}

/// One read step, three ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadRow {
    /// The step (1-based).
    pub step: usize,
    /// Its kind.
    pub op: StepKind,
    /// Who read.
    pub who: String,
    /// `bar+0x0`.
    pub place: String,
    /// Bytes read.
    pub len: usize,
    /// The model of the scenario's profile.
    pub model: String,
    /// The model of this host.
    pub host_model: String,
    /// `/dev/kvm`.
    pub real: String,
    /// Whether the model of the scenario's profile read the same bytes as the real run.
    pub same_as_model: bool,
    /// Whether the model of this host read the same bytes as the real run.
    pub same_as_host_model: bool,
    /// Why the model of the scenario's profile reads something else, when it does.
    pub difference: Option<String>,
}

/// The scenario's model run, the model of this host, and the real run, side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The scenario.
    pub scenario: String,
    /// The model of the scenario's profile (or the one asked for).
    pub model: RunReport,
    /// The model of this host, devices snooping.
    pub host_model: RunReport,
    /// `/dev/kvm`.
    pub real: RealRun,
    /// Where this host cannot show a difference the model can, one sentence each.
    pub limits: Vec<String>,
    /// Each region's key access.
    pub accesses: Vec<AccessRow>,
    /// Each read.
    pub reads: Vec<ReadRow>,
}

impl Comparison {
    /// Whether the real run read what the model of this host predicts, at every read.
    pub fn agrees(&self) -> bool {
        self.reads.iter().all(|r| r.same_as_host_model)
    }

    /// The reads where the scenario's model reads something else than the real run.
    pub fn differences(&self) -> impl Iterator<Item = &ReadRow> {
        self.reads.iter().filter(|r| !r.same_as_model)
    }
}

/// Runs `scenario` on the model of `profile`, on the model of this host, and on `/dev/kvm`,
/// and puts the results side by side.
pub fn compare(scenario: &Scenario, profile: KernelProfile) -> Result<Comparison, RealError> {
    let model = engine::run(scenario, profile)?;
    let host_model = engine::run(&as_emulated(scenario), KernelProfile::this_host())?;
    let real = machine::run(scenario)?;
    let accesses = model
        .accesses
        .iter()
        .map(|a| access_row(a, &host_model, &real))
        .collect();
    let reads = real
        .reads
        .iter()
        .map(|r| read_row(scenario, r, &model, &host_model))
        .collect();
    Ok(Comparison {
        scenario: scenario.name.clone(),
        limits: limits(scenario, &model, &host_model, &real),
        accesses,
        reads,
        model,
        host_model,
        real,
    })
}

fn access_row(a: &KeyAccess, host_model: &RunReport, real: &RealRun) -> AccessRow {
    let asked = a.guest_pat;
    let real_text = match real.registration(&a.region).filter(|r| r.is_safe()) {
        Some(r) => format!(
            "{asked} asked; {} in effect (not measured for this slot)",
            r.mechanism
        ),
        None => match real.memory_types.honored {
            Some(false) => {
                format!("{asked} asked, runs as WB: guest memory types not honored (measured)")
            }
            Some(true) => format!("{asked}: guest memory types honored (measured)"),
            None => {
                format!("{asked} asked; unknown whether it takes effect (measurement inconclusive)")
            }
        },
    };
    AccessRow {
        region: a.region.clone(),
        step: a.step,
        op: a.op,
        offset: a.offset,
        pat_index: a.pat_index,
        guest_pat: asked,
        model: a.summary(),
        host_model: host_model.access(&a.region).map(KeyAccess::summary),
        real: real_text,
    }
}

/// The read of step `step` in `report`.
fn read_at(report: &RunReport, step: usize) -> Option<&Read> {
    report.reads.iter().find(|r| r.step == step)
}

fn read_row(scenario: &Scenario, real: &Read, model: &RunReport, host: &RunReport) -> ReadRow {
    let m = read_at(model, real.step).map(|r| r.bytes.as_slice());
    let h = read_at(host, real.step).map(|r| r.bytes.as_slice());
    let same_as_model = m == Some(real.bytes.as_slice());
    ReadRow {
        step: real.step,
        op: real.op,
        who: real.who.clone(),
        place: real.place(),
        len: real.bytes.len(),
        model: m.map_or_else(|| "-".into(), bytes_summary),
        host_model: h.map_or_else(|| "-".into(), bytes_summary),
        real: bytes_summary(&real.bytes),
        same_as_model,
        same_as_host_model: h == Some(real.bytes.as_slice()),
        difference: (!same_as_model).then(|| difference(scenario, real, model, host)),
    }
}

/// Why the model of the scenario's profile reads something else at `real`'s step: its
/// verdict there, and the facts of this host that rule it out.
fn difference(scenario: &Scenario, real: &Read, model: &RunReport, host: &RunReport) -> String {
    let mut why = Vec::new();
    let found: Vec<&str> = model
        .verdicts
        .iter()
        .filter(|f| f.step == real.step)
        .map(|f| f.hazard.name())
        .collect();
    if !found.is_empty() {
        why.push(format!(
            "the model of {} finds {} here",
            model.profile,
            found.join(", ")
        ));
    }
    if let (Some(m), Some(h)) = (model.access(&real.region), host.access(&real.region))
        && m.effective != h.effective
    {
        let subject = if found.is_empty() {
            format!("the model of {}", model.profile)
        } else {
            "it".to_string()
        };
        why.push(format!(
            "{subject} gives {}'s key access {}, this host's model {}",
            real.region,
            m.summary(),
            h.summary()
        ));
    }
    if scenario
        .devices
        .iter()
        .any(|d| d.name == real.who && !d.snoop)
    {
        why.push(format!(
            "here {} is the VMM's own mapping, which snoops the caches",
            real.who
        ));
    }
    if why.is_empty() {
        why.push("nothing the models know of explains it".into());
    }
    why.join("; ")
}

/// Where this host cannot show what the model shows, from what was measured and registered.
fn limits(scenario: &Scenario, model: &RunReport, host: &RunReport, real: &RealRun) -> Vec<String> {
    let mut out = Vec::new();
    let timings = &real.memory_types.timings;
    match real.memory_types.honored {
        Some(false) => out.push(format!(
            "guest memory types do not take effect here (measured, TSC ticks per load: \
             {timings}): every access runs as WB, so nothing the model derives from a memory \
             type (a WC store bypassing the cache, a UC access's cost) can show"
        )),
        None => out.push(format!(
            "the measurement of guest memory types was inconclusive ({timings}): a \
             difference that depends on a memory type may or may not show"
        )),
        Some(true) => {}
    }
    for d in scenario.devices.iter().filter(|d| !d.snoop) {
        out.push(format!(
            "{} does not snoop in the scenario, but here it is the VMM's own mapping of the \
             region, a CPU access that snoops the caches: what a non-snooping device would \
             read cannot show",
            d.name
        ));
    }
    for r in real
        .registrations
        .iter()
        .filter(|r| !r.registration.is_safe())
    {
        out.push(format!(
            "{}: no mechanism is safe on this host, so it runs as a plain slot marked UNSAFE \
             (allowed here because its devices are the VMM's own, snooping accesses)",
            r.region
        ));
    }
    let gives = scenario.steps.iter().any(|s| {
        matches!(
            s.op,
            Op::Host {
                op: HostOp::Give,
                ..
            }
        )
    });
    if gives {
        out.push(
            "the host kernel zeroes the pages it hands to a region, so a previous owner's \
             bytes (the model's info leak) cannot show"
                .into(),
        );
    }
    for a in &model.accesses {
        let measured = real.memory_types.honored;
        let modeled = host.access(&a.region).map(|h| h.honors_guest_pat);
        if let (Some(measured), Some(modeled)) = (measured, modeled)
            && measured != modeled
            && real.registration(&a.region).is_none_or(|r| !r.is_safe())
        {
            out.push(format!(
                "the model of this host ({}) says guest PAT is {} for {}, the measurement \
                 says it is {}",
                host.profile,
                honored(modeled),
                a.region,
                honored(measured)
            ));
        }
    }
    out
}

fn honored(yes: bool) -> &'static str {
    if yes { "honored" } else { "not honored" }
}
