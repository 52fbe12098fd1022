//! `ncdma bench spte|memslots`: the benchmarks of `vmm::bench`, printed as a table (or JSON)
//! with the ratios that matter.

use clap::{Args, ValueEnum};
use vmm::bench::{memslots, spte};

use crate::Output;
use crate::error::CliError;

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchName {
    /// make_spte() on a flagged vs an unflagged slot (6.16+memslot-flag, Intel), on the model.
    Spte,
    /// gfn -> slot lookup on the model; memslot setup, move and delete at 509 and 32764
    /// slots on the model and on /dev/kvm.
    Memslots,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The benchmark to run.
    #[arg(value_enum)]
    pub name: BenchName,
    /// Repetitions behind each median [default: 31 for spte, 5 for memslots].
    #[arg(long, value_name = "N")]
    pub reps: Option<usize>,
}

pub(crate) fn run(args: &BenchArgs, json: bool) -> Output {
    let failed = |e: &dyn std::fmt::Display| CliError::Failed(format!("bench: {e}"));
    let (text, doc) = match args.name {
        BenchName::Spte => {
            let r = spte::run(args.reps.unwrap_or(31)).map_err(|e| failed(&e))?;
            (r.to_string(), r.to_json())
        }
        BenchName::Memslots => {
            let r = memslots::run(args.reps.unwrap_or(5)).map_err(|e| failed(&e))?;
            (r.to_string(), r.to_json())
        }
    };
    Ok(if json { format!("{doc}\n") } else { text })
}
