//! `ncdma probe`: what a kernel offers for noncoherent DMA, in the manner of libvirt's
//! `virt-host-validate`: one line per check, `PASS`, `WARN`, `FAIL` or `N/A` with a reason,
//! and a verdict — the mechanism a noncoherent region would get, found by running the real
//! [strategy](crate::strategy) chain on a scratch VM, or why none is safe.
//!
//! The same checks run on the real `/dev/kvm` ([`Target::Kvm`]) and on the reference kernel
//! ([`Target::Model`]) through the [`Backend`](crate::backend::Backend) trait. Checks of the
//! host itself (opening the device, timing cache flushes) are `N/A` on the model; the CPU and
//! module facts come from the profile there. Destructive checks (the flag, the device, the
//! one-way quirk, the verdict) run on scratch VMs of their own.
//!
//! A `FAIL` line is a finding, not an error: [`probe`] fails only when the device cannot be
//! opened or an ioctl fails in a way no check expects.

mod checks;

use std::fmt;
use std::path::PathBuf;

use kvm_model::KernelProfile;
use serde_json::{Value, json};
use uapi::Errno;

use crate::backend::{BackendError, open_message};
use crate::guest::GuestError;
use crate::guest::empirical::EmpiricalReport;
use crate::region::RegionError;
use crate::strategy::{Attempt, Policy, Registration, StrategyError, write_attempts};

pub use checks::probe;

/// The kernel to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The host's KVM, opened at `device` (normally `/dev/kvm`).
    Kvm {
        /// The KVM device.
        device: PathBuf,
    },
    /// The reference kernel as `profile`.
    Model(KernelProfile),
}

/// What the probe is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProbeOptions {
    /// The policy the verdict's strategy runs under.
    pub policy: Policy,
    /// Also run a guest that times loads per memory type
    /// ([`measure_memory_types`](crate::guest::empirical::measure_memory_types)): whether
    /// the guest's memory types take effect at all. Real `/dev/kvm` only.
    pub empirical: bool,
}

/// A check's finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// What noncoherent DMA needs is there.
    Pass,
    /// Missing or degraded; the verdict may still find a way.
    Warn,
    /// Broken, or no safe way.
    Fail,
    /// Does not apply to this target (host-only checks on the model).
    NotApplicable,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::NotApplicable => "N/A",
        })
    }
}

/// One line of the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// The finding.
    pub status: Status,
    /// Why, with the values read.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
        }
    }
}

/// Width of the dotted name column.
const NAME_WIDTH: usize = 44;

impl fmt::Display for Check {
    /// `NAME ........ PASS: detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dots = NAME_WIDTH.saturating_sub(self.name.len() + 1).max(2);
        write!(
            f,
            "{} {} {}: {}",
            self.name,
            ".".repeat(dots),
            self.status,
            self.detail
        )
    }
}

/// What a noncoherent region would get on the probed kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Registered, with this mechanism.
    Registered(Registration),
    /// Refused: no mechanism is safe (and the policy does not allow an unsafe one).
    Refused(Vec<Attempt>),
}

impl Verdict {
    /// The steps the strategy took.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            Verdict::Registered(r) => &r.attempts,
            Verdict::Refused(a) => a,
        }
    }
}

/// Everything the probe found.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The backend probed, as it describes itself.
    pub backend: String,
    /// One entry per check, the verdict last.
    pub checks: Vec<Check>,
    /// The verdict with the strategy's attempts.
    pub verdict: Verdict,
    /// The guest's measurement, when asked for and possible.
    pub empirical: Option<EmpiricalReport>,
}

impl ProbeReport {
    /// The check named `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The whole report as one JSON document.
    pub fn to_json(&self) -> Value {
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "status": c.status.to_string().to_ascii_lowercase(),
                    "detail": c.detail,
                })
            })
            .collect();
        let verdict = match &self.verdict {
            Verdict::Registered(r) => r.to_json(),
            Verdict::Refused(attempts) => json!({
                "mechanism": null,
                "scope": null,
                "safe": false,
                "attempts": attempts.iter().map(Attempt::to_json).collect::<Vec<_>>(),
            }),
        };
        let empirical = self.empirical.as_ref().map(|e| {
            json!({
                "verdict": e.verdict.name(),
                "guest_pat": format!("{:#018x}", e.guest_pat),
                "elapsed_ms": e.elapsed.as_millis() as u64,
                "timings": e.timings.iter().map(|t| json!({
                    "condition": t.condition,
                    "pat_index": t.pat_index,
                    "cycles_per_load": t.cycles_per_load,
                    "ratio_to_wb": t.ratio_to_wb,
                })).collect::<Vec<_>>(),
            })
        });
        json!({
            "backend": self.backend,
            "checks": checks,
            "verdict": verdict,
            "empirical": empirical,
        })
    }
}

impl fmt::Display for ProbeReport {
    /// One line per check, the strategy's attempts under the verdict.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "probing {}", self.backend)?;
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        write_attempts(f, self.verdict.attempts())
    }
}

/// The probe could not run to the end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Opening the KVM device failed.
    #[error("{}", open_message(.path, *.errno))]
    OpenDevice {
        /// The device.
        path: PathBuf,
        /// `open()`'s errno.
        errno: Errno,
    },
    /// `KVM_CREATE_VM` failed on an opened device.
    #[error("cannot create a VM on {}: KVM_CREATE_VM failed: {errno}{}", .path.display(),
            if *.errno == Errno::ENOTTY { " (the file is not a KVM device)" } else { "" })]
    CreateVm {
        /// The device.
        path: PathBuf,
        /// The errno.
        errno: Errno,
    },
    /// Mapping scratch memory failed.
    #[error("cannot map scratch memory for the probe: {0}")]
    MapScratch(Errno),
    /// An ioctl failed where no check expects it to.
    #[error("check \"{check}\": unexpected failure: {source}")]
    Ioctl {
        /// The check.
        check: &'static str,
        /// The ioctl and its errno.
        source: BackendError,
    },
    /// The strategy failed other than by refusing (an unexpected errno).
    #[error("check \"{check}\": unexpected failure: {source}")]
    Strategy {
        /// The check.
        check: &'static str,
        /// What failed.
        source: StrategyError,
    },
    /// The guest of `--empirical` could not be made or run.
    #[error("the empirical measurement failed: {0}")]
    Empirical(GuestError),
    /// Setting up the verdict's region failed other than by refusal.
    #[error("check \"{check}\": unexpected failure: {source}")]
    Region {
        /// The check.
        check: &'static str,
        /// What failed.
        source: RegionError,
    },
}
