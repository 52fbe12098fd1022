//! `ncdma probe`: output and exit codes through the built binary. 0 when the probe ran,
//! whatever it found; 1 when the KVM device cannot be opened or is not one; 2 for bad
//! arguments.

mod common;

use common::ncdma;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A fresh directory of this test's own, readable by everyone.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ncdma-probe-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn the_model_probe_of_this_host_exits_0_with_a_fail_verdict() {
    let out = ncdma(&["probe", "--backend", "model", "--empirical"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("noncoherent region verdict ..."))
        .unwrap();
    assert!(verdict.contains(" FAIL: no safe mechanism"), "{verdict}");
    assert!(
        stdout.contains(" N/A: a model runs no guest code\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  4. vendor honors guest PAT (AMD NPT): refused (AMD, but TDP is off"),
        "{stdout}"
    );
    assert!(out.stderr.is_empty());
}

#[test]
fn json_names_the_mechanism_on_the_proposal_kernel() {
    let out = ncdma(&[
        "probe",
        "--backend",
        "model",
        "--kernel",
        "6.16+memslot-flag",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verdict"]["mechanism"], "memslot-flag");
    assert_eq!(doc["verdict"]["attempts"][0]["outcome"], "used");
    assert_eq!(
        doc["backend"],
        "model: kernel 6.16+memslot-flag (Intel, self-snoop on, TDP on)"
    );
    // VM-wide on request: the quirk, on upstream 6.16.
    let out = ncdma(&[
        "probe",
        "--backend",
        "model",
        "--kernel",
        "6.16",
        "--allow-vm-wide",
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["verdict"]["mechanism"], "disable-ignore-guest-pat");
    assert_eq!(doc["verdict"]["scope"], "VM-wide");
}

#[test]
fn the_real_probe_exits_0_or_says_why_it_cannot_run() {
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        println!("SKIP: /dev/kvm does not open ({e}): real probe not run");
        return;
    }
    let out = ncdma(&["probe"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("probing kvm: /dev/kvm"), "{stdout}");
    assert!(
        stdout.contains("memslot flag 8 (KVM_MEM_NON_COHERENT_DMA) .. WARN: EINVAL"),
        "{stdout}"
    );
    // A guest measures whether memory types take effect.
    let out = ncdma(&["probe", "--empirical", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let verdict = doc["empirical"]["verdict"].as_str().unwrap();
    assert!(
        ["honored", "not honored", "inconclusive"].contains(&verdict),
        "{verdict}"
    );
    assert_eq!(doc["empirical"]["timings"][1]["condition"], "UC");
}

/// Exit 1 and exactly one line on stderr, containing `expected`.
fn fails_with(out: &Output, expected: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(expected), "{err}");
}

#[test]
fn a_missing_device_is_enoent_and_exits_1() {
    let out = ncdma(&["probe", "--device", "/nonexistent/kvm"]);
    fails_with(
        &out,
        "cannot open /nonexistent/kvm: it does not exist (no KVM on this host",
    );
}

#[test]
fn a_directory_or_a_plain_file_is_no_kvm_device() {
    let dir = scratch_dir("notkvm");
    fails_with(
        &ncdma(&["probe", "--device", dir.to_str().unwrap()]),
        "Is a directory",
    );
    let file = dir.join("file");
    std::fs::write(&file, b"").unwrap();
    fails_with(
        &ncdma(&["probe", "--device", file.to_str().unwrap()]),
        "KVM_CREATE_VM failed: ENOTTY (the file is not a KVM device)",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `EACCES` for real: a file the probing user may not open. Root bypasses file modes
/// (DAC), so as root the probe runs as `nobody` (uid/gid 65534, no supplementary groups)
/// against a root-owned 0600 file; as anyone else, against a 0000 file of its own. As root,
/// the 0000 file itself would open (and fail later, at KVM_CREATE_VM): the test does not
/// pretend otherwise.
#[test]
fn a_device_without_permission_is_eacces_and_exits_1() {
    let dir = scratch_dir("eacces");
    let file = dir.join("kvm");
    std::fs::write(&file, b"").unwrap();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mode = if root { 0o600 } else { 0o000 };
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ncdma"));
    cmd.args(["probe", "--device", file.to_str().unwrap()]);
    if root {
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output();
    std::fs::remove_dir_all(&dir).unwrap();
    let out = match out {
        Ok(out) => out,
        // As nobody, the binary itself may be out of reach (a private target directory).
        Err(e) => {
            println!("SKIP: cannot run ncdma as uid 65534 ({e}): EACCES test not run");
            return;
        }
    };
    fails_with(
        &out,
        &format!("cannot open {}: permission denied", file.display()),
    );
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["probe", "--backend", "model", "--kernel", "6.99"][..],
        &["probe", "--backend", "model", "--device", "/dev/kvm"][..],
        &["probe", "--kernel", "6.16"][..],
        &["probe", "--backend", "xen"][..],
        &["probe", "--vendor", "arm", "--backend", "model"][..],
    ] {
        let out = ncdma(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
}
