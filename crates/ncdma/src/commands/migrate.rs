//! `ncdma migrate send --to HOST:PORT` and `ncdma migrate receive --listen ADDR`: live
//! migration of a running guest over TCP, with a progress line per pre-copy round and a
//! summary. A failed migration leaves the source guest running (and says so, with proof:
//! its page count goes on growing); a refused stream leaves the destination empty.

use std::net::TcpListener;
use std::time::Duration;

use clap::{Args, Subcommand};
use migration::destination::Limits;
use migration::precopy::PrecopyOptions;
use migration::transport::{self, ReceiveError, ReceiveOptions, SendOptions};
use serde_json::json;
use vmm::cache::HostCache;
use vmm::live::LiveVm;

use super::progress::{RoundDisplay, summary_json, summary_text};
use super::snapshot::mechanism;
use super::vm_args::{StrategyArgs, VmArgs, live_error, registration, run_restored};
use crate::Output;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Boot a live guest and migrate it, running, to a listening destination.
    Send(SendArgs),
    /// Accept one migration, verify it, restore the guest and run it.
    Receive(ReceiveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The destination, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// The longest the guest may stay paused for the last round.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub downtime_ms: u64,
    /// Most dirty rounds before stop-and-copy is forced.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub max_rounds: u32,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// Where to listen, ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    /// How long to run the restored guest before stopping it.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub run_ms: u64,
    /// The most guest memory the source may declare, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16384)]
    pub max_memory_mib: u64,
    #[command(flatten)]
    pub strategy: StrategyArgs,
}

pub(crate) fn run(cmd: &MigrateCommand, json: bool) -> Output {
    match cmd {
        MigrateCommand::Send(args) => send(args, json),
        MigrateCommand::Receive(args) => receive(args, json),
    }
}

fn send(args: &SendArgs, json: bool) -> Output {
    let mut vm = args.vm.boot()?;
    let options = SendOptions {
        precopy: PrecopyOptions {
            downtime_budget: Duration::from_millis(args.downtime_ms),
            max_rounds: args.max_rounds,
        },
        ..SendOptions::default()
    };
    let display = RoundDisplay::new("migrating");
    let result = transport::send(args.to.as_str(), &mut vm, &HostCache, &options, &mut |p| {
        display.round(p)
    });
    display.finish();
    let summary = match result {
        Ok(summary) => summary,
        Err(e) => {
            // The engine resumed the guest; show that it runs.
            let before = vm.guest_pages_written();
            std::thread::sleep(Duration::from_millis(50));
            let after = vm.guest_pages_written();
            let state = if after > before {
                format!("the source guest runs on ({before} -> {after} pages written)")
            } else {
                "the source guest did not resume".into()
            };
            return Err(CliError::Failed(format!("migration failed: {e}; {state}")));
        }
    };
    Ok(if json {
        let doc = json!({
            "to": args.to,
            "bar_registration": registration(&vm),
            "summary": summary_json(&summary),
        });
        format!("{doc:#}\n")
    } else {
        format!(
            "migrated a running guest ({} MiB RAM, {} MiB BAR) to {}\nBAR registered: {}\n{}\
             the source stays paused: the guest now runs on the destination\n",
            args.vm.ram_mib,
            args.vm.bar_mib,
            args.to,
            mechanism(&vm),
            summary_text(&summary)
        )
    })
}

fn receive(args: &ReceiveArgs, json: bool) -> Output {
    let listener = TcpListener::bind(args.listen.as_str())
        .map_err(|e| CliError::BadInput(format!("listening on {}: {e}", args.listen)))?;
    let options = ReceiveOptions {
        limits: Limits {
            max_memory: args.max_memory_mib << 20,
            ..Limits::default()
        },
        ..ReceiveOptions::default()
    };
    let image = transport::receive(&listener, &options).map_err(|e| match e {
        // The source sent something this destination refuses: bad input, nothing runs.
        ReceiveError::Stream(_) => CliError::BadInput(format!("migration refused: {e}")),
        other => CliError::Failed(format!("migration failed: {other}")),
    })?;
    let vm = LiveVm::restore(&image, args.strategy.policy()).map_err(live_error)?;
    let report = run_restored(&vm, Duration::from_millis(args.run_ms))?;
    Ok(if json {
        let doc = json!({
            "listen": args.listen,
            "source": image.header.facts.host,
            "run": report,
        });
        format!("{doc:#}\n")
    } else {
        format!(
            "received a running guest from {}: BAR registered here: {}\nthe guest ran on \
             for {} ms: {} -> {} pages written\n",
            image.header.facts.host,
            mechanism(&vm),
            report["ran_ms"],
            report["guest_pages_before"],
            report["guest_pages_after"],
        )
    })
}
