//! `ncdma snapshot`, `restore` and `migrate send|receive` as a user runs them: a real guest
//! on /dev/kvm snapshotted and restored, migrated between two `ncdma` processes over TCP
//! loopback, and every bad input refused with exit 2 (a missing or corrupt file, a bad
//! flag). The runs that need /dev/kvm print one `SKIP` line when it cannot be opened.

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::{assert_bad_input, json, ncdma};

fn kvm_opens(what: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            println!("SKIP: /dev/kvm cannot be opened ({e}): {what} not run");
            false
        }
    }
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ncdma-cli-{}-{name}", std::process::id()))
}

const SMALL: [&str; 6] = [
    "--ram-mib",
    "16",
    "--bar-mib",
    "2",
    "--working-set-mib",
    "4",
];

#[test]
fn bad_flags_and_files_are_bad_input() {
    assert_bad_input(&["snapshot", "x.snap", "--bar-policy", "copy"], "copy");
    assert_bad_input(&["snapshot", "x.snap", "--ram-mib", "1"], "1");
    assert_bad_input(
        &[
            "migrate",
            "send",
            "--to",
            "127.0.0.1:1",
            "--max-rounds",
            "-3",
        ],
        "-3",
    );
    assert_bad_input(
        &[
            "migrate",
            "send",
            "--to",
            "127.0.0.1:1",
            "--writer-thread",
            "both",
        ],
        "both",
    );
    let missing = temp("missing.snap");
    assert_bad_input(&["restore", missing.to_str().unwrap()], "missing.snap");
    let corrupt = temp("corrupt.snap");
    std::fs::write(&corrupt, b"NCDMAMIG but not a stream").unwrap();
    assert_bad_input(&["restore", corrupt.to_str().unwrap()], "corrupt.snap");
    std::fs::remove_file(&corrupt).unwrap();
}

#[test]
fn a_snapshot_restores_and_the_guest_runs_on() {
    if !kvm_opens("snapshot/restore CLI") {
        return;
    }
    let file = temp("vm.snap");
    let path = file.to_str().unwrap();
    let mut args = vec!["snapshot", path, "--allow-unsafe"];
    args.extend(SMALL);
    let snap = json(&args);
    assert_eq!(snap["summary"]["regions"][1]["policy"], "flush", "{snap}");
    assert!(
        snap["summary"]["regions"][1]["flushed_pages"]
            .as_u64()
            .unwrap()
            > 0
    );
    // Without --allow-unsafe this host's chain registers the BAR with nothing safe.
    let strict = ncdma(&["restore", path]);
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let restored = json(&["restore", path, "--allow-unsafe", "--run-ms", "100"]);
    let run = &restored["run"];
    assert!(run["guest_pages_after"].as_u64() > run["guest_pages_before"].as_u64());
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_guest_migrates_between_two_processes_and_a_failed_send_keeps_it_running() {
    if !kvm_opens("migrate CLI") {
        return;
    }
    // Nothing listens on this port once the listener is dropped: the send fails.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let to = closed.to_string();
    let mut args = vec!["migrate", "send", "--to", &to, "--allow-unsafe"];
    args.extend(SMALL);
    let failed = ncdma(&args);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("the source guest runs on"), "{stderr}");

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let receiver = Command::new(env!("CARGO_BIN_EXE_ncdma"))
        .args([
            "migrate",
            "receive",
            "--listen",
            &listen,
            "--allow-unsafe",
            "--run-ms",
            "100",
        ])
        .args(["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Retry the send until the receiver listens.
    let mut args = vec![
        "migrate",
        "send",
        "--to",
        &listen,
        "--allow-unsafe",
        "--json",
    ];
    args.extend(SMALL);
    let mut sent = ncdma(&args);
    for _ in 0..50 {
        if sent.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        sent = ncdma(&args);
    }
    assert!(sent.status.success(), "{sent:?}");
    let summary: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert!(
        summary["summary"]["rounds"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    // `auto` resolved: a loopback destination needs a third CPU for a writer thread.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let writer = if cpus >= 3 { "own" } else { "inline" };
    assert_eq!(summary["summary"]["writer_thread"], writer, "{summary}");
    let received = receiver.wait_with_output().unwrap();
    assert!(received.status.success(), "{received:?}");
    let doc: serde_json::Value = serde_json::from_slice(&received.stdout).unwrap();
    assert!(doc["run"]["guest_pages_after"].as_u64() > doc["run"]["guest_pages_before"].as_u64());
}
