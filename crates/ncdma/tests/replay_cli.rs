//! `ncdma replay` and `ncdma bench`: exit codes and output through the built binary.

mod common;

use common::ncdma;

fn example(name: &str) -> String {
    format!(
        "{}/../../examples/replay/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn a_replay_that_holds_exits_0_with_one_line_per_call() {
    let file = example("virtio-device.json");
    let out = ncdma(&["replay", &file, "--kernel", "6.7+virtio-device"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with('#')).count(),
        12,
        "{text}"
    );
    assert!(
        text.contains("#5 set_device_attr \"gpu0\" group=1 attr=1 -> ok"),
        "{text}"
    );
    assert!(
        text.ends_with("12 call(s), 12 with expectations, 0 mismatch(es)\n"),
        "{text}"
    );
}

#[test]
fn unmet_expectations_print_the_answers_then_exit_1() {
    let file = example("virtio-device.json");
    let out = ncdma(&["replay", &file, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["steps"][0]["result"], "ENODEV");
    assert_eq!(doc["mismatches"], 11);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("11 of 12 expectation(s) not met"), "{err}");
}

#[test]
fn a_malformed_file_exits_2_naming_entry_and_field() {
    let dir = std::env::temp_dir().join(format!("ncdma-replay-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        r#"[{"call": "check_extension", "cap": 10},
            {"call": "get_dirty_log", "slot": "ten"}]"#,
    )
    .unwrap();
    let out = ncdma(&["replay", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("entry 1 (get_dirty_log): field `slot`"),
        "{err}"
    );
}

#[test]
fn bench_names_are_checked() {
    let out = ncdma(&["bench", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
}
