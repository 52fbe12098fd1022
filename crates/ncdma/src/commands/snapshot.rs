//! `ncdma snapshot FILE` and `ncdma restore FILE`: a running live guest written to a file
//! (paused only while it is written, then resumed), and a file verified, restored into a
//! new VM through this host's strategy chain, and run to show that the guest goes on.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use migration::destination::Limits;
use migration::snapshot::{self, SnapshotOptions};
use serde_json::json;
use vmm::cache::HostCache;
use vmm::live::LiveVm;

use super::progress::{summary_json, summary_text};
use super::vm_args::{StrategyArgs, VmArgs, live_error, registration, run_restored};
use crate::Output;
use crate::error::CliError;

#[derive(Debug, Args)]
pub(crate) struct SnapshotArgs {
    /// The snapshot file to write (atomically: a temporary file renamed over it).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub vm: VmArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// The snapshot file to restore.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// How long to run the restored guest before stopping it.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub run_ms: u64,
    /// The most guest memory the file may declare, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16384)]
    pub max_memory_mib: u64,
    #[command(flatten)]
    pub strategy: StrategyArgs,
}

pub(crate) fn snapshot(args: &SnapshotArgs, json: bool) -> Output {
    let mut vm = args.vm.boot()?;
    let summary =
        snapshot::write_to_path(&args.file, &mut vm, &HostCache, &SnapshotOptions::default())
            // A `refuse` BAR fails here too, before any file is created.
            .map_err(|e| CliError::Failed(format!("snapshot: {e}")))?;
    let written = vm.guest_pages_written();
    Ok(if json {
        let doc = json!({
            "file": args.file.display().to_string(),
            "bar_registration": registration(&vm),
            "summary": summary_json(&summary),
            "guest_pages_written": written,
        });
        format!("{doc:#}\n")
    } else {
        format!(
            "snapshot of a running guest ({} MiB RAM, {} MiB BAR) written to {}\nBAR \
             registered: {}\n{}the guest resumed (it had written {written} pages)\n",
            args.vm.ram_mib,
            args.vm.bar_mib,
            args.file.display(),
            mechanism(&vm),
            summary_text(&summary),
        )
    })
}

pub(crate) fn restore(args: &RestoreArgs, json: bool) -> Output {
    let limits = Limits {
        max_memory: args.max_memory_mib << 20,
        ..Limits::default()
    };
    // A file that cannot be opened or does not verify is bad input; nothing was built.
    let image = snapshot::read_from_path(&args.file, limits)
        .map_err(|e| CliError::BadInput(format!("restore: {e}")))?;
    let vm = LiveVm::restore(&image, args.strategy.policy()).map_err(live_error)?;
    let report = run_restored(&vm, Duration::from_millis(args.run_ms))?;
    Ok(if json {
        let doc = json!({
            "file": args.file.display().to_string(),
            "source": image.header.facts.host,
            "run": report,
        });
        format!("{doc:#}\n")
    } else {
        format!(
            "restored {} (from {}): BAR registered here: {}\nthe guest ran on for {} ms: \
             {} -> {} pages written\n",
            args.file.display(),
            image.header.facts.host,
            mechanism(&vm),
            report["ran_ms"],
            report["guest_pages_before"],
            report["guest_pages_after"],
        )
    })
}

/// `unsafe (no mechanism honors the guest's memory types here)`, or the mechanism's name.
pub(crate) fn mechanism(vm: &LiveVm) -> String {
    match vm.bar_registration() {
        None => "no BAR".into(),
        Some(r) if r.is_safe() => format!("{:?}", r.mechanism),
        Some(r) => format!(
            "{:?} (marked unsafe: no mechanism makes the guest's memory types take effect \
             on this host)",
            r.mechanism
        ),
    }
}
