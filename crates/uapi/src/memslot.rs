//! Memslots: the flags of `struct kvm_userspace_memory_region{,2}`, which flags each ioctl
//! version accepts, and the `slot` field's encoding (address space and id).
//!
//! Upstream rules live in `virt/kvm/kvm_main.c` (`check_memory_region_flags()`,
//! `kvm_set_memory_region()`); the proposal adds [`KVM_MEM_NON_COHERENT_DMA`] to both ioctls
//! (seed `000_…`, patch 1/4).

use std::fmt;

pub use kvm_bindings::{kvm_userspace_memory_region, kvm_userspace_memory_region2};

/// `KVM_MEM_LOG_DIRTY_PAGES` (bit 0): track writes for `KVM_GET_DIRTY_LOG`. Upstream.
pub const KVM_MEM_LOG_DIRTY_PAGES: u32 = kvm_bindings::KVM_MEM_LOG_DIRTY_PAGES;
/// `KVM_MEM_READONLY` (bit 1): guest writes exit to userspace as MMIO. Upstream; needs
/// `KVM_CAP_READONLY_MEM`.
pub const KVM_MEM_READONLY: u32 = kvm_bindings::KVM_MEM_READONLY;
/// `KVM_MEM_GUEST_MEMFD` (bit 2): private memory from a guest_memfd. Upstream since 6.8;
/// accepted only by `KVM_SET_USER_MEMORY_REGION2` and only for VM types that support it.
pub const KVM_MEM_GUEST_MEMFD: u32 = kvm_bindings::KVM_MEM_GUEST_MEMFD;
/// `KVM_MEM_NON_COHERENT_DMA` (bit 3, value 8). **Proposal** (memslot-flag series v1,
/// seed `000_…`): the slot is the target of non-snooping DMA, so on VMX KVM builds its EPT
/// leaves with type WB and IPAT clear (guest PAT decides). Fixed for the slot's life. No
/// shipping kernel accepts it: upstream returns `EINVAL` (unknown flag).
///
/// History: the 2020 `KVM_MEM_DMA` series used bit 2 for a flag that raised the VM-wide
/// noncoherent count; upstream later gave bit 2 to `KVM_MEM_GUEST_MEMFD`.
pub const KVM_MEM_NON_COHERENT_DMA: u32 = 1 << 3;

/// Flags upstream `KVM_SET_USER_MEMORY_REGION` (v1) accepts on x86 (with READONLY support).
pub const KVM_SET_USER_MEMORY_REGION_V1_FLAGS: u32 = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY;
/// Flags upstream `KVM_SET_USER_MEMORY_REGION2` accepts on x86 for a VM with guest_memfd.
pub const KVM_SET_USER_MEMORY_REGION2_FLAGS: u32 =
    KVM_SET_USER_MEMORY_REGION_V1_FLAGS | KVM_MEM_GUEST_MEMFD;

/// A set of memslot flags, with names for display and parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MemslotFlags(pub u32);

/// The named flags, in bit order, as `(bit value, KVM name, short name)`.
pub const MEMSLOT_FLAG_NAMES: [(u32, &str, &str); 4] = [
    (
        KVM_MEM_LOG_DIRTY_PAGES,
        "KVM_MEM_LOG_DIRTY_PAGES",
        "log-dirty",
    ),
    (KVM_MEM_READONLY, "KVM_MEM_READONLY", "readonly"),
    (KVM_MEM_GUEST_MEMFD, "KVM_MEM_GUEST_MEMFD", "guest-memfd"),
    (
        KVM_MEM_NON_COHERENT_DMA,
        "KVM_MEM_NON_COHERENT_DMA",
        "non-coherent-dma",
    ),
];

/// A flag name that [`MemslotFlags::parse_list`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFlag(pub String);

impl fmt::Display for UnknownFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<&str> = MEMSLOT_FLAG_NAMES.iter().map(|(_, _, s)| *s).collect();
        write!(
            f,
            "unknown memslot flag \"{}\" (expected one of {}, a KVM_MEM_* name, or a number)",
            self.0,
            known.join(", ")
        )
    }
}

impl std::error::Error for UnknownFlag {}

impl MemslotFlags {
    /// No flag set.
    pub const NONE: MemslotFlags = MemslotFlags(0);

    /// Whether every bit of `flag` is set.
    pub const fn contains(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// Parses a comma-separated list of flag names (short or `KVM_MEM_*`, any case) or
    /// numbers (decimal or `0x` hex). An empty list or `none` is no flag.
    pub fn parse_list(list: &str) -> Result<MemslotFlags, UnknownFlag> {
        let mut bits = 0u32;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("none") {
                continue;
            }
            let named = MEMSLOT_FLAG_NAMES.iter().find(|(_, kvm, short)| {
                item.eq_ignore_ascii_case(kvm) || item.eq_ignore_ascii_case(short)
            });
            bits |= match named {
                Some((bit, _, _)) => *bit,
                None => parse_number(item).ok_or_else(|| UnknownFlag(item.to_string()))?,
            };
        }
        Ok(MemslotFlags(bits))
    }
}

fn parse_number(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl fmt::Display for MemslotFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut parts = Vec::new();
        for (bit, _, short) in MEMSLOT_FLAG_NAMES {
            if rest & bit != 0 {
                parts.push(short.to_string());
                rest &= !bit;
            }
        }
        if rest != 0 {
            parts.push(format!("{rest:#x}"));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

/// The `slot` field of a region: address space in bits 31:16, id in bits 15:0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotId {
    /// Address space (`as_id`): 0 for normal memory, 1 for SMM on x86.
    pub as_id: u16,
    /// Slot id within the address space; must be below `KVM_CAP_NR_MEMSLOTS`.
    pub id: u16,
}

impl SlotId {
    /// Splits the raw `slot` field as `kvm_set_memory_region()` does (`as_id = slot >> 16`,
    /// `id = (u16)slot`).
    pub const fn from_raw(slot: u32) -> SlotId {
        SlotId {
            as_id: (slot >> 16) as u16,
            id: slot as u16,
        }
    }

    /// The raw `slot` field.
    pub const fn raw(self) -> u32 {
        (self.as_id as u32) << 16 | self.id as u32
    }
}

/// `KVM_ADDRESS_SPACE_NUM` on x86 (normal and SMM), reported by
/// `KVM_CAP_MULTI_ADDRESS_SPACE`.
pub const KVM_ADDRESS_SPACE_NUM_X86: u16 = 2;
/// `KVM_USER_MEM_SLOTS` on x86 (`KVM_MEM_SLOTS_NUM - KVM_INTERNAL_MEM_SLOTS` = 32767 - 3),
/// the value of `KVM_CAP_NR_MEMSLOTS`.
pub const KVM_USER_MEM_SLOTS_X86: u32 = 32764;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_match_the_uapi() {
        assert_eq!(KVM_MEM_LOG_DIRTY_PAGES, 1);
        assert_eq!(KVM_MEM_READONLY, 2);
        assert_eq!(KVM_MEM_GUEST_MEMFD, 4);
        assert_eq!(KVM_MEM_NON_COHERENT_DMA, 8);
        assert_eq!(KVM_SET_USER_MEMORY_REGION_V1_FLAGS, 3);
        assert_eq!(KVM_SET_USER_MEMORY_REGION2_FLAGS, 7);
    }

    #[test]
    fn region_structs_have_the_kernel_layout() {
        // include/uapi/linux/kvm.h: v1 is 32 bytes; v2 adds guest_memfd_offset, guest_memfd,
        // pad1 and pad2[14], 160 bytes, all of which KVM copies from userspace.
        assert_eq!(std::mem::size_of::<kvm_userspace_memory_region>(), 32);
        assert_eq!(std::mem::size_of::<kvm_userspace_memory_region2>(), 160);
    }

    #[test]
    fn flags_parse_and_print() {
        let f = MemslotFlags::parse_list("log-dirty, KVM_MEM_NON_COHERENT_DMA").unwrap();
        assert_eq!(f.0, 9);
        assert_eq!(f.to_string(), "log-dirty,non-coherent-dma");
        assert_eq!(MemslotFlags::parse_list("").unwrap(), MemslotFlags::NONE);
        assert_eq!(
            MemslotFlags::parse_list("none").unwrap().to_string(),
            "none"
        );
        assert_eq!(
            MemslotFlags::parse_list("0x30").unwrap().to_string(),
            "0x30"
        );
        assert_eq!(MemslotFlags::parse_list("readonly,16").unwrap().0, 18);
        let err = MemslotFlags::parse_list("dma").unwrap_err();
        assert!(err.to_string().contains("\"dma\""), "{err}");
    }

    #[test]
    fn slot_id_round_trips() {
        let s = SlotId::from_raw(0x0001_0005);
        assert_eq!(s, SlotId { as_id: 1, id: 5 });
        assert_eq!(s.raw(), 0x0001_0005);
        for raw in [0, 1, 0xffff, 0x1_0000, 0xffff_ffff] {
            assert_eq!(SlotId::from_raw(raw).raw(), raw);
        }
    }
}
