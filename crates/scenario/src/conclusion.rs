//! A paragraph drawn from a matrix of runs: per vendor, which kernels corrupt data (and
//! which hazards), which keep it, and of those which honor guest memory types only in the
//! noncoherent regions and which for the whole VM. Every statement comes from the reports.

use kvm_model::Vendor;

use crate::report::RunReport;
use crate::scenario::Scenario;

/// How a clean run honored guest memory types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Honored in the noncoherent regions, ignored in every other region the guest used.
    SlotOnly,
    /// Honored in some region that is not noncoherent too.
    VmWide,
    /// The guest used no other region, so the run cannot tell.
    Unknown,
}

fn scope(scenario: &Scenario, r: &RunReport) -> Scope {
    let others: Vec<bool> = scenario
        .regions
        .iter()
        .filter(|g| !g.noncoherent)
        .filter_map(|g| r.access(&g.name))
        .map(|a| a.honors_guest_pat)
        .collect();
    if others.iter().any(|h| *h) {
        Scope::VmWide
    } else if others.is_empty() {
        Scope::Unknown
    } else {
        Scope::SlotOnly
    }
}

/// `a`, `a and b`, `a, b and c`.
fn list(items: &[&str]) -> String {
    match items {
        [] => "none".to_string(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The paragraph for `rows` (runs of `scenario`).
pub fn conclusion(scenario: &Scenario, rows: &[RunReport]) -> String {
    let targets: Vec<&str> = scenario
        .regions
        .iter()
        .filter(|g| g.noncoherent)
        .map(|g| g.name.as_str())
        .collect();
    let targets = list(&targets);
    let mut sentences = Vec::new();
    for vendor in [Vendor::Intel, Vendor::Amd] {
        let runs: Vec<&RunReport> = rows.iter().filter(|r| r.profile.vendor == vendor).collect();
        if runs.is_empty() {
            continue;
        }
        // "every profile" when a group is the whole vendor, else the names.
        let names_all = |rs: &[&RunReport]| {
            if rs.len() == runs.len() && rs.len() > 1 {
                format!("every profile ({})", rs.len())
            } else {
                list(&rs.iter().map(|r| r.kernel).collect::<Vec<_>>())
            }
        };
        let (bad, good): (Vec<&RunReport>, Vec<&RunReport>) =
            runs.iter().partition(|r| !r.verdicts.is_empty());
        let mut parts = Vec::new();
        if !bad.is_empty() {
            let mut hazards: Vec<&str> = bad
                .iter()
                .flat_map(|r| r.verdicts.iter().map(|f| f.hazard.name()))
                .collect();
            hazards.sort_unstable();
            hazards.dedup();
            let ignored = |r: &&RunReport| {
                scenario
                    .regions
                    .iter()
                    .filter(|g| g.noncoherent)
                    .filter_map(|g| r.access(&g.name))
                    .any(|a| !a.honors_guest_pat)
            };
            let why = if bad.iter().all(ignored) {
                format!(", where KVM ignores the guest's memory type for {targets}")
            } else {
                String::new()
            };
            parts.push(format!(
                "the data is corrupted ({}) on {}{why}",
                hazards.join(", "),
                names_all(&bad)
            ));
        }
        if !good.is_empty() {
            let by = |want: Scope| -> Vec<&RunReport> {
                good.iter()
                    .copied()
                    .filter(|r| scope(scenario, r) == want)
                    .collect()
            };
            // A group that is every correct run is "all" of them.
            let names = |rs: &[&RunReport]| {
                if rs.len() == good.len() && rs.len() > 1 {
                    "all".to_string()
                } else {
                    names_all(rs)
                }
            };
            let mut how = Vec::new();
            let slot = by(Scope::SlotOnly);
            if !slot.is_empty() {
                how.push(format!(
                    "{} honor guest PAT for {targets} alone",
                    names(&slot)
                ));
            }
            let wide = by(Scope::VmWide);
            if !wide.is_empty() {
                how.push(format!(
                    "{} honor guest PAT for the whole VM, which exposes every region to aliasing and to the guest's UC mappings",
                    names(&wide)
                ));
            }
            let unknown = by(Scope::Unknown);
            if !unknown.is_empty() {
                how.push(format!(
                    "{} make no access outside {targets} that would show how far guest PAT is honored",
                    names(&unknown)
                ));
            }
            let subject = if bad.is_empty() { "the data" } else { "it" };
            parts.push(format!(
                "{subject} stays correct on {}: {}",
                names_all(&good),
                how.join("; ")
            ));
        }
        sentences.push(format!("On {vendor}, {}.", parts.join("; ")));
    }
    sentences.join(" ")
}
