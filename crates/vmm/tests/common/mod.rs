//! Shared by the conformance tests: opening the two kernels and running a sequence on a
//! fresh VM.

// Each test binary compiles this module and uses its own subset.
#![allow(dead_code)]

use kvm_model::KernelProfile;
use vmm::backend::{Backend, ModelKvm, RealKvm};
use vmm::replay::{Entry, Replayer, Report};

/// A fresh VM on this host's `/dev/kvm`, or `None` after printing the one `SKIP` line.
pub fn real_kvm(what: &str) -> Option<Box<dyn Backend>> {
    match RealKvm::open() {
        Ok(vm) => Some(Box::new(vm)),
        Err(e) => {
            println!("SKIP: {e}: real-KVM {what} not run");
            None
        }
    }
}

/// A fresh VM of the modeled kernel.
pub fn model(profile: KernelProfile) -> Box<dyn Backend> {
    Box::new(ModelKvm::new(profile))
}

/// Runs `entries` on a fresh replayer over `backend`.
pub fn replay(backend: Box<dyn Backend>, entries: &[Entry]) -> Report {
    Replayer::new(backend)
        .expect("the replay pool maps")
        .run(entries)
}

/// Every step whose answer missed its expectation, one per line, for an assertion message.
pub fn mismatches(report: &Report) -> String {
    report.mismatches().map(|s| format!("  {s}\n")).collect()
}
