//! Text rendering of run reports: the matrix (one row per kernel and vendor) and, for a single
//! run, the detail under it — the whole registration chain, each key access's decision path,
//! and each hazard's evidence (who, where, expected and got).

use std::fmt::Write;

use crate::report::{Finding, RunReport};
use crate::scenario::Scenario;

const HEADER: [&str; 6] = [
    "kernel",
    "registered",
    "key accesses",
    "verdicts",
    "cost (estimate)",
    "expected",
];

/// The matrix: one row per report.
pub fn matrix(rows: &[RunReport]) -> String {
    let cells: Vec<[String; 6]> = rows.iter().map(row).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    line(&mut out, &HEADER.map(String::from), &widths);
    line(&mut out, &widths.map(|w| "-".repeat(w)), &widths);
    for r in &cells {
        line(&mut out, r, &widths);
    }
    out
}

fn line(out: &mut String, cells: &[String; 6], widths: &[usize; 6]) {
    let mut text = String::new();
    for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(c);
        text.push_str(&" ".repeat(w - c.chars().count()));
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

fn row(r: &RunReport) -> [String; 6] {
    let registered = if r.registrations.is_empty() {
        "-".to_string()
    } else {
        r.registrations
            .iter()
            .map(|g| {
                let refused: Vec<String> = g
                    .attempts
                    .iter()
                    .filter_map(|a| a.refused.map(|e| format!("{} {e}", a.mechanism)))
                    .collect();
                let got = g.registered.map_or("none", |m| m.name());
                if refused.is_empty() {
                    format!("{}: {got}", g.region)
                } else {
                    format!("{}: {got} ({})", g.region, refused.join(", "))
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let accesses = r
        .accesses
        .iter()
        .map(|a| {
            let how = if a.honors_guest_pat {
                "honored"
            } else {
                "ignored"
            };
            format!("{}: {} ({how})", a.region, a.effective)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let verdicts = if r.verdicts.is_empty() {
        "none".to_string()
    } else {
        r.verdicts
            .iter()
            .map(|f| match &f.region {
                Some(region) => format!("{} ({region})", f.hazard),
                None => f.hazard.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let expected = match &r.expectation {
        None => "-".to_string(),
        Some(e) if e.holds => "holds".to_string(),
        Some(e) => format!("FAILS (expected {})", hazards(&e.expected)),
    };
    [
        format!("{}/{}", r.kernel, r.vendor),
        registered,
        if accesses.is_empty() {
            "-".to_string()
        } else {
            accesses
        },
        verdicts,
        cost(r),
        expected,
    ]
}

fn hazards(list: &[crate::Hazard]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.iter().map(|h| h.name()).collect::<Vec<_>>().join(", ")
    }
}

/// `445.6 Mcycles, 2656x WB`: the estimate and its ratio to all-WB.
pub fn cost(r: &RunReport) -> String {
    if r.cost.accesses == 0 {
        return "-".to_string();
    }
    let c = r.cost.cycles();
    let amount = if c >= 1e6 {
        format!("{:.1} Mcycles", c / 1e6)
    } else if c >= 1e3 {
        format!("{:.1} kcycles", c / 1e3)
    } else if c >= 10.0 {
        format!("{c:.0} cycles")
    } else {
        format!("{c:.2} cycles")
    };
    format!("{amount}, {:.0}x WB", r.cost.slowdown())
}

/// One run: its matrix row, then the detail.
pub fn single(scenario: &Scenario, r: &RunReport) -> String {
    let mut out = format!("{} on {}/{}\n\n", scenario.name, r.kernel, r.vendor);
    out.push_str(&matrix(std::slice::from_ref(r)));
    out.push('\n');
    for g in &r.registrations {
        let _ = writeln!(out, "registration of {}: {g}", g.region);
    }
    for a in &r.accesses {
        let _ = writeln!(
            out,
            "key access to {} (step {}, {}, offset {:#x}, PAT index {}): {}\n    {}",
            a.region,
            a.step,
            a.op,
            a.offset,
            a.pat_index,
            a.summary(),
            a.reason
        );
    }
    for f in &r.verdicts {
        out.push_str(&finding(f));
    }
    if r.cost.accesses > 0 {
        let _ = writeln!(
            out,
            "cost (estimate, see cost.rs): {} guest accesses, {} of them UC: {:.0} cycles against {:.0} if all were WB",
            r.cost.accesses,
            r.cost.uc_accesses,
            r.cost.cycles(),
            r.cost.wb_cycles()
        );
    }
    out
}

/// A hazard with its first occurrence's evidence (who, where, expected and got).
pub fn finding(f: &Finding) -> String {
    format!(
        "{} x{}, first at {} (step {}, {}):\n    {}\n",
        f.hazard,
        f.count,
        f.place(),
        f.step,
        f.op,
        f.evidence
    )
}

/// One line per run whose expectation failed: what was expected, what happened.
pub fn failures(rows: &[RunReport]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.expectation_failed()) {
        if let Some(e) = &r.expectation {
            let got: Vec<crate::Hazard> = r.hazards().into_iter().collect();
            let _ = writeln!(
                out,
                "expectation failed on {}/{} ([[expect]] at line {}): expected {}, got {}",
                r.kernel,
                r.vendor,
                e.line,
                hazards(&e.expected),
                hazards(&got)
            );
        }
    }
    out
}
