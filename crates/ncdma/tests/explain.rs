//! `ncdma explain`: the command-line contract of design.md, run through the built binary.

mod common;

use common::{json, ncdma};

fn explain_json(args: &[&str]) -> serde_json::Value {
    json(&[&["explain"], args].concat())
}

fn assert_bad_input(args: &[&str], culprit: &str) {
    common::assert_bad_input(&[&["explain"], args].concat(), culprit);
}

#[test]
fn the_memslot_flag_honors_guest_wc() {
    let v = explain_json(&[
        "--kernel",
        "6.16+memslot-flag",
        "--vendor",
        "intel",
        "--slot-flags",
        "non-coherent-dma",
        "--guest-pat-type",
        "WC",
    ]);
    assert_eq!(v["effective"], "WC");
    assert_eq!(v["ept_memtype"], "WB");
    assert_eq!(v["ipat"], false);
    assert_eq!(v["honors_guest_pat"], true);
    assert_eq!(v["kernel"], "6.16+memslot-flag");
    assert_eq!(v["vendor"], "intel");
    assert_eq!(v["branch"], "slot-non-coherent-dma");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("6.16+memslot-flag/intel: make_spte → vmx_get_mt_mask: slot has KVM_MEM_NON_COHERENT_DMA"),
        "{reason}"
    );
}

#[test]
fn upstream_6_16_ignores_guest_wc() {
    let v = explain_json(&[
        "--kernel",
        "6.16",
        "--vendor",
        "intel",
        "--guest-pat-type",
        "WC",
    ]);
    assert_eq!(v["effective"], "WB");
    assert_eq!(v["ept_memtype"], "WB");
    assert_eq!(v["ipat"], true);
    assert_eq!(v["honors_guest_pat"], false);
    assert_eq!(v["branch"], "quirk-ignore-guest-pat");
    // Disabling the quirk honors guest PAT VM-wide.
    let v = explain_json(&[
        "--kernel",
        "6.16",
        "--vendor",
        "intel",
        "--guest-pat-type",
        "WC",
        "--quirk-ignore-guest-pat",
        "disabled",
    ]);
    assert_eq!(
        (v["effective"].as_str(), v["ipat"].as_bool()),
        (Some("WC"), Some(false))
    );
}

#[test]
fn amd_and_this_host_have_no_ept_leaf() {
    let v = explain_json(&[
        "--kernel",
        "6.12",
        "--vendor",
        "amd",
        "--guest-pat-type",
        "WC",
    ]);
    assert_eq!(v["effective"], "WC+");
    assert!(v["ept_memtype"].is_null() && v["ipat"].is_null());
    assert_eq!(v["honors_guest_pat"], true);
    let v = explain_json(&[
        "--kernel",
        "6.16",
        "--vendor",
        "amd",
        "--no-tdp",
        "--guest-pat",
        "0x0407050600070106",
        "--pat-index",
        "1",
    ]);
    assert_eq!(v["guest_pat"], "WC");
    assert_eq!(v["effective"], "WB");
    assert_eq!(v["branch"], "shadow-paging");
    assert_eq!(v["tdp"], false);
}

#[test]
fn noncoherent_dma_and_guest_state_in_6_7() {
    let v = explain_json(&[
        "--kernel",
        "6.7+virtio-device",
        "--vendor",
        "intel",
        "--noncoherent-dma",
        "2",
        "--guest-mtrr",
        "WC",
        "--guest-pat-type",
        "UC-",
    ]);
    assert_eq!(v["noncoherent_dma_count"], 2);
    assert_eq!(v["branch"], "guest-mtrr");
    assert_eq!(
        (v["ept_memtype"].as_str(), v["effective"].as_str()),
        (Some("WC"), Some("WC"))
    );
    let v = explain_json(&[
        "--kernel",
        "6.7",
        "--vendor",
        "intel",
        "--noncoherent-dma",
        "1",
        "--guest-cr0-cd",
        "--quirk-cd-nw-cleared",
        "disabled",
    ]);
    assert_eq!(v["branch"], "cr0-cd-no-quirk");
    assert_eq!(
        (v["ept_memtype"].as_str(), v["ipat"].as_bool()),
        (Some("UC"), Some(true))
    );
}

#[test]
fn text_output_names_the_path() {
    let out = ncdma(&[
        "explain",
        "--kernel",
        "6.12",
        "--vendor",
        "intel",
        "--mmio",
        "--guest-pat-type",
        "WC",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("branch:           vmx_get_mt_mask: host MMIO → UC, IPAT=0\n"),
        "{text}"
    );
    assert!(text.contains("effective:        WC\n"), "{text}");
}

#[test]
fn bad_values_exit_2_with_one_line() {
    assert_bad_input(&["--kernel", "6.13", "--vendor", "intel"], "6.13");
    assert_bad_input(&["--kernel", "6.16", "--vendor", "arm"], "arm");
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--guest-pat-type",
            "XY",
        ],
        "XY",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--slot-flags",
            "dma",
        ],
        "dma",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--quirk-ignore-guest-pat",
            "off",
        ],
        "off",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--guest-pat",
            "0x0407050600070106",
        ],
        "--pat-index",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--guest-pat",
            "0x2",
            "--pat-index",
            "0",
        ],
        "PA0",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--guest-pat",
            "0x6",
            "--pat-index",
            "9",
        ],
        "PAT index 9",
    );
    // Impossible combinations: the kernel refuses them, and the message names the profile.
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "intel",
            "--slot-flags",
            "non-coherent-dma",
        ],
        "6.16/intel: KVM_SET_USER_MEMORY_REGION2 with flags non-coherent-dma → EINVAL",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.16",
            "--vendor",
            "amd",
            "--no-tdp",
            "--quirk-ignore-guest-pat",
            "disabled",
        ],
        "6.16/amd (TDP off): cannot disable KVM_X86_QUIRK_IGNORE_GUEST_PAT",
    );
    assert_bad_input(
        &[
            "--kernel",
            "6.12",
            "--vendor",
            "intel",
            "--quirk-ignore-guest-pat",
            "enabled",
        ],
        "does not exist in this kernel",
    );
}
