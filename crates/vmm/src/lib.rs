//! The user half of ncdma: what a VMM does, against whichever kernel it has.
//!
//! - [`backend`]: the ioctl-shaped boundary ([`backend::Backend`]) with the real `/dev/kvm`
//!   ([`backend::RealKvm`]) and the reference kernel ([`backend::ModelKvm`]) behind it.
//! - [`replay`]: JSON lists of uAPI calls run on a backend (`ncdma replay`), the format the
//!   conformance tests share between the two kernels.
//! - [`bench`](mod@bench): memslot and SPTE measurements, model and real kernel side by side
//!   (`ncdma bench`).
//! - [`mmap`]: host memory for memslots.
//! - [`region`]: guest memory regions with a coherence attribute, owned by a VM's
//!   [`region::GuestMemory`]; [`strategy`]: how a noncoherent region is registered with
//!   whatever the kernel offers, and why; [`cache`]: CLFLUSHOPT/CLFLUSH of host memory handed
//!   to or taken back from non-snooping DMA.
//! - [`model_vm`]: the model twin of a live VM (reference kernel + coherence simulator), a
//!   migration source whose data hazards are judged.
//! - [`probe`]: what a kernel offers for noncoherent DMA, check by check (`ncdma probe`).
//!
//! # Example
//!
//! 1. Parse a replay file: a region carrying the proposal's `KVM_MEM_NON_COHERENT_DMA`.
//! 2. Run it on the reference kernel with the memslot-flag proposal, and on the upstream
//!    kernel of the same era (on a KVM host, `RealKvm::open()` is a third backend).
//! 3. Compare the answers.
//!
//! ```
//! use kvm_model::{KernelProfile, Vendor};
//! use uapi::Errno;
//! use vmm::backend::ModelKvm;
//! use vmm::replay::{Answer, Replayer, parse};
//!
//! let entries = parse(r#"[
//!     {"call": "set_user_memory_region", "slot": 1, "flags": ["non-coherent-dma"],
//!      "guest_phys_addr": "0x100000000", "memory_size": "0x200000", "userspace_offset": 0}
//! ]"#)?;
//! let mut answers = Vec::new();
//! for kernel in ["6.16+memslot-flag", "6.16"] {
//!     let vm = ModelKvm::new(KernelProfile::parse(kernel, Vendor::Intel)?);
//!     let report = Replayer::new(Box::new(vm))?.run(&entries);
//!     answers.push(report.steps[0].result.clone());
//! }
//! assert_eq!(answers, [Ok(Answer::Done), Err(Errno::EINVAL)]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod backend;
pub mod bench;
pub mod cache;
pub mod guest;
pub mod live;
pub mod mmap;
pub mod model_vm;
pub mod probe;
pub mod region;
pub mod replay;
pub mod strategy;
