//! Everything that can go wrong when MTRR contents are decoded or queried.

use core::fmt;

use crate::MemType;

/// Why MTRR contents were rejected, or why a lookup has no single answer.
///
/// The first five variants mirror the #GP a WRMSR of that value would raise
/// (or the feature a CPU without it lacks); the last two come from queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtrrError {
    /// The MSR has bits set that are reserved (WRMSR raises #GP).
    ReservedBits {
        /// The MSR index.
        msr: u32,
        /// The whole value.
        value: u64,
        /// The reserved bits that are set: `value & reserved_mask`.
        reserved: u64,
    },
    /// A type field holds an encoding that is not UC, WC, WT, WP or WB.
    InvalidType {
        /// The MSR index.
        msr: u32,
        /// The offending type byte.
        encoding: u8,
    },
    /// More (PHYS_BASE, PHYS_MASK) pairs were given than MTRRcap.VCNT.
    TooManyVariable {
        /// How many pairs were given.
        given: usize,
        /// MTRRcap.VCNT.
        vcnt: u8,
    },
    /// MTRRdefType.FE=1 on a CPU whose MTRRcap.FIX=0.
    FixedNotSupported,
    /// An MSR uses the WC type on a CPU whose MTRRcap.WC=0.
    WcNotSupported {
        /// The MSR index.
        msr: u32,
    },
    /// The address is covered by variable ranges whose types the SDM does
    /// not define a precedence for (only under [`OverlapPolicy::Reject`]).
    ///
    /// [`OverlapPolicy::Reject`]: crate::mtrr::OverlapPolicy::Reject
    UndefinedOverlap {
        /// The address looked up.
        addr: u64,
        /// The type of the lowest-numbered matching range.
        a: MemType,
        /// The first type among the other matching ranges that differs from `a`.
        b: MemType,
    },
    /// The range asked about does not have one memory type throughout.
    NonUniform {
        /// The first address whose type differs from the range's start.
        at: u64,
        /// The type at the start of the range.
        first: MemType,
        /// The type at `at`.
        other: MemType,
    },
    /// MAXPHYADDR is outside 32..=52, the values the architecture allows
    /// (32 or 36 without CPUID leaf 0x8000_0008, at most 52 with it).
    InvalidMaxPhyAddr {
        /// The value given.
        maxphyaddr: u8,
    },
    /// A memory type with no MTRR encoding (UC-, WC+, CD) was asked for.
    NotAnMtrrType(MemType),
}

impl fmt::Display for MtrrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MtrrError::ReservedBits {
                msr,
                value,
                reserved,
            } => write!(
                f,
                "MSR {msr:#x} = {value:#x} sets reserved bits {reserved:#x}: WRMSR raises #GP"
            ),
            MtrrError::InvalidType { msr, encoding } => write!(
                f,
                "MSR {msr:#x}: {encoding:#04x} is not an MTRR memory type \
                 (UC=0, WC=1, WT=4, WP=5, WB=6): WRMSR raises #GP"
            ),
            MtrrError::TooManyVariable { given, vcnt } => write!(
                f,
                "{given} variable-range MTRR pairs given but MTRRcap.VCNT = {vcnt}"
            ),
            MtrrError::FixedNotSupported => {
                f.write_str("MTRRdefType.FE=1 but MTRRcap.FIX=0: the CPU has no fixed-range MTRRs")
            }
            MtrrError::WcNotSupported { msr } => {
                write!(f, "MSR {msr:#x} uses type WC but MTRRcap.WC=0")
            }
            MtrrError::UndefinedOverlap { addr, a, b } => write!(
                f,
                "address {addr:#x} is covered by variable MTRRs of types {a} and {b}, \
                 an overlap the SDM leaves undefined"
            ),
            MtrrError::NonUniform { at, first, other } => write!(
                f,
                "the range is not uniform: {first} up to {at:#x}, {other} from there"
            ),
            MtrrError::InvalidMaxPhyAddr { maxphyaddr } => {
                write!(f, "MAXPHYADDR {maxphyaddr} is outside 32..=52")
            }
            MtrrError::NotAnMtrrType(t) => write!(
                f,
                "{t} is not an MTRR memory type (expected UC, WC, WT, WP or WB)"
            ),
        }
    }
}

impl core::error::Error for MtrrError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::MemType::*;
    use std::string::ToString;

    #[test]
    fn error_messages() {
        let cases = [
            (
                MtrrError::ReservedBits {
                    msr: 0x2FF,
                    value: 0x906,
                    reserved: 0x100,
                },
                "MSR 0x2ff = 0x906 sets reserved bits 0x100: WRMSR raises #GP",
            ),
            (
                MtrrError::InvalidType {
                    msr: 0x200,
                    encoding: 7,
                },
                "MSR 0x200: 0x07 is not an MTRR memory type (UC=0, WC=1, WT=4, WP=5, WB=6): \
                 WRMSR raises #GP",
            ),
            (
                MtrrError::TooManyVariable { given: 9, vcnt: 8 },
                "9 variable-range MTRR pairs given but MTRRcap.VCNT = 8",
            ),
            (
                MtrrError::FixedNotSupported,
                "MTRRdefType.FE=1 but MTRRcap.FIX=0: the CPU has no fixed-range MTRRs",
            ),
            (
                MtrrError::WcNotSupported { msr: 0x259 },
                "MSR 0x259 uses type WC but MTRRcap.WC=0",
            ),
            (
                MtrrError::UndefinedOverlap {
                    addr: 0x1000,
                    a: Wc,
                    b: Wb,
                },
                "address 0x1000 is covered by variable MTRRs of types WC and WB, \
                 an overlap the SDM leaves undefined",
            ),
            (
                MtrrError::NonUniform {
                    at: 0xC000_0000,
                    first: Wb,
                    other: Uc,
                },
                "the range is not uniform: WB up to 0xc0000000, UC from there",
            ),
            (
                MtrrError::InvalidMaxPhyAddr { maxphyaddr: 64 },
                "MAXPHYADDR 64 is outside 32..=52",
            ),
            (
                MtrrError::NotAnMtrrType(UcMinus),
                "UC- is not an MTRR memory type (expected UC, WC, WT, WP or WB)",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
