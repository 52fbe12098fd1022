//! Every built-in scenario on every kernel profile and vendor: the hazards each run must show,
//! written out. Letters: S stale-read, W lost-write, A conflicting-alias, L info-leak; "" none.
//!
//! The claim is the first table: the GPU frame is right exactly where KVM honors the
//! guest's WC for the BAR, and only the memslot-flag kernels do that without honoring guest PAT
//! for the rest of the VM; on AMD (NPT honors guest PAT) it is right everywhere, VM-wide.

use std::collections::BTreeSet;

use kvm_model::{KernelProfile, Vendor};
use scenario::{Hazard, Mechanism, RunReport, Scenario};

/// (profile, Intel hazards, AMD hazards), in `KernelProfile::NAMES` order.
type Matrix = [(&'static str, &'static str, &'static str); 7];

const TABLE: [(&str, Matrix); 9] = [
    (
        "virtio-gpu-wc-bar",
        [
            ("6.7", "S", ""),
            ("6.7+virtio-device", "", ""),
            ("6.7+memslot-flag", "", ""),
            ("6.11-selfsnoop", "", ""),
            ("6.12", "S", ""),
            ("6.16", "S", ""),
            ("6.16+memslot-flag", "", ""),
        ],
    ),
    (
        // Only the virtio device is tried: the frame is stale where it is missing, RAM is
        // aliased where guest PAT is honored VM-wide.
        "virtio-device-vm-wide",
        [
            ("6.7", "S", "A"),
            ("6.7+virtio-device", "SA", "A"),
            ("6.7+memslot-flag", "S", "A"),
            ("6.11-selfsnoop", "SA", "A"),
            ("6.12", "S", "A"),
            ("6.16", "S", "A"),
            ("6.16+memslot-flag", "S", "A"),
        ],
    ),
    (
        "bochs-uc-vram",
        [
            ("6.7", "S", ""),
            ("6.7+virtio-device", "", ""),
            ("6.7+memslot-flag", "", ""),
            ("6.11-selfsnoop", "", ""),
            ("6.12", "S", ""),
            ("6.16", "", ""),
            ("6.16+memslot-flag", "", ""),
        ],
    ),
    (
        "migration-read",
        [
            ("6.7", "", "A"),
            ("6.7+virtio-device", "SA", "A"),
            ("6.7+memslot-flag", "SA", "A"),
            ("6.11-selfsnoop", "SA", "A"),
            ("6.12", "", "A"),
            ("6.16", "", "A"),
            ("6.16+memslot-flag", "SA", "A"),
        ],
    ),
    (
        "migration-read-flushed",
        [
            ("6.7", "", "A"),
            ("6.7+virtio-device", "A", "A"),
            ("6.7+memslot-flag", "A", "A"),
            ("6.11-selfsnoop", "A", "A"),
            ("6.12", "", "A"),
            ("6.16", "", "A"),
            ("6.16+memslot-flag", "A", "A"),
        ],
    ),
    (
        "info-leak",
        [
            ("6.7", "L", "AL"),
            ("6.7+virtio-device", "SAL", "AL"),
            ("6.7+memslot-flag", "SAL", "AL"),
            ("6.11-selfsnoop", "SAL", "AL"),
            ("6.12", "L", "AL"),
            ("6.16", "L", "AL"),
            ("6.16+memslot-flag", "SAL", "AL"),
        ],
    ),
    (
        "info-leak-flushed",
        [
            ("6.7", "", ""),
            ("6.7+virtio-device", "", ""),
            ("6.7+memslot-flag", "", ""),
            ("6.11-selfsnoop", "", ""),
            ("6.12", "", ""),
            ("6.16", "", ""),
            ("6.16+memslot-flag", "", ""),
        ],
    ),
    (
        "ram-slot-flagged",
        [
            ("6.7", "", "A"),
            ("6.7+virtio-device", "", "A"),
            ("6.7+memslot-flag", "SA", "A"),
            ("6.11-selfsnoop", "SA", "A"),
            ("6.12", "", "A"),
            ("6.16", "", "A"),
            ("6.16+memslot-flag", "SA", "A"),
        ],
    ),
    (
        "vfio-noncoherent",
        [
            ("6.7", "SA", "A"),
            ("6.7+virtio-device", "SA", "A"),
            ("6.7+memslot-flag", "SA", "A"),
            ("6.11-selfsnoop", "SA", "A"),
            ("6.12", "SA", "A"),
            ("6.16", "SA", "A"),
            ("6.16+memslot-flag", "SA", "A"),
        ],
    ),
];

fn hazards(letters: &str) -> BTreeSet<Hazard> {
    letters
        .chars()
        .map(|c| match c {
            'S' => Hazard::StaleRead,
            'W' => Hazard::LostWrite,
            'A' => Hazard::ConflictingAlias,
            'L' => Hazard::InfoLeak,
            other => panic!("unknown hazard letter {other}"),
        })
        .collect()
}

fn builtin(name: &str) -> Scenario {
    scenario::builtin(name)
        .unwrap_or_else(|| panic!("{name} is built in"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Scenario, profile: &str, vendor: Vendor) -> RunReport {
    let p = KernelProfile::parse(profile, vendor).unwrap();
    scenario::run(s, p).unwrap_or_else(|e| panic!("{}: {e}", s.name))
}

#[test]
fn every_builtin_on_every_kernel_and_vendor() {
    let names: Vec<&str> = TABLE.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        scenario::builtin_names().collect::<Vec<_>>(),
        "the table covers every built-in"
    );
    for (name, matrix) in TABLE {
        let s = builtin(name);
        let profiles: Vec<&str> = matrix.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(profiles, KernelProfile::NAMES);
        for (profile, intel, amd) in matrix {
            for (vendor, expected) in [(Vendor::Intel, intel), (Vendor::Amd, amd)] {
                let r = run(&s, profile, vendor);
                assert_eq!(
                    r.hazards(),
                    hazards(expected),
                    "{name} on {profile}/{vendor}"
                );
                // The scenario file's own [[expect]] says the same.
                let e = r
                    .expectation
                    .as_ref()
                    .unwrap_or_else(|| panic!("{name} on {profile}/{vendor}: no [[expect]]"));
                assert!(
                    e.holds,
                    "{name} on {profile}/{vendor}: [[expect]] at line {}",
                    e.line
                );
            }
        }
    }
}

#[test]
fn the_frame_is_right_exactly_where_guest_pat_is_honored_for_the_bar() {
    let s = builtin("virtio-gpu-wc-bar");
    let rows = scenario::run_all(&s, &[Vendor::Intel, Vendor::Amd]).unwrap();
    assert_eq!(rows.len(), 14);
    for r in &rows {
        let bar = r.access("bar").expect("the guest writes the BAR");
        let ram = r.access("ram").expect("the guest uses RAM");
        let who = format!("{}/{}", r.kernel, r.vendor);
        assert_eq!(r.hazards().is_empty(), bar.honors_guest_pat, "{who}");
        let slot_only = bar.honors_guest_pat && !ram.honors_guest_pat;
        let flag = r.registrations[0].registered == Some(Mechanism::MemslotFlag);
        assert_eq!(
            slot_only,
            flag && r.profile.vendor == Vendor::Intel,
            "{who}"
        );
        if r.profile.vendor == Vendor::Amd {
            assert!(
                bar.honors_guest_pat && ram.honors_guest_pat,
                "{who}: NPT honors guest PAT"
            );
        }
    }
}

#[test]
fn refusals_are_reported_not_errors() {
    let s = builtin("virtio-gpu-wc-bar");
    let chain = |profile| run(&s, profile, Vendor::Intel).registrations[0].to_string();
    assert_eq!(
        chain("6.16"),
        "memslot-flag: EINVAL → virtio-device: ENODEV → none: region runs coherent"
    );
    assert_eq!(
        chain("6.7+virtio-device"),
        "memslot-flag: EINVAL → virtio-device: ok"
    );
    assert_eq!(chain("6.16+memslot-flag"), "memslot-flag: ok");
    let bochs = builtin("bochs-uc-vram");
    let r = run(&bochs, "6.16", Vendor::Intel);
    assert_eq!(
        r.registrations[0].registered,
        Some(Mechanism::DisableIgnoreGuestPat)
    );
}

#[test]
fn honoring_the_guest_uc_mapping_of_vram_costs_thousands_of_times_wb() {
    let s = builtin("bochs-uc-vram");
    let vram_stores = 4 << 20 >> 3;
    let slow = run(&s, "6.16", Vendor::Intel);
    assert_eq!(
        slow.access("vram").map(|a| a.effective),
        Some(memtype::MemType::Uc)
    );
    assert_eq!(slow.cost.uc_accesses, vram_stores);
    assert!(slow.cost.slowdown() > 1000.0, "{}", slow.cost.slowdown());
    let fast = run(&s, "6.16+memslot-flag", Vendor::Intel);
    assert_eq!(
        fast.access("vram").map(|a| a.effective),
        Some(memtype::MemType::Wb)
    );
    assert_eq!(fast.cost.uc_accesses, 0);
    assert!(fast.cost.slowdown() < 2.0, "{}", fast.cost.slowdown());
}

#[test]
fn evidence_names_who_where_and_both_values() {
    let s = builtin("virtio-gpu-wc-bar");
    let r = run(&s, "6.16", Vendor::Intel);
    let [f] = r.verdicts.as_slice() else {
        panic!("{:?}", r.verdicts)
    };
    assert_eq!(
        (f.hazard, f.who.as_str(), f.place()),
        (Hazard::StaleRead, "gpu", "bar+0x0".to_string())
    );
    assert_eq!((f.step, f.count), (4, 64));
    assert_eq!(
        f.got.as_deref(),
        Some(format!("[{}]", vec!["00"; 64].join(" ")).as_str())
    );
    assert!(
        f.expected
            .as_deref()
            .is_some_and(|e| e.starts_with("[ff 00 ff 00 00 00 f0 f0")),
        "{f:?}"
    );
    assert!(
        f.evidence.contains("held dirty in vcpu0's cache"),
        "{}",
        f.evidence
    );
}
