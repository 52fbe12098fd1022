//! The registration strategy on this host's `/dev/kvm`. No shipping kernel has either
//! proposal, so the flag is `EINVAL` and device type 12 `ENODEV` on any of them; what the
//! quirk and NPT steps answer depends on the machine, and is checked against what the
//! backend reports about it (on our `kvm_pvm` hosts: shadow paging, so both are refused).

mod common;

use kvm_model::Vendor;
use uapi::Errno;
use uapi::cap::KVM_CAP_DISABLE_QUIRKS2;
use uapi::quirk::KVM_X86_QUIRK_IGNORE_GUEST_PAT;
use vmm::backend::Tdp;
use vmm::region::{Coherence, GuestMemory, GuestRegion, RegionError, RegionKind};
use vmm::strategy::{Mechanism, Outcome, Policy, StrategyError};

const BAR_GPA: u64 = 0x1_0000_0000;
const SIZE: u64 = 0x10_0000;

fn bar(name: &str, gpa: u64) -> GuestRegion {
    GuestRegion::new(
        name,
        gpa,
        SIZE,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )
    .unwrap()
}

#[test]
fn the_chain_on_the_real_kernel_says_why_each_step_is_refused() {
    let Some(vm) = common::real_kvm("strategy test") else {
        return;
    };
    let platform = vm.platform();
    let quirk_reported =
        vm.check_extension(KVM_CAP_DISABLE_QUIRKS2) as u64 & KVM_X86_QUIRK_IGNORE_GUEST_PAT != 0;
    let mut memory = GuestMemory::new(vm, Policy::default());
    let result = memory.add_region(bar("bar", BAR_GPA));
    let attempts = match &result {
        Ok(slot) => memory.registration(*slot).unwrap().attempts.clone(),
        Err(RegionError::Register {
            source: StrategyError::NoSafeMechanism(a),
            ..
        }) => a.0.clone(),
        Err(e) => panic!("unexpected: {e}"),
    };
    // (a) and (b): the proposals are nowhere upstream.
    assert_eq!(attempts[0].outcome, Outcome::Refused(Some(Errno::EINVAL)));
    assert!(
        attempts[0]
            .reason
            .starts_with("kernel does not know the flag; caps 236=")
    );
    assert_eq!(attempts[1].outcome, Outcome::Refused(Some(Errno::ENODEV)));
    // (c) follows what KVM reports, (d) what the machine is.
    let quirk = &attempts[2];
    // Reported, it is skipped by the default policy (Intel) or as useless (AMD).
    let expected = if quirk_reported {
        Outcome::Skipped
    } else {
        Outcome::Refused(None)
    };
    assert_eq!(quirk.outcome, expected, "{quirk}");
    if platform.tdp == Tdp::Off {
        // Our kvm_pvm hosts: KVM drops the quirk without TDP, and NPT is not in use.
        assert!(!quirk_reported);
        assert!(quirk.reason.contains("TDP is off"), "{quirk}");
        let npt = &attempts[3];
        assert_eq!(npt.outcome, Outcome::Refused(None), "{npt}");
        // On AMD the paging is why; Intel has no NPT, whatever the paging.
        let why = match platform.vendor {
            Some(Vendor::Amd) => "TDP is off",
            _ => "Intel: EPT ignores guest PAT",
        };
        assert!(npt.reason.contains(why), "{npt}");
    }
    let npt_used = platform.vendor == Some(Vendor::Amd) && platform.tdp == Tdp::On;
    match result {
        Ok(slot) => {
            assert!(npt_used, "only NPT can be used here: {attempts:?}");
            assert_eq!(
                memory.registration(slot).unwrap().mechanism,
                Mechanism::VendorNpt
            );
        }
        Err(e) => {
            assert!(!npt_used);
            assert_eq!(attempts.last().unwrap().mechanism, Mechanism::Unsafe);
            assert!(e.to_string().starts_with("region bar: no safe way"), "{e}");
            // Nothing is left behind: the same range registers as a coherent region.
            let coherent = GuestRegion::new(
                "again",
                BAR_GPA,
                SIZE,
                RegionKind::DeviceBar,
                Coherence::Coherent,
            )
            .unwrap();
            memory.add_region(coherent).unwrap();
        }
    }
}

/// With unsafe allowed, a region is registered on any kernel, loudly marked; removing it
/// hands the memory back with what was written into it.
#[test]
fn an_unsafe_registration_is_marked_and_memory_comes_back() {
    let Some(vm) = common::real_kvm("strategy test") else {
        return;
    };
    let policy = Policy {
        allow_unsafe: true,
        ..Policy::default()
    };
    let mut memory = GuestMemory::new(vm, policy);
    let slot = memory.add_region(bar("bar", BAR_GPA)).unwrap();
    let registration = memory.registration(slot).unwrap().clone();
    if registration.mechanism == Mechanism::Unsafe {
        assert!(!registration.is_safe());
        assert!(
            registration.to_string().starts_with("UNSAFE: "),
            "{registration}"
        );
    }
    let ram = GuestRegion::new("ram", 0, SIZE, RegionKind::Ram, Coherence::Coherent).unwrap();
    let ram_slot = memory.add_region(ram).unwrap();
    assert_eq!(memory.registration(ram_slot), None);
    assert_eq!(memory.regions().count(), 2);
    // The host writes, the region comes back flushed, the data intact.
    let host = memory.region(slot).unwrap().host().addr() as *mut u8;
    // SAFETY: the first byte of the region's own mapping; no vCPU runs.
    unsafe { host.write_volatile(0x5a) };
    let back = memory.remove_region(slot).unwrap();
    // SAFETY: the region owns its mapping; the slot is gone.
    let first = unsafe { (back.host().addr() as *const u8).read_volatile() };
    assert_eq!(first, 0x5a);
    assert!(matches!(
        memory.remove_region(slot),
        Err(RegionError::NoSuchSlot(s)) if s == slot
    ));
}
