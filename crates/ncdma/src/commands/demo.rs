//! `ncdma demo`: the project's main job on embedded defaults. The seeds' virtio-GPU case
//! (`virtio-gpu-wc-bar`) on every kernel and vendor, the conclusion the matrix supports, and
//! the decision path of the frame's first store on the proposal's kernel and on upstream;
//! then what this host's `/dev/kvm` would give a noncoherent region (`ncdma probe`'s verdict,
//! without the guest measurement so the demo stays fast). A host without `/dev/kvm` gets one
//! line saying so; the demo does not fail for it.

use std::path::PathBuf;

use kvm_model::Vendor;
use scenario::{RunReport, Scenario};
use serde_json::json;
use vmm::backend::KVM_DEVICE;
use vmm::probe::{ProbeOptions, ProbeReport, Target, probe};

use crate::Output;
use crate::error::CliError;

/// The scenario the demo runs.
const SCENARIO: &str = "virtio-gpu-wc-bar";
/// The kernels whose key access the demo explains: the proposal, and the upstream it extends.
const EXPLAINED: [&str; 2] = ["6.16+memslot-flag", "6.16"];

pub(crate) fn run(json: bool) -> Output {
    let failed = |e: &dyn std::fmt::Display| CliError::Failed(format!("{SCENARIO}: {e}"));
    let scenario = scenario::builtin(SCENARIO)
        .ok_or_else(|| failed(&"not built in"))?
        .map_err(|e| failed(&e))?;
    let rows =
        scenario::run_all(&scenario, &[Vendor::Intel, Vendor::Amd]).map_err(|e| failed(&e))?;
    let conclusion = scenario::conclusion::conclusion(&scenario, &rows);
    let explained: Vec<&RunReport> = EXPLAINED
        .iter()
        .filter_map(|k| {
            rows.iter()
                .find(|r| r.kernel == *k && r.profile.vendor == Vendor::Intel)
        })
        .collect();
    let host = probe(
        &Target::Kvm {
            device: PathBuf::from(KVM_DEVICE),
        },
        &ProbeOptions::default(),
    )
    .map_err(|e| e.to_string());
    let out = if json {
        let explain: Vec<_> = explained
            .iter()
            .map(|r| {
                json!({
                    "kernel": r.kernel,
                    "vendor": r.vendor,
                    "registrations": r.registrations,
                    "access": key_access(&scenario, r),
                })
            })
            .collect();
        let doc = json!({
            "scenario": scenario.name,
            "summary": scenario.summary,
            "runs": rows,
            "conclusion": conclusion,
            "explain": explain,
            "host": host.as_ref().map_or_else(|e| json!({ "error": e }), ProbeReport::to_json),
        });
        format!("{doc:#}\n")
    } else {
        let mut out = format!(
            "== {}: {}\n\n{}\n== conclusion\n\n{conclusion}\n",
            scenario.name,
            scenario.summary,
            scenario::table::matrix(&rows)
        );
        for r in &explained {
            out.push_str(&explain(&scenario, r));
        }
        out.push_str(&this_host(&host));
        out
    };
    if rows.iter().any(RunReport::expectation_failed) {
        print!("{out}{}", scenario::table::failures(&rows));
        return Err(CliError::Failed(format!(
            "{SCENARIO}: an expectation failed"
        )));
    }
    Ok(out)
}

/// The key access of the first noncoherent region: the access the scenario is about.
fn key_access<'r>(scenario: &Scenario, r: &'r RunReport) -> Option<&'r scenario::KeyAccess> {
    scenario
        .regions
        .iter()
        .filter(|g| g.noncoherent)
        .find_map(|g| r.access(&g.name))
}

fn explain(scenario: &Scenario, r: &RunReport) -> String {
    let mut out = format!("\n== explain: {}/{}\n\n", r.kernel, r.vendor);
    for g in &r.registrations {
        out.push_str(&format!("registration of {}: {g}\n", g.region));
    }
    if let Some(a) = key_access(scenario, r) {
        let leaf = match (a.ept_memtype, a.ipat) {
            (Some(t), Some(ipat)) => format!("EPT leaf {t}, IPAT={}", u8::from(ipat)),
            _ => "no EPT leaf".to_string(),
        };
        out.push_str(&format!(
            "{}+{:#x} (step {}, {}, PAT index {} = {}): {leaf} → {}\n  {}\n",
            a.region,
            a.offset,
            a.step,
            a.op,
            a.pat_index,
            a.guest_pat,
            a.summary(),
            a.reason
        ));
    }
    out
}

/// The probe's verdict for this host, or the one line saying why there is none.
fn this_host(host: &Result<ProbeReport, String>) -> String {
    let mut out = "\n== this host (ncdma probe)\n\n".to_string();
    match host {
        Err(e) => out.push_str(&format!("no host probe: {e}\n")),
        Ok(report) => {
            if let Some(verdict) = report.checks.last() {
                out.push_str(&format!(
                    "{}: {}: {}\n",
                    verdict.name, verdict.status, verdict.detail
                ));
            }
            for (i, a) in report.verdict.attempts().iter().enumerate() {
                out.push_str(&format!("  {}. {a}\n", i + 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_kvm_gets_one_line() {
        let text = this_host(&Err("cannot open /dev/kvm: it does not exist".into()));
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(
            lines,
            [
                "== this host (ncdma probe)",
                "no host probe: cannot open /dev/kvm: it does not exist"
            ]
        );
    }
}
