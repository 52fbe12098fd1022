//! Memory type range registers: decoding a CPU's (or a guest's) MTRR MSRs
//! into an [`MtrrState`], and answering "what type does the MTRR mechanism
//! give this physical address (or this whole range)?".
//!
//! The MSR layout, its validation and [`MtrrState::from_msrs`] live in
//! `msrs`; the precedence rules in `lookup`; the uniformity walk over a
//! range in `range`; what a lookup reports in `rule`; the errors in `error`.
//!
//! ```
//! use memtype::mtrr::*;
//! use memtype::MemType;
//!
//! // A typical BIOS setup: WB by default, a UC hole for MMIO below 4 GiB.
//! let hole = variable_pair(0xC000_0000, 0x4000_0000, MemType::Uc, 39).unwrap();
//! let msrs = MtrrMsrs {
//!     cap: 8 | MTRRCAP_FIX | MTRRCAP_WC,
//!     def_type: def_type_value(MemType::Wb, true, false).unwrap(),
//!     fixed: [0; 11],
//!     variable: &[hole],
//!     maxphyaddr: 39,
//! };
//! let mtrrs = MtrrState::from_msrs(&msrs)?;
//! assert_eq!(mtrrs.lookup(0xFEE0_0000)?.mem_type, MemType::Uc);
//! assert_eq!(mtrrs.lookup(0x1_0000_0000)?.rule, MtrrRule::DefaultType);
//! // A 2 MiB page straddling the hole's start is not uniform.
//! assert!(mtrrs.range_type(0xBFF0_0000, 0x20_0000).is_err());
//! # Ok::<(), MtrrError>(())
//! ```

mod error;
mod lookup;
mod msrs;
mod range;
mod rule;

use core::fmt;

use crate::MemType;

pub use error::MtrrError;
pub use msrs::{
    FIXED_MSRS, FIXED_RANGES_END, MSR_MTRR_DEF_TYPE, MSR_MTRR_FIX_4K_C0000, MSR_MTRR_FIX_4K_C8000,
    MSR_MTRR_FIX_4K_D0000, MSR_MTRR_FIX_4K_D8000, MSR_MTRR_FIX_4K_E0000, MSR_MTRR_FIX_4K_E8000,
    MSR_MTRR_FIX_4K_F0000, MSR_MTRR_FIX_4K_F8000, MSR_MTRR_FIX_16K_80000, MSR_MTRR_FIX_16K_A0000,
    MSR_MTRR_FIX_64K_00000, MSR_MTRRCAP, MTRR_DEF_TYPE_E, MTRR_DEF_TYPE_FE, MTRR_DEF_TYPE_RESERVED,
    MTRR_DEF_TYPE_TYPE_MASK, MTRR_PHYS_MASK_VALID, MTRRCAP_FIX, MTRRCAP_VCNT_MASK, MTRRCAP_WC,
    def_type_value, fixed_msr_value, msr_mtrr_phys_base, msr_mtrr_phys_mask, variable_pair,
};
pub use rule::{MtrrLookup, MtrrRule};

use msrs::MAX_VARIABLE;

/// What an overlap of variable ranges that the SDM leaves undefined (e.g.
/// WC with WB, or WP with WT) resolves to.
///
/// Real hardware promises nothing there, so a model has to pick. The default
/// is what KVM's guest-MTRR emulation chose in 6.7 (arch/x86/kvm/mtrr.c,
/// `kvm_mtrr_get_guest_memory_type`: "We use WB for this undefined
/// behavior"; the emulation was later removed). That KVM loop also depends
/// on the order it visits the ranges in (sorted by base): it tests only the
/// range visited *later* for UC, so a UC range visited before a WB one yields
/// WB. This crate applies the SDM's "any UC wins" regardless of order and
/// uses the policy only for the overlaps the SDM truly leaves undefined; a
/// model of that KVM quirk has to add it on top.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverlapPolicy {
    /// Resolve to WB, as KVM's emulation did.
    #[default]
    Wb,
    /// Resolve to UC, the conservative choice.
    Uc,
    /// Refuse: [`MtrrState::lookup`] returns [`MtrrError::UndefinedOverlap`].
    Reject,
}

/// The raw MTRR MSR contents of one CPU, as read (or as a guest wrote them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtrrMsrs<'a> {
    /// IA32_MTRRCAP.
    pub cap: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub def_type: u64,
    /// The fixed-range MTRRs, in the order of [`FIXED_MSRS`].
    pub fixed: [u64; 11],
    /// The variable ranges as (IA32_MTRR_PHYSBASEn, IA32_MTRR_PHYSMASKn),
    /// pair `n` at index `n`; at most MTRRcap.VCNT of them.
    pub variable: &'a [(u64, u64)],
    /// The CPU's physical-address width (CPUID 0x8000_0008 EAX bits 7:0), which
    /// decides where the reserved bits of PHYSBASE/PHYSMASK start.
    pub maxphyaddr: u8,
}

/// One valid (V=1) variable range, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VariableRange {
    /// The pair number `n` (MSRs 0x200 + 2n, 0x201 + 2n).
    pub index: u8,
    /// PHYSBASE's address bits (12..MAXPHYADDR).
    pub base: u64,
    /// PHYSMASK's address bits (12..MAXPHYADDR).
    pub mask: u64,
    /// PHYSBASE's type.
    pub mem_type: MemType,
}

impl VariableRange {
    /// Whether the range covers `addr`: `addr & mask == base & mask`.
    /// Address bits at or above MAXPHYADDR take no part, as the mask has none.
    pub const fn contains(&self, addr: u64) -> bool {
        addr & self.mask == self.base & self.mask
    }
}

/// A decoded, validated set of MTRRs plus the policy for undefined overlaps.
///
/// Equality is structural: two states that would answer every lookup alike
/// but were built differently (say, different MAXPHYADDR with no variable
/// ranges) may compare unequal.
#[derive(Clone, PartialEq, Eq)]
pub struct MtrrState {
    enabled: bool,
    fixed_enabled: bool,
    default: MemType,
    fixed: [[MemType; 8]; 11],
    /// The valid ranges, in pair order, in `variable[..variable_len]`; the
    /// rest stays at `UNUSED` so derived equality ignores it.
    variable: [VariableRange; MAX_VARIABLE],
    variable_len: usize,
    maxphyaddr: u8,
    policy: OverlapPolicy,
}

const UNUSED: VariableRange = VariableRange {
    index: 0,
    base: 0,
    mask: 0,
    mem_type: MemType::Uc,
};

/// The MAXPHYADDR recorded by the constructors that take none; it matters
/// only for [`MtrrState::maxphyaddr`], as those states have no variable ranges.
const NO_MAXPHYADDR: u8 = 52;

impl MtrrState {
    /// MTRRs disabled (MTRRdefType.E=0, the power-on state): every address
    /// is UC.
    pub fn disabled() -> MtrrState {
        MtrrState {
            enabled: false,
            fixed_enabled: false,
            default: MemType::Uc,
            fixed: [[MemType::Uc; 8]; 11],
            variable: [UNUSED; MAX_VARIABLE],
            variable_len: 0,
            maxphyaddr: NO_MAXPHYADDR,
            policy: OverlapPolicy::default(),
        }
    }

    /// MTRRs enabled with no fixed ranges (FE=0) and no variable ranges, so
    /// every address has type `default`. Fails for UC-, WC+ and CD.
    ///
    /// ```
    /// use memtype::mtrr::{MtrrState, MtrrRule};
    /// use memtype::MemType;
    /// let wb = MtrrState::uniform(MemType::Wb)?;
    /// let hit = wb.lookup(0x1234_5000)?;
    /// assert_eq!((hit.mem_type, hit.rule), (MemType::Wb, MtrrRule::DefaultType));
    /// # Ok::<(), memtype::mtrr::MtrrError>(())
    /// ```
    pub fn uniform(default: MemType) -> Result<MtrrState, MtrrError> {
        if default.mtrr_encoding().is_none() {
            return Err(MtrrError::NotAnMtrrType(default));
        }
        Ok(MtrrState {
            enabled: true,
            default,
            ..MtrrState::disabled()
        })
    }

    /// The same MTRRs with another policy for undefined overlaps.
    pub fn with_overlap_policy(self, policy: OverlapPolicy) -> MtrrState {
        MtrrState { policy, ..self }
    }

    /// MTRRdefType.E.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// MTRRdefType.FE.
    pub fn fixed_enabled(&self) -> bool {
        self.fixed_enabled
    }

    /// MTRRdefType.Type: what addresses no range covers get while E=1.
    pub fn default_type(&self) -> MemType {
        self.default
    }

    /// The policy for overlaps the SDM leaves undefined.
    pub fn overlap_policy(&self) -> OverlapPolicy {
        self.policy
    }

    /// The MAXPHYADDR the MSRs were decoded with (52 for [`MtrrState::disabled`]
    /// and [`MtrrState::uniform`], which have no variable ranges).
    pub fn maxphyaddr(&self) -> u8 {
        self.maxphyaddr
    }

    /// The fixed-range fields, one row per MSR of [`FIXED_MSRS`], lowest
    /// address first.
    pub fn fixed_types(&self) -> &[[MemType; 8]; 11] {
        &self.fixed
    }

    /// The valid (V=1) variable ranges, in pair order.
    pub fn variable_ranges(&self) -> &[VariableRange] {
        &self.variable[..self.variable_len]
    }
}

impl fmt::Debug for MtrrState {
    // Derived Debug would print all 255 variable slots.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MtrrState")
            .field("enabled", &self.enabled)
            .field("fixed_enabled", &self.fixed_enabled)
            .field("default", &self.default)
            .field("fixed", &self.fixed)
            .field("variable", &self.variable_ranges())
            .field("maxphyaddr", &self.maxphyaddr)
            .field("policy", &self.policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::MemType::*;

    const WB_FIXED: u64 = 0x0606_0606_0606_0606;

    /// A CPU with 8 pairs, fixed ranges and WC; MTRRs on, FE on, default WB.
    fn msrs(variable: &[(u64, u64)]) -> MtrrMsrs<'_> {
        MtrrMsrs {
            cap: 8 | MTRRCAP_FIX | MTRRCAP_WC,
            def_type: MTRR_DEF_TYPE_E | MTRR_DEF_TYPE_FE | 6,
            fixed: [WB_FIXED; 11],
            variable,
            maxphyaddr: 36,
        }
    }

    #[test]
    fn disabled_and_uniform() {
        let off = MtrrState::disabled();
        assert!(!off.enabled() && !off.fixed_enabled());
        assert_eq!(off.default_type(), Uc);
        for t in [Uc, Wc, Wt, Wp, Wb] {
            let s = MtrrState::uniform(t).unwrap();
            assert!(s.enabled() && !s.fixed_enabled());
            assert_eq!(s.default_type(), t);
            assert!(s.variable_ranges().is_empty());
        }
        for t in [UcMinus, WcPlus, Cd] {
            assert_eq!(MtrrState::uniform(t), Err(MtrrError::NotAnMtrrType(t)));
        }
    }

    #[test]
    fn with_overlap_policy_changes_only_the_policy() {
        let s = MtrrState::uniform(Wb).unwrap();
        let r = s.clone().with_overlap_policy(OverlapPolicy::Reject);
        assert_eq!(r.overlap_policy(), OverlapPolicy::Reject);
        assert_eq!(r.with_overlap_policy(OverlapPolicy::Wb), s);
    }

    #[test]
    fn debug_lists_only_the_valid_ranges() {
        let pairs = [variable_pair(0, 0x1000, Wb, 36).unwrap()];
        let s = MtrrState::from_msrs(&msrs(&pairs)).unwrap();
        let text = std::format!("{s:?}");
        assert_eq!(text.matches("VariableRange").count(), 1);
    }
}
