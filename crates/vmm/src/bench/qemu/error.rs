//! [`QemuError`]: why QEMU could not be found, installed, started or migrated. Each variant
//! says what was being done; a QEMU that died carries the tail of its stderr, because that is
//! where QEMU says why.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Which of the two QEMUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The one whose RAM is sent.
    Source,
    /// The one started with `-incoming`.
    Destination,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source QEMU",
            Role::Destination => "destination QEMU",
        })
    }
}

/// Why the QEMU peer could not run.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// The binary is not on `PATH` and installing it was not allowed.
    #[error(
        "{binary} is not on PATH (install Debian's qemu-system-x86, or let the benchmark install it)"
    )]
    NotFound {
        /// The binary looked for.
        binary: &'static str,
    },
    /// Installing needs root.
    #[error("{binary} is not on PATH and installing qemu-system-x86 needs root (euid {euid})")]
    NotRoot {
        /// The binary looked for.
        binary: &'static str,
        /// Our effective uid.
        euid: u32,
    },
    /// `apt-get` could not be started (not a Debian-like host).
    #[error("cannot run {command}: {source}")]
    AptSpawn {
        /// The command line.
        command: String,
        /// Why it did not start.
        #[source]
        source: io::Error,
    },
    /// `apt-get` ran and failed.
    #[error("{command} failed ({status}): {stderr_tail}")]
    Apt {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The package installed but the binary is still not on `PATH`.
    #[error("qemu-system-x86 was installed but {binary} is still not on PATH")]
    StillMissing {
        /// The binary looked for.
        binary: &'static str,
    },
    /// `/dev/kvm` does not open, so `-enable-kvm` cannot work.
    #[error("/dev/kvm does not open: {0}")]
    Kvm(#[source] io::Error),
    /// Creating, filling or reading the RAM files or the work directory failed.
    #[error("{step} {}: {source}", path.display())]
    File {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The RAM size is not a positive whole number of MiB (how QEMU's `-m` takes it).
    #[error("guest RAM must be a positive multiple of 1 MiB, not {bytes} bytes")]
    RamSize {
        /// The size asked for.
        bytes: u64,
    },
    /// No free loopback port could be found.
    #[error("picking a free loopback port: {0}")]
    Port(#[source] io::Error),
    /// A QEMU process could not be started.
    #[error("starting the {role}: {source}")]
    Spawn {
        /// Which one.
        role: Role,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A QEMU process exited while we needed it.
    #[error("the {role} exited ({status}); its stderr ends: {stderr_tail}")]
    Exited {
        /// Which one.
        role: Role,
        /// Its exit status.
        status: String,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// Talking QMP failed at the socket level.
    #[error("QMP with the {role}, {step}: {source}")]
    Qmp {
        /// Which QEMU.
        role: Role,
        /// What was being done.
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A QMP message was not what the protocol says.
    #[error("QMP with the {role}: unexpected message {message:?}")]
    QmpProtocol {
        /// Which QEMU.
        role: Role,
        /// The message (or the JSON error).
        message: String,
    },
    /// A QMP command returned an error.
    #[error("the {role} refused {command}: {class}: {desc}")]
    QmpCommand {
        /// Which QEMU.
        role: Role,
        /// The command.
        command: String,
        /// QMP's error class.
        class: String,
        /// QMP's description.
        desc: String,
    },
    /// The migration ended in a state other than `completed`.
    #[error("the migration ended {status} on the {role}: {}", error_desc.as_deref().unwrap_or("(QEMU gave no reason)"))]
    MigrationFailed {
        /// The QEMU that reported it.
        role: Role,
        /// The final status.
        status: String,
        /// QEMU's `error-desc`.
        error_desc: Option<String>,
    },
    /// Something did not happen in time.
    #[error("{what} did not happen within {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
}
