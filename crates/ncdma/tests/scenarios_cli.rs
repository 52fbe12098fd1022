//! `ncdma scenarios`, `ncdma run` and `ncdma demo` through the built binary.

mod common;

use common::ncdma;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("UTF-8")
}

/// A scratch file path unique to this test process.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ncdma-scenarios-cli-{}-{name}", std::process::id()))
}

const GPU: &str = include_str!("../../scenario/scenarios/virtio-gpu-wc-bar.toml");

#[test]
fn scenarios_lists_every_builtin_on_one_line() {
    let out = ncdma(&["scenarios"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        scenario::builtin_names().collect::<Vec<_>>(),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.split_whitespace().count() > 3),
        "{text}"
    );
}

#[test]
fn the_matrix_as_json() {
    let out = ncdma(&["run", "virtio-gpu-wc-bar", "--all-profiles", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["scenario"], "virtio-gpu-wc-bar");
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 14);
    let find = |kernel: &str, vendor: &str| {
        runs.iter()
            .find(|r| r["kernel"] == kernel && r["vendor"] == vendor)
            .unwrap_or_else(|| panic!("{kernel}/{vendor} is in the matrix"))
    };
    let upstream = find("6.16", "intel");
    assert_eq!(upstream["verdicts"][0]["hazard"], "stale-read");
    assert_eq!(upstream["verdicts"][0]["who"], "gpu");
    assert_eq!(
        upstream["registrations"][0]["registered"],
        serde_json::Value::Null
    );
    let flagged = find("6.16+memslot-flag", "intel");
    assert_eq!(flagged["verdicts"], serde_json::json!([]));
    assert_eq!(flagged["registrations"][0]["registered"], "memslot-flag");
    let bar = flagged["accesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["region"] == "bar")
        .unwrap();
    assert_eq!(
        (&bar["effective"], &bar["ipat"], &bar["honors_guest_pat"]),
        (&"WC".into(), &false.into(), &true.into())
    );
    assert!(runs.iter().all(|r| r["expectation"]["holds"] == true));
}

#[test]
fn a_single_run_shows_the_chain_and_the_evidence() {
    let out = ncdma(&["run", "virtio-gpu-wc-bar", "--kernel", "6.16"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("virtio-gpu-wc-bar on 6.16/intel"),
        "{text}"
    );
    assert!(
        text.contains("registration of bar: memslot-flag: EINVAL → virtio-device: ENODEV → none: region runs coherent"),
        "{text}"
    );
    assert!(
        text.contains("stale-read x64, first at bar+0x0 (step 4, dma.read)"),
        "{text}"
    );
    assert!(text.contains("gpu read 0x100000000 and got [00"), "{text}");
    let amd = stdout(&ncdma(&[
        "run",
        "virtio-gpu-wc-bar",
        "--kernel",
        "6.16",
        "--vendor",
        "amd",
    ]));
    assert!(amd.starts_with("virtio-gpu-wc-bar on 6.16/amd"), "{amd}");
}

#[test]
fn svg_draws_one_panel_per_run() {
    let path = scratch("matrix.svg");
    let out = ncdma(&[
        "run",
        "virtio-gpu-wc-bar",
        "--all-profiles",
        "--vendor",
        "intel",
        "--svg",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(&path).expect("the SVG was written");
    std::fs::remove_file(&path).ok();
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("class=\"panel\"").count(), 7);
    for kernel in kvm_model::KernelProfile::NAMES {
        assert!(
            svg.contains(&format!("data-kernel=\"{kernel}\"")),
            "{kernel}"
        );
    }
}

#[test]
fn demo_runs_the_main_job_quickly() {
    let start = Instant::now();
    let out = ncdma(&["demo"]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let text = stdout(&out);
    assert_eq!(
        text.matches("/intel ").count() + text.matches("/amd ").count(),
        14,
        "{text}"
    );
    assert!(
        text.contains("6.7+memslot-flag and 6.16+memslot-flag honor guest PAT for bar alone"),
        "{text}"
    );
    assert!(
        text.contains("== explain: 6.16+memslot-flag/intel"),
        "{text}"
    );
    assert!(
        text.contains("EPT leaf WB, IPAT=0 → WC (guest PAT honored)"),
        "{text}"
    );
    assert!(text.contains("== explain: 6.16/intel"), "{text}");
    let host = &text[text
        .find("== this host (ncdma probe)")
        .expect("the probe section")..];
    assert!(
        host.contains("noncoherent region verdict: ") || host.contains("no host probe: "),
        "{host}"
    );
    assert!(
        text.contains("EPT leaf WB, IPAT=1 → WB (guest PAT ignored)"),
        "{text}"
    );

    let out = ncdma(&["demo", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["runs"].as_array().map(Vec::len), Some(14));
    assert!(
        doc["conclusion"]
            .as_str()
            .is_some_and(|c| c.contains("memslot-flag"))
    );
    assert_eq!(doc["explain"][0]["access"]["effective"], "WC");
    assert_eq!(doc["explain"][1]["access"]["effective"], "WB");
    // The host probe's verdict, or why there is none.
    let host = &doc["host"];
    assert!(
        host["verdict"]["attempts"].is_array() || host["error"].is_string(),
        "{host}"
    );
}

/// `ncdma args…`, or `None` after the one `SKIP` line where `/dev/kvm` cannot be opened
/// (then the run must have failed with one line and exit 1).
fn on_kvm(args: &[&str]) -> Option<Output> {
    let out = ncdma(args);
    let err = stderr(&out);
    if err.contains("/dev/kvm cannot be opened") {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        println!("SKIP: {}", err.trim_end());
        return None;
    }
    assert!(out.status.success(), "{args:?}: {err}");
    Some(out)
}

#[test]
fn the_kvm_backend_puts_the_real_run_beside_the_model() {
    let Some(out) = on_kvm(&[
        "run",
        "virtio-gpu-wc-bar",
        "--backend",
        "kvm",
        "--kernel",
        "6.16",
    ]) else {
        return;
    };
    let text = stdout(&out);
    assert!(
        text.starts_with("virtio-gpu-wc-bar: model 6.16/intel, beside the real run on /dev/kvm\n"),
        "{text}"
    );
    assert!(text.contains("what this host cannot show:"), "{text}");
    assert!(text.contains("registration of bar:"), "{text}");
    assert!(
        text.contains("bar+0x0 (step 2, guest.fill, PAT entry 1 = WC)"),
        "{text}"
    );
    assert!(
        text.contains("step 4, dma.read by gpu at bar+0x0 (4096 bytes)"),
        "{text}"
    );
    assert!(
        text.contains("DIFFERS: the model of 6.16/intel finds stale-read here"),
        "{text}"
    );
    assert!(
        text.contains("result: the real run read what the model of this host predicts"),
        "{text}"
    );

    let Some(out) = on_kvm(&["run", "virtio-gpu-wc-bar", "--backend", "kvm", "--json"]) else {
        return;
    };
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["scenario"], "virtio-gpu-wc-bar");
    assert_eq!(doc["backend"], "kvm");
    assert_eq!(doc["agrees"], true);
    assert_eq!(doc["model"]["kernel"], "6.16+memslot-flag");
    assert_eq!(
        doc["model"]["registrations"][0]["registered"],
        "memslot-flag"
    );
    assert_eq!(doc["real"]["registrations"][0]["region"], "bar");
    assert!(doc["real"]["registrations"][0]["attempts"].is_array());
    assert!(doc["real"]["memory_types"]["verdict"].is_string());
    let reads = doc["reads"].as_array().unwrap();
    assert_eq!(reads.len(), 2);
    assert_eq!(reads[0]["real"], "[ff 00 ff 00 00 00 f0 f0] x512");
    assert_eq!(reads[0]["same_as_model"], true);
    let accesses = doc["accesses"].as_array().unwrap();
    assert_eq!(accesses[1]["region"], "bar");
    assert_eq!(accesses[1]["model"], "WC (guest PAT honored)");
    assert!(doc["limits"].as_array().is_some_and(|l| !l.is_empty()));
}

#[test]
fn the_kvm_backend_refuses_what_is_the_models_alone() {
    common::assert_bad_input(&["run", "virtio-gpu-wc-bar", "--backend", "foo"], "foo");
    common::assert_bad_input(
        &[
            "run",
            "virtio-gpu-wc-bar",
            "--backend",
            "kvm",
            "--all-profiles",
        ],
        "--all-profiles is the model's matrix",
    );
    common::assert_bad_input(
        &[
            "run",
            "virtio-gpu-wc-bar",
            "--backend",
            "kvm",
            "--svg",
            "x.svg",
        ],
        "--svg draws the model's runs",
    );
}

#[test]
fn a_malformed_file_is_exit_2_with_its_line() {
    let path = scratch("bad.toml");
    let text = GPU.replacen("pat_index = 1", "pat_index = \"one\"", 1);
    let line = text[..text.find("pat_index = \"one\"").unwrap()]
        .matches('\n')
        .count()
        + 1;
    std::fs::write(&path, &text).unwrap();
    let out = ncdma(&["run", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}:{line}:13: [[step]] #2, `pat_index`",
            path.display()
        )),
        "{err}"
    );

    let out = ncdma(&["run", "no-such-scenario"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no built-in scenario or file named \"no-such-scenario\""));
    let out = ncdma(&["run", "virtio-gpu-wc-bar", "--kernel", "6.13"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_failed_expectation_is_exit_1_and_says_which() {
    let path = scratch("wrong.toml");
    std::fs::write(
        &path,
        GPU.replace(
            "profiles = [\"6.7\", \"6.12\", \"6.16\"]",
            "profiles = [\"6.7\", \"6.12\"]",
        ),
    )
    .unwrap();
    let out = ncdma(&["run", path.to_str().unwrap(), "--all-profiles"]);
    std::fs::remove_file(&path).ok();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("FAILS (expected none)"), "{text}");
    assert!(text.contains("expectation failed on 6.16/intel"), "{text}");
    let err = stderr(&out);
    assert_eq!(
        err.trim_end(),
        "ncdma: virtio-gpu-wc-bar: expectation failed on 6.16/intel",
        "{err}"
    );
}
