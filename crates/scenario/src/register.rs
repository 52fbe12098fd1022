//! The VMM's registration strategy: create a region's memslot and make the kernel treat it
//! as the target of noncoherent DMA with the first mechanism the kernel accepts, in the
//! order the scenario lists them. A refusal is not an error: it is recorded, and the next
//! mechanism is tried ("memslot-flag: EINVAL → virtio-device: ENODEV → none").
//!
//! - `memslot-flag`: `KVM_SET_USER_MEMORY_REGION` with `KVM_MEM_NON_COHERENT_DMA` (seed
//!   `000_…`). The flag is fixed at CREATE, so the slot is created with it when it comes
//!   first; `EINVAL` → the slot is created without it. Listed later, it is a FLAGS_ONLY change
//!   of the existing slot, which the kernel refuses as it refuses toggling `READONLY`.
//! - `virtio-device`: `KVM_CREATE_DEVICE(KVM_DEV_TYPE_VIRTIO = 12)` then
//!   `KVM_SET_DEVICE_ATTR(KVM_DEV_VIRTIO_NONCOHERENT, _SET)` (seed `002_…`): VM-wide.
//! - `vfio-noncoherent`: the KVM-VFIO device (one per VM) with a VFIO file whose IOMMU lacks
//!   snoop control, as a passthrough GPU would add: VM-wide.
//! - `disable-ignore-guest-pat`: `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2,
//!   KVM_X86_QUIRK_IGNORE_GUEST_PAT)` (6.16+): VM-wide, and one way.

use std::fmt;

use kvm_model::{DeviceId, Kvm};
use serde::{Deserialize, Serialize, Serializer};
use uapi::Errno;
use uapi::cap::{KVM_CAP_DISABLE_QUIRKS2, kvm_enable_cap};
use uapi::device::{
    KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_VIRTIO, KVM_DEV_VIRTIO_NONCOHERENT,
    KVM_DEV_VIRTIO_NONCOHERENT_SET, kvm_device_attr,
};
use uapi::memslot::{KVM_MEM_NON_COHERENT_DMA, kvm_userspace_memory_region};
use uapi::quirk::KVM_X86_QUIRK_IGNORE_GUEST_PAT;

use crate::scenario::Region;

/// A way to tell KVM about noncoherent DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// The memslot flag `KVM_MEM_NON_COHERENT_DMA`: this slot only.
    MemslotFlag,
    /// The RFC's KVM virtio device: the whole VM.
    VirtioDevice,
    /// A passthrough device without snoop control on the KVM-VFIO device: the whole VM.
    VfioNoncoherent,
    /// Disabling `KVM_X86_QUIRK_IGNORE_GUEST_PAT`: the whole VM.
    DisableIgnoreGuestPat,
}

impl Mechanism {
    /// The name used in files and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Mechanism::MemslotFlag => "memslot-flag",
            Mechanism::VirtioDevice => "virtio-device",
            Mechanism::VfioNoncoherent => "vfio-noncoherent",
            Mechanism::DisableIgnoreGuestPat => "disable-ignore-guest-pat",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One mechanism tried, and the kernel's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// What was tried.
    pub mechanism: Mechanism,
    /// `None` when the kernel accepted it, else its errno.
    #[serde(serialize_with = "errno_name")]
    pub refused: Option<Errno>,
}

fn errno_name<S: Serializer>(errno: &Option<Errno>, s: S) -> Result<S::Ok, S::Error> {
    match errno {
        Some(e) => s.serialize_some(&e.to_string()),
        None => s.serialize_none(),
    }
}

/// What registering one noncoherent region came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Registration {
    /// The region.
    pub region: String,
    /// The mechanisms tried, in order, up to the first accepted.
    pub attempts: Vec<Attempt>,
    /// The mechanism the kernel accepted; `None`: the region runs coherent.
    pub registered: Option<Mechanism>,
}

impl fmt::Display for Registration {
    /// `memslot-flag: EINVAL → virtio-device: ENODEV → none: region runs coherent`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.attempts {
            match a.refused {
                Some(errno) => write!(f, "{}: {errno} → ", a.mechanism)?,
                None => write!(f, "{}: ok", a.mechanism)?,
            }
        }
        if self.registered.is_none() {
            f.write_str("none: region runs coherent")?;
        }
        Ok(())
    }
}

/// Creates memslots and registers noncoherent ones on one VM.
#[derive(Debug)]
pub(crate) struct Registrar {
    /// The KVM-VFIO device, once created: KVM allows one per VM.
    vfio: Option<DeviceId>,
}

impl Registrar {
    pub(crate) fn new() -> Registrar {
        Registrar { vfio: None }
    }

    /// Creates `region` as memslot `slot` backed by `hva`, then registers it if it is
    /// noncoherent. `Err` only when the kernel refuses the plain slot.
    pub(crate) fn create(
        &mut self,
        kvm: &mut Kvm,
        slot: u32,
        hva: u64,
        region: &Region,
    ) -> Result<Registration, Errno> {
        let mem = |flags| kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: region.gpa,
            memory_size: region.size,
            userspace_addr: hva,
        };
        let mechanisms: &[Mechanism] = if region.noncoherent {
            &region.register
        } else {
            &[]
        };
        let mut attempts = Vec::new();
        let mut later = mechanisms;
        let mut registered = None;
        if let Some((Mechanism::MemslotFlag, rest)) = mechanisms.split_first() {
            later = rest;
            let refused = kvm
                .set_user_memory_region(&mem(KVM_MEM_NON_COHERENT_DMA))
                .err();
            attempts.push(Attempt {
                mechanism: Mechanism::MemslotFlag,
                refused,
            });
            if refused.is_none() {
                registered = Some(Mechanism::MemslotFlag);
            }
        }
        if registered.is_none() {
            kvm.set_user_memory_region(&mem(0))?;
        }
        for &mechanism in later {
            if registered.is_some() {
                break;
            }
            let refused = match mechanism {
                // FLAGS_ONLY on the existing slot.
                Mechanism::MemslotFlag => {
                    kvm.set_user_memory_region(&mem(KVM_MEM_NON_COHERENT_DMA))
                }
                Mechanism::VirtioDevice => virtio_device(kvm),
                Mechanism::VfioNoncoherent => self.vfio_noncoherent(kvm),
                Mechanism::DisableIgnoreGuestPat => disable_ignore_guest_pat(kvm),
            }
            .err();
            attempts.push(Attempt { mechanism, refused });
            if refused.is_none() {
                registered = Some(mechanism);
            }
        }
        Ok(Registration {
            region: region.name.clone(),
            attempts,
            registered,
        })
    }

    fn vfio_noncoherent(&mut self, kvm: &mut Kvm) -> Result<(), Errno> {
        let dev = match self.vfio {
            Some(dev) => dev,
            None => {
                let dev = created(kvm.create_device(KVM_DEV_TYPE_VFIO, 0))?;
                self.vfio = Some(dev);
                dev
            }
        };
        kvm.vfio_add_noncoherent_file(dev).map(|_fd| ())
    }
}

/// `KVM_CREATE_DEVICE` without `KVM_CREATE_DEVICE_TEST` always yields a device fd.
fn created(result: Result<Option<DeviceId>, Errno>) -> Result<DeviceId, Errno> {
    result?.ok_or(Errno::ENODEV)
}

fn virtio_device(kvm: &mut Kvm) -> Result<(), Errno> {
    let dev = created(kvm.create_device(KVM_DEV_TYPE_VIRTIO, 0))?;
    kvm.set_device_attr(
        dev,
        &kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VIRTIO_NONCOHERENT,
            attr: KVM_DEV_VIRTIO_NONCOHERENT_SET,
            addr: 0,
        },
    )
}

fn disable_ignore_guest_pat(kvm: &mut Kvm) -> Result<(), Errno> {
    kvm.enable_cap(&kvm_enable_cap {
        cap: KVM_CAP_DISABLE_QUIRKS2,
        args: [KVM_X86_QUIRK_IGNORE_GUEST_PAT, 0, 0, 0],
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Doc {
        register: Vec<Mechanism>,
    }

    #[test]
    fn names_match_the_serde_names() {
        let all = [
            Mechanism::MemslotFlag,
            Mechanism::VirtioDevice,
            Mechanism::VfioNoncoherent,
            Mechanism::DisableIgnoreGuestPat,
        ];
        let names: Vec<String> = all.iter().map(|m| format!("\"{m}\"")).collect();
        let doc: Doc = toml::from_str(&format!("register = [{}]", names.join(", "))).unwrap();
        assert_eq!(doc.register, all);
    }

    #[test]
    fn a_chain_reads_as_the_report_prints_it() {
        let g = Registration {
            region: "bar".into(),
            attempts: vec![
                Attempt {
                    mechanism: Mechanism::MemslotFlag,
                    refused: Some(Errno::EINVAL),
                },
                Attempt {
                    mechanism: Mechanism::VirtioDevice,
                    refused: None,
                },
            ],
            registered: Some(Mechanism::VirtioDevice),
        };
        assert_eq!(g.to_string(), "memslot-flag: EINVAL → virtio-device: ok");
        let none = Registration {
            region: "bar".into(),
            attempts: Vec::new(),
            registered: None,
        };
        assert_eq!(none.to_string(), "none: region runs coherent");
    }
}
