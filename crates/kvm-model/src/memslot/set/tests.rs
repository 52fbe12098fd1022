//! The memslot rules, ported from `tools/testing/selftests/kvm/set_memory_region_test.c`
//! where that test has them, and pinned to what the real `/dev/kvm` of this project's host
//! answered (see `KernelProfile::this_host`).

use uapi::Errno;
use uapi::memslot::{
    KVM_MEM_GUEST_MEMFD, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA, KVM_MEM_READONLY,
    kvm_userspace_memory_region, kvm_userspace_memory_region2,
};

use crate::profile::{CpuFacts, KernelProfile, Proposal, Vendor};
use crate::{Kvm, ZapReason};

/// `MEM_REGION_GPA` / `MEM_REGION_SIZE` of the selftest.
const GPA: u64 = 0xc000_0000;
const SIZE: u64 = 0x20_0000;
const HVA: u64 = 0x7f00_0000_0000;

fn v1(slot: u32, flags: u32, gpa: u64, size: u64, hva: u64) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: hva,
    }
}

fn v2(slot: u32, flags: u32, gpa: u64, size: u64, hva: u64) -> kvm_userspace_memory_region2 {
    kvm_userspace_memory_region2 {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: hva,
        ..Default::default()
    }
}

fn profiles() -> Vec<KernelProfile> {
    let mut all = KernelProfile::all();
    all.push(KernelProfile::this_host());
    all
}

fn host() -> Kvm {
    Kvm::new(KernelProfile::this_host())
}

/// Flags each profile's v1 and v2 ioctls accept on a default VM.
fn accepted(p: &KernelProfile) -> (u32, u32) {
    let proposal = if p.proposal == Proposal::MemslotFlag {
        KVM_MEM_NON_COHERENT_DMA
    } else {
        0
    };
    let common = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY | proposal;
    (common, common)
}

#[test]
fn invalid_memory_region_flags() {
    // set_memory_region_test: every bit 0..31 on a fresh slot, NULL user address.
    for p in profiles() {
        let (v1_ok, v2_ok) = accepted(&p);
        for bit in 0..32 {
            let flag = 1u32 << bit;
            let mut kvm = Kvm::new(p);
            let r = kvm.set_user_memory_region(&v1(0, flag, GPA, SIZE, 0));
            let want = if v1_ok & flag != 0 {
                Ok(())
            } else {
                Err(Errno::EINVAL)
            };
            assert_eq!(r, want, "{p}: v1 flag bit {bit}");

            let mut kvm = Kvm::new(p);
            let r = kvm.set_user_memory_region2(&v2(0, flag, GPA, SIZE, 0));
            let want = if !p.era.has_user_memory2() {
                Err(Errno::ENOTTY)
            } else if v2_ok & flag != 0 {
                Ok(())
            } else {
                // GUEST_MEMFD is a valid flag in the 6.16 era, but fd 0 (stdin) is no
                // guest_memfd: EINVAL there as for the unknown bits.
                Err(Errno::EINVAL)
            };
            assert_eq!(r, want, "{p}: v2 flag bit {bit}");
        }
    }
}

#[test]
fn a_host_built_without_guest_memfd_refuses_the_flag_before_looking_at_the_fd() {
    // What the second kind of kvm_pvm host answered (stop 16): the capability is 0, and a
    // GUEST_MEMFD slot is EINVAL whatever its fd, where the other host binds (EBADF).
    let profile = KernelProfile {
        guest_memfd: false,
        ..KernelProfile::this_host()
    };
    let mut kvm = Kvm::new(profile);
    assert_eq!(
        crate::cap::check_extension(&profile, uapi::cap::KVM_CAP_GUEST_MEMFD, false),
        0
    );
    for fd in [u32::MAX, 999, 0] {
        let region = kvm_userspace_memory_region2 {
            guest_memfd: fd,
            ..v2(0, KVM_MEM_GUEST_MEMFD, 0, 0x1000, HVA)
        };
        assert_eq!(kvm.set_user_memory_region2(&region), Err(Errno::EINVAL));
    }
    // Everything else is the same kernel.
    assert_eq!(
        kvm.set_user_memory_region2(&v2(0, KVM_MEM_LOG_DIRTY_PAGES, GPA, SIZE, HVA)),
        Ok(())
    );
}

#[test]
fn guest_memfd_binding_on_the_host() {
    let with_fd = |fd: u32, offset: u64, flags: u32| kvm_userspace_memory_region2 {
        guest_memfd: fd,
        guest_memfd_offset: offset,
        ..v2(0, flags, 0, 0x1000, HVA)
    };
    let g = KVM_MEM_GUEST_MEMFD;
    assert_eq!(
        host().set_user_memory_region2(&with_fd(u32::MAX, 0, g)),
        Err(Errno::EBADF)
    );
    assert_eq!(
        host().set_user_memory_region2(&with_fd(999, 0, g)),
        Err(Errno::EBADF)
    );
    assert_eq!(
        host().set_user_memory_region2(&with_fd(999, 1, g)),
        Err(Errno::EINVAL)
    );
    let log = g | KVM_MEM_LOG_DIRTY_PAGES;
    assert_eq!(
        host().set_user_memory_region2(&with_fd(999, 0, log)),
        Err(Errno::EINVAL)
    );
    let ro = g | KVM_MEM_READONLY;
    assert_eq!(
        host().set_user_memory_region2(&with_fd(999, 0, ro)),
        Err(Errno::EINVAL)
    );
    // Fields of v2 that the flags do not use, and the padding, are never read.
    let mut padded = with_fd(5, 1, 0);
    padded.pad1 = 1;
    padded.pad2[0] = 1;
    assert_eq!(host().set_user_memory_region2(&padded), Ok(()));
    // 6.12 has no guest_memfd for the default VM: the flag itself is invalid.
    let mut old = Kvm::new(KernelProfile::parse("6.12", Vendor::Amd).unwrap());
    assert_eq!(
        old.set_user_memory_region2(&with_fd(999, 0, g)),
        Err(Errno::EINVAL)
    );
}

#[test]
fn add_max_memory_regions() {
    // KVM_CAP_NR_MEMSLOTS slots fit; one more is refused.
    let mut kvm = host();
    let max = kvm.check_extension(uapi::cap::KVM_CAP_NR_MEMSLOTS) as u32;
    for slot in 0..max {
        let gpa = u64::from(slot) << 12;
        assert_eq!(
            kvm.set_user_memory_region(&v1(slot, 0, gpa, 0x1000, HVA + gpa)),
            Ok(())
        );
    }
    assert_eq!(kvm.memslots(0).unwrap().len(), 32764);
    let next = u64::from(max) << 12;
    assert_eq!(
        kvm.set_user_memory_region(&v1(max, 0, next, 0x1000, HVA + next)),
        Err(Errno::EINVAL)
    );
}

#[test]
fn slot_ids_and_address_spaces() {
    let mut kvm = host();
    assert_eq!(
        kvm.set_user_memory_region(&v1(32763, 0, 0, 0x1000, HVA)),
        Ok(())
    );
    for slot in [
        32764,
        32767,
        0xffff,
        1 << 16,
        (1 << 16) | 1,
        2 << 16,
        0xffff << 16,
    ] {
        let r = kvm.set_user_memory_region(&v1(slot, 0, 0x10_0000, 0x1000, HVA));
        assert_eq!(r, Err(Errno::EINVAL), "slot {slot:#x}");
    }
    // Upstream x86 has an SMM address space; overlapping gpas across spaces are fine.
    let mut upstream = Kvm::new(KernelProfile::parse("6.16", Vendor::Amd).unwrap());
    assert_eq!(
        upstream.set_user_memory_region(&v1(0, 0, 0, SIZE, HVA)),
        Ok(())
    );
    assert_eq!(
        upstream.set_user_memory_region(&v1(1 << 16, 0, 0, SIZE, HVA)),
        Ok(())
    );
    assert_eq!(
        upstream.set_user_memory_region(&v1((1 << 16) | 2, 0, 0, SIZE, HVA)),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        upstream.set_user_memory_region(&v1(2 << 16, 0, 0x100_0000, SIZE, HVA)),
        Err(Errno::EINVAL)
    );
}

#[test]
fn sanity_checks_match_the_host() {
    let page = 0x1000;
    let cases: [(u64, u64, u64, Result<(), Errno>); 14] = [
        (0, 100, HVA, Err(Errno::EINVAL)),
        (1, page, HVA, Err(Errno::EINVAL)),
        (0, page, HVA + 1, Err(Errno::EINVAL)),
        (0, page, 0, Ok(())),
        (0, page, 0x7fff_ffff_e000, Ok(())),
        (0, page, 0x7fff_ffff_d000, Ok(())),
        (0, 2 * page, 0x7fff_ffff_e000, Err(Errno::EINVAL)),
        (0, page, 0x7fff_ffff_f000, Err(Errno::EINVAL)),
        (0, page, 0x8000_0000_0000, Err(Errno::EINVAL)),
        (0, page, 0xffff_8000_0000_0000, Err(Errno::EINVAL)),
        (0, page, 0xffff_ffff_ffff_f000, Err(Errno::EINVAL)),
        (0xffff_ffff_ffff_f000, 2 * page, HVA, Err(Errno::EINVAL)),
        (0xffff_ffff_ffff_f000, page, HVA, Err(Errno::EINVAL)),
        // Beyond kvm_mmu_max_gfn(): 52 bits under shadow paging.
        (1 << 52, page, HVA, Err(Errno::EINVAL)),
    ];
    for (gpa, size, hva, want) in cases {
        let mut kvm = host();
        let r = kvm.set_user_memory_region(&v1(0, 0, gpa, size, hva));
        assert_eq!(r, want, "gpa {gpa:#x} size {size:#x} hva {hva:#x}");
    }
    let mut kvm = host();
    let too_many = 1u64 << 43;
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, 0, 0, too_many, 0x1000)),
        Err(Errno::EINVAL)
    );
    let most = ((1u64 << 31) - 1) << 12;
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, 0, 0, most, 0x1000)),
        Ok(())
    );
}

#[test]
fn access_ok_and_max_gfn_follow_the_era() {
    let intel = |name| Kvm::new(KernelProfile::parse(name, Vendor::Intel).unwrap());
    // Before 6.12 access_ok() only kept the end of the range below bit 63.
    let high = v1(0, 0, 0, 0x1000, 0x7fff_ffff_f000);
    assert_eq!(intel("6.7").set_user_memory_region(&high), Ok(()));
    assert_eq!(
        intel("6.11-selfsnoop").set_user_memory_region(&high),
        Ok(())
    );
    assert_eq!(
        intel("6.12").set_user_memory_region(&high),
        Err(Errno::EINVAL)
    );
    let kernel_half = v1(0, 0, 0, 0x1000, 0x8000_0000_0000_0000);
    assert_eq!(
        intel("6.7").set_user_memory_region(&kernel_half),
        Err(Errno::EINVAL)
    );
    // With EPT the host MAXPHYADDR (46 bits here) bounds guest memory.
    let last = (1u64 << 46) - SIZE;
    assert_eq!(
        intel("6.16").set_user_memory_region(&v1(0, 0, last, SIZE, HVA)),
        Ok(())
    );
    let beyond = v1(0, 0, 1 << 46, SIZE, HVA);
    assert_eq!(
        intel("6.16").set_user_memory_region(&beyond),
        Err(Errno::EINVAL)
    );
}

#[test]
fn delete_modify_move_and_overlap() {
    let mut kvm = host();
    let page = 0x1000;
    let base = v1(0, 0, 0, 16 * page, HVA);
    assert_eq!(kvm.set_user_memory_region(&base), Ok(()));
    assert_eq!(
        kvm.set_user_memory_region(&base),
        Ok(()),
        "identical: no-op"
    );
    let generation = kvm.memslots(0).unwrap().generation();
    assert_eq!(kvm.set_user_memory_region(&base), Ok(()));
    assert_eq!(
        kvm.memslots(0).unwrap().generation(),
        generation,
        "no-op changes nothing"
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, 0, 0, 8 * page, HVA)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, 0, 0, 16 * page, HVA + 16 * page)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, KVM_MEM_READONLY, 0, 16 * page, HVA)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 16 * page, HVA)),
        Ok(())
    );
    assert_eq!(kvm.set_user_memory_region(&base), Ok(()));
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 8 * page, 16 * page, HVA)),
        Err(Errno::EEXIST)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 16 * page, 16 * page, HVA)),
        Ok(()),
        "user memory may alias"
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 4 * page, 16 * page, HVA)),
        Err(Errno::EEXIST),
        "move onto slot 0"
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 64 * page, 16 * page, HVA)),
        Ok(())
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, KVM_MEM_LOG_DIRTY_PAGES, 128 * page, 16 * page, HVA)),
        Ok(()),
        "move and flag change at once"
    );
    assert_eq!(kvm.gfn_to_memslot(0, 128).map(|s| s.id), Some(1));
    assert!(kvm.gfn_to_memslot(0, 64).is_none());
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 0, 0, 0)),
        Ok(()),
        "delete"
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 0, 0, 0)),
        Err(Errno::EINVAL),
        "delete again"
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(5, 0, 0x0123_4000, 0, HVA)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(5, 0x80, 0, 0, 0)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(
            1,
            KVM_MEM_READONLY | KVM_MEM_LOG_DIRTY_PAGES,
            64 * page,
            16 * page,
            HVA
        )),
        Ok(())
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 3, 256 * page, 16 * page, HVA)),
        Ok(()),
        "move keeping READONLY"
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 1, 256 * page, 16 * page, HVA)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, KVM_MEM_READONLY, 0, 0, 0)),
        Ok(()),
        "delete ignores flags"
    );
    let mut gmem = v2(0, KVM_MEM_GUEST_MEMFD, 0, 16 * page, HVA);
    gmem.guest_memfd = 999;
    assert_eq!(
        kvm.set_user_memory_region2(&gmem),
        Err(Errno::EINVAL),
        "existing slot, guest_memfd"
    );
}

#[test]
fn overlap_shapes_are_all_eexist() {
    let mut kvm = host();
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, 0, GPA, SIZE, HVA)),
        Ok(())
    );
    let page = 0x1000;
    let shapes = [
        (GPA, SIZE),
        (GPA - page, 2 * page),
        (GPA + SIZE - page, 2 * page),
        (GPA - SIZE, 3 * SIZE),
        (GPA + page, page),
    ];
    for (gpa, size) in shapes {
        let r = kvm.set_user_memory_region(&v1(1, 0, gpa, size, HVA));
        assert_eq!(r, Err(Errno::EEXIST), "gpa {gpa:#x} size {size:#x}");
    }
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, GPA + SIZE, page, HVA)),
        Ok(())
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(2, 0, GPA - page, page, HVA)),
        Ok(())
    );
}

#[test]
fn the_proposal_flag_is_fixed_for_the_slot_life() {
    for name in ["6.7+memslot-flag", "6.16+memslot-flag"] {
        for vendor in [Vendor::Intel, Vendor::Amd] {
            let mut kvm = Kvm::new(KernelProfile::parse(name, vendor).unwrap());
            let nc = KVM_MEM_NON_COHERENT_DMA;
            assert_eq!(
                kvm.set_user_memory_region(&v1(0, nc, GPA, SIZE, HVA)),
                Ok(())
            );
            assert_eq!(
                kvm.set_user_memory_region(&v1(0, 0, GPA, SIZE, HVA)),
                Err(Errno::EINVAL),
                "{name}: clear by FLAGS_ONLY"
            );
            assert_eq!(
                kvm.set_user_memory_region(&v1(0, 0, 2 * GPA, SIZE, HVA)),
                Err(Errno::EINVAL),
                "{name}: clear by MOVE"
            );
            assert_eq!(
                kvm.set_user_memory_region(&v1(0, nc | KVM_MEM_LOG_DIRTY_PAGES, GPA, SIZE, HVA)),
                Ok(()),
                "{name}: other flags may change"
            );
            assert_eq!(
                kvm.set_user_memory_region(&v1(
                    0,
                    nc | KVM_MEM_LOG_DIRTY_PAGES,
                    2 * GPA,
                    SIZE,
                    HVA
                )),
                Ok(()),
                "{name}: move keeping it"
            );
            assert_eq!(
                kvm.set_user_memory_region(&v1(1, 0, GPA, SIZE, HVA)),
                Ok(())
            );
            assert_eq!(
                kvm.set_user_memory_region(&v1(1, nc, GPA, SIZE, HVA)),
                Err(Errno::EINVAL),
                "{name}: set by FLAGS_ONLY"
            );
            assert_eq!(kvm.set_user_memory_region(&v1(1, 0, 0, 0, 0)), Ok(()));
            assert_eq!(
                kvm.set_user_memory_region(&v1(1, nc | KVM_MEM_READONLY, GPA, SIZE, HVA)),
                Ok(()),
                "{name}: combines with READONLY"
            );
            assert_eq!(
                kvm.noncoherent_dma_count(),
                0,
                "{name}: the flag never counts"
            );
        }
    }
    // In 6.16+memslot-flag v2 takes the flag too.
    let mut kvm = Kvm::new(KernelProfile::parse("6.16+memslot-flag", Vendor::Intel).unwrap());
    let flagged = v2(0, KVM_MEM_NON_COHERENT_DMA, GPA, SIZE, HVA);
    assert_eq!(kvm.set_user_memory_region2(&flagged), Ok(()));
}

#[test]
fn dirty_log() {
    let mut kvm = host();
    let page = 0x1000;
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, 0, 0, 16 * page, HVA)),
        Ok(())
    );
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, KVM_MEM_LOG_DIRTY_PAGES, 64 * page, 70 * page, HVA)),
        Ok(())
    );
    assert_eq!(
        kvm.get_dirty_log(0),
        Err(Errno::ENOENT),
        "no LOG_DIRTY_PAGES"
    );
    assert_eq!(kvm.get_dirty_log(7), Err(Errno::ENOENT), "no slot");
    assert_eq!(kvm.get_dirty_log(32764), Err(Errno::EINVAL));
    assert_eq!(
        kvm.get_dirty_log(1 << 16),
        Err(Errno::EINVAL),
        "no SMM address space here"
    );
    assert_eq!(kvm.get_dirty_log(1), Ok(vec![0, 0]));
    kvm.mark_page_dirty(64);
    kvm.mark_page_dirty(64 + 69);
    kvm.mark_page_dirty(3);
    assert_eq!(kvm.get_dirty_log(1), Ok(vec![1, 1 << 5]));
    assert_eq!(kvm.get_dirty_log(1), Ok(vec![0, 0]), "cleared on read");
    // Turning logging off drops the bitmap; on again starts clean.
    kvm.mark_page_dirty(65);
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, 0, 64 * page, 70 * page, HVA)),
        Ok(())
    );
    assert_eq!(kvm.get_dirty_log(1), Err(Errno::ENOENT));
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, KVM_MEM_LOG_DIRTY_PAGES, 64 * page, 70 * page, HVA)),
        Ok(())
    );
    assert_eq!(kvm.get_dirty_log(1), Ok(vec![0, 0]));
    // A move keeps the bitmap and what it holds.
    kvm.mark_page_dirty(66);
    assert_eq!(
        kvm.set_user_memory_region(&v1(1, KVM_MEM_LOG_DIRTY_PAGES, 512 * page, 70 * page, HVA)),
        Ok(())
    );
    assert_eq!(kvm.get_dirty_log(1), Ok(vec![1 << 2, 0]));
}

#[test]
fn manual_dirty_log_protect() {
    let mut kvm = host();
    let cap = |args0, flags| uapi::cap::kvm_enable_cap {
        cap: uapi::cap::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
        flags,
        args: [args0, 0, 0, 0],
        ..Default::default()
    };
    assert_eq!(
        kvm.enable_cap(&cap(2, 0)),
        Err(Errno::EINVAL),
        "INITIALLY_SET needs ENABLE"
    );
    assert_eq!(kvm.enable_cap(&cap(1, 1)), Err(Errno::EINVAL));
    assert_eq!(kvm.enable_cap(&cap(3, 0)), Ok(()));
    assert_eq!(
        kvm.set_user_memory_region(&v1(0, KVM_MEM_LOG_DIRTY_PAGES, 0, 66 * 0x1000, HVA)),
        Ok(())
    );
    assert_eq!(
        kvm.get_dirty_log(0),
        Ok(vec![u64::MAX, 0b11]),
        "initially set"
    );
    assert_eq!(
        kvm.get_dirty_log(0),
        Ok(vec![u64::MAX, 0b11]),
        "not cleared by reading"
    );
}

#[test]
fn v2_does_not_exist_in_6_7() {
    for name in ["6.7", "6.7+virtio-device", "6.7+memslot-flag"] {
        let mut kvm = Kvm::new(KernelProfile::parse(name, Vendor::Intel).unwrap());
        assert_eq!(
            kvm.set_user_memory_region2(&v2(0, 0, GPA, SIZE, HVA)),
            Err(Errno::ENOTTY)
        );
    }
}

#[test]
fn delete_and_move_zap_per_era_and_quirk() {
    // 6.7 zaps the whole VM; 6.16 too while SLOT_ZAP_ALL is in force, else only the slot.
    let run = |profile: KernelProfile, disable_zap_all: bool| {
        let mut kvm = Kvm::new(profile);
        if disable_zap_all {
            let cap = uapi::cap::kvm_enable_cap {
                cap: uapi::cap::KVM_CAP_DISABLE_QUIRKS2,
                args: [uapi::quirk::KVM_X86_QUIRK_SLOT_ZAP_ALL, 0, 0, 0],
                ..Default::default()
            };
            assert_eq!(kvm.enable_cap(&cap), Ok(()));
        }
        let v = kvm.create_vcpu(0).unwrap();
        assert_eq!(kvm.set_user_memory_region(&v1(0, 0, 0, SIZE, HVA)), Ok(()));
        assert_eq!(
            kvm.set_user_memory_region(&v1(1, 0, GPA, SIZE, HVA + SIZE)),
            Ok(())
        );
        kvm.kvm_mmu_page_fault(v, 0, false).unwrap();
        kvm.kvm_mmu_page_fault(v, GPA, false).unwrap();
        assert_eq!(kvm.mmu().len(), 2);
        assert_eq!(
            kvm.set_user_memory_region(&v1(1, 0, 2 * GPA, SIZE, HVA + SIZE)),
            Ok(())
        );
        assert_eq!(kvm.stats().zaps(ZapReason::MemslotMove), 1);
        let after_move = kvm.mmu().len();
        kvm.kvm_mmu_page_fault(v, 2 * GPA, false).unwrap();
        assert_eq!(kvm.set_user_memory_region(&v1(1, 0, 0, 0, 0)), Ok(()));
        assert_eq!(kvm.stats().zaps(ZapReason::MemslotDelete), 1);
        (after_move, kvm.mmu().len())
    };
    let intel = |name| KernelProfile::parse(name, Vendor::Intel).unwrap();
    assert_eq!(run(intel("6.7"), false), (0, 0));
    assert_eq!(run(intel("6.16"), false), (0, 0));
    assert_eq!(
        run(intel("6.16"), true),
        (1, 1),
        "only the slot's leaves go"
    );
    assert_eq!(run(KernelProfile::this_host(), true), (1, 1));
    let no_tdp = intel("6.12").with_cpu(CpuFacts {
        self_snoop: false,
        tdp: false,
    });
    assert_eq!(run(no_tdp, true), (1, 1));
}
