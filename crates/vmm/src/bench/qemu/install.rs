//! Finding `qemu-system-x86_64`, and installing Debian's `qemu-system-x86` when the caller
//! allows it. The benchmark installs QEMU, CI does not (`benchmarks.md`), so whether to
//! install is the caller's decision, passed as [`Install`].

use std::env;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::error::QemuError;
use super::process::tail;

/// The binary the benchmark runs.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";
/// Debian's package that ships it.
pub const QEMU_PACKAGE: &str = "qemu-system-x86";

/// Whether [`ensure_qemu`] may install the package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Only look on `PATH`.
    Never,
    /// Run `apt-get install` when the binary is missing (needs root).
    IfMissing,
}

/// The path of `qemu-system-x86_64` on `PATH`, if there is one.
pub fn find_qemu() -> Option<PathBuf> {
    find_in(env::var_os("PATH")?.as_os_str(), QEMU_BINARY)
}

/// The first executable file called `name` in the `PATH`-style list `path`.
fn find_in(path: &OsStr, name: &str) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Finds `qemu-system-x86_64`, installing `qemu-system-x86` first when it is missing and
/// `install` allows it.
///
/// The install is `apt-get install -y --no-install-recommends qemu-system-x86` (the
/// recommends are a GUI, firmware and tools the benchmark does not use); when apt says it
/// does not know the package — a host whose package lists were never fetched — it runs
/// `apt-get update` and tries once more.
pub fn ensure_qemu(install: Install) -> Result<PathBuf, QemuError> {
    if let Some(path) = find_qemu() {
        return Ok(path);
    }
    if install == Install::Never {
        return Err(QemuError::NotFound {
            binary: QEMU_BINARY,
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(QemuError::NotRoot {
            binary: QEMU_BINARY,
            euid,
        });
    }
    let install_args = ["install", "-y", "--no-install-recommends", QEMU_PACKAGE];
    if let Err(first) = apt(&install_args) {
        if !missing_package_list(&first) {
            return Err(first);
        }
        apt(&["update"])?;
        apt(&install_args)?;
    }
    find_qemu().ok_or(QemuError::StillMissing {
        binary: QEMU_BINARY,
    })
}

/// Runs `apt-get ARGS` non-interactively.
fn apt(args: &[&str]) -> Result<Output, QemuError> {
    let command = format!("apt-get {}", args.join(" "));
    let output = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|source| QemuError::AptSpawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(QemuError::Apt {
            command,
            status: output.status.to_string(),
            stderr_tail: tail(&output.stderr),
        })
    }
}

/// Whether apt failed because it has no package list that names the package.
fn missing_package_list(error: &QemuError) -> bool {
    match error {
        QemuError::Apt { stderr_tail, .. } => {
            stderr_tail.contains("Unable to locate package")
                || stderr_tail.contains("has no installation candidate")
        }
        _ => false,
    }
}

/// Opens `/dev/kvm` read-write, as `-enable-kvm` will, so that a host without KVM is told so
/// before any QEMU starts.
pub fn check_kvm() -> Result<(), QemuError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map(|_: File| ())
        .map_err(QemuError::Kvm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_executable_on_the_path() {
        let dir = env::temp_dir().join(format!("ncdma-find-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
        }
        let plain = a.join("tool");
        std::fs::write(&plain, b"").unwrap();
        let runnable = b.join("tool");
        std::fs::write(&runnable, b"").unwrap();
        std::fs::set_permissions(&runnable, std::fs::Permissions::from_mode(0o755)).unwrap();

        let path = env::join_paths([&a, &b]).unwrap();
        // Not executable in `a`, so `b`'s copy is the one found.
        assert_eq!(find_in(&path, "tool"), Some(runnable));
        assert_eq!(find_in(&path, "absent"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unknown_package_means_update_first() {
        let apt_error = |stderr: &str| QemuError::Apt {
            command: "apt-get install".into(),
            status: "exit status: 100".into(),
            stderr_tail: stderr.into(),
        };
        assert!(missing_package_list(&apt_error(
            "E: Unable to locate package qemu-system-x86"
        )));
        assert!(missing_package_list(&apt_error(
            "E: Package 'qemu-system-x86' has no installation candidate"
        )));
        assert!(!missing_package_list(&apt_error(
            "E: Could not get lock /var/lib/dpkg/lock-frontend"
        )));
    }

    #[test]
    fn never_installing_only_looks() {
        // Whether or not this host has QEMU, `Never` must not try apt.
        match ensure_qemu(Install::Never) {
            Ok(path) => assert!(path.ends_with(QEMU_BINARY)),
            Err(e) => assert!(matches!(e, QemuError::NotFound { .. }), "{e}"),
        }
    }
}
