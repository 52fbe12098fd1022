//! `ncdma migrate send --to HOST:PORT` and `ncdma migrate receive --listen ADDR`: live
//! migration of a running guest over TCP, with a progress line per pre-copy round and a
//! summary. A failed migration leaves the source guest running (and says so, with proof:
//! its page count goes on growing); a refused stream leaves the destination empty.

use std::net::TcpListener;
use std::time::Duration;

use clap::{Args, Subcommand};
use migration::precopy::{PrecopyOptions, WriterThread};
use migration::transport::{self, ReceiveError, ReceiveOptions, SendOptions};
use serde_json::json;
use vmm::cache::HostCache;

use super::progress::{RoundDisplay, summary_json, summary_text};
use super::vm_args::{RestoreArgs, VmArgs, mechanism, registration};
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
    /// Which thread writes the page runs: `own` overlaps gathering (copying) the next run
    /// with writing this one; `inline` writes each run from the gathering thread, straight
    /// from guest memory, with no copy; `auto` takes `own` when the host has a CPU for
    /// every busy thread (a destination on this host counts), else `inline`.
    #[arg(long, value_name = "WHICH", default_value = "auto", value_parser = writer_thread)]
    pub writer_thread: WriterThread,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Parses `--writer-thread`.
pub(crate) fn writer_thread(value: &str) -> Result<WriterThread, String> {
    match value {
        "auto" => Ok(WriterThread::Auto),
        "own" => Ok(WriterThread::Own),
        "inline" => Ok(WriterThread::Inline),
        other => Err(format!("`{other}` is not one of auto, own, inline")),
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReceiveArgs {
    /// Where to listen, ADDR:PORT.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: String,
    #[command(flatten)]
    pub target: RestoreArgs,
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
            writer: args.writer_thread,
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
        limits: args.target.limits(),
        ..ReceiveOptions::default()
    };
    let image = transport::receive(&listener, &options).map_err(|e| match e {
        // The source sent something this destination refuses: bad input, nothing runs.
        ReceiveError::Stream(_) => CliError::BadInput(format!("migration refused: {e}")),
        other => CliError::Failed(format!("migration failed: {other}")),
    })?;
    args.target.restore_and_run(
        image,
        "received a running guest",
        ("listen", args.listen.clone()),
        json,
    )
}
