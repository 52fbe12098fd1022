//! Property tests for design.md's invariants: no overlapping slots are ever accepted, SPTEs
//! never outlive their slot, the proposal's flag never toggles after CREATE, and the
//! noncoherent DMA count equals the number of registered devices.

use std::collections::BTreeMap;

use kvm_model::{KernelProfile, Kvm, Vendor};
use proptest::prelude::*;
use uapi::cap::{KVM_CAP_DISABLE_QUIRKS2, kvm_enable_cap};
use uapi::device::kvm_device_attr;
use uapi::memslot::{
    KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA, KVM_MEM_READONLY,
    kvm_userspace_memory_region,
};
use uapi::quirk::KVM_X86_QUIRK_SLOT_ZAP_ALL;

const HVA: u64 = 0x7f00_0000_0000;

/// One step of a random VM life.
#[derive(Debug, Clone)]
enum Op {
    /// `KVM_SET_USER_MEMORY_REGION` with small ids, gfns and sizes so they collide often.
    Region {
        slot: u32,
        flags: u32,
        gfn: u64,
        pages: u64,
        hva_page: u64,
    },
    /// A vCPU access.
    Fault { gfn: u64, write: bool },
    /// The guest's dirty log is read.
    DirtyLog { slot: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop::sample::select(vec![
        0,
        KVM_MEM_LOG_DIRTY_PAGES,
        KVM_MEM_READONLY,
        KVM_MEM_NON_COHERENT_DMA,
        KVM_MEM_NON_COHERENT_DMA | KVM_MEM_LOG_DIRTY_PAGES,
    ]);
    // Few ids, sizes and host addresses, so that re-setting an id often keeps size and host
    // address (MOVE, FLAGS_ONLY, no-op) and sizes of 0 (DELETE) come up.
    let region = (
        0u32..5,
        flags,
        (0u64..48).prop_map(|g| g * 16),
        prop::sample::select(vec![0u64, 16, 64, 512]),
        0u64..2,
    )
        .prop_map(|(slot, flags, gfn, pages, hva_page)| Op::Region {
            slot,
            flags,
            gfn,
            pages,
            hva_page,
        });
    prop_oneof![
        4 => region,
        3 => (0u64..1300, any::<bool>()).prop_map(|(gfn, write)| Op::Fault { gfn, write }),
        1 => (0u32..5).prop_map(|slot| Op::DirtyLog { slot }),
    ]
}

fn profile() -> impl Strategy<Value = KernelProfile> {
    prop::sample::select(
        KernelProfile::all()
            .into_iter()
            .chain([KernelProfile::this_host()])
            .collect::<Vec<_>>(),
    )
}

/// Slots of address space 0 as (id, start gfn, end gfn, flags).
fn slots(kvm: &Kvm) -> Vec<(u16, u64, u64, u32)> {
    kvm.memslots(0)
        .unwrap()
        .iter()
        .map(|s| (s.id, s.base_gfn, s.end_gfn(), s.flags))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn memslots_and_sptes_stay_consistent(
        p in profile(),
        slot_zap_only in any::<bool>(),
        ops in prop::collection::vec(op(), 1..60)
    ) {
        let mut kvm = Kvm::new(p);
        if slot_zap_only {
            // 6.12+: DELETE/MOVE then zap only the slot's range; older kernels refuse the bit.
            let cap = kvm_enable_cap {
                cap: KVM_CAP_DISABLE_QUIRKS2,
                args: [KVM_X86_QUIRK_SLOT_ZAP_ALL, 0, 0, 0],
                ..Default::default()
            };
            let _ = kvm.enable_cap(&cap);
        }
        let vcpu = kvm.create_vcpu(0).unwrap();
        // The proposal's flag of each live slot, as set at CREATE.
        let mut created_with: BTreeMap<u16, u32> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Region { slot, flags, gfn, pages, hva_page } => {
                    let before = slots(&kvm);
                    let r = kvm.set_user_memory_region(&kvm_userspace_memory_region {
                        slot,
                        flags,
                        guest_phys_addr: gfn << 12,
                        memory_size: pages << 12,
                        userspace_addr: HVA + (hva_page << 12),
                    });
                    let id = slot as u16;
                    match (r, pages) {
                        (Ok(()), 0) => {
                            created_with.remove(&id);
                        }
                        (Ok(()), _) => {
                            let nc = flags & KVM_MEM_NON_COHERENT_DMA;
                            prop_assert_eq!(*created_with.entry(id).or_insert(nc), nc, "flag toggled");
                        }
                        (Err(_), _) => prop_assert_eq!(slots(&kvm), before, "a refused call changed slots"),
                    }
                }
                Op::Fault { gfn, write } => {
                    kvm.kvm_mmu_page_fault(vcpu, gfn << 12, write).unwrap();
                }
                Op::DirtyLog { slot } => {
                    let _ = kvm.get_dirty_log(slot);
                }
            }

            // No two slots overlap.
            let live = slots(&kvm);
            for pair in live.windows(2) {
                prop_assert!(pair[0].2 <= pair[1].1, "overlapping slots {:?}", pair);
            }
            // The flag is still what CREATE gave.
            for (id, _, _, flags) in &live {
                prop_assert_eq!(flags & KVM_MEM_NON_COHERENT_DMA, created_with[id]);
            }
            // Every leaf lies in a live slot, the one it was built from, at the same place.
            for spte in kvm.mmu().sptes() {
                let slot = kvm.gfn_to_memslot(spte.as_id, spte.gfn);
                prop_assert!(slot.is_some(), "leaf at gfn {:#x} outlived its slot", spte.gfn);
                let slot = slot.unwrap();
                prop_assert_eq!(slot.id, spte.slot_id);
                prop_assert!(spte.end_gfn() <= slot.end_gfn());
                prop_assert_eq!(slot.gfn_to_hva(spte.gfn), spte.hva);
                prop_assert_eq!(
                    slot.flags & KVM_MEM_NON_COHERENT_DMA,
                    spte.slot_flags & KVM_MEM_NON_COHERENT_DMA
                );
            }
        }
    }
}

/// One step of device life.
#[derive(Debug, Clone)]
enum DevOp {
    CreateVirtio,
    SetVirtio(usize),
    CloseVirtio(usize),
    CreateVfio,
    AddVfioFile { device: usize, coherent: bool },
    DelVfioFile { device: usize, file: usize },
    CloseVfio(usize),
}

fn dev_op() -> impl Strategy<Value = DevOp> {
    prop_oneof![
        Just(DevOp::CreateVirtio),
        (0usize..4).prop_map(DevOp::SetVirtio),
        (0usize..4).prop_map(DevOp::CloseVirtio),
        Just(DevOp::CreateVfio),
        (0usize..2, any::<bool>())
            .prop_map(|(device, coherent)| DevOp::AddVfioFile { device, coherent }),
        (0usize..2, 0usize..4).prop_map(|(device, file)| DevOp::DelVfioFile { device, file }),
        (0usize..2).prop_map(DevOp::CloseVfio),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn noncoherent_count_equals_registered_devices(ops in prop::collection::vec(dev_op(), 1..40)) {
        let mut kvm = Kvm::new(KernelProfile::parse("6.7+virtio-device", Vendor::Intel).unwrap());
        let mut virtio: Vec<(kvm_model::DeviceId, bool)> = Vec::new();
        let mut vfio: Vec<(kvm_model::DeviceId, Vec<(i32, bool)>)> = Vec::new();
        let set = kvm_device_attr { flags: 0, group: 1, attr: 1, addr: 0 };
        for op in ops {
            match op {
                DevOp::CreateVirtio => {
                    let dev = kvm.create_device(12, 0).unwrap().unwrap();
                    virtio.push((dev, false));
                }
                DevOp::SetVirtio(i) => {
                    if let Some((dev, marked)) = virtio.get_mut(i) {
                        prop_assert_eq!(kvm.set_device_attr(*dev, &set), Ok(()));
                        *marked = true;
                    }
                }
                DevOp::CloseVirtio(i) => {
                    if i < virtio.len() {
                        prop_assert_eq!(kvm.close_device(virtio.remove(i).0), Ok(()));
                    }
                }
                DevOp::CreateVfio => match kvm.create_device(4, 0) {
                    Ok(Some(dev)) => vfio.push((dev, Vec::new())),
                    other => prop_assert_eq!(other, Err(uapi::Errno::EBUSY)),
                },
                DevOp::AddVfioFile { device, coherent } => {
                    if let Some((dev, files)) = vfio.get_mut(device) {
                        let fd = kvm.vfio_file_new(coherent);
                        let add = kvm_device_attr { flags: 0, group: 1, attr: 1, addr: fd as u64 };
                        prop_assert_eq!(kvm.set_device_attr(*dev, &add), Ok(()));
                        files.push((fd, coherent));
                    }
                }
                DevOp::DelVfioFile { device, file } => {
                    if let Some((dev, files)) = vfio.get_mut(device)
                        && file < files.len()
                    {
                        let (fd, _) = files.remove(file);
                        let del = kvm_device_attr { flags: 0, group: 1, attr: 2, addr: fd as u64 };
                        prop_assert_eq!(kvm.set_device_attr(*dev, &del), Ok(()));
                    }
                }
                DevOp::CloseVfio(i) => {
                    if i < vfio.len() {
                        prop_assert_eq!(kvm.close_device(vfio.remove(i).0), Ok(()));
                    }
                }
            }
            prop_assert!(vfio.len() <= 1, "one KVM-VFIO device per VM");
            let registered = virtio.iter().filter(|(_, marked)| *marked).count()
                + vfio.iter().filter(|(_, files)| files.iter().any(|(_, coherent)| !coherent)).count();
            prop_assert_eq!(kvm.noncoherent_dma_count() as usize, registered);
        }
    }
}
