//! `ncdma probe` against this host's `/dev/kvm`, and against paths that are not one.

use std::path::PathBuf;

use uapi::Errno;
use vmm::backend::{KVM_DEVICE, Tdp};
use vmm::probe::{ProbeError, ProbeOptions, Status, Target, Verdict, probe};
use vmm::strategy::Outcome;

fn kvm(path: &str) -> Target {
    Target::Kvm {
        device: PathBuf::from(path),
    }
}

#[test]
fn the_real_probe_agrees_with_the_strategy() {
    let report = match probe(&kvm(KVM_DEVICE), &ProbeOptions::default()) {
        Ok(report) => report,
        Err(e @ (ProbeError::OpenDevice { .. } | ProbeError::CreateVm { .. })) => {
            println!("SKIP: {e}: real-KVM probe test not run");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let status = |name: &str| report.check(name).unwrap().status;
    assert_eq!(status("KVM device access"), Status::Pass);
    assert_eq!(status("KVM API version"), Status::Pass);
    assert_eq!(status("dirty log"), Status::Pass, "{report}");
    let flush = report.check("cache flush").unwrap();
    assert_eq!(flush.status, Status::Pass);
    assert!(flush.detail.contains("GB/s"), "{}", flush.detail);
    // The proposals are on no shipping kernel: both checks warn, with the kernel's errno.
    let flag = report
        .check("memslot flag 8 (KVM_MEM_NON_COHERENT_DMA)")
        .unwrap();
    assert_eq!(flag.status, Status::Warn);
    assert!(flag.detail.starts_with("EINVAL"), "{}", flag.detail);
    let device = report.check("device type 12 (KVM virtio device)").unwrap();
    assert!(device.detail.starts_with("ENODEV"), "{}", device.detail);
    // The verdict's attempts are the strategy's: the same two refusals come first.
    let attempts = report.verdict.attempts();
    assert_eq!(attempts[0].outcome, Outcome::Refused(Some(Errno::EINVAL)));
    assert_eq!(attempts[1].outcome, Outcome::Refused(Some(Errno::ENODEV)));
    if report
        .check("TDP in use")
        .unwrap()
        .detail
        .starts_with(&Tdp::Off.to_string())
    {
        // Shadow paging (our kvm_pvm hosts): no quirk, no NPT, no safe way.
        assert_eq!(status("TDP in use"), Status::Warn);
        assert_eq!(status("IGNORE_GUEST_PAT quirk"), Status::Warn);
        assert_eq!(status("noncoherent region verdict"), Status::Fail);
        assert!(matches!(report.verdict, Verdict::Refused(_)));
    }
}

#[test]
fn the_empirical_check_reports_the_guests_measurement() {
    let options = ProbeOptions {
        empirical: true,
        ..ProbeOptions::default()
    };
    let report = match probe(&kvm(KVM_DEVICE), &options) {
        Ok(report) => report,
        Err(e @ (ProbeError::OpenDevice { .. } | ProbeError::CreateVm { .. })) => {
            println!("SKIP: {e}: real-KVM empirical probe test not run");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let measured = report.empirical.as_ref().unwrap();
    let check = report.check("guest memory types (measured)").unwrap();
    let expected = match measured.verdict {
        vmm::guest::empirical::Verdict::Honored => Status::Pass,
        _ => Status::Warn,
    };
    assert_eq!(check.status, expected, "{}", check.detail);
    assert!(
        check.detail.starts_with(measured.verdict.name()),
        "{}",
        check.detail
    );
    assert!(check.detail.contains("MTRRdefType=UC "), "{}", check.detail);
    let json = report.to_json();
    assert_eq!(json["empirical"]["verdict"], measured.verdict.name());
    assert_eq!(json["empirical"]["timings"].as_array().unwrap().len(), 6);
    // The same device by another name: the probe follows it, the guest runtime cannot.
    let link = std::env::temp_dir().join(format!("probe-kvm-link-{}", std::process::id()));
    std::os::unix::fs::symlink(KVM_DEVICE, &link).unwrap();
    let report = probe(
        &Target::Kvm {
            device: link.clone(),
        },
        &options,
    );
    std::fs::remove_file(&link).unwrap();
    let report = report.unwrap();
    assert_eq!(report.empirical, None);
    let check = report.check("guest memory types (measured)").unwrap();
    assert_eq!(check.status, Status::NotApplicable);
    assert!(
        check
            .detail
            .starts_with("the guest runtime opens /dev/kvm, not ")
    );
}

#[test]
fn a_missing_device_is_enoent() {
    let err = probe(&kvm("/nonexistent/kvm"), &ProbeOptions::default()).unwrap_err();
    assert_eq!(
        err,
        ProbeError::OpenDevice {
            path: "/nonexistent/kvm".into(),
            errno: Errno::ENOENT
        }
    );
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn a_file_that_is_not_kvm_fails_at_create_vm() {
    let file = std::env::temp_dir().join(format!("probe-not-kvm-{}", std::process::id()));
    std::fs::write(&file, b"").unwrap();
    let err = probe(
        &Target::Kvm {
            device: file.clone(),
        },
        &ProbeOptions::default(),
    )
    .unwrap_err();
    std::fs::remove_file(&file).unwrap();
    assert!(
        matches!(&err, ProbeError::CreateVm { errno, .. } if *errno == Errno::ENOTTY),
        "{err}"
    );
    assert!(
        err.to_string().ends_with("(the file is not a KVM device)"),
        "{err}"
    );
}
