//! `ncdma run SCENARIO`: a scenario (built-in name or TOML file) on one kernel, or on every
//! kernel and vendor as a matrix; optionally drawn as SVG. Exit 0 when every expectation
//! holds, 1 when the run completed but one failed (printed), 2 for a bad scenario.

use std::path::PathBuf;

use clap::Args;
use clap::builder::PossibleValuesParser;
use kvm_model::{KernelProfile, Vendor};
use scenario::{RunReport, Scenario};
use serde_json::json;

use crate::Output;
use crate::error::CliError;

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// A built-in scenario (`ncdma scenarios`) or a scenario file (format: docs/scenarios.md).
    #[arg(value_name = "SCENARIO")]
    pub scenario: String,
    /// Kernel profile of a single run (default: the scenario's `[vm] kernel`).
    #[arg(long, value_name = "P", value_parser = PossibleValuesParser::new(KernelProfile::NAMES), conflicts_with = "all_profiles")]
    pub kernel: Option<String>,
    /// Run every kernel profile, on both vendors unless --vendor is given: the matrix.
    #[arg(long)]
    pub all_profiles: bool,
    /// CPU vendor (default: the scenario's `[vm] vendor`).
    #[arg(long, value_name = "intel|amd")]
    pub vendor: Option<Vendor>,
    /// Also draw the guest-physical address space of every run into FILE (SVG).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// The runs asked for: the matrix, or the one profile.
fn runs(scenario: &Scenario, args: &RunArgs) -> Result<Vec<RunReport>, CliError> {
    let vendor = args.vendor;
    let bad = |e: &dyn std::fmt::Display| CliError::BadInput(format!("{}: {e}", scenario.name));
    if args.all_profiles {
        let vendors = vendor.map_or_else(|| vec![Vendor::Intel, Vendor::Amd], |v| vec![v]);
        return scenario::run_all(scenario, &vendors).map_err(|e| bad(&e));
    }
    let vendor = vendor.unwrap_or(scenario.vm.kernel.vendor);
    let profile = match &args.kernel {
        Some(name) => KernelProfile::parse(name, vendor).map_err(|e| bad(&e))?,
        None => scenario.profile_for(vendor),
    };
    scenario::run(scenario, profile)
        .map(|r| vec![r])
        .map_err(|e| bad(&e))
}

pub(crate) fn run(args: &RunArgs, json: bool) -> Output {
    let scenario = scenario::load(&args.scenario).map_err(|e| CliError::BadInput(e.to_string()))?;
    let rows = runs(&scenario, args)?;
    if let Some(path) = &args.svg {
        std::fs::write(path, scenario::svg::render(&scenario, &rows))
            .map_err(|e| CliError::Failed(format!("writing {}: {e}", path.display())))?;
    }
    let out = if json {
        let doc = json!({
            "scenario": scenario.name,
            "summary": scenario.summary,
            "runs": serde_json::to_value(&rows).map_err(|e| CliError::Failed(e.to_string()))?,
        });
        format!("{doc:#}\n")
    } else {
        match rows.as_slice() {
            [one] => scenario::table::single(&scenario, one),
            _ => format!(
                "{}: {}\n\n{}",
                scenario.name,
                scenario.summary,
                scenario::table::matrix(&rows)
            ),
        }
    };
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.expectation_failed())
        .map(|r| format!("{}/{}", r.kernel, r.vendor))
        .collect();
    if failed.is_empty() {
        return Ok(out);
    }
    // The report is what the user needs to see why: print it, and the failures, then fail.
    print!("{out}");
    if !json {
        print!("\n{}", scenario::table::failures(&rows));
    }
    Err(CliError::Failed(format!(
        "{}: expectation failed on {}",
        scenario.name,
        failed.join(", ")
    )))
}
