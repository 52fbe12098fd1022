//! Every built-in scenario on this host's `/dev/kvm`, beside the model: the values the
//! guest loaded and the devices and the host read must equal what the model of this host
//! predicts (`KernelProfile::this_host()`, every device snooping as the VMM's own mapping
//! does), and wherever the scenario's own profile reads something else, the comparison must
//! say why.
//!
//! Each test prints one `SKIP` line and returns where `/dev/kvm` cannot be opened.

use scenario::real::{Comparison, RealError, compare};
use scenario::{Scenario, builtins};

/// `scenario` compared on its own profile, or `None` after printing the `SKIP` line.
fn compared(scenario: &Scenario) -> Option<Comparison> {
    match compare(scenario, scenario.vm.kernel) {
        Ok(c) => Some(c),
        Err(RealError::OpenKvm(e)) => {
            println!("SKIP: /dev/kvm cannot be opened ({e})");
            None
        }
        Err(e) => panic!("{}: {e}", scenario.name),
    }
}

#[test]
fn every_builtin_reads_on_kvm_what_the_model_of_this_host_predicts() {
    for s in builtins().unwrap() {
        let Some(c) = compared(&s) else { return };
        assert!(c.agrees(), "{}:\n{c}", s.name);
        let expected: Vec<usize> = c.host_model.reads.iter().map(|r| r.step).collect();
        let real: Vec<usize> = c.real.reads.iter().map(|r| r.step).collect();
        assert_eq!(real, expected, "{}: one read per read step", s.name);
        for (real, host) in c.real.reads.iter().zip(&c.host_model.reads) {
            assert_eq!(real.bytes, host.bytes, "{} step {}", s.name, real.step);
        }
        // The model of this host finds nothing stale: every device it stands in for snoops.
        assert!(
            c.host_model
                .hazards()
                .iter()
                .all(|h| h.name() != "stale-read"),
            "{}",
            s.name
        );
    }
}

#[test]
fn every_value_the_model_reads_otherwise_is_explained() {
    for s in builtins().unwrap() {
        let Some(c) = compared(&s) else { return };
        for row in c.differences() {
            let why = row.difference.as_deref().unwrap_or_default();
            for f in c.model.verdicts.iter().filter(|f| f.step == row.step) {
                assert!(
                    why.contains(f.hazard.name()),
                    "{} step {}: {why}",
                    s.name,
                    row.step
                );
            }
            assert!(
                !why.contains("nothing the models know of"),
                "{}: {why}",
                s.name
            );
        }
        // A stale read or a leak on the model is a read the real run does not repeat.
        let stale = c
            .model
            .hazards()
            .iter()
            .any(|h| matches!(h.name(), "stale-read" | "info-leak"));
        if stale {
            assert!(c.differences().next().is_some(), "{}:\n{c}", s.name);
        }
    }
}

#[test]
fn the_frame_the_upstream_model_loses_reaches_the_emulated_gpu() {
    let gpu = scenario::builtin("virtio-gpu-wc-bar").unwrap().unwrap();
    let upstream = kvm_model::KernelProfile::parse("6.16", kvm_model::Vendor::Intel).unwrap();
    let c = match compare(&gpu, upstream) {
        Ok(c) => c,
        Err(RealError::OpenKvm(e)) => {
            println!("SKIP: /dev/kvm cannot be opened ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dma = c
        .reads
        .iter()
        .find(|r| r.step == 4)
        .expect("the GPU's read");
    assert!(!dma.same_as_model && dma.same_as_host_model);
    assert_eq!(dma.real, "[ff 00 ff 00 00 00 f0 f0] x512");
    assert_eq!(dma.model, "[00] x4096");
    let why = dma.difference.as_deref().unwrap();
    assert!(why.contains("finds stale-read"), "{why}");
    assert!(
        why.contains("gpu is the VMM's own mapping, which snoops"),
        "{why}"
    );
    // What this host cannot show comes from what was measured and registered.
    let text = c.to_string();
    if c.real.memory_types.honored == Some(false) {
        assert!(
            text.contains("guest memory types do not take effect here (measured"),
            "{text}"
        );
    }
    let bar = c.real.registration("bar").unwrap();
    if !bar.is_safe() {
        assert!(
            text.contains("bar: no mechanism is safe on this host"),
            "{text}"
        );
    }
    assert!(
        text.contains("gpu does not snoop in the scenario"),
        "{text}"
    );
}
