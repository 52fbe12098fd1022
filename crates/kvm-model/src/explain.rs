//! `explain`: one guest access on a described kernel, VM and guest — its memory type and the
//! path that produced it. The library half of `ncdma explain`.
//!
//! The description is applied the way a VMM and a guest would: quirks with
//! `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)`; noncoherent DMA through the mechanism the
//! profile has (one KVM virtio device per count in `+virtio-device` profiles, else the
//! KVM-VFIO device with files whose IOMMU lacks snoop control — which counts once per VM);
//! one 2 MiB memslot at 4 GiB with the given flags (v2 ioctl where it exists), optionally
//! backed by a host device BAR; the guest's PAT, MTRRs and CR0 with `KVM_SET_MSRS` and
//! `MOV CR0`; then a read fault at the slot's first page. Whatever the kernel refuses becomes
//! an [`ExplainError`] naming the profile.

use memtype::pat::{Pat, PatError};
use memtype::{MemType, mtrr::MSR_MTRR_DEF_TYPE, mtrr::MTRR_DEF_TYPE_E, pat::MSR_IA32_CR_PAT};
use uapi::Errno;
use uapi::cap::{KVM_CAP_DISABLE_QUIRKS2, kvm_enable_cap};
use uapi::device::{
    KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_VIRTIO, KVM_DEV_VIRTIO_NONCOHERENT,
    KVM_DEV_VIRTIO_NONCOHERENT_SET, kvm_device_attr,
};
use uapi::memslot::{MemslotFlags, kvm_userspace_memory_region, kvm_userspace_memory_region2};
use uapi::quirk::{KVM_X86_QUIRK_CD_NW_CLEARED, KVM_X86_QUIRK_IGNORE_GUEST_PAT};

use crate::error::VcpuError;
use crate::kvm::Kvm;
use crate::mmu::{MtMaskBranch, PgLevel};
use crate::profile::{Era, KernelProfile, Proposal};
use crate::vcpu::{X86_CR0_CD, X86_CR0_ET, X86_CR0_PE, X86_CR0_PG};

/// Guest-physical address of the explained access (start of the slot).
pub const EXPLAIN_GPA: u64 = 0x1_0000_0000;
/// Size of the explained slot: one 2 MiB page.
pub const EXPLAIN_SLOT_SIZE: u64 = 0x20_0000;
/// Host virtual address backing the slot (2 MiB aligned).
pub const EXPLAIN_HVA: u64 = 0x7f00_0000_0000;

/// The guest PAT entry the access goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestPat {
    /// PAT entry 0 holds this type (the rest keep their reset values); the access uses it.
    Type(MemType),
    /// The whole IA32_PAT value and the entry index (`4·PAT + 2·PCD + PWT`) the access uses.
    Value {
        /// IA32_PAT.
        pat: u64,
        /// Entry index, 0..=7.
        index: u8,
    },
}

/// A quirk state the description asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuirkState {
    /// In force (the legacy behavior).
    Enabled,
    /// Disabled with `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)`.
    Disabled,
}

impl std::str::FromStr for QuirkState {
    type Err = String;

    fn from_str(s: &str) -> Result<QuirkState, String> {
        match s.to_ascii_lowercase().as_str() {
            "enabled" => Ok(QuirkState::Enabled),
            "disabled" => Ok(QuirkState::Disabled),
            _ => Err(format!(
                "\"{s}\" is not a quirk state (expected enabled or disabled)"
            )),
        }
    }
}

/// What to explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExplainInput {
    /// The kernel, vendor and CPU facts.
    pub profile: KernelProfile,
    /// `KVM_X86_QUIRK_IGNORE_GUEST_PAT`: left as the kernel starts when `None`.
    pub quirk_ignore_guest_pat: Option<QuirkState>,
    /// `KVM_X86_QUIRK_CD_NW_CLEARED`: left as the kernel starts when `None`.
    pub quirk_cd_nw_cleared: Option<QuirkState>,
    /// Noncoherent DMA registrations to make.
    pub noncoherent_dma: u32,
    /// `KVM_MEM_*` flags of the slot.
    pub slot_flags: u32,
    /// The slot is backed by a host device BAR (`VM_PFNMAP`): host MMIO.
    pub mmio: bool,
    /// Guest CR0.CD=1.
    pub guest_cr0_cd: bool,
    /// The guest PAT entry used.
    pub guest_pat: GuestPat,
    /// The guest's MTRRs: enabled with this default type and no ranges (WB when `None`).
    pub guest_mtrr: Option<MemType>,
}

impl ExplainInput {
    /// A plain access on `profile`: no quirk change, no noncoherent DMA, an unflagged RAM
    /// slot, caching enabled, guest PAT WB, guest MTRRs WB.
    pub fn new(profile: KernelProfile) -> ExplainInput {
        ExplainInput {
            profile,
            quirk_ignore_guest_pat: None,
            quirk_cd_nw_cleared: None,
            noncoherent_dma: 0,
            slot_flags: 0,
            mmio: false,
            guest_cr0_cd: false,
            guest_pat: GuestPat::Type(MemType::Wb),
            guest_mtrr: None,
        }
    }
}

/// The explained access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The kernel it ran on.
    pub profile: KernelProfile,
    /// The type the access is performed with.
    pub effective: MemType,
    /// The EPT leaf's type (VMX with EPT only).
    pub ept_memtype: Option<MemType>,
    /// The EPT leaf's IPAT bit (VMX with EPT only).
    pub ipat: Option<bool>,
    /// Whether the guest PAT takes part.
    pub honors_guest_pat: bool,
    /// The whole path, prefixed with the profile.
    pub reason: String,
    /// The `get_mt_mask` decision.
    pub branch: MtMaskBranch,
    /// The guest PAT type the access selected.
    pub guest_pat: MemType,
    /// The VM's noncoherent DMA count after registration.
    pub noncoherent_dma_count: u32,
    /// How noncoherent DMA was registered, if it was.
    pub noncoherent_mechanism: Option<&'static str>,
    /// Size of the leaf that maps the access.
    pub level: PgLevel,
}

/// Why a description cannot be run: the kernel refuses part of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The quirk does not exist in this era.
    #[error("{profile}: {quirk} does not exist in this kernel{note}")]
    QuirkAbsent {
        /// The profile.
        profile: String,
        /// The quirk's KVM name.
        quirk: &'static str,
        /// When it appeared.
        note: &'static str,
    },
    /// `KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2)` refused to disable the quirk.
    #[error(
        "{profile}: cannot disable {quirk}: KVM_ENABLE_CAP(KVM_CAP_DISABLE_QUIRKS2) → {errno} (supported mask {supported:#x})"
    )]
    DisableQuirk {
        /// The profile.
        profile: String,
        /// The quirk's KVM name.
        quirk: &'static str,
        /// The kernel's answer.
        errno: Errno,
        /// `KVM_CHECK_EXTENSION(KVM_CAP_DISABLE_QUIRKS2)`.
        supported: i64,
    },
    /// The quirk starts disabled here (it does not apply) and quirks cannot be re-enabled.
    #[error("{profile}: {quirk} starts disabled on this vendor and cannot be enabled")]
    EnableQuirk {
        /// The profile.
        profile: String,
        /// The quirk's KVM name.
        quirk: &'static str,
    },
    /// Registering noncoherent DMA failed.
    #[error("{profile}: registering noncoherent DMA through {mechanism} failed: {errno}")]
    RegisterNoncoherentDma {
        /// The profile.
        profile: String,
        /// The mechanism tried.
        mechanism: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The memslot was refused.
    #[error("{profile}: {ioctl} with flags {flags} → {errno}{hint}")]
    SetUserMemoryRegion {
        /// The profile.
        profile: String,
        /// Which ioctl.
        ioctl: &'static str,
        /// The flags asked for.
        flags: MemslotFlags,
        /// The kernel's answer.
        errno: Errno,
        /// A pointer to the profile that would accept the flags, if any.
        hint: &'static str,
    },
    /// The guest PAT value has a reserved entry (WRMSR would #GP).
    #[error("guest PAT: {0}")]
    SetGuestPat(PatError),
    /// The guest PAT type cannot be held by a PAT entry.
    #[error("guest PAT type {0} is not a PAT type (expected UC, UC-, WC, WT, WP or WB)")]
    GuestPatType(MemType),
    /// The PAT entry index is out of range.
    #[error("PAT index {0} is out of range (0..=7)")]
    PatIndex(u8),
    /// The guest MTRR type cannot be an MTRR type.
    #[error("guest MTRR type {0} is not an MTRR type (expected UC, WC, WT, WP or WB)")]
    SetGuestMtrr(MemType),
    /// A vCPU-side step failed.
    #[error("{profile}: {source}")]
    Access {
        /// The profile.
        profile: String,
        /// What failed.
        source: VcpuError,
    },
}

/// Runs the described access and explains its memory type.
///
/// ```
/// use kvm_model::explain::{explain, ExplainInput, GuestPat};
/// use kvm_model::{KernelProfile, Vendor};
/// use memtype::MemType;
/// use uapi::memslot::KVM_MEM_NON_COHERENT_DMA;
///
/// let mut input = ExplainInput::new(KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?);
/// input.slot_flags = KVM_MEM_NON_COHERENT_DMA;
/// input.guest_pat = GuestPat::Type(MemType::Wc);
/// let e = explain(&input)?;
/// assert_eq!((e.effective, e.ept_memtype, e.ipat), (MemType::Wc, Some(MemType::Wb), Some(false)));
/// assert!(e.reason.starts_with("6.16+memslot-flag/intel: make_spte → vmx_get_mt_mask: slot has KVM_MEM_NON_COHERENT_DMA"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn explain(input: &ExplainInput) -> Result<Explanation, ExplainError> {
    let profile = input.profile;
    let name = profile.to_string();
    let mut kvm = Kvm::new(profile);

    apply_quirk(
        &mut kvm,
        &name,
        KVM_X86_QUIRK_IGNORE_GUEST_PAT,
        input.quirk_ignore_guest_pat,
    )?;
    apply_quirk(
        &mut kvm,
        &name,
        KVM_X86_QUIRK_CD_NW_CLEARED,
        input.quirk_cd_nw_cleared,
    )?;
    let mechanism = register_noncoherent_dma(&mut kvm, &name, input.noncoherent_dma)?;
    create_slot(&mut kvm, &name, input)?;

    let access_error = |source| ExplainError::Access {
        profile: name.clone(),
        source,
    };
    let vcpu = kvm
        .create_vcpu(0)
        .map_err(|_| access_error(VcpuError::NoSuchVcpu(0)))?;
    let (pat, index) = guest_pat(input.guest_pat)?;
    let mtrr = input.guest_mtrr.unwrap_or(MemType::Wb);
    let def_type = mtrr
        .mtrr_encoding()
        .map(|enc| u64::from(enc) | MTRR_DEF_TYPE_E)
        .ok_or(ExplainError::SetGuestMtrr(mtrr))?;
    // Both values were validated above, so the vCPU accepts them.
    let set = kvm
        .set_msrs(
            vcpu,
            &[(MSR_IA32_CR_PAT, pat), (MSR_MTRR_DEF_TYPE, def_type)],
        )
        .map_err(|_| access_error(VcpuError::NoSuchVcpu(0)))?;
    if set != 2 {
        return Err(ExplainError::SetGuestMtrr(mtrr));
    }
    let cd = if input.guest_cr0_cd { X86_CR0_CD } else { 0 };
    kvm.set_cr0(vcpu, X86_CR0_PG | X86_CR0_PE | X86_CR0_ET | cd)
        .map_err(access_error)?;

    let access = kvm
        .guest_memtype(vcpu, EXPLAIN_GPA, index)
        .map_err(access_error)?;
    Ok(Explanation {
        profile,
        effective: access.effective,
        ept_memtype: access.ept_memtype(),
        ipat: access.ipat(),
        honors_guest_pat: access.honors_guest_pat,
        reason: format!("{name}: {}", access.reason()),
        branch: access.branch,
        guest_pat: access.guest_pat,
        noncoherent_dma_count: kvm.noncoherent_dma_count(),
        noncoherent_mechanism: mechanism,
        level: access.level,
    })
}

fn quirk_name(quirk: u64) -> &'static str {
    if quirk == KVM_X86_QUIRK_IGNORE_GUEST_PAT {
        "KVM_X86_QUIRK_IGNORE_GUEST_PAT"
    } else {
        "KVM_X86_QUIRK_CD_NW_CLEARED"
    }
}

fn apply_quirk(
    kvm: &mut Kvm,
    name: &str,
    quirk: u64,
    state: Option<QuirkState>,
) -> Result<(), ExplainError> {
    let Some(state) = state else {
        return Ok(());
    };
    if quirk == KVM_X86_QUIRK_IGNORE_GUEST_PAT && kvm.profile().era != Era::V6_16 {
        return Err(ExplainError::QuirkAbsent {
            profile: name.to_string(),
            quirk: quirk_name(quirk),
            note: " (it appeared in 6.16)",
        });
    }
    match state {
        QuirkState::Enabled if kvm.has_quirk(quirk) => Ok(()),
        QuirkState::Enabled => Err(ExplainError::EnableQuirk {
            profile: name.to_string(),
            quirk: quirk_name(quirk),
        }),
        QuirkState::Disabled => {
            let cap = kvm_enable_cap {
                cap: KVM_CAP_DISABLE_QUIRKS2,
                args: [quirk, 0, 0, 0],
                ..Default::default()
            };
            kvm.enable_cap(&cap)
                .map_err(|errno| ExplainError::DisableQuirk {
                    profile: name.to_string(),
                    quirk: quirk_name(quirk),
                    errno,
                    supported: kvm.check_extension(KVM_CAP_DISABLE_QUIRKS2),
                })
        }
    }
}

const VIRTIO_MECHANISM: &str = "KVM virtio device (KVM_DEV_TYPE_VIRTIO), one per count";
const VFIO_MECHANISM: &str =
    "KVM-VFIO device with VFIO files lacking snoop control (counts once per VM)";

fn register_noncoherent_dma(
    kvm: &mut Kvm,
    name: &str,
    count: u32,
) -> Result<Option<&'static str>, ExplainError> {
    if count == 0 {
        return Ok(None);
    }
    let virtio = kvm.profile().proposal == Proposal::VirtioDevice;
    let mechanism = if virtio {
        VIRTIO_MECHANISM
    } else {
        VFIO_MECHANISM
    };
    let failed = |errno| ExplainError::RegisterNoncoherentDma {
        profile: name.to_string(),
        mechanism,
        errno,
    };
    if virtio {
        let set = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VIRTIO_NONCOHERENT,
            attr: KVM_DEV_VIRTIO_NONCOHERENT_SET,
            addr: 0,
        };
        for _ in 0..count {
            let dev = kvm
                .create_device(KVM_DEV_TYPE_VIRTIO, 0)
                .map_err(failed)?
                .ok_or(failed(Errno::ENODEV))?;
            kvm.set_device_attr(dev, &set).map_err(failed)?;
        }
    } else {
        let dev = kvm
            .create_device(KVM_DEV_TYPE_VFIO, 0)
            .map_err(failed)?
            .ok_or(failed(Errno::ENODEV))?;
        for _ in 0..count {
            kvm.vfio_add_noncoherent_file(dev).map_err(failed)?;
        }
    }
    Ok(Some(mechanism))
}

fn create_slot(kvm: &mut Kvm, name: &str, input: &ExplainInput) -> Result<(), ExplainError> {
    let (ioctl, result) = if kvm.profile().era.has_user_memory2() {
        let region = kvm_userspace_memory_region2 {
            slot: 0,
            flags: input.slot_flags,
            guest_phys_addr: EXPLAIN_GPA,
            memory_size: EXPLAIN_SLOT_SIZE,
            userspace_addr: EXPLAIN_HVA,
            ..Default::default()
        };
        (
            "KVM_SET_USER_MEMORY_REGION2",
            kvm.set_user_memory_region2(&region),
        )
    } else {
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: input.slot_flags,
            guest_phys_addr: EXPLAIN_GPA,
            memory_size: EXPLAIN_SLOT_SIZE,
            userspace_addr: EXPLAIN_HVA,
        };
        (
            "KVM_SET_USER_MEMORY_REGION",
            kvm.set_user_memory_region(&region),
        )
    };
    result.map_err(|errno| ExplainError::SetUserMemoryRegion {
        profile: name.to_string(),
        ioctl,
        flags: MemslotFlags(input.slot_flags),
        errno,
        hint: refusal_hint(kvm.profile(), input.slot_flags),
    })?;
    if input.mmio {
        kvm.host_map_mmio(EXPLAIN_HVA, EXPLAIN_SLOT_SIZE);
    }
    Ok(())
}

/// Points at the kernels that accept the proposal's flag when another one refused it.
fn refusal_hint(profile: KernelProfile, flags: u32) -> &'static str {
    let proposal_flag = flags & uapi::memslot::KVM_MEM_NON_COHERENT_DMA != 0;
    if proposal_flag && profile.proposal != Proposal::MemslotFlag {
        " (KVM_MEM_NON_COHERENT_DMA exists only in 6.7+memslot-flag and 6.16+memslot-flag)"
    } else {
        ""
    }
}

/// The IA32_PAT value and entry index for the access.
fn guest_pat(pat: GuestPat) -> Result<(u64, u8), ExplainError> {
    match pat {
        GuestPat::Type(t) => {
            let mut entries = Pat::reset().entries();
            entries[0] = t;
            let pat = Pat::from_entries(entries).ok_or(ExplainError::GuestPatType(t))?;
            Ok((pat.value(), 0))
        }
        GuestPat::Value { pat, index } => {
            if index > 7 {
                return Err(ExplainError::PatIndex(index));
            }
            Pat::new(pat).map_err(ExplainError::SetGuestPat)?;
            Ok((pat, index))
        }
    }
}

#[cfg(test)]
mod tests;
