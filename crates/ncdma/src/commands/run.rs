//! `ncdma run SCENARIO`: a scenario (built-in name or TOML file) on one kernel, or on every
//! kernel and vendor as a matrix; optionally drawn as SVG. With `--backend kvm`, on this
//! host's `/dev/kvm` beside the model of one profile (`scenario::real`). Exit 0 when every
//! expectation holds (and the real run reads what the model of this host predicts), 1 when
//! the run completed but one failed (printed) or `/dev/kvm` cannot be used, 2 for a bad
//! scenario or a scenario the real guest cannot run.

use std::path::PathBuf;

use clap::Args;
use clap::builder::PossibleValuesParser;
use kvm_model::{KernelProfile, Vendor};
use scenario::{RunReport, Scenario};
use serde_json::json;

use super::replay::BackendKind;
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
    /// Also draw the guest-physical address space of every run into FILE (SVG; model only).
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Where it runs: the reference kernel, or this host's /dev/kvm beside the model of the
    /// one profile --kernel and --vendor choose.
    #[arg(long, value_enum, default_value = "model")]
    pub backend: BackendKind,
}

/// `scenario: what`, as bad input.
fn bad(scenario: &Scenario, e: &dyn std::fmt::Display) -> CliError {
    CliError::BadInput(format!("{}: {e}", scenario.name))
}

/// The one profile a single run uses.
fn profile(scenario: &Scenario, args: &RunArgs) -> Result<KernelProfile, CliError> {
    let vendor = args.vendor.unwrap_or(scenario.vm.kernel.vendor);
    match &args.kernel {
        Some(name) => KernelProfile::parse(name, vendor).map_err(|e| bad(scenario, &e)),
        None => Ok(scenario.profile_for(vendor)),
    }
}

/// The runs asked for: the matrix, or the one profile.
fn runs(scenario: &Scenario, args: &RunArgs) -> Result<Vec<RunReport>, CliError> {
    if args.all_profiles {
        let vendors = args
            .vendor
            .map_or_else(|| vec![Vendor::Intel, Vendor::Amd], |v| vec![v]);
        return scenario::run_all(scenario, &vendors).map_err(|e| bad(scenario, &e));
    }
    scenario::run(scenario, profile(scenario, args)?)
        .map(|r| vec![r])
        .map_err(|e| bad(scenario, &e))
}

/// `--backend kvm`: the real run beside the model of one profile. The matrix and the SVG
/// are the model's: asking for them here is bad input rather than a silent model run.
fn real(scenario: &Scenario, args: &RunArgs, json: bool) -> Output {
    if args.all_profiles {
        return Err(CliError::BadInput(
            "--all-profiles is the model's matrix; --backend kvm puts one real run beside one \
             model profile (choose it with --kernel and --vendor)"
                .into(),
        ));
    }
    if args.svg.is_some() {
        return Err(CliError::BadInput(
            "--svg draws the model's runs; it does not apply to --backend kvm".into(),
        ));
    }
    let c = scenario::real::compare(scenario, profile(scenario, args)?).map_err(|e| {
        if e.is_bad_input() {
            bad(scenario, &e)
        } else {
            CliError::Failed(format!("{}: {e}", scenario.name))
        }
    })?;
    let out = if json {
        let mut doc = serde_json::to_value(&c).map_err(|e| CliError::Failed(e.to_string()))?;
        doc["summary"] = scenario.summary.clone().into();
        doc["backend"] = "kvm".into();
        doc["agrees"] = c.agrees().into();
        format!("{doc:#}\n")
    } else {
        c.to_string()
    };
    let mut failed = Vec::new();
    if c.model.expectation_failed() {
        failed.push(format!(
            "expectation failed on {}/{}",
            c.model.kernel, c.model.vendor
        ));
    }
    let steps: Vec<String> = c
        .reads
        .iter()
        .filter(|r| !r.same_as_host_model)
        .map(|r| r.step.to_string())
        .collect();
    if !steps.is_empty() {
        failed.push(format!(
            "the real run differs from the model of this host at step {}",
            steps.join(", ")
        ));
    }
    if failed.is_empty() {
        return Ok(out);
    }
    print!("{out}");
    Err(CliError::Failed(format!(
        "{}: {}",
        scenario.name,
        failed.join("; ")
    )))
}

pub(crate) fn run(args: &RunArgs, json: bool) -> Output {
    let scenario = scenario::load(&args.scenario).map_err(|e| CliError::BadInput(e.to_string()))?;
    if args.backend == BackendKind::Kvm {
        return real(&scenario, args, json);
    }
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
