//! x86 memory-type algebra for ncdma: the PAT, the MTRRs, and the rules by
//! which Intel bare metal, Intel EPT and AMD nested paging combine them into
//! the effective memory type of an access.
//!
//! Pure and `no_std`: no I/O, no allocation, no dependencies. Every answer
//! carries the rule or table cell that produced it ([`combine::Reason`],
//! [`mtrr::MtrrRule`]), and every input is validated the way the hardware
//! validates it (reserved encodings are errors, as WRMSR's #GP is).
//!
//! Sources: Intel SDM vol. 3 (memory cache control; VMX "EPT and memory
//! typing") and AMD APM vol. 2 (§7.4, §7.8, §15.25.8), as summarized in
//! `shared/spec/memtypes.md`.
//!
//! # Example
//!
//! What type does a Linux guest's write-combining mapping of guest RAM get
//! under KVM on Intel?
//!
//! ```
//! use memtype::combine::{intel_ept, EptLeaf, Reason};
//! use memtype::pat::{pat_index, PageLevel, Pat, PAT_LINUX_DEFAULT};
//! use memtype::MemType;
//!
//! // 1. The guest maps the page with PWT=1 (PA1), which Linux's PAT makes WC.
//! let guest_pat = Pat::new(PAT_LINUX_DEFAULT)?;
//! let pte = 0x1234_5000 | (1 << 3) | 0b11;
//! let wanted = guest_pat.entry(pat_index(pte, PageLevel::Pte4K));
//! assert_eq!(wanted, MemType::Wc);
//!
//! // 2. Without noncoherent DMA KVM maps guest RAM WB with IPAT set: the
//! //    guest's WC is ignored and the access is cached.
//! let leaf = EptLeaf::new(MemType::Wb, true)?;
//! let d = intel_ept(leaf, wanted, false)?;
//! assert_eq!(d.effective, MemType::Wb);
//! assert_eq!(d.reason.to_string(), "EPT IPAT=1: guest PAT ignored, EPT type WB");
//!
//! // 3. Once KVM honours the guest PAT (IPAT clear), the access is WC.
//! let leaf = EptLeaf::new(MemType::Wb, false)?;
//! let d = intel_ept(leaf, wanted, false)?;
//! assert_eq!(d.effective, MemType::Wc);
//! assert_eq!(d.reason, Reason::EptPat { ept: MemType::Wb, pat: MemType::Wc });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod memtype;

pub mod combine;
pub mod mtrr;
pub mod pat;

pub use combine::{CombineError, Decision, EptLeaf, Reason};
pub use memtype::{MemType, ParseMemTypeError};
