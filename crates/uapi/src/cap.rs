//! Capabilities: `KVM_CHECK_EXTENSION` numbers the project asks about, and `KVM_ENABLE_CAP`.
//!
//! `Cap` mirrors kvm-ioctls' `Cap`: each variant names a `KVM_CAP_*` and carries its number;
//! [`Cap::Unknown`] passes any other number through instead of failing.

use std::fmt;

pub use kvm_bindings::kvm_enable_cap;

/// `KVM_CAP_NR_MEMSLOTS` (10): number of user memslots per address space (32764 on x86).
pub const KVM_CAP_NR_MEMSLOTS: u32 = kvm_bindings::KVM_CAP_NR_MEMSLOTS;
/// `KVM_CAP_READONLY_MEM` (81): `KVM_MEM_READONLY` is accepted.
pub const KVM_CAP_READONLY_MEM: u32 = kvm_bindings::KVM_CAP_READONLY_MEM;
/// `KVM_CAP_MULTI_ADDRESS_SPACE` (118): number of address spaces (2 on x86: normal, SMM).
pub const KVM_CAP_MULTI_ADDRESS_SPACE: u32 = kvm_bindings::KVM_CAP_MULTI_ADDRESS_SPACE;
/// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` (168).
pub const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: u32 = kvm_bindings::KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
/// `KVM_CAP_DISABLE_QUIRKS2` (213): `KVM_CHECK_EXTENSION` returns the disableable quirk
/// mask; `KVM_ENABLE_CAP` with `args[0]` = mask disables those quirks (one way).
pub const KVM_CAP_DISABLE_QUIRKS2: u32 = kvm_bindings::KVM_CAP_DISABLE_QUIRKS2;
/// `KVM_CAP_USER_MEMORY2` (231): `KVM_SET_USER_MEMORY_REGION2` exists (6.8+).
pub const KVM_CAP_USER_MEMORY2: u32 = kvm_bindings::KVM_CAP_USER_MEMORY2;
/// `KVM_CAP_GUEST_MEMFD` (234).
pub const KVM_CAP_GUEST_MEMFD: u32 = kvm_bindings::KVM_CAP_GUEST_MEMFD;

/// `KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA` (236). **Proposal** (memslot-flag v1): reports
/// that `KVM_MEM_NON_COHERENT_DMA` is accepted.
///
/// Collision: upstream gave 236 to `KVM_CAP_PRE_FAULT_MEMORY` (6.10), so on a current kernel
/// a non-zero answer means something else entirely. Treat it as a hint only; the flag is
/// supported when a region carrying it is accepted.
pub const KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA: u32 = 236;
/// The upstream holder of 236.
pub const KVM_CAP_PRE_FAULT_MEMORY: u32 = kvm_bindings::KVM_CAP_PRE_FAULT_MEMORY;

/// 239: the number ChromeOS kernels used for the same capability after 236 collided.
/// **Downstream**, never upstream: upstream 239 is `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS`
/// (arm64 only, so 0 on x86). Same rule: a hint, never proof.
pub const KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS: u32 = 239;
/// The upstream holder of 239 (`include/uapi/linux/kvm.h`, 6.14+).
pub const KVM_CAP_ARM_WRITABLE_IMP_ID_REGS: u32 = 239;

/// A capability number with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cap {
    /// `KVM_CAP_NR_MEMSLOTS` (10).
    NrMemslots,
    /// `KVM_CAP_READONLY_MEM` (81).
    ReadonlyMem,
    /// `KVM_CAP_MULTI_ADDRESS_SPACE` (118).
    MultiAddressSpace,
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` (168).
    ManualDirtyLogProtect2,
    /// `KVM_CAP_DISABLE_QUIRKS2` (213).
    DisableQuirks2,
    /// `KVM_CAP_USER_MEMORY2` (231).
    UserMemory2,
    /// `KVM_CAP_GUEST_MEMFD` (234).
    GuestMemfd,
    /// 236: `KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA` (proposal) / `KVM_CAP_PRE_FAULT_MEMORY`.
    UserConfigureNoncoherentDma,
    /// 239: ChromeOS' number for the same (downstream) / `KVM_CAP_ARM_WRITABLE_IMP_ID_REGS`.
    UserConfigureNoncoherentDmaCros,
    /// Any other number.
    Unknown(u32),
}

impl Cap {
    /// Every named capability, for listings and probes.
    pub const NAMED: [Cap; 9] = [
        Cap::NrMemslots,
        Cap::ReadonlyMem,
        Cap::MultiAddressSpace,
        Cap::ManualDirtyLogProtect2,
        Cap::DisableQuirks2,
        Cap::UserMemory2,
        Cap::GuestMemfd,
        Cap::UserConfigureNoncoherentDma,
        Cap::UserConfigureNoncoherentDmaCros,
    ];

    /// The `KVM_CAP_*` number.
    pub const fn raw(self) -> u32 {
        match self {
            Cap::NrMemslots => KVM_CAP_NR_MEMSLOTS,
            Cap::ReadonlyMem => KVM_CAP_READONLY_MEM,
            Cap::MultiAddressSpace => KVM_CAP_MULTI_ADDRESS_SPACE,
            Cap::ManualDirtyLogProtect2 => KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
            Cap::DisableQuirks2 => KVM_CAP_DISABLE_QUIRKS2,
            Cap::UserMemory2 => KVM_CAP_USER_MEMORY2,
            Cap::GuestMemfd => KVM_CAP_GUEST_MEMFD,
            Cap::UserConfigureNoncoherentDma => KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA,
            Cap::UserConfigureNoncoherentDmaCros => KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS,
            Cap::Unknown(n) => n,
        }
    }

    /// Names a raw number.
    pub fn from_raw(n: u32) -> Cap {
        Cap::NAMED
            .into_iter()
            .find(|c| c.raw() == n)
            .unwrap_or(Cap::Unknown(n))
    }

    /// The KVM name (for 236, the name the proposal gave it; for 239, that name with a
    /// `_CROS` suffix of ours, since the downstream kernels reused the proposal's name).
    pub const fn name(self) -> &'static str {
        match self {
            Cap::NrMemslots => "KVM_CAP_NR_MEMSLOTS",
            Cap::ReadonlyMem => "KVM_CAP_READONLY_MEM",
            Cap::MultiAddressSpace => "KVM_CAP_MULTI_ADDRESS_SPACE",
            Cap::ManualDirtyLogProtect2 => "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
            Cap::DisableQuirks2 => "KVM_CAP_DISABLE_QUIRKS2",
            Cap::UserMemory2 => "KVM_CAP_USER_MEMORY2",
            Cap::GuestMemfd => "KVM_CAP_GUEST_MEMFD",
            Cap::UserConfigureNoncoherentDma => "KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA",
            Cap::UserConfigureNoncoherentDmaCros => "KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS",
            Cap::Unknown(_) => "unknown capability",
        }
    }

    /// Parses a `KVM_CAP_*` name (with or without the prefix, any case) or a number.
    pub fn parse(s: &str) -> Option<Cap> {
        if let Ok(n) = s.parse::<u32>() {
            return Some(Cap::from_raw(n));
        }
        let upper = s.to_ascii_uppercase();
        let full = if upper.starts_with("KVM_CAP_") {
            upper
        } else {
            format!("KVM_CAP_{upper}")
        };
        Cap::NAMED.into_iter().find(|c| c.name() == full)
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::Unknown(n) => write!(f, "capability {n}"),
            c => write!(f, "{} ({})", c.name(), c.raw()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_uapi() {
        assert_eq!(KVM_CAP_NR_MEMSLOTS, 10);
        assert_eq!(KVM_CAP_DISABLE_QUIRKS2, 213);
        assert_eq!(KVM_CAP_USER_MEMORY2, 231);
        assert_eq!(KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA, 236);
        assert_eq!(KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS, 239);
    }

    #[test]
    fn proposal_numbers_collide_upstream() {
        // Documented collisions: a VMM must not trust these numbers on current kernels.
        assert_eq!(
            KVM_CAP_PRE_FAULT_MEMORY,
            KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA
        );
        assert_eq!(
            KVM_CAP_ARM_WRITABLE_IMP_ID_REGS,
            KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA_CROS
        );
    }

    #[test]
    fn cap_round_trips_and_parses() {
        for c in Cap::NAMED {
            assert_eq!(Cap::from_raw(c.raw()), c);
            assert_eq!(Cap::parse(c.name()), Some(c), "{c}");
        }
        assert_eq!(Cap::from_raw(7), Cap::Unknown(7));
        assert_eq!(Cap::parse("user_memory2"), Some(Cap::UserMemory2));
        assert_eq!(Cap::parse("213"), Some(Cap::DisableQuirks2));
        assert_eq!(Cap::parse("no_such_cap"), None);
    }
}
