//! The replay files shipped in `examples/replay/` parse, and hold their expectations on the
//! kernels `docs/replay.md` says to run them with.

mod common;

use common::{mismatches, model, real_kvm, replay};
use kvm_model::{KernelProfile, Vendor};
use vmm::replay::{Entry, parse};

fn example(name: &str) -> Vec<Entry> {
    let path = format!(
        "{}/../../examples/replay/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every example and the model kernel it is written for (`None`: this host's profile).
const EXAMPLES: [(&str, Option<&str>); 5] = [
    ("set-memory-region-basics.json", None),
    ("memslot-flag-probe.json", None),
    ("memslot-flag-rules.json", Some("6.16+memslot-flag")),
    ("virtio-device.json", Some("6.7+virtio-device")),
    ("ignore-guest-pat-quirk.json", None),
];

#[test]
fn examples_hold_on_the_kernel_they_are_written_for() {
    let dir = format!("{}/../../examples/replay", env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(
        shipped,
        EXAMPLES.len(),
        "every file in {dir} is listed here"
    );
    for (name, kernel) in EXAMPLES {
        let profile = match kernel {
            Some(k) => KernelProfile::parse(k, Vendor::Intel).expect("a profile name"),
            None => KernelProfile::this_host(),
        };
        let report = replay(model(profile), &example(name));
        assert_eq!(
            report.mismatches().count(),
            0,
            "{name}:\n{}",
            mismatches(&report)
        );
    }
}

#[test]
fn proposal_examples_fail_where_the_proposal_is_absent() {
    for name in ["memslot-flag-rules.json", "virtio-device.json"] {
        let report = replay(model(KernelProfile::this_host()), &example(name));
        assert!(
            report.mismatches().count() > 0,
            "{name} passes without its proposal"
        );
    }
}

#[test]
fn host_examples_hold_on_real_kvm() {
    for (name, kernel) in EXAMPLES {
        if kernel.is_some() {
            continue;
        }
        let Some(kvm) = real_kvm("example replay") else {
            return;
        };
        let report = replay(kvm, &example(name));
        assert_eq!(
            report.mismatches().count(),
            0,
            "{name}:\n{}",
            mismatches(&report)
        );
    }
}
