//! Devices: the framework's answers, the RFC's virtio device, and KVM-VFIO, pinned to the
//! RFC's code and to the real `/dev/kvm` of this project's host.

use uapi::Errno;
use uapi::device::{
    KVM_CREATE_DEVICE_TEST, KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_VIRTIO, KVM_DEV_VFIO_FILE,
    KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL, kvm_device_attr,
};

use crate::profile::{KernelProfile, Proposal, Vendor};
use crate::{DeviceId, Kvm};

fn attr(group: u32, attr: u64, addr: u64) -> kvm_device_attr {
    kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr,
    }
}

fn virtio_vm() -> Kvm {
    Kvm::new(KernelProfile::parse("6.7+virtio-device", Vendor::Intel).unwrap())
}

#[test]
fn only_registered_types_exist() {
    for p in KernelProfile::all()
        .into_iter()
        .chain([KernelProfile::this_host()])
    {
        let mut kvm = Kvm::new(p);
        for t in (0..=14).chain([100, u32::MAX]) {
            let registered = t == KVM_DEV_TYPE_VFIO
                || (t == KVM_DEV_TYPE_VIRTIO && p.proposal == Proposal::VirtioDevice);
            let want = if registered {
                Ok(None)
            } else {
                Err(Errno::ENODEV)
            };
            assert_eq!(
                kvm.create_device(t, KVM_CREATE_DEVICE_TEST),
                want,
                "{p}: TEST type {t}"
            );
        }
        assert_eq!(
            kvm.create_device(12, 2).is_ok(),
            p.proposal == Proposal::VirtioDevice,
            "{p}"
        );
    }
}

#[test]
fn one_vfio_device_per_vm_as_on_the_host() {
    let mut kvm = Kvm::new(KernelProfile::this_host());
    let dev = kvm.create_device(KVM_DEV_TYPE_VFIO, 2).unwrap().unwrap();
    assert_eq!(kvm.create_device(KVM_DEV_TYPE_VFIO, 0), Err(Errno::EBUSY));
    assert_eq!(
        kvm.create_device(KVM_DEV_TYPE_VFIO, KVM_CREATE_DEVICE_TEST),
        Ok(None)
    );
    for (g, a, want) in [
        (1, 1, Ok(())),
        (1, 2, Ok(())),
        (1, 3, Err(Errno::ENXIO)),
        (1, 4, Err(Errno::ENXIO)),
        (0, 0, Err(Errno::ENXIO)),
        (2, 1, Err(Errno::ENXIO)),
        (1, 0, Err(Errno::ENXIO)),
    ] {
        assert_eq!(
            kvm.has_device_attr(dev, &attr(g, a, 0)),
            want,
            "has ({g},{a})"
        );
        assert_eq!(
            kvm.get_device_attr(dev, &attr(g, a, 0)),
            Err(Errno::EPERM),
            "get ({g},{a})"
        );
    }
    let flagged = kvm_device_attr {
        flags: 1,
        ..attr(1, 1, 0)
    };
    assert_eq!(
        kvm.has_device_attr(dev, &flagged),
        Ok(()),
        "flags are not read"
    );
    let closed_fd = 999_999;
    assert_eq!(
        kvm.set_device_attr(dev, &attr(1, 1, closed_fd)),
        Err(Errno::EBADF)
    );
    assert_eq!(
        kvm.set_device_attr(dev, &attr(1, 2, closed_fd)),
        Err(Errno::EBADF)
    );
    assert_eq!(kvm.set_device_attr(dev, &attr(1, 1, 0)), Err(Errno::EFAULT));
    assert_eq!(kvm.set_device_attr(dev, &attr(1, 2, 0)), Err(Errno::EFAULT));
    for (g, a) in [(1, 3), (1, 5), (2, 1), (0, 0)] {
        assert_eq!(
            kvm.set_device_attr(dev, &attr(g, a, closed_fd)),
            Err(Errno::ENXIO)
        );
    }
    assert_eq!(kvm.close_device(dev), Ok(()));
    assert_eq!(kvm.close_device(dev), Err(Errno::EBADF));
    assert_eq!(kvm.has_device_attr(dev, &attr(1, 1, 0)), Err(Errno::EBADF));
    assert!(
        kvm.create_device(KVM_DEV_TYPE_VFIO, 0).unwrap().is_some(),
        "possible again"
    );
}

#[test]
fn vfio_counts_once_per_device() {
    let mut kvm = Kvm::new(KernelProfile::parse("6.12", Vendor::Intel).unwrap());
    let dev = kvm.create_device(KVM_DEV_TYPE_VFIO, 0).unwrap().unwrap();
    let coherent = kvm.vfio_file_new(true);
    assert_eq!(
        kvm.set_device_attr(
            dev,
            &attr(KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, coherent as u64)
        ),
        Ok(())
    );
    assert_eq!(kvm.noncoherent_dma_count(), 0, "snoop control enforced");
    assert_eq!(
        kvm.set_device_attr(
            dev,
            &attr(KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, coherent as u64)
        ),
        Err(Errno::EEXIST)
    );
    let a = kvm.vfio_add_noncoherent_file(dev).unwrap();
    let b = kvm.vfio_add_noncoherent_file(dev).unwrap();
    assert_eq!(kvm.noncoherent_dma_count(), 1);
    let del = |fd: i32| attr(KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_DEL, fd as u64);
    assert_eq!(kvm.set_device_attr(dev, &del(a)), Ok(()));
    assert_eq!(
        kvm.noncoherent_dma_count(),
        1,
        "b still lacks snoop control"
    );
    assert_eq!(kvm.set_device_attr(dev, &del(a)), Err(Errno::ENOENT));
    assert_eq!(kvm.set_device_attr(dev, &del(b)), Ok(()));
    assert_eq!(kvm.noncoherent_dma_count(), 0);
    kvm.vfio_add_noncoherent_file(dev).unwrap();
    assert_eq!(kvm.noncoherent_dma_count(), 1);
    assert_eq!(kvm.close_device(dev), Ok(()));
    assert_eq!(kvm.noncoherent_dma_count(), 0, "release unregisters");
}

#[test]
fn virtio_device_as_in_the_rfc() {
    let mut kvm = virtio_vm();
    let d1 = kvm.create_device(KVM_DEV_TYPE_VIRTIO, 0).unwrap().unwrap();
    let d2 = kvm.create_device(KVM_DEV_TYPE_VIRTIO, 0).unwrap().unwrap();
    assert_ne!(d1, d2, "one device per virtio device");
    assert_eq!(kvm.noncoherent_dma_count(), 0, "a new device is coherent");
    assert_eq!(kvm.has_device_attr(d1, &attr(1, 1, 0)), Ok(()));
    for (g, a) in [(1, 0), (1, 2), (0, 1), (2, 1)] {
        assert_eq!(
            kvm.has_device_attr(d1, &attr(g, a, 0)),
            Err(Errno::ENXIO),
            "has ({g},{a})"
        );
        assert_eq!(
            kvm.set_device_attr(d1, &attr(g, a, 0)),
            Err(Errno::ENXIO),
            "set ({g},{a})"
        );
    }
    assert_eq!(kvm.get_device_attr(d1, &attr(1, 1, 0)), Err(Errno::EPERM));
    assert_eq!(
        kvm.set_device_attr(d1, &attr(1, 1, 0xdead)),
        Ok(()),
        "addr is not read"
    );
    assert_eq!(kvm.noncoherent_dma_count(), 1);
    assert_eq!(
        kvm.set_device_attr(d1, &attr(1, 1, 0)),
        Ok(()),
        "idempotent"
    );
    assert_eq!(kvm.noncoherent_dma_count(), 1);
    assert_eq!(kvm.set_device_attr(d2, &attr(1, 1, 0)), Ok(()));
    assert_eq!(kvm.noncoherent_dma_count(), 2);
    assert_eq!(kvm.close_device(d1), Ok(()));
    assert_eq!(kvm.noncoherent_dma_count(), 1);
    assert_eq!(kvm.close_device(d2), Ok(()));
    assert_eq!(kvm.noncoherent_dma_count(), 0);
    let d3 = kvm.create_device(KVM_DEV_TYPE_VIRTIO, 0).unwrap().unwrap();
    assert_eq!(kvm.close_device(d3), Ok(()));
    assert_eq!(
        kvm.noncoherent_dma_count(),
        0,
        "an unset device never counted"
    );
    assert_eq!(kvm.close_device(DeviceId(77)), Err(Errno::EBADF));
}
