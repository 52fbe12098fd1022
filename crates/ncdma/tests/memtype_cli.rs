//! `ncdma memtype`: the command-line contract of design.md, run through the built binary.

mod common;

use common::{assert_bad_input, json, ncdma};

#[test]
fn pat_decodes_the_linux_default() {
    let v = json(&["memtype", "pat", "0x0407050600070106"]);
    let types: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT"]);
}

#[test]
fn pat_text_names_every_entry() {
    let out = ncdma(&["memtype", "pat", "0007040600070406"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("PA"))
            .count(),
        8
    );
    assert!(text.contains("PA3 (PAT=0 PCD=1 PWT=1)  UC\n"), "{text}");
}

#[test]
fn pat_reserved_encoding_is_a_gp() {
    assert_bad_input(&["memtype", "pat", "0x0007040600070402"], "#GP");
    assert_bad_input(&["memtype", "pat", "0x0007040600070306"], "PA1");
    assert_bad_input(&["memtype", "pat", "0x08"], "PA0");
}

#[test]
fn combine_intel_bare_metal() {
    let v = json(&["memtype", "combine", "--mtrr", "WB", "--pat", "WC"]);
    assert_eq!(v["effective"], "WC");
    assert_eq!(v["mode"], "intel-bare-metal");
    assert!(v["reason"].as_str().unwrap().contains("WB"));
    let v = json(&["memtype", "combine", "--mtrr", "WT", "--pat", "WP"]);
    assert_eq!(v["effective"], "WP");
}

#[test]
fn combine_ept_with_and_without_ipat() {
    // The seeds' failure: KVM's default leaf (WB, IPAT=1) turns the guest's WC into WB.
    let v = json(&["memtype", "combine", "--ept", "WB", "--ipat", "--pat", "WC"]);
    assert_eq!(v["effective"], "WB");
    // The memslot flag's leaf (WB, IPAT=0): the guest PAT decides.
    let v = json(&[
        "memtype",
        "combine",
        "--ept",
        "WB",
        "--no-ipat",
        "--pat",
        "WC",
    ]);
    assert_eq!(v["effective"], "WC");
    let v = json(&[
        "memtype",
        "combine",
        "--ept",
        "WB",
        "--no-ipat",
        "--pat",
        "UC-",
    ]);
    assert_eq!(v["effective"], "UC");
    // Host MMIO (UC, IPAT=0): UC unless the guest asks for WC.
    let v = json(&[
        "memtype",
        "combine",
        "--ept",
        "UC",
        "--no-ipat",
        "--pat",
        "WC",
    ]);
    assert_eq!(v["effective"], "WC");
}

#[test]
fn combine_amd_npt() {
    let v = json(&[
        "memtype",
        "combine",
        "--amd",
        "--guest-pat",
        "WC",
        "--host-pat",
        "WB",
        "--mtrr",
        "WB",
    ]);
    assert_eq!(v["effective"], "WC+");
    assert_eq!(v["mode"], "amd-npt");
}

#[test]
fn combine_rejects_bad_input() {
    assert_bad_input(
        &["memtype", "combine", "--mtrr", "XY", "--pat", "WB"],
        "\"XY\"",
    );
    assert_bad_input(
        &["memtype", "combine", "--mtrr", "UC-", "--pat", "WB"],
        "UC-",
    );
    assert_bad_input(
        &["memtype", "combine", "--ept", "WB", "--pat", "WC"],
        "--ipat",
    );
    assert_bad_input(&["memtype", "combine", "--pat", "WC"], "--mtrr");
    assert_bad_input(
        &[
            "memtype", "combine", "--ept", "WB", "--ipat", "--mtrr", "WB", "--pat", "WB",
        ],
        "--mtrr",
    );
    assert_bad_input(&["memtype", "pat", "zz"], "zz");
    assert_bad_input(&["memtype", "pat", "0x1_0000_0000_0000_0000"], "64-bit");
}
