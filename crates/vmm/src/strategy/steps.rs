//! The steps of the chain, one function each, so that `ncdma probe` asks the kernel exactly
//! what the strategy asks it.

use kvm_model::Vendor;
use uapi::Errno;
use uapi::cap::{
    KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA,
    KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS, kvm_enable_cap,
};
use uapi::device::{
    KVM_CREATE_DEVICE_TEST, KVM_DEV_TYPE_VIRTIO, KVM_DEV_VIRTIO_NONCOHERENT,
    KVM_DEV_VIRTIO_NONCOHERENT_SET, kvm_device_attr,
};
use uapi::memslot::{KVM_MEM_NON_COHERENT_DMA, kvm_userspace_memory_region};
use uapi::quirk::KVM_X86_QUIRK_IGNORE_GUEST_PAT;

use super::{Attempt, Mechanism, Outcome, Policy, StrategyError};
use crate::backend::{Backend, DeviceHandle, Platform, Tdp};

/// The two capability numbers that once advertised the flag, as `(cap 236, cap 239)`.
/// Upstream they are `KVM_CAP_PRE_FAULT_MEMORY` and an arm64 capability: hints, never proof.
pub(crate) fn cap_hints(backend: &dyn Backend) -> (i64, i64) {
    (
        backend.check_extension(KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA),
        backend.check_extension(KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS),
    )
}

/// (a) Creates the slot `region` with `KVM_MEM_NON_COHERENT_DMA` added to its flags:
/// [`Outcome::Used`] when the kernel accepts it (the slot then exists), `EINVAL` refused
/// (no slot was made); any other errno is the slot's own problem.
///
/// # Safety
///
/// As for [`Backend::set_user_memory_region`]: if the flag is accepted, the host range of
/// `region` must stay mapped for as long as the slot exists.
pub(crate) unsafe fn try_memslot_flag(
    backend: &mut dyn Backend,
    region: &kvm_userspace_memory_region,
) -> Result<Attempt, StrategyError> {
    let (c236, c239) = cap_hints(backend);
    let hints = format!("caps 236={c236}, 239={c239}, hints only");
    let flagged = kvm_userspace_memory_region {
        flags: region.flags | KVM_MEM_NON_COHERENT_DMA,
        ..*region
    };
    // SAFETY: forwarded from this function's contract.
    match unsafe { backend.set_user_memory_region(&flagged) } {
        Ok(()) => Ok(Attempt::new(
            Mechanism::MemslotFlag,
            Outcome::Used,
            format!("the kernel accepted the flag: guest PAT decides in this slot only; {hints}"),
        )),
        Err(e) if e.errno() == Errno::EINVAL => Ok(Attempt::new(
            Mechanism::MemslotFlag,
            Outcome::Refused(Some(Errno::EINVAL)),
            format!("kernel does not know the flag; {hints}"),
        )),
        Err(e) => Err(StrategyError::CreateSlot(e)),
    }
}

/// (b) Creates a KVM virtio device (first with `KVM_CREATE_DEVICE_TEST`) and marks it
/// noncoherent. On success the handle is returned: the device must stay open for as long as
/// the registration lasts. `ENODEV` (no such type) and `ENXIO` (a type 12 that is not the
/// virtio device) are refusals.
pub(crate) fn try_virtio_device(
    backend: &mut dyn Backend,
) -> Result<(Attempt, Option<DeviceHandle>), StrategyError> {
    let refused = |errno, reason: &str| {
        Ok((
            Attempt::new(
                Mechanism::VirtioDevice,
                Outcome::Refused(Some(errno)),
                reason,
            ),
            None,
        ))
    };
    match backend.create_device(KVM_DEV_TYPE_VIRTIO, KVM_CREATE_DEVICE_TEST) {
        Err(e) if e.errno() == Errno::ENODEV => {
            return refused(
                Errno::ENODEV,
                "no KVM virtio device: the kernel has no device type 12; upstream later gave \
                 12 to LoongArch IPI",
            );
        }
        Err(e) => return Err(StrategyError::CreateDevice(e)),
        Ok(_) => {}
    }
    let dev = match backend.create_device(KVM_DEV_TYPE_VIRTIO, 0) {
        Ok(Some(dev)) => dev,
        Ok(None) => {
            return Ok((
                Attempt::new(
                    Mechanism::VirtioDevice,
                    Outcome::Refused(None),
                    "KVM_CREATE_DEVICE returned no device fd",
                ),
                None,
            ));
        }
        Err(e) => return Err(StrategyError::CreateDevice(e)),
    };
    let attr = kvm_device_attr {
        group: KVM_DEV_VIRTIO_NONCOHERENT,
        attr: KVM_DEV_VIRTIO_NONCOHERENT_SET,
        ..Default::default()
    };
    match backend.set_device_attr(dev, &attr) {
        Ok(()) => Ok((
            Attempt::new(
                Mechanism::VirtioDevice,
                Outcome::Used,
                "device created and marked noncoherent: raises the VM's noncoherent DMA \
                 count, so guest PAT is honored for ALL guest memory while it stays open",
            ),
            Some(dev),
        )),
        Err(e) => {
            backend
                .close_device(dev)
                .map_err(StrategyError::CloseDevice)?;
            if e.errno() == Errno::ENXIO {
                refused(
                    Errno::ENXIO,
                    "device type 12 exists but has no noncoherent attribute: it is not the \
                     virtio device",
                )
            } else {
                Err(StrategyError::SetDeviceAttr(e))
            }
        }
    }
}

/// (c) Disables `KVM_X86_QUIRK_IGNORE_GUEST_PAT` when the kernel reports it as disableable,
/// the CPU is not AMD (where it changes nothing) and the policy allows VM-wide mechanisms.
pub(crate) fn try_disable_ignore_guest_pat(
    backend: &mut dyn Backend,
    platform: &Platform,
    policy: Policy,
) -> Result<Attempt, StrategyError> {
    let mask = backend.check_extension(KVM_CAP_DISABLE_QUIRKS2) as u64;
    let attempt = |outcome, reason: String| {
        Ok(Attempt::new(
            Mechanism::DisableIgnoreGuestPat,
            outcome,
            reason,
        ))
    };
    if mask & KVM_X86_QUIRK_IGNORE_GUEST_PAT == 0 {
        // KVM reports it from 6.16 on, only with TDP and, on Intel, self-snoop.
        let why = match (platform.tdp, platform.vendor) {
            (Tdp::Off, _) => "TDP is off, and KVM drops the quirk then",
            (_, Some(Vendor::Intel)) if !platform.self_snoop => {
                "the CPU has no self-snoop, and KVM drops the quirk then"
            }
            _ => "the kernel predates it (6.16)",
        };
        return attempt(
            Outcome::Refused(None),
            format!("not in the KVM_CAP_DISABLE_QUIRKS2 mask {mask:#x}: {why}"),
        );
    }
    if platform.vendor == Some(Vendor::Amd) {
        return attempt(
            Outcome::Skipped,
            format!(
                "reported (mask {mask:#x}) but without effect on AMD: SVM never ignores \
                 guest PAT"
            ),
        );
    }
    if !policy.allow_vm_wide {
        return attempt(
            Outcome::Skipped,
            format!(
                "available (mask {mask:#x}), but VM-wide and one way: guest PAT would be \
                 honored for ALL guest memory, and the policy does not allow VM-wide \
                 mechanisms; allow_vm_wide overrides"
            ),
        );
    }
    let cap = kvm_enable_cap {
        cap: KVM_CAP_DISABLE_QUIRKS2,
        args: [KVM_X86_QUIRK_IGNORE_GUEST_PAT, 0, 0, 0],
        ..Default::default()
    };
    backend.enable_cap(&cap).map_err(StrategyError::EnableCap)?;
    attempt(
        Outcome::Used,
        "disabled, as the policy allows: guest PAT is honored for ALL guest memory of this \
         VM from now on, with no way back"
            .to_string(),
    )
}

/// (d) Whether the vendor honors guest PAT without being asked: AMD with NPT in use. KVM has
/// no query for this; the backend's [`Platform`] says what the vendor and the paging are.
pub(crate) fn vendor_npt(platform: &Platform) -> Attempt {
    let (outcome, reason) = match (platform.vendor, platform.tdp) {
        (Some(Vendor::Amd), Tdp::On) => (
            Outcome::Used,
            format!(
                "AMD with NPT in use, which combines guest PAT with the host's, VM-wide, on \
                 every kernel; {}",
                platform.tdp_evidence
            ),
        ),
        (Some(Vendor::Amd), Tdp::Off) => (
            Outcome::Refused(None),
            format!(
                "AMD, but TDP is off, and shadow paging does not honor guest memory types; {}",
                platform.tdp_evidence
            ),
        ),
        (Some(Vendor::Amd), Tdp::Unknown) => (
            Outcome::Refused(None),
            format!(
                "AMD, but whether NPT is in use is unknown; {}",
                platform.tdp_evidence
            ),
        ),
        (Some(Vendor::Intel), _) => (
            Outcome::Refused(None),
            "Intel: EPT ignores guest PAT (IPAT set) unless one of the mechanisms above applies"
                .to_string(),
        ),
        (None, _) => (
            Outcome::Refused(None),
            format!(
                "CPU vendor {:?} unknown: no rule says whether it honors guest PAT",
                platform.vendor_id
            ),
        ),
    };
    Attempt::new(Mechanism::VendorNpt, outcome, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, ModelKvm, Result};
    use kvm_model::KernelProfile;
    use uapi::cap::kvm_enable_cap;
    use uapi::memslot::kvm_userspace_memory_region2;

    /// The virtio-device kernel, except that its type 12 is some other device (as upstream's
    /// LoongArch IPI would be): it exists, but has no noncoherent attribute.
    #[derive(Debug)]
    struct OtherType12 {
        model: ModelKvm,
        closed: Vec<DeviceHandle>,
    }

    impl Backend for OtherType12 {
        fn describe(&self) -> String {
            self.model.describe()
        }
        fn kvm_api_version(&self) -> Result<i32> {
            self.model.kvm_api_version()
        }
        fn platform(&self) -> Platform {
            self.model.platform()
        }
        fn check_extension(&self, cap: u32) -> i64 {
            self.model.check_extension(cap)
        }
        unsafe fn set_user_memory_region(&mut self, r: &kvm_userspace_memory_region) -> Result<()> {
            // SAFETY: forwarded from the caller.
            unsafe { self.model.set_user_memory_region(r) }
        }
        unsafe fn set_user_memory_region2(
            &mut self,
            r: &kvm_userspace_memory_region2,
        ) -> Result<()> {
            // SAFETY: forwarded from the caller.
            unsafe { self.model.set_user_memory_region2(r) }
        }
        fn create_device(&mut self, dev_type: u32, flags: u32) -> Result<Option<DeviceHandle>> {
            self.model.create_device(dev_type, flags)
        }
        fn set_device_attr(&mut self, _: DeviceHandle, _: &kvm_device_attr) -> Result<()> {
            Err(BackendError::SetDeviceAttr(Errno::ENXIO))
        }
        fn has_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<()> {
            self.model.has_device_attr(dev, attr)
        }
        fn get_device_attr(&self, dev: DeviceHandle, attr: &kvm_device_attr) -> Result<u64> {
            self.model.get_device_attr(dev, attr)
        }
        fn close_device(&mut self, dev: DeviceHandle) -> Result<()> {
            self.closed.push(dev);
            self.model.close_device(dev)
        }
        fn enable_cap(&mut self, cap: &kvm_enable_cap) -> Result<()> {
            self.model.enable_cap(cap)
        }
        fn get_dirty_log(&mut self, slot: u32) -> Result<Vec<u64>> {
            self.model.get_dirty_log(slot)
        }
    }

    #[test]
    fn a_type_12_that_is_not_the_virtio_device_is_refused_and_closed() {
        let profile = KernelProfile::parse("6.7+virtio-device", Vendor::Intel).unwrap();
        let mut vm = OtherType12 {
            model: ModelKvm::new(profile),
            closed: Vec::new(),
        };
        let (attempt, device) = try_virtio_device(&mut vm).unwrap();
        assert_eq!(device, None);
        assert_eq!(attempt.outcome, Outcome::Refused(Some(Errno::ENXIO)));
        assert!(
            attempt.reason.contains("not the virtio device"),
            "{attempt}"
        );
        assert_eq!(vm.closed, [DeviceHandle(0)]);
        assert_eq!(vm.model.noncoherent_dma_count(), Some(0));
    }

    #[test]
    fn the_vendor_step_reads_vendor_and_paging() {
        let mut amd = Platform::of_profile(&KernelProfile::this_host());
        assert_eq!(vendor_npt(&amd).outcome, Outcome::Refused(None));
        amd.tdp = Tdp::Unknown;
        assert!(vendor_npt(&amd).reason.contains("unknown"));
        amd.tdp = Tdp::On;
        assert_eq!(vendor_npt(&amd).outcome, Outcome::Used);
        amd.vendor = None;
        amd.vendor_id = "CentaurHauls".into();
        let other = vendor_npt(&amd);
        assert_eq!(other.outcome, Outcome::Refused(None));
        assert!(other.reason.contains("\"CentaurHauls\" unknown"), "{other}");
    }
}
