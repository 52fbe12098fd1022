//! `KVM_CHECK_EXTENSION`: what each profile answers for the capabilities the project asks about.
//!
//! Models `kvm_vm_ioctl_check_extension_generic()` (`virt/kvm/kvm_main.c`) and
//! `kvm_vm_ioctl_check_extension()` (`arch/x86/kvm/x86.c`). Numbers a profile does not know
//! answer 0, as the kernel's `default:` does.

use uapi::cap::{
    KVM_CAP_DISABLE_QUIRKS2, KVM_CAP_GUEST_MEMFD, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    KVM_CAP_MULTI_ADDRESS_SPACE, KVM_CAP_NR_MEMSLOTS, KVM_CAP_READONLY_MEM,
    KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA, KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS,
    KVM_CAP_USER_MEMORY2,
};

use crate::profile::{Era, KernelProfile, Proposal};
use crate::quirks::supported_quirks;

/// `KVM_CAP_USER_MEMORY` (3).
pub const KVM_CAP_USER_MEMORY: u32 = 3;
/// `KVM_CAP_DISABLE_QUIRKS` (116).
pub const KVM_CAP_DISABLE_QUIRKS: u32 = 116;
/// `KVM_CAP_VM_TYPES` (235, 6.8+).
pub const KVM_CAP_VM_TYPES: u32 = 235;
/// 237 and 238: two x86 capabilities of 6.10+ (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`,
/// `KVM_CAP_X86_GUEST_MODE`) that our 6.18 host reports as 1; answered for the 6.16 era only,
/// as measured.
const CAPS_MEASURED_ON_6_18: [u32; 2] = [237, 238];
/// `KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE`: `KVM_GET_DIRTY_LOG` stops clearing the bitmap.
pub const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE: u64 = 1;
/// `KVM_DIRTY_LOG_INITIALLY_SET`: new dirty bitmaps start all ones.
pub const KVM_DIRTY_LOG_INITIALLY_SET: u64 = 2;
/// `KVM_DIRTY_LOG_MANUAL_CAPS`: both of the above.
pub const KVM_DIRTY_LOG_MANUAL_CAPS: u64 =
    KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;

/// `KVM_CHECK_EXTENSION(cap)` for `profile`; `on_vm` says whether it is asked on a VM fd
/// (a default-type VM) rather than on `/dev/kvm`.
///
/// ```
/// use kvm_model::{cap::check_extension, KernelProfile, Vendor};
/// let flag = KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?;
/// let upstream = KernelProfile::parse("6.16", Vendor::Intel)?;
/// // 236 is the proposal's cap in its profiles, upstream's PRE_FAULT_MEMORY elsewhere.
/// assert_eq!(check_extension(&flag, 236, true), 1);
/// assert_eq!(check_extension(&upstream, 236, true), 1);
/// assert_eq!(check_extension(&KernelProfile::this_host(), 236, true), 0);
/// # Ok::<(), kvm_model::ProfileError>(())
/// ```
pub fn check_extension(profile: &KernelProfile, cap: u32, on_vm: bool) -> i64 {
    let era = profile.era;
    match cap {
        KVM_CAP_USER_MEMORY | KVM_CAP_READONLY_MEM | KVM_CAP_DISABLE_QUIRKS => 1,
        KVM_CAP_NR_MEMSLOTS => i64::from(uapi::memslot::KVM_USER_MEM_SLOTS_X86),
        // Compiled out (`#if KVM_MAX_NR_ADDRESS_SPACES > 1`) without SMM, hence 0, not 1.
        KVM_CAP_MULTI_ADDRESS_SPACE => match profile.address_spaces() {
            1 => 0,
            n => i64::from(n),
        },
        KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 => KVM_DIRTY_LOG_MANUAL_CAPS as i64,
        KVM_CAP_DISABLE_QUIRKS2 => supported_quirks(profile) as i64,
        KVM_CAP_USER_MEMORY2 | KVM_CAP_VM_TYPES => i64::from(era.has_user_memory2()),
        KVM_CAP_GUEST_MEMFD => match era {
            Era::V6_7 => 0,
            // Built without it: the case is compiled out.
            _ if !profile.guest_memfd => 0,
            // `!kvm || kvm_arch_has_private_mem(kvm)`: a default VM has no private memory.
            Era::V6_11SelfSnoop | Era::V6_12 => i64::from(!on_vm),
            // 6.18 offers guest_memfd to every VM type (measured).
            Era::V6_16 => 1,
        },
        KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA => match (profile.proposal, era) {
            (Proposal::MemslotFlag, _) => 1,
            (_, Era::V6_7) => 0,
            // Upstream's KVM_CAP_PRE_FAULT_MEMORY (6.10+): `tdp_enabled`.
            _ => i64::from(profile.cpu.tdp),
        },
        // ChromeOS' number for the flag; upstream's holder is arm64-only.
        KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS => 0,
        c if CAPS_MEASURED_ON_6_18.contains(&c) => i64::from(era == Era::V6_16),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{CpuFacts, Vendor};

    #[test]
    fn this_host_matches_the_probe() {
        let host = KernelProfile::this_host();
        let expected: [(u32, i64); 14] = [
            (3, 1),
            (10, 32764),
            (81, 1),
            (116, 1),
            (118, 0),
            (168, 3),
            (213, 0x5ff),
            (231, 1),
            (234, 1),
            (235, 1),
            (236, 0),
            (237, 1),
            (238, 1),
            (239, 0),
        ];
        for (cap, value) in expected {
            assert_eq!(check_extension(&host, cap, true), value, "cap {cap}");
            assert_eq!(
                check_extension(&host, cap, false),
                value,
                "cap {cap} on /dev/kvm"
            );
        }
        assert_eq!(check_extension(&host, 240, true), 0);
    }

    #[test]
    fn eras_and_proposals_differ_where_upstream_did() {
        let intel = |n| KernelProfile::parse(n, Vendor::Intel).unwrap();
        assert_eq!(
            check_extension(&intel("6.7"), KVM_CAP_USER_MEMORY2, true),
            0
        );
        assert_eq!(
            check_extension(&intel("6.7+memslot-flag"), KVM_CAP_USER_MEMORY2, true),
            0
        );
        assert_eq!(
            check_extension(&intel("6.12"), KVM_CAP_USER_MEMORY2, true),
            1
        );
        assert_eq!(check_extension(&intel("6.7"), 118, true), 2);
        assert_eq!(check_extension(&intel("6.7"), 236, true), 0);
        assert_eq!(check_extension(&intel("6.7+virtio-device"), 236, true), 0);
        assert_eq!(check_extension(&intel("6.7+memslot-flag"), 236, true), 1);
        assert_eq!(check_extension(&intel("6.12"), 236, true), 1);
        let no_tdp = intel("6.12").with_cpu(CpuFacts {
            self_snoop: true,
            tdp: false,
        });
        assert_eq!(check_extension(&no_tdp, 236, true), 0);
        assert_eq!(check_extension(&intel("6.16+memslot-flag"), 239, true), 0);
        assert_eq!(
            check_extension(&intel("6.12"), KVM_CAP_GUEST_MEMFD, true),
            0
        );
        assert_eq!(
            check_extension(&intel("6.12"), KVM_CAP_GUEST_MEMFD, false),
            1
        );
        assert_eq!(check_extension(&intel("6.12"), 213, true), 0xff);
        assert_eq!(check_extension(&intel("6.12"), 237, true), 0);
    }
}
