//! Faults and zaps: which events zap in which era, the 6.7 huge-page demotion, dirty logging
//! and emulated/host MMIO.

use memtype::mtrr::{MSR_MTRR_DEF_TYPE, msr_mtrr_phys_base, msr_mtrr_phys_mask};
use uapi::cap::{KVM_CAP_DISABLE_QUIRKS2, kvm_enable_cap};
use uapi::memslot::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, kvm_userspace_memory_region};
use uapi::quirk::{KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT};

use super::*;
use crate::profile::{CpuFacts, KernelProfile, Vendor};
use crate::vcpu::{X86_CR0_CD, X86_CR0_ET, X86_CR0_PE, X86_CR0_PG};

const GPA: u64 = 0x1_0000_0000;
const SIZE: u64 = 0x20_0000;
const HVA: u64 = 0x7f00_0000_0000;
const CR0_ON: u64 = X86_CR0_PG | X86_CR0_PE | X86_CR0_ET;

fn region(slot: u32, flags: u32, gpa: u64, size: u64) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: HVA + gpa - GPA,
    }
}

/// A VM with one 2 MiB slot at 4 GiB, a vCPU with caching on and guest MTRRs WB, and one
/// leaf already faulted in.
fn vm(profile: KernelProfile) -> (Kvm, VcpuId) {
    let mut kvm = Kvm::new(profile);
    assert_eq!(kvm.set_user_memory_region(&region(0, 0, GPA, SIZE)), Ok(()));
    let v = kvm.create_vcpu(0).unwrap();
    assert_eq!(kvm.set_msrs(v, &[(MSR_MTRR_DEF_TYPE, 0x806)]), Ok(1));
    kvm.set_cr0(v, CR0_ON).unwrap();
    kvm.kvm_mmu_page_fault(v, GPA, false).unwrap();
    assert_eq!(kvm.mmu().len(), 1);
    (kvm, v)
}

fn disable_quirk(kvm: &mut Kvm, quirk: u64) {
    let cap = kvm_enable_cap {
        cap: KVM_CAP_DISABLE_QUIRKS2,
        args: [quirk, 0, 0, 0],
        ..Default::default()
    };
    assert_eq!(kvm.enable_cap(&cap), Ok(()));
}

fn intel(name: &str) -> KernelProfile {
    KernelProfile::parse(name, Vendor::Intel).unwrap()
}

fn amd(name: &str) -> KernelProfile {
    KernelProfile::parse(name, Vendor::Amd).unwrap()
}

/// Registers and unregisters noncoherent DMA (KVM-VFIO, two files); returns the zaps seen.
fn noncoherent_zaps(kvm: &mut Kvm) -> u64 {
    let dev = kvm
        .create_device(uapi::device::KVM_DEV_TYPE_VFIO, 0)
        .unwrap()
        .unwrap();
    kvm.vfio_add_noncoherent_file(dev).unwrap();
    kvm.vfio_add_noncoherent_file(dev).unwrap();
    kvm.close_device(dev).unwrap();
    assert_eq!(kvm.noncoherent_dma_count(), 0);
    kvm.stats().zaps(ZapReason::NoncoherentDma)
}

#[test]
fn noncoherent_transitions_zap_per_era() {
    let no_ss = CpuFacts {
        self_snoop: false,
        tdp: true,
    };
    let cases = [
        (intel("6.7"), 2),
        (amd("6.7"), 0),
        (intel("6.11-selfsnoop"), 0),
        (intel("6.11-selfsnoop").with_cpu(no_ss), 2),
        (intel("6.12"), 2),
        (amd("6.12"), 0),
        (intel("6.16"), 2),
        (amd("6.16"), 0),
        // Shadow paging: the quirk cannot be disabled, so it stays in force and zaps.
        (KernelProfile::this_host(), 2),
    ];
    for (p, zaps) in cases {
        let (mut kvm, _) = vm(p);
        assert_eq!(noncoherent_zaps(&mut kvm), zaps, "{p}");
        assert_eq!(kvm.mmu().is_empty(), zaps > 0, "{p}");
    }
    let (mut kvm, _) = vm(intel("6.16"));
    disable_quirk(&mut kvm, KVM_X86_QUIRK_IGNORE_GUEST_PAT);
    assert_eq!(
        noncoherent_zaps(&mut kvm),
        0,
        "guest PAT always honored: nothing to redo"
    );
}

#[test]
fn only_the_first_and_last_registration_zap() {
    let mut kvm = Kvm::new(KernelProfile::parse("6.7+virtio-device", Vendor::Intel).unwrap());
    let set = uapi::device::kvm_device_attr {
        flags: 0,
        group: 1,
        attr: 1,
        addr: 0,
    };
    let a = kvm.create_device(12, 0).unwrap().unwrap();
    let b = kvm.create_device(12, 0).unwrap().unwrap();
    kvm.set_device_attr(a, &set).unwrap();
    kvm.set_device_attr(b, &set).unwrap();
    kvm.set_device_attr(b, &set).unwrap();
    assert_eq!(kvm.stats().zaps(ZapReason::NoncoherentDma), 1);
    kvm.close_device(a).unwrap();
    assert_eq!(kvm.stats().zaps(ZapReason::NoncoherentDma), 1);
    kvm.close_device(b).unwrap();
    assert_eq!(kvm.stats().zaps(ZapReason::NoncoherentDma), 2);
}

#[test]
fn v6_7_cr0_cd_toggles_zap_only_without_the_quirk() {
    let run = |noncoherent: bool, disable_cd_quirk: bool| {
        let (mut kvm, v) = vm(intel("6.7"));
        if disable_cd_quirk {
            disable_quirk(&mut kvm, KVM_X86_QUIRK_CD_NW_CLEARED);
        }
        if noncoherent {
            let dev = kvm.create_device(4, 0).unwrap().unwrap();
            kvm.vfio_add_noncoherent_file(dev).unwrap();
        }
        kvm.kvm_mmu_page_fault(v, GPA, false).unwrap();
        kvm.set_cr0(v, CR0_ON | X86_CR0_CD).unwrap();
        kvm.set_cr0(v, CR0_ON | X86_CR0_CD).unwrap();
        kvm.set_cr0(v, CR0_ON).unwrap();
        kvm.stats().zaps(ZapReason::GuestCr0Cd)
    };
    assert_eq!(run(true, true), 2, "two toggles");
    assert_eq!(run(true, false), 0);
    assert_eq!(run(false, true), 0);
    let (mut kvm, v) = vm(intel("6.12"));
    disable_quirk(&mut kvm, KVM_X86_QUIRK_CD_NW_CLEARED);
    kvm.set_cr0(v, CR0_ON | X86_CR0_CD).unwrap();
    assert_eq!(kvm.stats().total_zaps(), 0, "6.12 ignores guest CR0.CD");
}

#[test]
fn v6_7_mtrr_writes_zap_while_mtrrs_are_honored() {
    let (mut kvm, v) = vm(intel("6.7"));
    let dev = kvm.create_device(4, 0).unwrap().unwrap();
    kvm.vfio_add_noncoherent_file(dev).unwrap();
    kvm.kvm_mmu_page_fault(v, GPA, false).unwrap();
    assert_eq!(kvm.set_msrs(v, &[(MSR_MTRR_DEF_TYPE, 0x806)]), Ok(1));
    assert_eq!(kvm.stats().zaps(ZapReason::GuestMtrr), 1);
    assert!(kvm.mmu().is_empty(), "MTRRdefType covers everything");
    kvm.kvm_mmu_page_fault(v, GPA, false).unwrap();
    // A variable range elsewhere zaps only its own span.
    let (base, mask) =
        memtype::mtrr::variable_pair(0x8000_0000, 0x1000_0000, memtype::MemType::Uc, 46).unwrap();
    assert_eq!(
        kvm.set_msrs(
            v,
            &[(msr_mtrr_phys_base(0), base), (msr_mtrr_phys_mask(0), mask)]
        ),
        Ok(2)
    );
    assert_eq!(kvm.stats().zaps(ZapReason::GuestMtrr), 3);
    assert_eq!(kvm.mmu().len(), 1);
    // Fixed ranges while FE=0: nothing can change.
    assert_eq!(kvm.set_msrs(v, &[(0x250, 0)]), Ok(1));
    assert_eq!(kvm.stats().zaps(ZapReason::GuestMtrr), 3);
    // Disabled MTRRs: only MTRRdefType matters.
    assert_eq!(kvm.set_msrs(v, &[(MSR_MTRR_DEF_TYPE, 0x6)]), Ok(1));
    assert_eq!(kvm.set_msrs(v, &[(msr_mtrr_phys_base(1), 6)]), Ok(1));
    assert_eq!(kvm.stats().zaps(ZapReason::GuestMtrr), 4);
    // Without noncoherent DMA MTRR writes never zap.
    let (mut plain, pv) = vm(intel("6.7"));
    assert_eq!(plain.set_msrs(pv, &[(MSR_MTRR_DEF_TYPE, 0x800)]), Ok(1));
    assert_eq!(plain.stats().total_zaps(), 0);
}

#[test]
fn v6_7_demotes_huge_pages_until_the_mtrr_type_is_uniform() {
    let setup = |noncoherent: bool| {
        let mut kvm = Kvm::new(intel("6.7"));
        assert_eq!(kvm.set_user_memory_region(&region(0, 0, GPA, SIZE)), Ok(()));
        let v = kvm.create_vcpu(0).unwrap();
        let (base, mask) =
            memtype::mtrr::variable_pair(GPA, 0x1000, memtype::MemType::Uc, 46).unwrap();
        let msrs = [
            (MSR_MTRR_DEF_TYPE, 0x806),
            (msr_mtrr_phys_base(0), base),
            (msr_mtrr_phys_mask(0), mask),
        ];
        assert_eq!(kvm.set_msrs(v, &msrs), Ok(3));
        kvm.set_cr0(v, CR0_ON).unwrap();
        if noncoherent {
            let dev = kvm.create_device(4, 0).unwrap().unwrap();
            kvm.vfio_add_noncoherent_file(dev).unwrap();
        }
        (kvm, v)
    };
    let (mut kvm, v) = setup(true);
    let out = kvm.kvm_mmu_page_fault(v, GPA + 0x1000, false).unwrap();
    assert_eq!(
        out,
        FaultOutcome::Mapped {
            gfn: (GPA >> 12) + 1,
            level: PgLevel::K4,
            created: true
        }
    );
    assert_eq!(kvm.stats().mtrr_demotions, 1);
    let uc = kvm.guest_memtype(v, GPA, 0).unwrap();
    assert_eq!(
        (uc.ept_memtype(), uc.effective),
        (Some(memtype::MemType::Uc), memtype::MemType::Uc)
    );
    let (mut kvm, v) = setup(false);
    let out = kvm.kvm_mmu_page_fault(v, GPA + 0x1000, false).unwrap();
    assert_eq!(
        out,
        FaultOutcome::Mapped {
            gfn: GPA >> 12,
            level: PgLevel::M2,
            created: true
        }
    );
    assert_eq!(kvm.stats().mtrr_demotions, 0);
}

#[test]
fn faults_spurious_zap_all_and_refault() {
    let (mut kvm, v) = vm(intel("6.16+memslot-flag"));
    let again = kvm.kvm_mmu_page_fault(v, GPA + 0x5000, false).unwrap();
    assert_eq!(
        again,
        FaultOutcome::Mapped {
            gfn: GPA >> 12,
            level: PgLevel::M2,
            created: false
        }
    );
    assert_eq!((kvm.stats().faults, kvm.stats().spurious_faults), (1, 1));
    for round in 1..=3 {
        assert_eq!(kvm.kvm_mmu_zap_all(), 1);
        kvm.kvm_mmu_page_fault(v, GPA, false).unwrap();
        assert_eq!(kvm.stats().sptes_created, 1 + round);
    }
    assert_eq!(kvm.stats().zaps(ZapReason::Explicit), 3);
    assert_eq!(kvm.stats().zap_all_fast, 3);
    assert_eq!(kvm.stats().mt_mask_calls, 4);
    let amd = vm(amd("6.16")).0;
    assert_eq!(amd.stats().mt_mask_calls, 0, "SVM has no get_mt_mask");
}

#[test]
fn emulated_mmio_and_read_only_slots() {
    let (mut kvm, v) = vm(intel("6.12"));
    assert_eq!(
        kvm.kvm_mmu_page_fault(v, 0xfee0_0000, false),
        Ok(FaultOutcome::EmulatedMmio)
    );
    assert_eq!(
        kvm.guest_memtype(v, 0xfee0_0000, 0),
        Err(crate::VcpuError::EmulatedMmio { gpa: 0xfee0_0000 })
    );
    assert_eq!(
        kvm.set_user_memory_region(&region(1, KVM_MEM_READONLY, 2 * GPA, SIZE)),
        Ok(())
    );
    assert_eq!(
        kvm.kvm_mmu_page_fault(v, 2 * GPA, true),
        Ok(FaultOutcome::EmulatedMmio)
    );
    assert!(matches!(
        kvm.kvm_mmu_page_fault(v, 2 * GPA, false),
        Ok(FaultOutcome::Mapped { .. })
    ));
    assert!(!kvm.mmu().lookup(0, (2 * GPA) >> 12).unwrap().writable);
    assert_eq!(kvm.stats().emulated_mmio, 3);
    // A VM without memslots: every access is emulated (set_memory_region_test's zero slots).
    let mut empty = Kvm::new(KernelProfile::this_host());
    let ev = empty.create_vcpu(0).unwrap();
    assert_eq!(
        empty.kvm_mmu_page_fault(ev, 0xfff0, false),
        Ok(FaultOutcome::EmulatedMmio)
    );
    assert_eq!(
        empty.kvm_mmu_page_fault(VcpuId(1), 0, false),
        Err(crate::VcpuError::NoSuchVcpu(1))
    );
}

#[test]
fn host_mmio_mapping_zaps_and_remaps_uc() {
    let (mut kvm, v) = vm(intel("6.16"));
    assert_eq!(
        kvm.mmu().lookup(0, GPA >> 12).unwrap().branch,
        MtMaskBranch::QuirkIgnoreGuestPat
    );
    kvm.host_map_mmio(HVA, SIZE);
    assert_eq!(kvm.stats().zaps(ZapReason::MmuNotifier), 1);
    assert!(kvm.mmu().is_empty());
    let a = kvm.guest_memtype(v, GPA, 0).unwrap();
    assert_eq!(
        (a.branch, a.effective),
        (MtMaskBranch::HostMmio, memtype::MemType::Uc)
    );
}

#[test]
fn dirty_logging_maps_small_and_gives_huge_back() {
    let (mut kvm, v) = vm(intel("6.16"));
    assert_eq!(
        kvm.set_user_memory_region(&region(0, KVM_MEM_LOG_DIRTY_PAGES, GPA, SIZE)),
        Ok(())
    );
    assert_eq!(kvm.stats().sptes_write_protected, 1);
    // A write to the write-protected huge leaf replaces it with a 4K one, logged.
    let w = kvm.kvm_mmu_page_fault(v, GPA + 0x3000, true).unwrap();
    assert_eq!(
        w,
        FaultOutcome::Mapped {
            gfn: (GPA >> 12) + 3,
            level: PgLevel::K4,
            created: true
        }
    );
    assert_eq!(kvm.get_dirty_log(0).unwrap()[0], 1 << 3);
    // Reading the log write-protects the page again; the next write is logged again.
    assert!(!kvm.mmu().lookup(0, (GPA >> 12) + 3).unwrap().writable);
    kvm.kvm_mmu_page_fault(v, GPA + 0x3000, true).unwrap();
    assert_eq!(kvm.get_dirty_log(0).unwrap()[0], 1 << 3);
    assert_eq!(kvm.set_user_memory_region(&region(0, 0, GPA, SIZE)), Ok(()));
    assert_eq!(kvm.stats().zaps(ZapReason::DirtyLogDisabled), 1);
    assert!(kvm.mmu().is_empty(), "the 4K leaf is collapsible");
    let huge = kvm.kvm_mmu_page_fault(v, GPA + 0x3000, false).unwrap();
    assert!(matches!(
        huge,
        FaultOutcome::Mapped {
            level: PgLevel::M2,
            ..
        }
    ));
}

#[test]
fn mapping_level_follows_slot_geometry() {
    let mut kvm = Kvm::new(intel("6.12"));
    kvm.set_host_max_level(PgLevel::G1);
    let gig = 1u64 << 30;
    assert_eq!(
        kvm.set_user_memory_region(&region(0, 0, 4 * gig, gig)),
        Ok(())
    );
    // Misaligned with its host address: no huge page fits.
    let odd = kvm_userspace_memory_region {
        userspace_addr: HVA + 0x1000,
        ..region(1, 0, 8 * gig, SIZE)
    };
    assert_eq!(kvm.set_user_memory_region(&odd), Ok(()));
    let v = kvm.create_vcpu(0).unwrap();
    let level = |kvm: &mut Kvm, gpa| match kvm.kvm_mmu_page_fault(v, gpa, false).unwrap() {
        FaultOutcome::Mapped { level, .. } => level,
        FaultOutcome::EmulatedMmio => panic!("no slot at {gpa:#x}"),
    };
    assert_eq!(level(&mut kvm, 4 * gig + 0x1234_5000), PgLevel::G1);
    assert_eq!(level(&mut kvm, 8 * gig), PgLevel::K4);
    kvm.set_host_max_level(PgLevel::K4);
    kvm.kvm_mmu_zap_all();
    assert_eq!(level(&mut kvm, 4 * gig), PgLevel::K4);
}
