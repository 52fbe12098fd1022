//! Combining memory types into the effective type of an access: Intel bare
//! metal (MTRR × PAT), Intel EPT (EPT type × guest PAT), and AMD nested
//! paging (guest PAT × host PAT, then × MTRR).
//!
//! Every function validates its inputs (an MTRR-type argument must be UC,
//! WC, WT, WP or WB; a PAT-type argument UC, UC-, WC, WT, WP or WB) and
//! returns a [`Decision`] whose [`Reason`] names the rule or table cell used.
//! The tables are data, in `tables`, laid out as in the manuals.
//!
//! ```
//! use memtype::combine::{intel_ept, EptLeaf, Reason};
//! use memtype::MemType;
//!
//! // KVM's usual leaf for guest RAM: WB with IPAT, so the guest's WC is lost.
//! let leaf = EptLeaf::new(MemType::Wb, true)?;
//! let d = intel_ept(leaf, MemType::Wc, false)?;
//! assert_eq!(d.effective, MemType::Wb);
//! assert_eq!(d.reason, Reason::EptIpat { ept: MemType::Wb });
//!
//! // With IPAT clear the guest PAT is honoured.
//! let leaf = EptLeaf::new(MemType::Wb, false)?;
//! assert_eq!(intel_ept(leaf, MemType::Wc, false)?.effective, MemType::Wc);
//! # Ok::<(), memtype::CombineError>(())
//! ```

mod amd;
mod ept;
mod intel;
mod reason;
mod tables;

use core::fmt;

use crate::MemType;

pub use amd::{amd_bare_metal, amd_guest_host_pat, amd_npt};
pub use ept::{EptLeaf, intel_ept};
pub use intel::intel_bare_metal;
pub use reason::{Decision, Reason, UcOrigin};

/// Why memory types could not be combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CombineError {
    /// An MTRR (or EPT) input was UC-, WC+ or CD.
    NotAnMtrrType(MemType),
    /// A PAT input was WC+ or CD.
    NotAPatType(MemType),
    /// An EPT leaf's memory type field holds a reserved value (2, 3, 7, or
    /// anything ≥ 8 in a hand-built [`EptLeaf`]): the access causes an EPT
    /// misconfiguration VM exit instead of being performed.
    EptMisconfig {
        /// The memory type field's value.
        encoding: u8,
    },
}

impl fmt::Display for CombineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CombineError::NotAnMtrrType(t) => write!(
                f,
                "{t} cannot be an MTRR or EPT memory type (expected UC, WC, WT, WP or WB)"
            ),
            CombineError::NotAPatType(t) => write!(
                f,
                "{t} cannot be a PAT memory type (expected UC, UC-, WC, WT, WP or WB)"
            ),
            CombineError::EptMisconfig { encoding } => write!(
                f,
                "EPT memory type {encoding} is reserved: the access causes an EPT misconfiguration"
            ),
        }
    }
}

impl core::error::Error for CombineError {}

/// `t` as an MTRR-type input, or the error naming it.
fn mtrr_input(t: MemType) -> Result<MemType, CombineError> {
    match t.mtrr_encoding() {
        Some(_) => Ok(t),
        None => Err(CombineError::NotAnMtrrType(t)),
    }
}

/// `t` as a PAT-type input, or the error naming it.
fn pat_input(t: MemType) -> Result<MemType, CombineError> {
    match t.pat_encoding() {
        Some(_) => Ok(t),
        None => Err(CombineError::NotAPatType(t)),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn error_messages() {
        assert_eq!(
            CombineError::NotAnMtrrType(MemType::UcMinus).to_string(),
            "UC- cannot be an MTRR or EPT memory type (expected UC, WC, WT, WP or WB)"
        );
        assert_eq!(
            CombineError::NotAPatType(MemType::WcPlus).to_string(),
            "WC+ cannot be a PAT memory type (expected UC, UC-, WC, WT, WP or WB)"
        );
        assert_eq!(
            CombineError::EptMisconfig { encoding: 7 }.to_string(),
            "EPT memory type 7 is reserved: the access causes an EPT misconfiguration"
        );
    }

    #[test]
    fn input_domains() {
        for t in MemType::ALL {
            assert_eq!(mtrr_input(t).is_ok(), t.mtrr_encoding().is_some());
            assert_eq!(pat_input(t).is_ok(), t.pat_encoding().is_some());
        }
    }
}
