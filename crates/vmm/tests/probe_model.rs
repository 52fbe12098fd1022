//! `ncdma probe` against the reference kernel: what each profile offers, check by check.
//! The expected statuses are written out by hand from system.md §2–§5 and the model's
//! calibration (`KernelProfile::this_host`).

use kvm_model::{KernelProfile, Vendor};
use vmm::probe::{ProbeOptions, ProbeReport, Status, Target, Verdict, probe};
use vmm::strategy::{Mechanism, Policy};

/// The checks whose answer differs between kernels, in the order of the status strings.
const VARYING: [&str; 6] = [
    "memslot flag 8 (KVM_MEM_NON_COHERENT_DMA)",
    "device type 12 (KVM virtio device)",
    "caps 236/239 (hints only)",
    "IGNORE_GUEST_PAT quirk",
    "TDP in use",
    "noncoherent region verdict",
];

fn run(profile: KernelProfile, policy: Policy) -> ProbeReport {
    let options = ProbeOptions {
        policy,
        empirical: false,
    };
    probe(&Target::Model(profile), &options).unwrap()
}

fn letters(report: &ProbeReport) -> String {
    VARYING
        .iter()
        .map(|name| match report.check(name).unwrap().status {
            Status::Pass => 'P',
            Status::Warn => 'W',
            Status::Fail => 'F',
            Status::NotApplicable => '-',
        })
        .collect()
}

#[test]
fn every_profile_check_by_check() {
    // flag, device 12, caps, quirk, TDP, verdict.
    let table: [(&str, Vendor, &str); 14] = [
        // Nothing to ask for; only AMD's NPT (VM-wide: WARN).
        ("6.7", Vendor::Intel, "WWPWPF"),
        ("6.7", Vendor::Amd, "WWPWPW"),
        ("6.7+virtio-device", Vendor::Intel, "WPPWPW"),
        ("6.7+virtio-device", Vendor::Amd, "WPPWPW"),
        ("6.7+memslot-flag", Vendor::Intel, "PWPWPP"),
        ("6.7+memslot-flag", Vendor::Amd, "PWPWPP"),
        // From 6.10 cap 236 is PRE_FAULT_MEMORY: set with TDP, while the flag is refused.
        ("6.11-selfsnoop", Vendor::Intel, "WWWWPF"),
        ("6.11-selfsnoop", Vendor::Amd, "WWWWPW"),
        ("6.12", Vendor::Intel, "WWWWPF"),
        ("6.12", Vendor::Amd, "WWWWPW"),
        // The quirk is disableable on Intel (PASS) and useless on AMD (PASS, says why);
        // the default policy still refuses it for the verdict.
        ("6.16", Vendor::Intel, "WWWPPF"),
        ("6.16", Vendor::Amd, "WWWPPW"),
        ("6.16+memslot-flag", Vendor::Intel, "PWPPPP"),
        ("6.16+memslot-flag", Vendor::Amd, "PWPPPP"),
    ];
    for (name, vendor, expected) in table {
        let report = run(
            KernelProfile::parse(name, vendor).unwrap(),
            Policy::default(),
        );
        assert_eq!(letters(&report), expected, "{name}/{vendor}\n{report}");
        // Host-only checks do not apply; the uAPI basics hold everywhere.
        for (check, status) in [
            ("KVM device access", Status::NotApplicable),
            ("cache flush", Status::NotApplicable),
            ("KVM API version", Status::Pass),
            ("KVM_CAP_NR_MEMSLOTS", Status::Pass),
            ("dirty log", Status::Pass),
        ] {
            assert_eq!(
                report.check(check).unwrap().status,
                status,
                "{name}/{vendor}: {check}"
            );
        }
    }
    // This host: nothing, and it says why.
    let report = run(KernelProfile::this_host(), Policy::default());
    assert_eq!(letters(&report), "WWPWWF", "{report}");
    let flavor = report.check("KVM flavor").unwrap();
    assert!(
        flavor.detail.starts_with("kvm_pvm (PVM"),
        "{}",
        flavor.detail
    );
    assert!(matches!(report.verdict, Verdict::Refused(ref a) if a.len() == 5));
}

#[test]
fn the_policy_changes_only_the_verdict() {
    let intel = KernelProfile::parse("6.16", Vendor::Intel).unwrap();
    let vm_wide = Policy {
        allow_vm_wide: true,
        ..Policy::default()
    };
    let report = run(intel, vm_wide);
    assert_eq!(letters(&report), "WWWPPW");
    assert!(matches!(&report.verdict,
        Verdict::Registered(r) if r.mechanism == Mechanism::DisableIgnoreGuestPat));
    let unsafe_ok = Policy {
        allow_unsafe: true,
        ..Policy::default()
    };
    let report = run(KernelProfile::this_host(), unsafe_ok);
    assert_eq!(letters(&report), "WWPWWF");
    let verdict = report.check("noncoherent region verdict").unwrap();
    assert!(verdict.detail.contains("UNSAFE"), "{}", verdict.detail);
}

#[test]
fn a_model_runs_no_guest() {
    let options = ProbeOptions {
        empirical: true,
        ..ProbeOptions::default()
    };
    let report = probe(&Target::Model(KernelProfile::this_host()), &options).unwrap();
    let check = report.check("guest memory types (measured)").unwrap();
    assert_eq!(check.status, Status::NotApplicable);
    assert_eq!(report.empirical, None);
    assert_eq!(report.to_json()["empirical"], serde_json::Value::Null);
    let plain = run(KernelProfile::this_host(), Policy::default());
    assert!(plain.check("guest memory types (measured)").is_none());
}

#[test]
fn text_and_json_carry_the_same_findings() {
    let report = run(KernelProfile::this_host(), Policy::default());
    let text = report.to_string();
    let lines: Vec<&str> = text.lines().collect();
    // A header, one line per check, one per attempt.
    assert_eq!(lines.len(), 1 + report.checks.len() + 5, "{text}");
    assert_eq!(
        lines[0],
        "probing model: kernel 6.16 (Amd, self-snoop on, TDP off)"
    );
    assert_eq!(
        lines[8],
        "memslot flag 8 (KVM_MEM_NON_COHERENT_DMA) .. WARN: EINVAL (kernel does not know \
         the flag; caps 236=0, 239=0, hints only)"
    );
    assert!(
        lines[report.checks.len() + 1].starts_with("  1. memslot flag"),
        "{text}"
    );
    let json = report.to_json();
    assert_eq!(
        json["checks"].as_array().unwrap().len(),
        report.checks.len()
    );
    assert_eq!(json["checks"][7]["status"], "warn");
    assert_eq!(json["checks"][0]["status"], "n/a");
    assert_eq!(json["verdict"]["mechanism"], serde_json::Value::Null);
    assert_eq!(json["verdict"]["attempts"][0]["errno"], "EINVAL");
    assert_eq!(json["verdict"]["attempts"][4]["outcome"], "skipped");
    let flag = run(
        KernelProfile::parse("6.16+memslot-flag", Vendor::Intel).unwrap(),
        Policy::default(),
    );
    let json = flag.to_json();
    assert_eq!(json["verdict"]["mechanism"], "memslot-flag");
    assert_eq!(json["verdict"]["scope"], "this slot only");
    assert_eq!(json["verdict"]["safe"], true);
}
