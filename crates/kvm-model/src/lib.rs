//! The reference kernel: KVM as it is at the seeds' base (6.7), with each of the two
//! noncoherent-DMA proposals applied, and the upstream versions that followed, as an
//! in-process model, so every design can be run and compared with one VMM.
//!
//! Names, order of checks and errno values follow KVM's (`virt/kvm/kvm_main.c`,
//! `arch/x86/kvm/{x86.c,mtrr.c,mmu/,vmx/vmx.c,svm/svm.c}`, and the patches of
//! `shared/seeds/`); every module says which functions it models and in which profiles.
//! A [`KernelProfile`] names the kernel; [`Kvm`] is one VM of it (`struct kvm`), with its
//! VM-fd ioctls returning [`uapi::Errno`]; the MMU turns guest accesses into SPTEs whose
//! memory-type bits come from `make_spte → get_mt_mask`, and [`Kvm::guest_memtype`] says what
//! type an access ends up with and why. [`explain()`] runs one such access from a description.
//!
//! # Example
//!
//! 1. Create a VM on the memslot-flag kernel.
//! 2. Give it a slot flagged `KVM_MEM_NON_COHERENT_DMA`.
//! 3. Let the guest program its PAT the Linux way (entry 1 is WC).
//! 4. Ask what a WC access to the slot is.
//!
//! ```
//! use kvm_model::{Kvm, KernelProfile, MtMaskBranch, Vendor};
//! use memtype::MemType;
//! use uapi::memslot::{kvm_userspace_memory_region, KVM_MEM_NON_COHERENT_DMA};
//!
//! let mut kvm = Kvm::new(KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)?);
//! kvm.set_user_memory_region(&kvm_userspace_memory_region {
//!     slot: 1,
//!     flags: KVM_MEM_NON_COHERENT_DMA,
//!     guest_phys_addr: 0x1_0000_0000,
//!     memory_size: 0x20_0000,
//!     userspace_addr: 0x7f00_0000_0000,
//! })?;
//! let vcpu = kvm.create_vcpu(0)?;
//! assert_eq!(kvm.set_msrs(vcpu, &[(0x277, 0x0407_0506_0007_0106)])?, 1);
//! let access = kvm.guest_memtype(vcpu, 0x1_0000_0000, 1)?;
//! assert_eq!(access.branch, MtMaskBranch::SlotNonCoherentDma);
//! assert_eq!((access.ept_memtype(), access.ipat()), (Some(MemType::Wb), Some(false)));
//! assert_eq!(access.effective, MemType::Wc);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod cap;
pub mod device;
mod error;
pub mod explain;
mod kvm;
pub mod memslot;
pub mod mmu;
mod noncoherent;
pub mod profile;
pub mod quirks;
pub mod vcpu;

pub use device::{KvmDevice, NoncoherentChange};
pub use error::VcpuError;
pub use explain::{ExplainError, ExplainInput, Explanation, explain};
pub use kvm::{DeviceId, KVM_MAX_VCPU_IDS, KVM_MAX_VCPUS, Kvm, VcpuId};
pub use memslot::{KvmMemorySlot, KvmMemslots, KvmMrChange};
pub use mmu::{Access, FaultOutcome, MmuStats, MtMaskBranch, PgLevel, Spte, ZapReason};
pub use profile::{CpuFacts, Era, KernelProfile, ProfileError, Proposal, Vendor};
pub use vcpu::KvmVcpu;
