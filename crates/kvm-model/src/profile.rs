//! Kernel profiles: which KVM the model is (era, proposal applied), on which CPU vendor, with
//! which CPU facts. Every behavioral difference in the crate is a function of a
//! [`KernelProfile`], so the same call sequence can be run against each design.
//!
//! Eras (system.md §5): `6.7` is the seeds' base; `6.11-selfsnoop` is the short-lived "always
//! honor guest PAT on self-snoop CPUs" kernel (MTRR virtualization already gone); `6.12` covers
//! 6.12–6.15 (guest PAT honored only with noncoherent DMA); `6.16` is the
//! `KVM_X86_QUIRK_IGNORE_GUEST_PAT` era as shipped up to 6.18, the kernel our machines run.

use std::fmt;

/// The upstream kernel generation a profile models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Era {
    /// v6.7, the base of both seeds: guest MTRRs emulated into the EPT type, no
    /// `KVM_SET_USER_MEMORY_REGION2`.
    V6_7,
    /// The 6.11 kernel with "KVM: VMX: Always honor guest PAT on CPUs that support self-snoop"
    /// (later reverted). Guest MTRR virtualization is gone.
    V6_11SelfSnoop,
    /// v6.12 – v6.15: guest PAT honored only while the VM has noncoherent DMA;
    /// `KVM_X86_QUIRK_SLOT_ZAP_ALL` exists.
    V6_12,
    /// v6.16 and later (as seen on 6.18): `KVM_X86_QUIRK_IGNORE_GUEST_PAT` decides.
    V6_16,
}

impl Era {
    /// Whether `KVM_SET_USER_MEMORY_REGION2` (and guest_memfd) exist: v6.8 and later.
    pub const fn has_user_memory2(self) -> bool {
        !matches!(self, Era::V6_7)
    }

    /// Whether guest MTRRs and guest CR0.CD are emulated into the EPT memory type
    /// (`kvm_mtrr_get_guest_memory_type`, removed in 6.11).
    pub const fn emulates_guest_mtrrs(self) -> bool {
        matches!(self, Era::V6_7)
    }

    /// Whether `access_ok()` bounds user addresses by `USER_PTR_MAX` (= `TASK_SIZE_MAX`),
    /// as x86-64 does since "x86: fix user address masking non-canonical speculation issue"
    /// (6.12). Earlier kernels only required the end of the range to stay below bit 63.
    pub const fn access_ok_bounded_by_task_size(self) -> bool {
        matches!(self, Era::V6_12 | Era::V6_16)
    }
}

/// The noncoherent-DMA proposal applied on top of the era.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proposal {
    /// Upstream as it is.
    None,
    /// The RFC's KVM virtio device (seed `002_…`): `KVM_DEV_TYPE_VIRTIO` (12) raises the VM's
    /// noncoherent DMA count.
    VirtioDevice,
    /// The memslot flag series v1 (seed `000_…`): `KVM_MEM_NON_COHERENT_DMA` (8) and cap 236.
    MemslotFlag,
}

/// The CPU vendor, which decides the vendor module (`kvm_intel` / VMX or `kvm_amd` / SVM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// Intel: VMX, EPT.
    Intel,
    /// AMD: SVM, NPT.
    Amd,
}

impl Vendor {
    /// `"intel"` or `"amd"`.
    pub const fn name(self) -> &'static str {
        match self {
            Vendor::Intel => "intel",
            Vendor::Amd => "amd",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Vendor {
    type Err = ProfileError;

    fn from_str(s: &str) -> Result<Vendor, ProfileError> {
        match s.to_ascii_lowercase().as_str() {
            "intel" => Ok(Vendor::Intel),
            "amd" => Ok(Vendor::Amd),
            _ => Err(ProfileError::UnknownVendor(s.to_string())),
        }
    }
}

/// CPU and module facts that change KVM's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuFacts {
    /// CPUID.1:EDX\[27\] self-snoop (`X86_FEATURE_SELFSNOOP`). Matters only on Intel: it gates
    /// the 6.11 "always honor guest PAT" rule and whether 6.16 reports `IGNORE_GUEST_PAT`.
    pub self_snoop: bool,
    /// Two-dimensional paging on (EPT / NPT, `tdp_enabled`); false = shadow paging.
    pub tdp: bool,
}

impl Default for CpuFacts {
    /// A current server CPU with TDP on and self-snoop.
    fn default() -> CpuFacts {
        CpuFacts {
            self_snoop: true,
            tdp: true,
        }
    }
}

/// One modeled kernel: era, proposal, vendor and CPU facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelProfile {
    /// The kernel generation.
    pub era: Era,
    /// The proposal applied, if any.
    pub proposal: Proposal,
    /// The CPU vendor.
    pub vendor: Vendor,
    /// CPU facts.
    pub cpu: CpuFacts,
    /// The kernel offers guest_memfd (built with `CONFIG_KVM_GUEST_MEMFD`): in the 6.16 era
    /// to every VM type, in 6.8–6.15 to VM types with private memory only; 6.7 has none
    /// either way. Kernels of one version differ here: of two `kvm_pvm` 6.18.44 hosts of
    /// this project one answered `KVM_CAP_GUEST_MEMFD` with 1, the other with 0 (stop 16),
    /// so the differential test takes it from the host it runs on.
    pub guest_memfd: bool,
}

/// Why a profile could not be built from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The kernel name is not one of [`KernelProfile::NAMES`].
    #[error("unknown kernel profile \"{0}\" (expected one of {names})", names = KernelProfile::NAMES.join(", "))]
    UnknownKernel(String),
    /// The vendor is neither `intel` nor `amd`.
    #[error("unknown CPU vendor \"{0}\" (expected intel or amd)")]
    UnknownVendor(String),
}

const PROFILES: [(&str, Era, Proposal); 7] = [
    ("6.7", Era::V6_7, Proposal::None),
    ("6.7+virtio-device", Era::V6_7, Proposal::VirtioDevice),
    ("6.7+memslot-flag", Era::V6_7, Proposal::MemslotFlag),
    ("6.11-selfsnoop", Era::V6_11SelfSnoop, Proposal::None),
    ("6.12", Era::V6_12, Proposal::None),
    ("6.16", Era::V6_16, Proposal::None),
    ("6.16+memslot-flag", Era::V6_16, Proposal::MemslotFlag),
];

impl KernelProfile {
    /// The profile names accepted by [`KernelProfile::parse`] (design.md "Key ideas").
    pub const NAMES: [&'static str; 7] = [
        PROFILES[0].0,
        PROFILES[1].0,
        PROFILES[2].0,
        PROFILES[3].0,
        PROFILES[4].0,
        PROFILES[5].0,
        PROFILES[6].0,
    ];

    /// The profile named `name` on `vendor`, with default CPU facts (self-snoop, TDP on).
    ///
    /// ```
    /// use kvm_model::{Era, KernelProfile, Proposal, Vendor};
    /// let p = KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?;
    /// assert_eq!((p.era, p.proposal), (Era::V6_16, Proposal::MemslotFlag));
    /// assert!(KernelProfile::parse("6.13", Vendor::Intel).is_err());
    /// # Ok::<(), kvm_model::ProfileError>(())
    /// ```
    pub fn parse(name: &str, vendor: Vendor) -> Result<KernelProfile, ProfileError> {
        let (_, era, proposal) = PROFILES
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| ProfileError::UnknownKernel(name.to_string()))?;
        Ok(KernelProfile {
            era: *era,
            proposal: *proposal,
            vendor,
            cpu: CpuFacts::default(),
            guest_memfd: true,
        })
    }

    /// The profile's name, one of [`KernelProfile::NAMES`]. A combination that no name covers
    /// (built by hand, e.g. 6.12 with the virtio device) is named after its era.
    pub fn name(&self) -> &'static str {
        PROFILES
            .iter()
            .find(|(_, e, p)| *e == self.era && *p == self.proposal)
            .or_else(|| {
                PROFILES
                    .iter()
                    .find(|(_, e, p)| *e == self.era && *p == Proposal::None)
            })
            .map_or("6.16", |(n, _, _)| *n)
    }

    /// Every named profile on both vendors, with default CPU facts.
    pub fn all() -> Vec<KernelProfile> {
        PROFILES
            .iter()
            .flat_map(|(_, era, proposal)| {
                [Vendor::Intel, Vendor::Amd].map(|vendor| KernelProfile {
                    era: *era,
                    proposal: *proposal,
                    vendor,
                    cpu: CpuFacts::default(),
                    guest_memfd: true,
                })
            })
            .collect()
    }

    /// The profile of this project's machines: a 6.18 kernel (the 6.16 era) whose `/dev/kvm`
    /// is `kvm_pvm`, a shadow-paging KVM, on an AMD EPYC (system.md §7).
    ///
    /// `self_snoop` is true as the project's contract fixes it; the EPYC does not report
    /// CPUID.1:EDX\[27\], and on AMD the bit changes nothing in the model.
    ///
    /// # Calibration against the real `/dev/kvm` (probe run on this host, kernel 6.18.44)
    ///
    /// A throwaway C probe issued raw ioctls; the model answers each of these the same way:
    ///
    /// - `KVM_CHECK_EXTENSION` (system and VM fd alike): `NR_MEMSLOTS` 32764,
    ///   `MULTI_ADDRESS_SPACE` **0** (built without SMM: one address space), `READONLY_MEM` 1,
    ///   `MANUAL_DIRTY_LOG_PROTECT2` 3, `DISABLE_QUIRKS` 1, `DISABLE_QUIRKS2` 0x5ff (no bit 9:
    ///   TDP is off), `USER_MEMORY2` 1, `GUEST_MEMFD` 1 (0 on another host of this kind,
    ///   see [`guest_memfd`](Self::guest_memfd)), `VM_TYPES` 1, 236 0 (upstream's
    ///   `PRE_FAULT_MEMORY` = `tdp_enabled`), 237 1, 238 1, 239 0.
    /// - v1 region: flag bits 0 and 1 accepted, bits 2–31 `EINVAL` (bit 3, the proposal's
    ///   flag, included). v2: the same for bits 0, 1 and 3–31; bit 2 (`GUEST_MEMFD`) is a valid
    ///   flag, so the fd is looked up: `guest_memfd` -1 or a closed fd → `EBADF`, an open
    ///   non-guest_memfd fd (stdin, the kvm fd) → `EINVAL`; `GUEST_MEMFD|LOG_DIRTY_PAGES` and
    ///   `GUEST_MEMFD|READONLY` → `EINVAL`; unaligned `guest_memfd_offset` → `EINVAL`;
    ///   nonzero `pad1`/`pad2` are ignored (success).
    /// - slot id 32763 accepted, 32764/32767/0xffff `EINVAL`; `as_id` 1, 2, 0xffff `EINVAL`.
    /// - unaligned size / gpa / user address `EINVAL`; user address 0 (unmapped) accepted;
    ///   `userspace_addr + size` up to 0x7fff_ffff_f000 (`TASK_SIZE_MAX`) accepted, one page
    ///   more `EINVAL`; kernel-half and wrapping addresses `EINVAL`; gpa+size overflow
    ///   `EINVAL`; gpa 1<<52 `EINVAL` (beyond `kvm_mmu_max_gfn()`, 52 bits under shadow
    ///   paging); 2^31 pages `EINVAL`, 2^31-1 pages accepted.
    /// - delete of a missing slot `EINVAL` (also with bad flags, slot 32764, as_id 2);
    ///   identical re-set succeeds; size or user address change `EINVAL`; READONLY toggle
    ///   `EINVAL`; LOG_DIRTY_PAGES toggles succeed; CREATE/MOVE overlap `EEXIST`; v2 modify
    ///   with `GUEST_MEMFD` `EINVAL`.
    /// - `KVM_GET_DIRTY_LOG`: slot without a dirty bitmap (no LOG_DIRTY_PAGES) or missing slot
    ///   `ENOENT`; slot id ≥ 32764 or as_id ≥ 1 `EINVAL`; bad or NULL bitmap pointer `EFAULT`
    ///   (not modeled: the model returns the bitmap).
    /// - `KVM_CREATE_DEVICE`: only type 4 (VFIO) exists, every other type (0–14, 100) `ENODEV`,
    ///   with or without `KVM_CREATE_DEVICE_TEST`; unknown flag bits are ignored; TEST of
    ///   type 4 succeeds even while a VFIO device exists; a second VFIO device `EBUSY`, again
    ///   possible after the first fd is closed.
    /// - VFIO device fd: `HAS_DEVICE_ATTR` (1,1) and (1,2) → 0, (1,3), (1,4), (0,0), (2,1),
    ///   (1,0) → `ENXIO`; `GET_DEVICE_ATTR` always `EPERM` (no accessor); `SET_DEVICE_ATTR`
    ///   (1,1)/(1,2) with fd -1 `EBADF`, NULL `addr` `EFAULT`, a non-VFIO fd `EINVAL` (add) /
    ///   `ENOENT` (del); other group/attr `ENXIO`; `kvm_device_attr.flags` ignored.
    /// - `KVM_ENABLE_CAP(DISABLE_QUIRKS2)`: 0, 0x1, 0x2, 0x1ff, 0x400, 0x5ff accepted, and
    ///   again when repeated; 0x200, 0x800, 0x7ff, 1<<63 `EINVAL`; nonzero `flags` `EINVAL`;
    ///   `DISABLE_QUIRKS` (v1) takes any mask; caps 236 and 239 `EINVAL`.
    ///
    /// Seen but outside the model's uAPI surface: on this host `KVM_GET_MSRS(IA32_PAT)` reads
    /// 0 and `KVM_SET_MSRS(IA32_PAT)` accepts reserved encodings (kvm_pvm does not keep the
    /// guest PAT), `MTRRcap` reads 0; the model follows upstream KVM there (reset PAT, #GP on
    /// reserved encodings, `MTRRcap` = 0x508). MTRR MSR validation matched upstream.
    pub fn this_host() -> KernelProfile {
        KernelProfile {
            era: Era::V6_16,
            proposal: Proposal::None,
            vendor: Vendor::Amd,
            cpu: CpuFacts {
                self_snoop: true,
                tdp: false,
            },
            guest_memfd: true,
        }
    }

    /// The same kernel on a CPU with other facts.
    pub fn with_cpu(self, cpu: CpuFacts) -> KernelProfile {
        KernelProfile { cpu, ..self }
    }

    /// Whether this profile stands for our `kvm_pvm` hosts: the 6.16 era, AMD, shadow paging.
    /// They are built without `CONFIG_KVM_SMM`, which the model cannot tell from the other
    /// facts; this is the one rule that singles them out.
    pub const fn is_pvm_host(&self) -> bool {
        matches!(self.era, Era::V6_16) && matches!(self.vendor, Vendor::Amd) && !self.cpu.tdp
    }

    /// Number of memslot address spaces: 2 on x86 with SMM (normal + SMM), 1 on the kvm_pvm
    /// hosts (`kvm_arch_nr_memslot_as_ids()`).
    pub const fn address_spaces(&self) -> u16 {
        if self.is_pvm_host() {
            1
        } else {
            uapi::memslot::KVM_ADDRESS_SPACE_NUM_X86
        }
    }

    /// Host MAXPHYADDR assumed for the profile's CPU (46 on Intel servers, 48 on AMD EPYC),
    /// which bounds guest physical addresses when TDP is on (`kvm_mmu_max_gfn()`).
    pub const fn host_phys_bits(&self) -> u8 {
        match self.vendor {
            Vendor::Intel => 46,
            Vendor::Amd => 48,
        }
    }

    /// Whether `vmx_get_mt_mask` is in play at all: Intel with EPT (`shadow_memtype_mask`
    /// non-zero). SVM has no memtype mask and shadow paging builds no EPT leaves.
    pub const fn has_ept_memtype(&self) -> bool {
        matches!(self.vendor, Vendor::Intel) && self.cpu.tdp
    }
}

impl fmt::Display for KernelProfile {
    /// `6.16+memslot-flag/intel`, followed by the facts that differ from the default:
    /// `6.16/amd (TDP off)`, `6.12/intel (no self-snoop)`, `6.16/amd (TDP off, no
    /// guest_memfd)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name(), self.vendor)?;
        let mut notes = Vec::new();
        if !self.cpu.self_snoop {
            notes.push("no self-snoop");
        }
        if !self.cpu.tdp {
            notes.push("TDP off");
        }
        if !self.guest_memfd && self.era.has_user_memory2() {
            notes.push("no guest_memfd");
        }
        if !notes.is_empty() {
            write!(f, " ({})", notes.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in KernelProfile::NAMES {
            let p = KernelProfile::parse(name, Vendor::Amd).unwrap();
            assert_eq!(p.name(), name);
            assert_eq!(p.to_string(), format!("{name}/amd"));
        }
        assert_eq!(KernelProfile::all().len(), 14);
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = KernelProfile::parse("6.12+memslot-flag", Vendor::Intel).unwrap_err();
        assert!(err.to_string().contains("6.16+memslot-flag"), "{err}");
        assert!("arm".parse::<Vendor>().is_err());
        assert_eq!("AMD".parse::<Vendor>(), Ok(Vendor::Amd));
    }

    #[test]
    fn this_host_is_the_pvm_profile() {
        let host = KernelProfile::this_host();
        assert!(host.is_pvm_host());
        assert_eq!(host.address_spaces(), 1);
        assert_eq!(host.to_string(), "6.16/amd (TDP off)");
        let upstream = KernelProfile::parse("6.16", Vendor::Amd).unwrap();
        assert_eq!(upstream.address_spaces(), 2);
        assert!(!host.has_ept_memtype());
        assert!(
            KernelProfile::parse("6.7", Vendor::Intel)
                .unwrap()
                .has_ept_memtype()
        );
    }
}
