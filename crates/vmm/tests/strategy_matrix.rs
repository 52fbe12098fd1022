//! The registration strategy on the reference kernel, under every profile and vendor (and
//! this host's profile): which mechanism a noncoherent region gets, and every attempt before
//! it. The expected tables are written out by hand from system.md §2–§5.

use kvm_model::{CpuFacts, KernelProfile, Vendor};
use vmm::backend::ModelKvm;
use vmm::region::{Coherence, GuestMemory, GuestRegion, RegionError, RegionKind};
use vmm::strategy::{Attempt, Mechanism, Outcome, Policy, StrategyError};

const BAR_GPA: u64 = 0x1_0000_0000;
const SIZE: u64 = 0x20_0000;

/// `mechanism=outcome` for each attempt, space separated, then `-> chosen` (`refused` when
/// the strategy refused), e.g. `memslot-flag=EINVAL virtio-device=used -> virtio-device`.
fn summary(attempts: &[Attempt], chosen: Option<Mechanism>) -> String {
    let steps: Vec<String> = attempts
        .iter()
        .map(|a| format!("{}={}", a.mechanism.id(), a.outcome_name()))
        .collect();
    let chosen = chosen.map_or("refused", Mechanism::id);
    format!("{} -> {chosen}", steps.join(" "))
}

/// Registers one noncoherent region of `kind` on a fresh VM of `profile`; returns the
/// summary, the attempts, and the VM (to inspect afterwards).
fn register(
    profile: KernelProfile,
    policy: Policy,
    kind: RegionKind,
) -> (String, Vec<Attempt>, GuestMemory) {
    let mut memory = GuestMemory::new(Box::new(ModelKvm::new(profile)), policy);
    let region = GuestRegion::new("r", BAR_GPA, SIZE, kind, Coherence::NoncoherentDma).unwrap();
    match memory.add_region(region) {
        Ok(slot) => {
            let r = memory.registration(slot).unwrap().clone();
            (summary(&r.attempts, Some(r.mechanism)), r.attempts, memory)
        }
        Err(RegionError::Register {
            source: StrategyError::NoSafeMechanism(attempts),
            ..
        }) => (summary(&attempts.0, None), attempts.0, memory),
        Err(e) => panic!("{profile}: unexpected error {e}"),
    }
}

fn profile(name: &str, vendor: Vendor) -> KernelProfile {
    KernelProfile::parse(name, vendor).unwrap()
}

const DEFAULT: Policy = Policy {
    allow_vm_wide: false,
    allow_unsafe: false,
    force_flag_on_ram: false,
};
const VM_WIDE: Policy = Policy {
    allow_vm_wide: true,
    ..DEFAULT
};
const UNSAFE: Policy = Policy {
    allow_unsafe: true,
    ..DEFAULT
};
const FORCE: Policy = Policy {
    force_flag_on_ram: true,
    ..DEFAULT
};

/// A device BAR under the default policy: every attempt, on every kernel.
#[test]
fn a_bar_under_the_default_policy_on_every_kernel() {
    const ALL_REFUSED: &str = "memslot-flag=EINVAL virtio-device=ENODEV \
        disable-ignore-guest-pat=refused vendor-npt=refused unsafe=skipped -> refused";
    const NPT: &str = "memslot-flag=EINVAL virtio-device=ENODEV \
        disable-ignore-guest-pat=refused vendor-npt=used -> vendor-npt";
    const FLAG: &str = "memslot-flag=used -> memslot-flag";
    const VIRTIO: &str = "memslot-flag=EINVAL virtio-device=used -> virtio-device";
    let table: [(&str, Vendor, &str); 14] = [
        // The seeds' base: nothing to ask on Intel; AMD NPT honors guest PAT anyway.
        ("6.7", Vendor::Intel, ALL_REFUSED),
        ("6.7", Vendor::Amd, NPT),
        // Proposal A: the device, VM-wide.
        ("6.7+virtio-device", Vendor::Intel, VIRTIO),
        ("6.7+virtio-device", Vendor::Amd, VIRTIO),
        // Proposal B: the flag, this slot only (harmless on AMD).
        ("6.7+memslot-flag", Vendor::Intel, FLAG),
        ("6.7+memslot-flag", Vendor::Amd, FLAG),
        // 6.11 honors PAT on self-snoop CPUs by itself, but no uAPI lets a VMM know that.
        ("6.11-selfsnoop", Vendor::Intel, ALL_REFUSED),
        ("6.11-selfsnoop", Vendor::Amd, NPT),
        ("6.12", Vendor::Intel, ALL_REFUSED),
        ("6.12", Vendor::Amd, NPT),
        // 6.16: the quirk is there, but VM-wide: the default policy skips it; on AMD it
        // is listed without effect.
        (
            "6.16",
            Vendor::Intel,
            "memslot-flag=EINVAL virtio-device=ENODEV disable-ignore-guest-pat=skipped \
             vendor-npt=refused unsafe=skipped -> refused",
        ),
        (
            "6.16",
            Vendor::Amd,
            "memslot-flag=EINVAL virtio-device=ENODEV disable-ignore-guest-pat=skipped \
             vendor-npt=used -> vendor-npt",
        ),
        ("6.16+memslot-flag", Vendor::Intel, FLAG),
        ("6.16+memslot-flag", Vendor::Amd, FLAG),
    ];
    let covered: Vec<KernelProfile> = table.iter().map(|(n, v, _)| profile(n, *v)).collect();
    assert_eq!(
        covered,
        KernelProfile::all(),
        "the table covers every profile"
    );
    for (name, vendor, expected) in table {
        let (got, _, _) = register(profile(name, vendor), DEFAULT, RegionKind::DeviceBar);
        assert_eq!(got, expected, "{name}/{vendor}");
    }
    // This host: kvm_pvm, shadow paging, so not even AMD's NPT helps.
    let (got, attempts, _) = register(KernelProfile::this_host(), DEFAULT, RegionKind::DeviceBar);
    assert_eq!(got, ALL_REFUSED);
    assert!(
        attempts[2].reason.contains("mask 0x5ff: TDP is off"),
        "{}",
        attempts[2]
    );
    assert!(
        attempts[3].reason.starts_with("AMD, but TDP is off"),
        "{}",
        attempts[3]
    );
}

/// The chosen mechanism per policy and kind: a BAR (default, VM-wide allowed, unsafe
/// allowed) and system RAM (default, flag forced).
#[test]
fn the_chosen_mechanism_per_policy_and_region_kind() {
    let n = "refused";
    let table: [(&str, Vendor, [&str; 5]); 14] = [
        //                      BAR default      BAR vm-wide        BAR unsafe       RAM default      RAM forced
        ("6.7", Vendor::Intel, [n, n, "unsafe", n, n]),
        ("6.7", Vendor::Amd, ["vendor-npt"; 5]),
        ("6.7+virtio-device", Vendor::Intel, ["virtio-device"; 5]),
        ("6.7+virtio-device", Vendor::Amd, ["virtio-device"; 5]),
        (
            "6.7+memslot-flag",
            Vendor::Intel,
            [
                "memslot-flag",
                "memslot-flag",
                "memslot-flag",
                n,
                "memslot-flag",
            ],
        ),
        (
            "6.7+memslot-flag",
            Vendor::Amd,
            [
                "memslot-flag",
                "memslot-flag",
                "memslot-flag",
                "vendor-npt",
                "memslot-flag",
            ],
        ),
        ("6.11-selfsnoop", Vendor::Intel, [n, n, "unsafe", n, n]),
        ("6.11-selfsnoop", Vendor::Amd, ["vendor-npt"; 5]),
        ("6.12", Vendor::Intel, [n, n, "unsafe", n, n]),
        ("6.12", Vendor::Amd, ["vendor-npt"; 5]),
        (
            "6.16",
            Vendor::Intel,
            [n, "disable-ignore-guest-pat", "unsafe", n, n],
        ),
        ("6.16", Vendor::Amd, ["vendor-npt"; 5]),
        (
            "6.16+memslot-flag",
            Vendor::Intel,
            [
                "memslot-flag",
                "memslot-flag",
                "memslot-flag",
                n,
                "memslot-flag",
            ],
        ),
        (
            "6.16+memslot-flag",
            Vendor::Amd,
            [
                "memslot-flag",
                "memslot-flag",
                "memslot-flag",
                "vendor-npt",
                "memslot-flag",
            ],
        ),
    ];
    let columns = [
        (DEFAULT, RegionKind::DeviceBar),
        (VM_WIDE, RegionKind::DeviceBar),
        (UNSAFE, RegionKind::DeviceBar),
        (DEFAULT, RegionKind::Ram),
        (FORCE, RegionKind::Ram),
    ];
    for (name, vendor, expected) in table {
        for ((policy, kind), want) in columns.iter().zip(expected) {
            let (got, attempts, _) = register(profile(name, vendor), *policy, *kind);
            let chosen = got.rsplit(" -> ").next().unwrap();
            assert_eq!(chosen, want, "{name}/{vendor} {kind} {policy:?}: {got}");
            // The report is well formed: mechanisms in chain order, each at most once, and
            // exactly the last one used when something was.
            let order: Vec<usize> = attempts
                .iter()
                .map(|a| {
                    Mechanism::ALL
                        .iter()
                        .position(|m| *m == a.mechanism)
                        .unwrap()
                })
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{got}");
            let used = attempts
                .iter()
                .filter(|a| a.outcome == Outcome::Used)
                .count();
            assert_eq!(used, usize::from(want != n), "{got}");
            if *kind == RegionKind::Ram && !policy.force_flag_on_ram {
                assert_eq!(attempts[0].outcome, Outcome::Skipped, "{got}");
                assert!(
                    attempts[0].reason.starts_with("system RAM"),
                    "{}",
                    attempts[0]
                );
            }
        }
    }
    let (got, _, _) = register(KernelProfile::this_host(), UNSAFE, RegionKind::DeviceBar);
    assert!(got.ends_with("unsafe=used -> unsafe"), "{got}");
}

/// CPU facts that change the answer on the same kernel: without self-snoop or without TDP,
/// Intel's 6.16 does not report the quirk, and AMD without NPT has nothing.
#[test]
fn cpu_facts_decide_the_quirk_and_npt_steps() {
    let rows: [(Vendor, CpuFacts, &str, &str); 3] = [
        (
            Vendor::Intel,
            CpuFacts {
                self_snoop: false,
                tdp: true,
            },
            "disable-ignore-guest-pat=refused vendor-npt=refused unsafe=skipped -> refused",
            "no self-snoop",
        ),
        (
            Vendor::Intel,
            CpuFacts {
                self_snoop: true,
                tdp: false,
            },
            "disable-ignore-guest-pat=refused vendor-npt=refused unsafe=skipped -> refused",
            "TDP is off",
        ),
        (
            Vendor::Amd,
            CpuFacts {
                self_snoop: true,
                tdp: false,
            },
            "disable-ignore-guest-pat=refused vendor-npt=refused unsafe=skipped -> refused",
            "TDP is off",
        ),
    ];
    for (vendor, cpu, tail, why) in rows {
        let kernel = profile("6.16", vendor).with_cpu(cpu);
        let (got, attempts, _) = register(kernel, VM_WIDE, RegionKind::DeviceBar);
        assert!(got.ends_with(tail), "{kernel}: {got}");
        assert!(
            attempts[2].reason.contains(why),
            "{kernel}: {}",
            attempts[2]
        );
    }
}

#[test]
fn reasons_name_the_kernel_answer() {
    let (_, attempts, _) = register(
        profile("6.16", Vendor::Intel),
        DEFAULT,
        RegionKind::DeviceBar,
    );
    assert_eq!(
        attempts[0].to_string(),
        "memslot flag KVM_MEM_NON_COHERENT_DMA: EINVAL (kernel does not know the flag; \
         caps 236=1, 239=0, hints only)"
    );
    assert!(
        attempts[1]
            .to_string()
            .starts_with("KVM virtio device (type 12): ENODEV (no KVM")
    );
    assert!(
        attempts[2].reason.contains("policy does not allow VM-wide"),
        "{}",
        attempts[2]
    );
    assert!(
        attempts[3]
            .reason
            .starts_with("Intel: EPT ignores guest PAT"),
        "{}",
        attempts[3]
    );
    let (_, attempts, _) = register(profile("6.16", Vendor::Amd), DEFAULT, RegionKind::DeviceBar);
    assert!(
        attempts[2].reason.contains("without effect on AMD"),
        "{}",
        attempts[2]
    );
    let (_, attempts, _) = register(
        profile("6.16+memslot-flag", Vendor::Intel),
        DEFAULT,
        RegionKind::DeviceBar,
    );
    assert!(
        attempts[0]
            .reason
            .starts_with("the kernel accepted the flag"),
        "{}",
        attempts[0]
    );
}

/// The virtio device stays open for as long as its region: the VM's noncoherent DMA count
/// follows the region in and out.
#[test]
fn the_virtio_device_lives_as_long_as_its_region() {
    let (_, _, mut memory) = register(
        profile("6.7+virtio-device", Vendor::Intel),
        DEFAULT,
        RegionKind::DeviceBar,
    );
    assert_eq!(memory.backend().noncoherent_dma_count(), Some(1));
    let second = GuestRegion::new(
        "second",
        BAR_GPA + SIZE,
        SIZE,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )
    .unwrap();
    let slot = memory.add_region(second).unwrap();
    assert_eq!(memory.backend().noncoherent_dma_count(), Some(2));
    let back = memory.remove_region(slot).unwrap();
    assert_eq!(back.name(), "second");
    assert_eq!(memory.backend().noncoherent_dma_count(), Some(1));
    let first = memory.regions().next().unwrap().0;
    memory.remove_region(first).unwrap();
    assert_eq!(memory.backend().noncoherent_dma_count(), Some(0));
    assert_eq!(memory.regions().count(), 0);
}

/// A refused region leaves nothing behind: the range can be registered again.
#[test]
fn a_refusal_leaves_no_slot() {
    let (_, _, mut memory) = register(KernelProfile::this_host(), DEFAULT, RegionKind::DeviceBar);
    assert_eq!(memory.regions().count(), 0);
    let coherent = GuestRegion::new(
        "again",
        BAR_GPA,
        SIZE,
        RegionKind::DeviceBar,
        Coherence::Coherent,
    )
    .unwrap();
    let slot = memory.add_region(coherent).unwrap();
    assert_eq!(memory.registration(slot), None);
    assert_eq!(memory.region(slot).unwrap().gpa(), BAR_GPA);
}

/// Ioctl failures other than the refusals each step expects are errors, not fallbacks: an
/// overlapping region is `EEXIST` from the flag attempt itself.
#[test]
fn unexpected_errnos_are_errors() {
    let mut memory = GuestMemory::new(
        Box::new(ModelKvm::new(profile("6.16+memslot-flag", Vendor::Intel))),
        DEFAULT,
    );
    let ram = GuestRegion::new("ram", BAR_GPA, SIZE, RegionKind::Ram, Coherence::Coherent).unwrap();
    memory.add_region(ram).unwrap();
    let bar = GuestRegion::new(
        "bar",
        BAR_GPA,
        SIZE,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )
    .unwrap();
    let err = memory.add_region(bar).unwrap_err();
    assert!(
        matches!(&err, RegionError::Register { source: StrategyError::CreateSlot(e), .. }
            if e.errno() == uapi::Errno::EEXIST),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "region bar: creating the slot: KVM_SET_USER_MEMORY_REGION failed: EEXIST"
    );
    // The same overlap on upstream: EINVAL for the flag, then EEXIST for the plain slot.
    let mut memory = GuestMemory::new(
        Box::new(ModelKvm::new(profile("6.16", Vendor::Amd))),
        DEFAULT,
    );
    let ram = GuestRegion::new("ram", BAR_GPA, SIZE, RegionKind::Ram, Coherence::Coherent).unwrap();
    memory.add_region(ram).unwrap();
    let bar = GuestRegion::new(
        "bar",
        BAR_GPA,
        SIZE,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )
    .unwrap();
    assert!(matches!(
        memory.add_region(bar),
        Err(RegionError::Register { source: StrategyError::CreateSlot(e), .. }) if e.errno() == uapi::Errno::EEXIST
    ));
}

/// Reports read as a headline and numbered steps; the refusal is one line (for `ncdma`).
#[test]
fn registrations_and_refusals_print_every_step() {
    let mut memory = GuestMemory::new(Box::new(ModelKvm::new(KernelProfile::this_host())), UNSAFE);
    let slot = memory.add_region(bar("bar")).unwrap();
    let text = memory.registration(slot).unwrap().to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("UNSAFE: registered as a plain slot"),
        "{text}"
    );
    assert_eq!(lines.len(), 1 + 5, "{text}");
    assert!(lines[1].starts_with("  1. memslot flag KVM_MEM_NON_COHERENT_DMA: EINVAL"));
    assert!(
        lines[5].starts_with("  5. plain slot: used (UNSAFE"),
        "{text}"
    );

    let mut memory = GuestMemory::new(
        Box::new(ModelKvm::new(profile("6.7+memslot-flag", Vendor::Amd))),
        DEFAULT,
    );
    let slot = memory.add_region(bar("bar")).unwrap();
    let text = memory.registration(slot).unwrap().to_string();
    assert!(
        text.starts_with(
            "registered with the memslot flag KVM_MEM_NON_COHERENT_DMA (this slot only)\n  \
             1. memslot flag KVM_MEM_NON_COHERENT_DMA: used (the kernel accepted the flag"
        ),
        "{text}"
    );

    let mut memory = GuestMemory::new(Box::new(ModelKvm::new(KernelProfile::this_host())), DEFAULT);
    let err = memory.add_region(bar("bar")).unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.starts_with(
            "region bar: no safe way to honor guest memory types for noncoherent DMA: \
             memslot flag KVM_MEM_NON_COHERENT_DMA: EINVAL ("
        ),
        "{err}"
    );
    assert_eq!(
        err.matches("; KVM virtio device (type 12): ENODEV").count(),
        1,
        "{err}"
    );
}

fn bar(name: &str) -> GuestRegion {
    GuestRegion::new(
        name,
        BAR_GPA,
        SIZE,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )
    .unwrap()
}
