//! `ncdma bench spte`: what the memslot flag costs in the fault path.
//!
//! The proposal passes the memslot to `get_mt_mask()` from `make_spte()`, which already holds
//! it, and the reviewers' claim is that the extra check costs nothing measurable. This
//! benchmark times the model's `make_spte()` (VMX, EPT) for a 4 KiB leaf in three variants,
//! sample by sample in turn so all see the same machine noise:
//!
//! - 6.16+memslot-flag, slot with `KVM_MEM_NON_COHERENT_DMA` (the new branch decides);
//! - 6.16+memslot-flag, slot without it (the check runs and falls through);
//! - 6.16 without the proposal, same slot (no check at all): the baseline.
//!
//! It reports flagged/unflagged and, the sharper number, the unflagged slot with the check
//! over without it.

use std::time::Duration;

use kvm_model::{KernelProfile, Kvm, KvmMemorySlot, PgLevel, VcpuId, Vendor};
use serde_json::{Value, json};
use uapi::Errno;
use uapi::memslot::{KVM_MEM_NON_COHERENT_DMA, kvm_userspace_memory_region};

use super::stats::{median, ns_per, time};

/// `make_spte()` calls per sample.
const CALLS: u64 = 200_000;
/// Guest frames the calls cycle through (a 2 MiB slot's worth).
const FRAMES: u64 = 512;
/// Where the benchmark's slot lives (guest-physical), and its (never touched) host address.
const SLOT_GPA: u64 = 1 << 32;
const SLOT_HVA: u64 = 0x7f00_0000_0000;

/// One variant of the fault path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Proposal kernel, flagged slot.
    Flagged,
    /// Proposal kernel, unflagged slot.
    Unflagged,
    /// Upstream 6.16, unflagged slot.
    Upstream,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Flagged, Variant::Unflagged, Variant::Upstream];

    fn name(self) -> &'static str {
        match self {
            Variant::Flagged => "6.16+memslot-flag, flagged slot",
            Variant::Unflagged => "6.16+memslot-flag, unflagged slot",
            Variant::Upstream => "6.16 (no proposal), unflagged slot",
        }
    }

    fn kernel(self) -> &'static str {
        match self {
            Variant::Flagged | Variant::Unflagged => "6.16+memslot-flag",
            Variant::Upstream => "6.16",
        }
    }

    fn slot_flags(self) -> u32 {
        match self {
            Variant::Flagged => KVM_MEM_NON_COHERENT_DMA,
            Variant::Unflagged | Variant::Upstream => 0,
        }
    }
}

/// Setting up a variant failed (the model refused a call the benchmark needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpteBenchError {
    /// The profile name is not one `KernelProfile::parse` knows.
    #[error("{kernel}: not a kernel profile")]
    Profile {
        /// The name.
        kernel: &'static str,
    },
    /// `KVM_SET_USER_MEMORY_REGION` of the benchmark's slot failed.
    #[error("{kernel}: creating the benchmark slot: {errno}")]
    SetUserMemoryRegion {
        /// The profile.
        kernel: &'static str,
        /// The model's answer.
        errno: Errno,
    },
    /// `KVM_CREATE_VCPU` failed.
    #[error("{kernel}: creating vCPU 0: {errno}")]
    CreateVcpu {
        /// The profile.
        kernel: &'static str,
        /// The model's answer.
        errno: Errno,
    },
    /// The slot just created is not found by its gfn.
    #[error("{kernel}: the benchmark slot is missing after its creation")]
    SlotMissing {
        /// The profile.
        kernel: &'static str,
    },
    /// `make_spte()` refused the vCPU.
    #[error("{kernel}: make_spte failed")]
    MakeSpte {
        /// The profile.
        kernel: &'static str,
    },
}

/// A VM of one variant with its slot and vCPU, ready to fault.
struct Bench {
    vm: Kvm,
    vcpu: VcpuId,
    slot: KvmMemorySlot,
    kernel: &'static str,
}

impl Bench {
    fn new(variant: Variant) -> Result<Bench, SpteBenchError> {
        let kernel = variant.kernel();
        let profile = KernelProfile::parse(kernel, Vendor::Intel)
            .map_err(|_| SpteBenchError::Profile { kernel })?;
        let mut vm = Kvm::new(profile);
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: variant.slot_flags(),
            guest_phys_addr: SLOT_GPA,
            memory_size: FRAMES << uapi::PAGE_SHIFT,
            userspace_addr: SLOT_HVA,
        };
        // The model never dereferences host addresses, so SLOT_HVA need not be mapped.
        vm.set_user_memory_region(&region)
            .map_err(|errno| SpteBenchError::SetUserMemoryRegion { kernel, errno })?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|errno| SpteBenchError::CreateVcpu { kernel, errno })?;
        let slot = vm
            .gfn_to_memslot(0, SLOT_GPA >> uapi::PAGE_SHIFT)
            .cloned()
            .ok_or(SpteBenchError::SlotMissing { kernel })?;
        Ok(Bench {
            vm,
            vcpu,
            slot,
            kernel,
        })
    }

    /// One sample: [`CALLS`] leaves over the slot's frames.
    fn sample(&mut self) -> Result<Duration, SpteBenchError> {
        let base = self.slot.base_gfn;
        let (d, ok) = time(|| {
            (0..CALLS).try_for_each(|i| {
                let gfn = std::hint::black_box(base + i % FRAMES);
                let spte = self
                    .vm
                    .make_spte(self.vcpu, &self.slot, gfn, PgLevel::K4, false)
                    .map_err(|_| SpteBenchError::MakeSpte {
                        kernel: self.kernel,
                    })?;
                std::hint::black_box(spte);
                Ok(())
            })
        });
        ok.map(|()| d)
    }
}

/// What `ncdma bench spte` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SpteReport {
    /// Samples per variant.
    pub samples: usize,
    /// Median ns per `make_spte()`, per variant, in [`Variant`] order.
    pub ns: Vec<(Variant, f64)>,
}

impl SpteReport {
    fn ns_of(&self, v: Variant) -> f64 {
        self.ns
            .iter()
            .find(|(x, _)| *x == v)
            .map_or(f64::NAN, |(_, ns)| *ns)
    }

    /// Flagged over unflagged slot, same kernel.
    pub fn flagged_over_unflagged(&self) -> f64 {
        self.ns_of(Variant::Flagged) / self.ns_of(Variant::Unflagged)
    }

    /// Unflagged slot with the proposal's check over upstream without it.
    pub fn check_over_upstream(&self) -> f64 {
        self.ns_of(Variant::Unflagged) / self.ns_of(Variant::Upstream)
    }

    /// The report as one JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "spte",
            "samples": self.samples,
            "calls_per_sample": CALLS,
            "variants": self.ns.iter().map(|(v, ns)| json!({
                "variant": v.name(),
                "kernel": v.kernel(),
                "ns_per_make_spte": ns,
            })).collect::<Vec<_>>(),
            "flagged_over_unflagged": self.flagged_over_unflagged(),
            "check_over_upstream": self.check_over_upstream(),
        })
    }
}

impl std::fmt::Display for SpteReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "spte: make_spte() of a 4 KiB leaf on the model (VMX, EPT, Intel), median of {} \
             samples x {CALLS} calls, variants interleaved",
            self.samples
        )?;
        writeln!(f, "{:<38} {:>10}", "variant", "ns/call")?;
        for (v, ns) in &self.ns {
            writeln!(f, "{:<38} {:>10.1}", v.name(), ns)?;
        }
        writeln!(
            f,
            "flagged / unflagged slot:           {:.3}  (target <= 1.02)",
            self.flagged_over_unflagged()
        )?;
        writeln!(
            f,
            "unflagged, with check / upstream:   {:.3}  (the check's cost where it is not used)",
            self.check_over_upstream()
        )
    }
}

/// Runs the benchmark with `samples` samples per variant.
pub fn run(samples: usize) -> Result<SpteReport, SpteBenchError> {
    let samples = samples.max(1);
    let mut benches = Variant::ALL
        .into_iter()
        .map(|v| Bench::new(v).map(|b| (v, b)))
        .collect::<Result<Vec<_>, _>>()?;
    // One warm-up sample each, not counted.
    for (_, b) in benches.iter_mut() {
        b.sample()?;
    }
    let mut times = vec![Vec::with_capacity(samples); benches.len()];
    for _ in 0..samples {
        for ((_, b), t) in benches.iter_mut().zip(times.iter_mut()) {
            t.push(b.sample()?);
        }
    }
    let ns = benches
        .iter()
        .zip(times)
        .map(|((v, _), t)| (*v, ns_per(median(t), CALLS)))
        .collect();
    Ok(SpteReport { samples, ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_model::MtMaskBranch;

    #[test]
    fn each_variant_takes_the_branch_it_claims_to_time() {
        for variant in Variant::ALL {
            let mut b = Bench::new(variant).unwrap();
            let gfn = b.slot.base_gfn;
            let spte =
                b.vm.make_spte(b.vcpu, &b.slot, gfn, PgLevel::K4, false)
                    .unwrap();
            let want_flag_branch = variant == Variant::Flagged;
            assert_eq!(
                spte.branch == MtMaskBranch::SlotNonCoherentDma,
                want_flag_branch,
                "{}: {:?}",
                variant.name(),
                spte.branch
            );
            assert!(spte.ept.is_some(), "{}: an EPT leaf", variant.name());
        }
    }

    #[test]
    fn report_ratios_divide_the_right_medians() {
        let r = SpteReport {
            samples: 1,
            ns: vec![
                (Variant::Flagged, 10.0),
                (Variant::Unflagged, 20.0),
                (Variant::Upstream, 40.0),
            ],
        };
        assert_eq!(r.flagged_over_unflagged(), 0.5);
        assert_eq!(r.check_over_upstream(), 0.5);
        assert!(
            r.to_string()
                .contains("flagged / unflagged slot:           0.500")
        );
    }
}
