//! Differential conformance: random uAPI call sequences replayed on the reference kernel
//! (this host's profile, with guest_memfd offered or not as this host's kernel was built)
//! and on this host's `/dev/kvm`; every answer must be identical.
//!
//! Sequences are short (about 20 calls, one VM each) and drawn to collide: few slot ids and
//! guest ranges, so creates, moves, flag changes, deletes and overlaps interact; plus bad
//! alignments, out-of-range ids and address spaces, kernel-half host addresses, device types
//! 4 and 12 with and without `KVM_CREATE_DEVICE_TEST`, the capabilities `uapi` names, and
//! `KVM_CAP_DISABLE_QUIRKS2` with random masks.
//!
//! `NCDMA_DIFF_CASES=N` sets the number of sequences (default 1000). A failure prints the
//! shrunk sequence as a replay file (run it with `ncdma replay FILE --backend model|kvm`)
//! and the first call where the kernels disagree.

mod common;

use common::{model, real_kvm, replay};
use kvm_model::KernelProfile;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestError, TestRunner};
use uapi::Cap;
use uapi::cap::{KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_GUEST_MEMFD, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2};
use uapi::device::{KVM_CREATE_DEVICE_TEST, KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_VIRTIO};
use uapi::memslot::KVM_USER_MEM_SLOTS_X86;
use vmm::replay::{
    Call, CheckExtension, CloseDevice, CreateDevice, DeviceAttr, EnableCap, Entry, GetDirtyLog,
    HostAddr, POOL_SIZE, Region, to_json,
};

const MIB2: u64 = 0x20_0000;
const PAGE: u64 = uapi::PAGE_SIZE;
/// The device names a sequence uses; few, so that uses find their creations.
const DEVICES: [&str; 2] = ["d0", "d1"];

/// Region fields come in two moods: `valid` draws values this host accepts (so slots exist
/// for later calls to move, change, log and collide with), otherwise the whole range,
/// edges and garbage included.
fn slot(valid: bool) -> BoxedStrategy<u32> {
    let nr = KVM_USER_MEM_SLOTS_X86;
    if valid {
        return (0u32..4).boxed();
    }
    prop_oneof![
        4 => 0u32..4,
        1 => (0u32..2).prop_map(|id| 1 << 16 | id),
        1 => prop::sample::select(vec![nr - 1, nr, nr + 1, 0xffff, 2 << 16, u32::MAX]),
    ]
    .boxed()
}

fn guest_phys_addr(valid: bool) -> BoxedStrategy<u64> {
    let aligned = prop_oneof![
        3 => (0u64..6).prop_map(|i| i * MIB2),
        1 => (0u64..6, 1u64..512).prop_map(|(i, p)| i * MIB2 + p * PAGE),
    ];
    if valid {
        return aligned.boxed();
    }
    prop_oneof![
        4 => aligned,
        1 => (0u64..6).prop_map(|i| i * MIB2 + 1),
        // Around the guest-physical limits (host MAXPHYADDR 46 or 48 bits, 52 bits, wrap).
        1 => prop::sample::select(vec![
            (1 << 46) - MIB2, 1 << 46, (1 << 48) - MIB2, 1 << 48, (1 << 52) - MIB2,
            u64::MAX - MIB2 + 1,
        ]),
    ]
    .boxed()
}

fn memory_size(valid: bool) -> BoxedStrategy<u64> {
    let sane = prop_oneof![
        1 => Just(0),
        4 => (1u64..=512).prop_map(|p| p * PAGE),
        2 => Just(MIB2),
        1 => Just(2 * MIB2),
    ];
    if valid {
        return sane.boxed();
    }
    prop_oneof![
        3 => sane,
        1 => (1u64..PAGE).prop_map(|b| MIB2 + b),
        // Too many pages for one slot (2^31), and wrapping.
        1 => prop::sample::select(vec![1 << 43, u64::MAX - PAGE + 1]),
    ]
    .boxed()
}

fn flags(valid: bool) -> BoxedStrategy<u32> {
    if valid {
        return (0u32..4).boxed();
    }
    prop_oneof![
        2 => 0u32..16,
        1 => (0u32..32).prop_map(|b| 1 << b),
        1 => any::<u32>(),
    ]
    .boxed()
}

/// Host addresses: the pool, or raw ones the kernel refuses (kernel half, non-canonical,
/// the top of user space) or accepts without touching (a user address nothing is mapped
/// at: no vCPU ever runs here).
fn host(valid: bool, size: u64) -> BoxedStrategy<HostAddr> {
    let pool = |offsets: Vec<u64>| {
        (0u64..6, prop::sample::select(offsets))
            .prop_map(|(i, off)| HostAddr::PoolOffset(i * MIB2 + off))
    };
    if valid {
        return pool(vec![0, PAGE]).boxed();
    }
    let raw = prop::sample::select(vec![
        0xffff_8000_0000_0000,
        0x8000_0000_0000,
        0x7fff_ffff_f000,
        0x7fff_ffe0_0000,
        0x7000_0000_0000,
        0x1000,
        0,
    ])
    .prop_map(HostAddr::Raw);
    // A range that cannot fit in the pool is only ever given a raw address.
    if size > POOL_SIZE / 2 {
        return raw.boxed();
    }
    prop_oneof![3 => pool(vec![0, 1, PAGE]), 1 => raw].boxed()
}

fn guest_memfd(valid: bool) -> BoxedStrategy<(u32, u64)> {
    if valid {
        return Just((0, 0)).boxed();
    }
    prop_oneof![
        3 => Just((0u32, 0u64)),
        1 => (0u32..3, 0u64..3).prop_map(|(fd, p)| (fd, p * PAGE + p % 2)),
    ]
    .boxed()
}

fn region_of(valid: bool) -> impl Strategy<Value = Region> {
    (
        slot(valid),
        flags(valid),
        guest_phys_addr(valid),
        memory_size(valid),
    )
        .prop_flat_map(move |(slot, flags, gpa, size)| {
            (
                Just((slot, flags, gpa, size)),
                host(valid, size),
                guest_memfd(valid),
            )
        })
        .prop_map(
            |(
                (slot, flags, guest_phys_addr, memory_size),
                host,
                (guest_memfd, guest_memfd_offset),
            )| {
                Region {
                    slot,
                    flags,
                    guest_phys_addr,
                    memory_size,
                    host,
                    guest_memfd,
                    guest_memfd_offset,
                }
            },
        )
}

fn region() -> impl Strategy<Value = Region> {
    prop_oneof![3 => region_of(true), 2 => region_of(false)]
}

fn slot_id() -> impl Strategy<Value = u32> {
    prop_oneof![3 => slot(true), 1 => slot(false)]
}

fn device() -> impl Strategy<Value = String> {
    prop::sample::select(DEVICES.to_vec()).prop_map(str::to_string)
}

/// The capabilities `uapi` names (the model answers those; others it does not model).
fn capability() -> impl Strategy<Value = u32> {
    prop::sample::select(Cap::NAMED.iter().map(|c| c.raw()).collect::<Vec<_>>())
}

/// Quirk masks: subsets of the defined bits (0-10), sometimes with bits no kernel defines.
fn quirk_mask() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..(1 << 11),
        1 => any::<u64>(),
    ]
}

/// A device attribute. On the VFIO device, `addr` is a user pointer in the kernel and an fd
/// number in the model (it has no user memory), so only `addr = 0` (NULL: `EFAULT` in both)
/// is comparable.
fn device_attr() -> impl Strategy<Value = DeviceAttr> {
    let group = prop_oneof![2 => Just(1u32), 1 => 0u32..4];
    let attr = prop_oneof![2 => 1u64..3, 1 => 0u64..4];
    (
        device(),
        group,
        attr,
        prop_oneof![4 => Just(0u32), 1 => 1u32..4],
    )
        .prop_map(|(device, group, attr, flags)| DeviceAttr {
            device,
            group,
            attr,
            flags,
            addr: 0,
        })
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        6 => region().prop_map(Call::SetUserMemoryRegion),
        6 => region().prop_map(Call::SetUserMemoryRegion2),
        2 => slot_id().prop_map(|slot| Call::GetDirtyLog(GetDirtyLog { slot })),
        2 => capability().prop_map(|cap| Call::CheckExtension(CheckExtension { cap })),
        2 => (
            prop_oneof![
                3 => Just(KVM_DEV_TYPE_VFIO),
                2 => Just(KVM_DEV_TYPE_VIRTIO),
                1 => 0u32..16,
                1 => Just(u32::MAX),
            ],
            prop_oneof![3 => Just(0), 1 => Just(KVM_CREATE_DEVICE_TEST), 1 => 2u32..4],
            prop::option::weighted(0.8, device()),
        )
            .prop_map(|(dev_type, flags, name)| {
                Call::CreateDevice(CreateDevice {
                    dev_type,
                    flags,
                    name,
                })
            }),
        1 => device_attr().prop_map(Call::SetDeviceAttr),
        1 => device_attr().prop_map(Call::HasDeviceAttr),
        1 => device_attr().prop_map(Call::GetDeviceAttr),
        1 => device().prop_map(|device| Call::CloseDevice(CloseDevice { device })),
        2 => (
            prop_oneof![
                6 => Just(KVM_CAP_DISABLE_QUIRKS2),
                1 => Just(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2),
                1 => capability(),
            ],
            prop_oneof![5 => Just(0u32), 1 => 1u32..4],
            quirk_mask(),
        )
            .prop_map(|(cap, flags, arg)| {
                Call::EnableCap(EnableCap {
                    cap,
                    flags,
                    args: [arg, 0, 0, 0],
                })
            }),
    ]
}

/// A sequence the replay format accepts: a device name is only used after some entry
/// created a device under it (the parser's rule), so uses are dropped until then.
fn sequence() -> impl Strategy<Value = Vec<Entry>> {
    prop::collection::vec(call(), 10..30).prop_map(|calls| {
        let mut named = Vec::new();
        calls
            .into_iter()
            .filter(|c| {
                if let Call::CreateDevice(CreateDevice { name: Some(n), .. }) = c {
                    named.push(n.clone());
                }
                c.device().is_none_or(|d| named.iter().any(|n| n == d))
            })
            .map(Entry::new)
            .collect()
    })
}

fn cases() -> u32 {
    std::env::var("NCDMA_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Both kernels' answers, or a description of the first disagreement.
fn compare(entries: &[Entry]) -> Result<(), String> {
    let Some(kvm) = real_kvm("differential conformance") else {
        return Ok(());
    };
    // The one build option hosts of this kind differ in; every rule that follows from it
    // is still the model's own.
    let profile = KernelProfile {
        guest_memfd: kvm.check_extension(KVM_CAP_GUEST_MEMFD) != 0,
        ..KernelProfile::this_host()
    };
    let on_model = replay(model(profile), entries);
    let on_kvm = replay(kvm, entries);
    let first = on_model
        .steps
        .iter()
        .zip(&on_kvm.steps)
        .find(|(m, k)| m.result != k.result);
    match first {
        None => Ok(()),
        Some((m, k)) => Err(format!(
            "kernels disagree at entry {}:\n  model ({}): {}\n  kvm:   {}\nsequence (a replay file):\n{}",
            m.index,
            on_model.backend,
            m,
            k.result_text(),
            to_json(entries).unwrap_or_else(|e| format!("(cannot write it: {e})"))
        )),
    }
}

#[test]
fn model_and_real_kvm_answer_alike() {
    if real_kvm("differential conformance").is_none() {
        return;
    }
    let config = Config {
        cases: cases(),
        // Shrinking replays on a real kernel; keep it bounded.
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&sequence(), |entries| {
        compare(&entries).map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => {}
        // The reason already holds the shrunk sequence as a replay file.
        Err(TestError::Fail(reason, _)) => panic!("{reason}"),
        Err(e) => panic!("{e}"),
    }
}
