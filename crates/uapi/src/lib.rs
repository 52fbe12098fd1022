//! The ABI between a VMM and KVM, as far as ncdma uses and extends it.
//!
//! Every constant here carries its KVM name and says where its value comes from: upstream
//! `include/uapi/linux/kvm.h` / `arch/x86/include/uapi/asm/kvm.h` (re-exported from
//! kvm-bindings where that crate has it), or one of the two proposals this project implements
//! (marked **proposal**). Values that a proposal took and upstream later gave to something
//! else are documented with the collision, because a VMM that trusts such a number on a
//! current kernel talks to the wrong feature.
//!
//! The module split follows the file descriptor the item is used on, as kvm-ioctls does:
//! [`memslot`] (VM fd, `KVM_SET_USER_MEMORY_REGION{,2}`), [`device`] (VM fd
//! `KVM_CREATE_DEVICE` and the device fd's attributes), [`cap`] (`KVM_CHECK_EXTENSION` and
//! `KVM_ENABLE_CAP`), [`quirk`] (`KVM_CAP_DISABLE_QUIRKS2` bits), and [`errno`] (the error
//! numbers KVM returns on these paths, by name).

#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod cap;
pub mod device;
pub mod errno;
pub mod memslot;
pub mod quirk;

pub use cap::Cap;
pub use device::DeviceType;
pub use errno::Errno;
pub use memslot::{MemslotFlags, SlotId};

/// `KVM_API_VERSION`: the only value `KVM_GET_API_VERSION` has ever returned (12).
pub const KVM_API_VERSION: u32 = kvm_bindings::KVM_API_VERSION;

/// Size of a guest page on x86 (`PAGE_SIZE`): the alignment unit of every memslot field.
pub const PAGE_SIZE: u64 = 4096;
/// `PAGE_SHIFT` on x86.
pub const PAGE_SHIFT: u32 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_is_twelve() {
        assert_eq!(KVM_API_VERSION, 12);
        assert_eq!(1u64 << PAGE_SHIFT, PAGE_SIZE);
    }
}
