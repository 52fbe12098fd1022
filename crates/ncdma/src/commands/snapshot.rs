//! `ncdma snapshot FILE` and `ncdma restore FILE`: a running live guest written to a file
//! (paused only while it is written, then resumed), and a file verified, restored into a
//! new VM through this host's strategy chain, and run to show that the guest goes on.

use std::path::PathBuf;

use clap::Args;
use migration::snapshot::{self, SnapshotOptions};
use serde_json::json;
use vmm::cache::HostCache;

use super::progress::{summary_json, summary_text};
use super::vm_args::{RestoreArgs, VmArgs, mechanism, registration};
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
pub(crate) struct RestoreFileArgs {
    /// The snapshot file to restore.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub target: RestoreArgs,
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

pub(crate) fn restore(args: &RestoreFileArgs, json: bool) -> Output {
    // A file that cannot be opened or does not verify is bad input; nothing was built.
    let image = snapshot::read_from_path(&args.file, args.target.limits())
        .map_err(|e| CliError::BadInput(format!("restore: {e}")))?;
    let file = args.file.display().to_string();
    args.target.restore_and_run(
        image,
        &format!("restored {file}"),
        ("file", file.clone()),
        json,
    )
}
