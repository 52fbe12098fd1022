//! What every CLI test does: run the built `ncdma` binary and check the contract of
//! design.md (JSON on stdout; bad input is one line on stderr and exit 2).
//!
//! Each file in `tests/` is its own crate and uses only some of these helpers, hence the
//! `allow(dead_code)` on the ones not every file calls.

use std::process::{Command, Output};

/// Runs `ncdma` with `args`.
pub fn ncdma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ncdma"))
        .args(args)
        .output()
        .expect("the ncdma binary runs")
}

/// Runs `ncdma args… --json`, which must succeed, and parses its one JSON document.
#[allow(dead_code)]
pub fn json(args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ncdma(&all);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

/// A bad value: exit 2, nothing on stdout, exactly one line on stderr naming the culprit.
#[allow(dead_code)]
pub fn assert_bad_input(args: &[&str], culprit: &str) {
    let out = ncdma(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    assert!(out.stdout.is_empty(), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(culprit), "{args:?}: {err}");
}
