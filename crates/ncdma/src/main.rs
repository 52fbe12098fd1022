//! `ncdma`: the command-line program. Thin by design: it parses, calls the libraries, and
//! prints; every decision lives in a library crate where it can be tested.
//!
//! Exit codes (design.md): 0 success, 2 bad input (anything a user can type wrong), 1 an
//! operation that failed. Never a panic or a backtrace for user input.

mod cli;
mod commands;
mod error;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::report_clap(e),
    };
    let result = match &cli.command {
        Command::Memtype(cmd) => commands::memtype::run(cmd, cli.json),
        Command::Explain(args) => commands::explain::run(args, cli.json),
        Command::Replay(args) => commands::replay::run(args, cli.json),
        Command::Bench(args) => commands::bench::run(args, cli.json),
        Command::Demo => commands::demo::run(cli.json),
        Command::Scenarios => commands::scenarios::run(cli.json),
        Command::Run(args) => commands::run::run(args, cli.json),
        Command::Probe(args) => commands::probe::run(args, cli.json),
        Command::Snapshot(args) => commands::snapshot::snapshot(args, cli.json),
        Command::Restore(args) => commands::snapshot::restore(args, cli.json),
        Command::Migrate(cmd) => commands::migrate::run(cmd, cli.json),
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => e.report(),
    }
}

/// What a command produced: text for people or one JSON document.
pub(crate) type Output = Result<String, CliError>;
