//! Conformance: Linux's `set_memory_region_test` checks, ported as one table of uAPI call
//! sequences with the results upstream defines, run unchanged on the reference kernel (this
//! host's profile) and on this host's `/dev/kvm`. Where the memslot-flag proposal changes an
//! answer (flag 8 accepted), the table says so and the proposal's profile is held to it.
//!
//! What the selftest does with a running vCPU (KVM_RUN with zero slots, guest reads while a
//! slot moves or disappears) needs the guest runtime; the uAPI half of each check is here.

mod common;

use common::{mismatches, model, real_kvm, replay};
use kvm_model::{KernelProfile, Proposal, Vendor};
use uapi::Errno;
use uapi::cap::{KVM_CAP_MULTI_ADDRESS_SPACE, KVM_CAP_NR_MEMSLOTS};
use uapi::memslot::{
    KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA, KVM_MEM_READONLY, KVM_USER_MEM_SLOTS_X86,
};
use vmm::replay::{Call, CheckExtension, Entry, Expect, GetDirtyLog, HostAddr, Region};

/// The selftest's region: 2 MiB (one large page) at 3 GiB, slot 10.
const SIZE: u64 = 0x20_0000;
const GPA: u64 = 0xc000_0000;
const SLOT: u32 = 10;
const PAGE: u64 = uapi::PAGE_SIZE;

/// `Expect::Errno`.
fn fails(e: Errno) -> Expect {
    Expect::Errno(e)
}

/// A v1 region backed `offset` bytes into the replay pool.
fn region(slot: u32, flags: u32, gpa: u64, size: u64, offset: u64) -> Region {
    Region {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        host: HostAddr::PoolOffset(offset),
        guest_memfd: 0,
        guest_memfd_offset: 0,
    }
}

/// `KVM_SET_USER_MEMORY_REGION` of `r`.
fn set_v1(r: Region) -> Entry {
    Entry::new(Call::SetUserMemoryRegion(r))
}

/// `KVM_SET_USER_MEMORY_REGION2` of `r`.
fn set_v2(r: Region) -> Entry {
    Entry::new(Call::SetUserMemoryRegion2(r))
}

/// `KVM_GET_DIRTY_LOG` of `slot`.
fn dirty_log(slot: u32) -> Entry {
    Entry::new(Call::GetDirtyLog(GetDirtyLog { slot }))
}

/// `KVM_CHECK_EXTENSION` of `cap`.
fn check(cap: u32) -> Entry {
    Entry::new(Call::CheckExtension(CheckExtension { cap }))
}

/// What the table needs to know about the kernel under test, taken from its profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kernel {
    /// The memslot-flag proposal is applied: `KVM_MEM_NON_COHERENT_DMA` is a valid flag.
    memslot_flag: bool,
    /// Memslot address spaces: 2 with SMM, 1 without (this host's kvm_pvm has no SMM).
    address_spaces: u16,
}

impl Kernel {
    fn of(profile: KernelProfile) -> Kernel {
        Kernel {
            memslot_flag: profile.proposal == Proposal::MemslotFlag,
            address_spaces: profile.address_spaces(),
        }
    }
}

/// One row of the table: a name and a call sequence with expectations.
struct Case {
    name: &'static str,
    entries: Vec<Entry>,
}

/// `test_invalid_memory_region_flags`, for one ioctl version: every bit 0–31 alone. A
/// supported bit creates the slot (it is deleted again); any other is `EINVAL`. Unlike the
/// selftest, which passes a NULL host address and only checks refusals, the region is real,
/// so acceptance is checked too.
fn flag_bits(kernel: Kernel, v2: bool) -> Case {
    let mut supported = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;
    if kernel.memslot_flag {
        supported |= KVM_MEM_NON_COHERENT_DMA;
    }
    let set = if v2 { set_v2 } else { set_v1 };
    let mut entries = Vec::new();
    for bit in 0..32 {
        let flags = 1 << bit;
        // KVM_MEM_GUEST_MEMFD (bit 2) without a guest_memfd (fd 0 is not one) is EINVAL on
        // every kernel, whether or not the VM type supports the flag.
        if supported & flags != 0 {
            entries.push(set(region(0, flags, 0, SIZE, 0)).expect(Expect::Ok));
            entries.push(set(region(0, flags, 0, 0, 0)).expect(Expect::Ok));
        } else {
            entries.push(set(region(0, flags, 0, SIZE, 0)).expect(fails(Errno::EINVAL)));
        }
    }
    Case {
        name: if v2 {
            "flag bits 0-31, v2"
        } else {
            "flag bits 0-31, v1"
        },
        entries,
    }
}

/// `test_add_max_memory_regions`: `KVM_CAP_NR_MEMSLOTS` slots fit, one more is `EINVAL`.
/// The selftest backs each slot with its own 2 MiB; here all share one (KVM does not forbid
/// aliasing host memory), which keeps the host mapping small.
fn max_slots() -> Case {
    let nr = KVM_USER_MEM_SLOTS_X86;
    let mut entries = vec![check(KVM_CAP_NR_MEMSLOTS).expect(Expect::Value(u64::from(nr)))];
    entries.extend(
        (0..nr).map(|slot| {
            set_v1(region(slot, 0, u64::from(slot) * SIZE, SIZE, 0)).expect(Expect::Ok)
        }),
    );
    let one_more = region(nr, 0, u64::from(nr) * SIZE, SIZE, 0);
    entries.push(set_v1(one_more).expect(fails(Errno::EINVAL)));
    Case {
        name: "max slots + 1",
        entries,
    }
}

/// Slot ids and address spaces: `as_id << 16 | id`, id below `KVM_CAP_NR_MEMSLOTS`, as_id
/// below the VM's address-space count. `KVM_CAP_MULTI_ADDRESS_SPACE` only exists in kernels
/// built with more than one address space (SMM), so without SMM it reads 0.
fn slot_ids(kernel: Kernel) -> Case {
    let nr = KVM_USER_MEM_SLOTS_X86;
    let smm = 1 << 16;
    let (spaces_cap, smm_result) = match kernel.address_spaces {
        1 => (0, fails(Errno::EINVAL)),
        n => (u64::from(n), Expect::Ok),
    };
    let smm_log = match kernel.address_spaces {
        1 => fails(Errno::EINVAL),
        _ => fails(Errno::ENOENT),
    };
    Case {
        name: "slot ids and address spaces",
        entries: vec![
            check(KVM_CAP_MULTI_ADDRESS_SPACE).expect(Expect::Value(spaces_cap)),
            set_v1(region(nr - 1, 0, 0, SIZE, 0)).expect(Expect::Ok),
            set_v1(region(nr, 0, SIZE, SIZE, 0)).expect(fails(Errno::EINVAL)),
            set_v1(region(0xffff, 0, SIZE, SIZE, 0)).expect(fails(Errno::EINVAL)),
            // The same guest range in the SMM address space does not overlap.
            set_v1(region(smm, 0, 0, SIZE, 0)).expect(smm_result),
            set_v1(region(smm | (nr - 1), 0, SIZE, SIZE, 0)).expect(smm_result),
            set_v1(region(2 << 16, 0, 2 * SIZE, SIZE, 0)).expect(fails(Errno::EINVAL)),
            set_v1(region(0xffff << 16, 0, 2 * SIZE, SIZE, 0)).expect(fails(Errno::EINVAL)),
            dirty_log(smm).expect(smm_log),
            dirty_log(2 << 16).expect(fails(Errno::EINVAL)),
            dirty_log(nr).expect(fails(Errno::EINVAL)),
        ],
    }
}

/// Overlap: a CREATE or MOVE that intersects another slot of the same address space is
/// `EEXIST`; touching is fine.
fn overlaps() -> Case {
    let other = SLOT + 1;
    Case {
        name: "overlapping slots",
        entries: vec![
            set_v1(region(SLOT, 0, GPA, SIZE, 0)).expect(Expect::Ok),
            set_v1(region(other, 0, GPA, SIZE, SIZE)).expect(fails(Errno::EEXIST)),
            set_v1(region(other, 0, GPA - PAGE, 2 * PAGE, SIZE)).expect(fails(Errno::EEXIST)),
            set_v1(region(other, 0, GPA + SIZE - PAGE, SIZE, SIZE)).expect(fails(Errno::EEXIST)),
            set_v1(region(other, 0, GPA + PAGE, PAGE, SIZE)).expect(fails(Errno::EEXIST)),
            set_v1(region(other, 0, GPA - SIZE, 3 * SIZE, SIZE)).expect(fails(Errno::EEXIST)),
            set_v2(region(other, 0, GPA, SIZE, SIZE)).expect(fails(Errno::EEXIST)),
            set_v1(region(other, 0, GPA + SIZE, SIZE, SIZE)).expect(Expect::Ok),
            set_v1(region(other + 1, 0, GPA - SIZE, SIZE, SIZE)).expect(Expect::Ok),
            // MOVE onto a neighbour.
            set_v1(region(other, 0, GPA + PAGE, SIZE, SIZE)).expect(fails(Errno::EEXIST)),
        ],
    }
}

/// `test_move_memory_region` / `test_delete_memory_region`, uAPI half: MOVE to a new base
/// (also a misaligned one), what an existing slot may not change, FLAGS_ONLY for dirty
/// logging, DELETE, and re-creation.
fn move_and_delete() -> Case {
    let slot = region(SLOT, 0, GPA, SIZE, 0);
    let with = |f: fn(&mut Region)| {
        let mut r = slot;
        f(&mut r);
        set_v1(r)
    };
    Case {
        name: "move, flags-only, delete",
        entries: vec![
            set_v1(slot).expect(Expect::Ok),
            with(|r| r.guest_phys_addr = GPA - PAGE).expect(Expect::Ok),
            with(|r| r.guest_phys_addr = GPA).expect(Expect::Ok),
            with(|r| r.memory_size = 2 * SIZE).expect(fails(Errno::EINVAL)),
            with(|r| r.host = HostAddr::PoolOffset(SIZE)).expect(fails(Errno::EINVAL)),
            with(|r| r.flags = KVM_MEM_READONLY).expect(fails(Errno::EINVAL)),
            with(|r| r.flags = KVM_MEM_LOG_DIRTY_PAGES).expect(Expect::Ok),
            // 512 pages, nothing written: eight clean words.
            dirty_log(SLOT).expect(Expect::Value(0)),
            with(|r| r.flags = 0).expect(Expect::Ok),
            dirty_log(SLOT).expect(fails(Errno::ENOENT)),
            // The identical region again is a no-op.
            set_v1(slot).expect(Expect::Ok),
            with(|r| r.memory_size = 0).expect(Expect::Ok),
            with(|r| r.memory_size = 0).expect(fails(Errno::EINVAL)),
            dirty_log(SLOT).expect(fails(Errno::ENOENT)),
            set_v1(slot).expect(Expect::Ok),
        ],
    }
}

/// `test_zero_memory_regions`, uAPI half: a VM without slots has nothing to log or delete.
fn zero_slots() -> Case {
    Case {
        name: "zero slots",
        entries: vec![
            dirty_log(0).expect(fails(Errno::ENOENT)),
            set_v1(region(0, 0, 0, 0, 0)).expect(fails(Errno::EINVAL)),
            set_v2(region(SLOT, 0, GPA, 0, 0)).expect(fails(Errno::EINVAL)),
        ],
    }
}

/// Alignment and range: size, guest address and host address page aligned; the host range
/// in user space; no wrap-around.
fn bad_ranges() -> Case {
    let raw = |addr| Region {
        host: HostAddr::Raw(addr),
        ..region(SLOT, 0, GPA, SIZE, 0)
    };
    Case {
        name: "alignment and ranges",
        entries: vec![
            set_v1(region(SLOT, 0, GPA, SIZE + 1, 0)).expect(fails(Errno::EINVAL)),
            set_v1(region(SLOT, 0, GPA + 1, SIZE, 0)).expect(fails(Errno::EINVAL)),
            set_v1(region(SLOT, 0, GPA, SIZE, 1)).expect(fails(Errno::EINVAL)),
            set_v1(raw(0xffff_8000_0000_0000)).expect(fails(Errno::EINVAL)),
            set_v1(raw(0x7fff_ffff_f000)).expect(fails(Errno::EINVAL)),
            set_v1(region(SLOT, 0, u64::MAX - PAGE + 1, SIZE, 0)).expect(fails(Errno::EINVAL)),
            set_v1(region(SLOT, 0, GPA, SIZE, 0)).expect(Expect::Ok),
        ],
    }
}

fn table(kernel: Kernel) -> Vec<Case> {
    vec![
        flag_bits(kernel, false),
        flag_bits(kernel, true),
        max_slots(),
        slot_ids(kernel),
        overlaps(),
        move_and_delete(),
        zero_slots(),
        bad_ranges(),
    ]
}

/// Runs every case on a fresh VM of `make()` and fails with all mismatches of all cases.
fn check_table(kernel: Kernel, make: &dyn Fn() -> Box<dyn vmm::backend::Backend>) {
    let mut failures = String::new();
    let mut backend = String::new();
    for case in table(kernel) {
        let report = replay(make(), &case.entries);
        assert_eq!(
            report.checked(),
            case.entries.len(),
            "{}: every entry expects",
            case.name
        );
        backend = report.backend.clone();
        let missed = mismatches(&report);
        if !missed.is_empty() {
            failures += &format!("{}:\n{missed}", case.name);
        }
    }
    assert!(failures.is_empty(), "{backend}\n{failures}");
}

#[test]
fn model_of_this_host_follows_upstream_rules() {
    let host = KernelProfile::this_host();
    check_table(Kernel::of(host), &|| model(host));
}

#[test]
fn real_kvm_follows_upstream_rules() {
    if real_kvm("memslot conformance").is_none() {
        return;
    }
    // Same expectations as the model of this host: the profile is the claim under test.
    check_table(Kernel::of(KernelProfile::this_host()), &|| {
        real_kvm("memslot conformance").expect("/dev/kvm opened a moment ago")
    });
}

#[test]
fn memslot_flag_profile_accepts_flag_8_on_both_ioctls() {
    for vendor in [Vendor::Intel, Vendor::Amd] {
        let profile = KernelProfile::parse("6.16+memslot-flag", vendor)
            .expect("a profile name from KernelProfile::NAMES");
        check_table(Kernel::of(profile), &|| model(profile));
    }
}

#[test]
fn upstream_expectations_fail_on_the_proposal() {
    // The table is sharp: the upstream flag rows do not hold for the proposal's kernel.
    let profile = KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)
        .expect("a profile name from KernelProfile::NAMES");
    let upstream = Kernel {
        memslot_flag: false,
        ..Kernel::of(profile)
    };
    let report = replay(model(profile), &flag_bits(upstream, false).entries);
    let missed: Vec<usize> = report.mismatches().map(|s| s.index).collect();
    // Bits 0 and 1 take two entries each (create, delete), bit 2 one: bit 3 is entry 5.
    assert_eq!(missed, vec![5], "{}", mismatches(&report));
}
