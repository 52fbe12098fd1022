//! The owned resources of a QEMU run, each released by `Drop` whatever happens: the scratch
//! directory holding the RAM files and sockets ([`WorkDir`]), and a running QEMU
//! ([`QemuProcess`]), killed and reaped. Also [`tail`], the end of a process's stderr for
//! error messages.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::error::{QemuError, Role};

/// Bytes of stderr kept in an error: enough for QEMU's last few lines.
const TAIL_BYTES: usize = 2048;

/// The last [`TAIL_BYTES`] of `bytes`, as trimmed text.
pub fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

/// A fresh directory, removed with everything in it on drop.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// Creates `parent/ncdma-qemu-PID-NANOS`.
    pub fn create(parent: &Path) -> Result<WorkDir, QemuError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let path = parent.join(format!("ncdma-qemu-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|source| QemuError::File {
            step: "creating the work directory",
            path: path.clone(),
            source,
        })?;
        Ok(WorkDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Nothing to report to at drop time; a leftover directory is visible by its name.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running QEMU; killed and reaped on drop.
#[derive(Debug)]
pub struct QemuProcess {
    role: Role,
    child: Child,
    stderr: PathBuf,
}

impl QemuProcess {
    /// Starts `binary args`, stdin closed, stdout and stderr to files in `dir` (a file cannot
    /// fill up and block QEMU as an unread pipe would).
    pub fn spawn(
        role: Role,
        binary: &Path,
        args: &[OsString],
        dir: &Path,
    ) -> Result<QemuProcess, QemuError> {
        let name = match role {
            Role::Source => "source",
            Role::Destination => "destination",
        };
        let stderr = dir.join(format!("{name}.stderr"));
        let open = |path: PathBuf| {
            File::create(&path).map_err(|source| QemuError::File {
                step: "creating",
                path,
                source,
            })
        };
        let out = open(dir.join(format!("{name}.stdout")))?;
        let err = open(stderr.clone())?;
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| QemuError::Spawn { role, source })?;
        Ok(QemuProcess {
            role,
            child,
            stderr,
        })
    }

    /// Which QEMU this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// [`QemuError::Exited`] if the process has exited.
    pub fn check_running(&mut self) -> Result<(), QemuError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(self.exited(status.to_string())),
            Ok(None) => Ok(()),
            Err(e) => Err(self.exited(format!("unknown: {e}"))),
        }
    }

    /// Explains `error`, seen while talking to this QEMU: a QEMU that aborts (as one does
    /// when KVM refuses an MSR) first drops its sockets, so a QMP error is often the shadow of
    /// an exit. Waits briefly for that exit and returns it, with the stderr that says why, in
    /// place of `error`.
    pub fn explain(&mut self, error: QemuError) -> QemuError {
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Err(exited) = self.check_running() {
                return exited;
            }
            thread::sleep(Duration::from_millis(20));
        }
        error
    }

    fn exited(&self, status: String) -> QemuError {
        QemuError::Exited {
            role: self.role,
            status,
            stderr_tail: fs::read(&self.stderr)
                .map(|bytes| tail(&bytes))
                .unwrap_or_default(),
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        // SIGKILL: the benchmark keeps nothing of a QEMU once its numbers are read, and a
        // QEMU stuck in a migration would not answer a polite `quit`. Errors mean it has
        // already been reaped.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let long = vec![b'x'; TAIL_BYTES + 10];
        assert_eq!(tail(&long).len(), TAIL_BYTES);
        assert_eq!(tail(b"  error: no KVM\n"), "error: no KVM");
    }

    #[test]
    fn the_work_dir_is_removed_on_drop() {
        let dir = WorkDir::create(&std::env::temp_dir()).unwrap();
        let path = dir.path().to_path_buf();
        fs::write(path.join("f"), b"1").unwrap();
        drop(dir);
        assert!(!path.exists());
    }

    #[test]
    fn an_exited_process_is_reported_with_its_stderr() {
        let dir = WorkDir::create(&std::env::temp_dir()).unwrap();
        let args = [
            "-c".into(),
            "echo 'qemu: failed to set MSR' >&2; exit 3".into(),
        ];
        let mut p =
            QemuProcess::spawn(Role::Source, Path::new("/bin/sh"), &args, dir.path()).unwrap();
        let err = p.explain(QemuError::Port(std::io::ErrorKind::BrokenPipe.into()));
        match err {
            QemuError::Exited {
                role, stderr_tail, ..
            } => {
                assert_eq!(role, Role::Source);
                assert_eq!(stderr_tail, "qemu: failed to set MSR");
            }
            other => panic!("{other}"),
        }
    }
}
