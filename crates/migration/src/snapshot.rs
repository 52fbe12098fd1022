//! Snapshots: the stream of [`crate::format`] written to a file while the guest is paused,
//! and read back through the verifying destination.
//!
//! Writing goes to a temporary file beside the target (`.NAME.tmp`), which is flushed,
//! synced and renamed over the target, then the directory is synced: a failed snapshot never
//! leaves a partial file under the final name, and a finished one survives a crash. Every
//! I/O error names its step (`open`, `write`, `flush`, `sync_all`, `rename`,
//! `sync_all (directory)`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cache::CacheMaintenance;
use crate::destination::{Limits, VmImage, receive};
use crate::error::{EncodeError, StreamError};
use crate::format::{StreamKind, VmConfig};
use crate::precopy::{MigrationError, Summary, Transfer, WriterThread, sendable_config, step};
use crate::source::{MigrationSource, SourceError};
use crate::stream::StreamReader;

/// What to do with the guest after a successful snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Leave the guest paused (e.g. to stop it); by default it resumes. After a failed
    /// snapshot it always resumes.
    pub leave_paused: bool,
}

/// Why a snapshot could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("{step} {path}: {kind}")]
    Io {
        /// `open`, `write`, `flush`, `sync_all`, `rename` or `sync_all (directory)`.
        step: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
    /// The VM could not be snapshotted (a `refuse` region, an invalid configuration, a
    /// failing source).
    #[error("snapshot of the VM: {0}")]
    Source(MigrationError),
    /// The guest could not be resumed after the snapshot (it is paused).
    #[error(
        "resuming the guest after the snapshot: {resume}{}",
        .failed.as_ref().map_or(String::new(), |e| format!(" (the snapshot itself failed: {e})"))
    )]
    Resume {
        /// Why resuming failed.
        resume: SourceError,
        /// The snapshot's own error, if it had failed.
        failed: Option<Box<SnapshotError>>,
    },
    /// The file is not a valid snapshot.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: StreamError,
    },
}

/// Snapshots `source` into `path` (see the module documentation for the file handling).
/// The guest is paused while its memory is written.
pub fn write_to_path(
    path: &Path,
    source: &mut dyn MigrationSource,
    cache: &dyn CacheMaintenance,
    options: &SnapshotOptions,
) -> Result<Summary, SnapshotError> {
    // A `refuse` region fails here: no file is created.
    let config = sendable_config(source).map_err(SnapshotError::Source)?;
    let io = |step: &'static str, at: &Path| {
        let path = at.to_path_buf();
        move |e: io::Error| SnapshotError::Io {
            step,
            path,
            kind: e.kind(),
        }
    };
    let name = path.file_name().ok_or_else(|| SnapshotError::Io {
        step: "open",
        path: path.to_path_buf(),
        kind: io::ErrorKind::InvalidInput,
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("open", &tmp))?;

    let started = Instant::now();
    if let Err(e) = source.pause() {
        let _ = fs::remove_file(&tmp);
        return Err(SnapshotError::Source(step("pausing the guest")(e)));
    }
    let written = write_stream(&file, &tmp, source, cache, config).and_then(|summary| {
        file.sync_all().map_err(io("sync_all", &tmp))?;
        fs::rename(&tmp, path).map_err(io("rename", path))?;
        Ok(summary)
    });
    if written.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
    }
    let paused_for = started.elapsed();
    if (written.is_err() || !options.leave_paused)
        && let Err(resume) = source.resume()
    {
        return Err(SnapshotError::Resume {
            resume,
            failed: written.err().map(Box::new),
        });
    }
    let mut summary = written?;
    // The rename is durable only once the directory is synced.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync_all (directory)", dir))?;
    summary.total_time = started.elapsed();
    summary.downtime = if options.leave_paused {
        summary.total_time
    } else {
        paused_for
    };
    Ok(summary)
}

/// Writes the whole stream (the guest is paused) into `file` and flushes it.
fn write_stream(
    file: &File,
    tmp: &Path,
    source: &mut dyn MigrationSource,
    cache: &dyn CacheMaintenance,
    config: VmConfig,
) -> Result<Summary, SnapshotError> {
    let failed = |error: MigrationError| match error {
        MigrationError::Send(EncodeError::Io { kind }) => SnapshotError::Io {
            step: "write",
            path: tmp.to_path_buf(),
            kind,
        },
        other => SnapshotError::Source(other),
    };
    let out = BufWriter::with_capacity(1 << 20, file);
    let mut t = Transfer::start(
        out,
        StreamKind::Snapshot,
        source,
        cache,
        config.clone(),
        WriterThread::Auto,
    )
    .map_err(failed)?;
    for (position, region) in config.regions.iter().enumerate() {
        if region.carries_pages() {
            t.send_pages(0, position, 0..region.pages())
                .map_err(failed)?;
        }
    }
    t.send_state().map_err(failed)?;
    t.end(1).map_err(failed)?;
    t.writer().flush().map_err(|e| match e {
        EncodeError::Io { kind } => SnapshotError::Io {
            step: "flush",
            path: tmp.to_path_buf(),
            kind,
        },
        other => SnapshotError::Source(MigrationError::Send(other)),
    })?;
    // The caller fills in the times, which include syncing and renaming.
    Ok(t.summary(Duration::ZERO, Duration::ZERO, 1, true))
}

/// Reads and verifies the snapshot at `path`. Nothing is returned unless the whole file
/// verified, its last byte included.
pub fn read_from_path(path: &Path, limits: Limits) -> Result<VmImage, SnapshotError> {
    let file = File::open(path).map_err(|e| SnapshotError::Io {
        step: "open",
        path: path.to_path_buf(),
        kind: e.kind(),
    })?;
    let read = |error| SnapshotError::Read {
        path: path.to_path_buf(),
        error,
    };
    let mut reader = StreamReader::open(BufReader::with_capacity(1 << 20, file)).map_err(read)?;
    let image = receive(&mut reader, limits).map_err(read)?;
    reader.expect_end_of_stream().map_err(read)?;
    Ok(image)
}
