//! The checks, in the order they print.

use kvm_model::Vendor;
use uapi::cap::{KVM_CAP_NR_MEMSLOTS, KVM_CAP_USER_MEMORY2};
use uapi::device::{KVM_DEV_VIRTIO_NONCOHERENT, KVM_DEV_VIRTIO_NONCOHERENT_SET, kvm_device_attr};
use uapi::memslot::{KVM_MEM_LOG_DIRTY_PAGES, kvm_userspace_memory_region};
use uapi::{KVM_API_VERSION, PAGE_SIZE};

use super::{Check, ProbeError, ProbeOptions, ProbeReport, Status, Target, Verdict};
use crate::backend::{Backend, BackendError, KVM_DEVICE, ModelKvm, Origin, Platform, RealKvm, Tdp};
use crate::cache::measure_flush;
use crate::guest::empirical::{EmpiricalReport, Verdict as Measured, measure_memory_types};
use crate::mmap::AnonMapping;
use crate::region::{Coherence, GuestMemory, GuestRegion, RegionError, RegionKind};
use crate::strategy::{
    Outcome, Policy, Scope, StrategyError, cap_hints, try_disable_ignore_guest_pat,
    try_memslot_flag, try_virtio_device,
};

/// Scratch slots live here, far from anything a guest would use.
const SCRATCH_GPA: u64 = 0x1_0000_0000;
/// Pages of the scratch memory (the dirty-log slot's size).
const SCRATCH_PAGES: u64 = 16;
/// Buffer of the cache-flush measurement: 8 MiB of dirty lines, flushed 8 times.
const FLUSH_BYTES: usize = 8 << 20;

const DEVICE: &str = "KVM device access";
const API_VERSION: &str = "KVM API version";
const FLAVOR: &str = "KVM flavor";
const VENDOR: &str = "host CPU vendor";
const SELF_SNOOP: &str = "CPU self-snoop";
const NR_MEMSLOTS: &str = "KVM_CAP_NR_MEMSLOTS";
const USER_MEMORY2: &str = "KVM_CAP_USER_MEMORY2";
const FLAG: &str = "memslot flag 8 (KVM_MEM_NON_COHERENT_DMA)";
const VIRTIO: &str = "device type 12 (KVM virtio device)";
const CAPS: &str = "caps 236/239 (hints only)";
const QUIRK: &str = "IGNORE_GUEST_PAT quirk";
const TDP: &str = "TDP in use";
const DIRTY_LOG: &str = "dirty log";
const FLUSH: &str = "cache flush";
const EMPIRICAL: &str = "guest memory types (measured)";
const VERDICT: &str = "noncoherent region verdict";

/// A fresh VM of the target.
fn new_vm(target: &Target) -> Result<Box<dyn Backend>, ProbeError> {
    match target {
        Target::Model(profile) => Ok(Box::new(ModelKvm::new(*profile))),
        Target::Kvm { device } => match RealKvm::open_path(device) {
            Ok(vm) => Ok(Box::new(vm)),
            Err(BackendError::OpenKvm(errno)) => Err(ProbeError::OpenDevice {
                path: device.clone(),
                errno,
            }),
            Err(BackendError::CreateVm(errno)) => Err(ProbeError::CreateVm {
                path: device.clone(),
                errno,
            }),
            Err(source) => Err(ProbeError::Ioctl {
                check: DEVICE,
                source,
            }),
        },
    }
}

fn ioctl(check: &'static str) -> impl Fn(BackendError) -> ProbeError {
    move |source| ProbeError::Ioctl { check, source }
}

fn strategy(check: &'static str) -> impl Fn(StrategyError) -> ProbeError {
    move |source| ProbeError::Strategy { check, source }
}

/// Runs every check on `target`, then the verdict.
///
/// # Example
///
/// ```
/// use kvm_model::KernelProfile;
/// use vmm::probe::{ProbeOptions, Status, Target, probe};
///
/// let report = probe(&Target::Model(KernelProfile::this_host()), &ProbeOptions::default())?;
/// let verdict = report.check("noncoherent region verdict").unwrap();
/// assert_eq!(verdict.status, Status::Fail);
/// # Ok::<(), vmm::probe::ProbeError>(())
/// ```
pub fn probe(target: &Target, options: &ProbeOptions) -> Result<ProbeReport, ProbeError> {
    // Declared before the VM, so dropped after it: no slot outlives its memory.
    let scratch =
        AnonMapping::new((SCRATCH_PAGES * PAGE_SIZE) as usize).map_err(ProbeError::MapScratch)?;
    let mut vm = new_vm(target)?;
    let platform = vm.platform();
    let host = matches!(target, Target::Kvm { .. });
    let mut checks = vec![
        device_access(target),
        api_version(vm.as_ref())?,
        flavor(&platform),
        cpu_vendor(&platform),
        self_snoop(&platform),
        nr_memslots(vm.as_ref()),
        user_memory2(vm.as_ref()),
    ];
    let flag = memslot_flag(vm.as_mut(), &scratch)?;
    let flag_accepted = flag.status == Status::Pass;
    checks.push(flag);
    checks.push(virtio_device(vm.as_mut())?);
    checks.push(caps(vm.as_ref(), flag_accepted));
    checks.push(quirk(new_vm(target)?.as_mut(), &platform)?);
    checks.push(tdp(&platform));
    checks.push(dirty_log(vm.as_mut(), &scratch)?);
    checks.push(cache_flush(host));
    let empirical = if options.empirical {
        let (check, report) = empirical(target)?;
        checks.push(check);
        report
    } else {
        None
    };
    let verdict = verdict(new_vm(target)?, options.policy)?;
    checks.push(verdict_check(&verdict));
    Ok(ProbeReport {
        backend: vm.describe(),
        checks,
        verdict,
        empirical,
    })
}

fn device_access(target: &Target) -> Check {
    match target {
        Target::Kvm { device } => Check::new(
            DEVICE,
            Status::Pass,
            format!(
                "{} opened read-write, KVM_CREATE_VM works",
                device.display()
            ),
        ),
        Target::Model(_) => Check::new(DEVICE, Status::NotApplicable, "model backend"),
    }
}

fn api_version(vm: &dyn Backend) -> Result<Check, ProbeError> {
    let v = vm.kvm_api_version().map_err(ioctl(API_VERSION))?;
    Ok(if v == KVM_API_VERSION as i32 {
        Check::new(API_VERSION, Status::Pass, v.to_string())
    } else {
        Check::new(
            API_VERSION,
            Status::Fail,
            format!("{v}, expected {KVM_API_VERSION}: not the uAPI this VMM speaks"),
        )
    })
}

/// Where a fact was read: `host_where` on the host, the profile on the model.
fn origin(p: &Platform, host_where: &str) -> String {
    match p.origin {
        Origin::Host => host_where.to_string(),
        Origin::Model(_) => p.origin.to_string(),
    }
}

fn flavor(p: &Platform) -> Check {
    let Some(module) = p.modules.first() else {
        return Check::new(
            FLAVOR,
            Status::Warn,
            format!("no KVM vendor module found; {}", origin(p, "/sys/module")),
        );
    };
    let also = if p.modules.len() > 1 {
        format!(", also loaded: {}", p.modules[1..].join(", "))
    } else {
        String::new()
    };
    let (status, what) = match module.as_str() {
        "kvm_intel" => (Status::Pass, "VMX"),
        "kvm_amd" => (Status::Pass, "SVM"),
        _ => (
            Status::Warn,
            "PVM: a shadow-paging KVM for nested clouds; guest memory types never take effect",
        ),
    };
    Check::new(
        FLAVOR,
        status,
        format!("{module} ({what}){also}; {}", origin(p, "/sys/module")),
    )
}

fn cpu_vendor(p: &Platform) -> Check {
    match p.vendor {
        Some(v) => Check::new(
            VENDOR,
            Status::Pass,
            format!("{} ({v}); {}", p.vendor_id, origin(p, "CPUID leaf 0")),
        ),
        None => Check::new(
            VENDOR,
            Status::Warn,
            format!(
                "{:?}: neither Intel nor AMD; {}",
                p.vendor_id,
                origin(p, "CPUID leaf 0")
            ),
        ),
    }
}

fn self_snoop(p: &Platform) -> Check {
    let from = origin(p, &format!("CPUID.1:EDX[27]={}", u8::from(p.self_snoop)));
    let (status, why) = match (p.self_snoop, p.vendor) {
        (true, _) => (Status::Pass, "present"),
        (false, Some(Vendor::Intel)) => (
            Status::Warn,
            "absent: KVM never offers to disable IGNORE_GUEST_PAT on this CPU",
        ),
        (false, _) => (Status::Pass, "absent; it matters on Intel only"),
    };
    Check::new(SELF_SNOOP, status, format!("{why}; {from}"))
}

fn nr_memslots(vm: &dyn Backend) -> Check {
    let n = vm.check_extension(KVM_CAP_NR_MEMSLOTS);
    let status = if n > 0 { Status::Pass } else { Status::Fail };
    Check::new(NR_MEMSLOTS, status, n.to_string())
}

fn user_memory2(vm: &dyn Backend) -> Check {
    match vm.check_extension(KVM_CAP_USER_MEMORY2) {
        0 => Check::new(
            USER_MEMORY2,
            Status::Warn,
            "0: no KVM_SET_USER_MEMORY_REGION2 (a kernel before 6.8); the flag works on v1 too",
        ),
        n => Check::new(
            USER_MEMORY2,
            Status::Pass,
            format!("{n}: KVM_SET_USER_MEMORY_REGION2 available"),
        ),
    }
}

/// A one-page scratch slot at `SCRATCH_GPA` over the start of `scratch`.
fn scratch_region(scratch: &AnonMapping, pages: u64, flags: u32) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot: 0,
        flags,
        guest_phys_addr: SCRATCH_GPA,
        memory_size: pages * PAGE_SIZE,
        userspace_addr: scratch.addr(),
    }
}

fn delete(
    vm: &mut dyn Backend,
    region: &kvm_userspace_memory_region,
    check: &'static str,
) -> Result<(), ProbeError> {
    let delete = kvm_userspace_memory_region {
        memory_size: 0,
        flags: 0,
        ..*region
    };
    // SAFETY: deleting a slot maps nothing.
    unsafe { vm.set_user_memory_region(&delete) }.map_err(ioctl(check))
}

fn memslot_flag(vm: &mut dyn Backend, scratch: &AnonMapping) -> Result<Check, ProbeError> {
    let region = scratch_region(scratch, 1, 0);
    // SAFETY: `scratch` outlives the VM (`probe` declares it first), and the slot is deleted
    // below when it was made.
    let attempt = unsafe { try_memslot_flag(vm, &region) }.map_err(strategy(FLAG))?;
    Ok(match attempt.outcome {
        Outcome::Used => {
            delete(vm, &region, FLAG)?;
            Check::new(
                FLAG,
                Status::Pass,
                "accepted on a 1-page slot: the memslot-flag proposal is there",
            )
        }
        _ => Check::new(
            FLAG,
            Status::Warn,
            format!("{} ({})", attempt.outcome_name(), attempt.reason),
        ),
    })
}

fn virtio_device(vm: &mut dyn Backend) -> Result<Check, ProbeError> {
    let (attempt, device) = try_virtio_device(vm).map_err(strategy(VIRTIO))?;
    let Some(device) = device else {
        return Ok(Check::new(
            VIRTIO,
            Status::Warn,
            format!("{} ({})", attempt.outcome_name(), attempt.reason),
        ));
    };
    let attr = kvm_device_attr {
        group: KVM_DEV_VIRTIO_NONCOHERENT,
        attr: KVM_DEV_VIRTIO_NONCOHERENT_SET,
        ..Default::default()
    };
    let has = vm.has_device_attr(device, &attr);
    vm.close_device(device).map_err(ioctl(VIRTIO))?;
    has.map_err(ioctl(VIRTIO))?;
    Ok(Check::new(
        VIRTIO,
        Status::Pass,
        "created (with KVM_CREATE_DEVICE_TEST, then for real), has and accepts \
         NONCOHERENT/SET: the virtio-device proposal is there (VM-wide)",
    ))
}

fn caps(vm: &dyn Backend, flag_accepted: bool) -> Check {
    let (c236, c239) = cap_hints(vm);
    let values = format!("236={c236}, 239={c239}");
    match (c236 != 0 || c239 != 0, flag_accepted) {
        (advertised, accepted) if advertised == accepted => Check::new(
            CAPS,
            Status::Pass,
            format!("{values}: agree with the flag test"),
        ),
        (true, _) => Check::new(
            CAPS,
            Status::Warn,
            format!(
                "{values}, yet the flag is refused: here the numbers mean something else \
                 (upstream 236 is KVM_CAP_PRE_FAULT_MEMORY)"
            ),
        ),
        (false, _) => Check::new(
            CAPS,
            Status::Warn,
            format!("{values}, yet the flag is accepted: the kernel does not advertise it"),
        ),
    }
}

fn quirk(vm: &mut dyn Backend, platform: &Platform) -> Result<Check, ProbeError> {
    // Ask as the strategy would if VM-wide honoring were allowed; this VM is thrown away.
    let policy = Policy {
        allow_vm_wide: true,
        ..Policy::default()
    };
    let attempt = try_disable_ignore_guest_pat(vm, platform, policy).map_err(strategy(QUIRK))?;
    Ok(match attempt.outcome {
        Outcome::Used => Check::new(
            QUIRK,
            Status::Pass,
            "reported, and disabled on a scratch VM: available to a policy that allows VM-wide \
             mechanisms",
        ),
        Outcome::Skipped => Check::new(QUIRK, Status::Pass, attempt.reason),
        Outcome::Refused(_) => Check::new(QUIRK, Status::Warn, attempt.reason),
    })
}

fn tdp(p: &Platform) -> Check {
    let status = match p.tdp {
        Tdp::On => Status::Pass,
        Tdp::Off | Tdp::Unknown => Status::Warn,
    };
    Check::new(TDP, status, format!("{}: {}", p.tdp, p.tdp_evidence))
}

fn dirty_log(vm: &mut dyn Backend, scratch: &AnonMapping) -> Result<Check, ProbeError> {
    let region = scratch_region(scratch, SCRATCH_PAGES, KVM_MEM_LOG_DIRTY_PAGES);
    // SAFETY: `scratch` (SCRATCH_PAGES pages) outlives the VM; the slot is deleted below.
    unsafe { vm.set_user_memory_region(&region) }.map_err(ioctl(DIRTY_LOG))?;
    let log = vm.get_dirty_log(region.slot);
    delete(vm, &region, DIRTY_LOG)?;
    Ok(match log {
        Ok(words) if words.len() == SCRATCH_PAGES.div_ceil(64) as usize => Check::new(
            DIRTY_LOG,
            Status::Pass,
            format!(
                "KVM_GET_DIRTY_LOG on a {SCRATCH_PAGES}-page LOG_DIRTY_PAGES slot: {} dirty",
                words.iter().map(|w| w.count_ones()).sum::<u32>()
            ),
        ),
        Ok(words) => Check::new(
            DIRTY_LOG,
            Status::Fail,
            format!(
                "KVM_GET_DIRTY_LOG returned {} words for {SCRATCH_PAGES} pages",
                words.len()
            ),
        ),
        Err(e) => Check::new(DIRTY_LOG, Status::Fail, e.to_string()),
    })
}

fn cache_flush(host: bool) -> Check {
    if !host {
        return Check::new(
            FLUSH,
            Status::NotApplicable,
            "measures the host CPU, not a modeled one",
        );
    }
    Check::new(
        FLUSH,
        Status::Pass,
        measure_flush(FLUSH_BYTES, 8).to_string(),
    )
}

/// Runs the guest that times loads per memory type, where there is a real `/dev/kvm`.
fn empirical(target: &Target) -> Result<(Check, Option<EmpiricalReport>), ProbeError> {
    let device = match target {
        Target::Model(_) => {
            let why = "a model runs no guest code";
            return Ok((Check::new(EMPIRICAL, Status::NotApplicable, why), None));
        }
        Target::Kvm { device } => device,
    };
    if device.as_path() != std::path::Path::new(KVM_DEVICE) {
        let why = format!(
            "the guest runtime opens {KVM_DEVICE}, not {}",
            device.display()
        );
        return Ok((Check::new(EMPIRICAL, Status::NotApplicable, why), None));
    }
    let report = measure_memory_types().map_err(ProbeError::Empirical)?;
    let figures: Vec<String> = report
        .timings
        .iter()
        .map(|t| format!("{} {:.2}", t.condition, t.cycles_per_load))
        .collect();
    let (status, meaning) = match report.verdict {
        Measured::Honored => (Status::Pass, "UC loads go to memory"),
        Measured::NotHonored => (
            Status::Warn,
            "every type loads like WB, whatever the guest asks",
        ),
        Measured::Inconclusive => (Status::Warn, "neither clearly honored nor ignored"),
    };
    let detail = format!(
        "{} ({meaning}): {} TSC ticks per load; guest PAT {:#018x}, {} ms",
        report.verdict.name(),
        figures.join(", "),
        report.guest_pat,
        report.elapsed.as_millis()
    );
    Ok((Check::new(EMPIRICAL, status, detail), Some(report)))
}

/// Registers a one-page noncoherent BAR on a scratch VM with the real chain.
fn verdict(vm: Box<dyn Backend>, policy: Policy) -> Result<Verdict, ProbeError> {
    let mut memory = GuestMemory::new(vm, policy);
    let bar = GuestRegion::new(
        "probe-bar",
        SCRATCH_GPA,
        PAGE_SIZE,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )
    .map_err(|source| ProbeError::Region {
        check: VERDICT,
        source,
    })?;
    match memory.add_region(bar) {
        // A noncoherent region always has a registration.
        Ok(slot) => memory
            .registration(slot)
            .map(|r| Verdict::Registered(r.clone()))
            .ok_or(ProbeError::Region {
                check: VERDICT,
                source: RegionError::NoSuchSlot(slot),
            }),
        Err(RegionError::Register {
            source: StrategyError::NoSafeMechanism(attempts),
            ..
        }) => Ok(Verdict::Refused(attempts.0)),
        Err(source) => Err(ProbeError::Region {
            check: VERDICT,
            source,
        }),
    }
}

fn verdict_check(verdict: &Verdict) -> Check {
    match verdict {
        Verdict::Registered(r) => {
            let (status, note) = match r.mechanism.scope() {
                Scope::Slot => (Status::Pass, "guest memory types honored in that slot only"),
                Scope::VmWide => (
                    Status::Warn,
                    "guest memory types honored for ALL guest memory: page aliasing with \
                     system RAM is possible",
                ),
                Scope::Nothing => (
                    Status::Fail,
                    "UNSAFE: registered plainly, guest memory types are not honored",
                ),
            };
            Check::new(VERDICT, status, format!("{}: {note}", r.mechanism))
        }
        Verdict::Refused(_) => Check::new(
            VERDICT,
            Status::Fail,
            "no safe mechanism: a noncoherent region would be refused (steps below)",
        ),
    }
}
