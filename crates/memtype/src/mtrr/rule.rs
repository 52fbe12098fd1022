//! What an MTRR lookup reports: the type, and the SDM precedence rule that
//! produced it, in words a person can check against the manual.

use core::fmt;

use crate::MemType;

use super::OverlapPolicy;

/// The answer to an MTRR lookup: the type and the rule that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MtrrLookup {
    /// The MTRR memory type of the address.
    pub mem_type: MemType,
    /// Which precedence rule decided it.
    pub rule: MtrrRule,
}

impl fmt::Display for MtrrLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.mem_type, self.rule)
    }
}

/// The SDM precedence rule ("MTRR Precedences") that decided a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtrrRule {
    /// MTRRdefType.E=0: everything is UC.
    Disabled,
    /// Below 1 MiB with FE=1: field `field` (0..=7) of fixed-range MTRR `msr`.
    FixedRange {
        /// The fixed-range MSR index.
        msr: u32,
        /// Which of its eight byte fields.
        field: u8,
    },
    /// Exactly one variable range covers the address.
    Variable {
        /// The pair number.
        index: u8,
    },
    /// Several variable ranges cover the address, all with the same type.
    VariableIdentical {
        /// How many.
        count: u8,
    },
    /// Overlapping variable ranges, one of them UC: UC wins.
    OverlapUcWins,
    /// Overlapping variable ranges of types WT and WB only: WT wins.
    OverlapWtOverWb,
    /// An overlap the SDM leaves undefined, resolved by `policy` (never
    /// [`OverlapPolicy::Reject`], which fails the lookup instead).
    UndefinedOverlap {
        /// The policy that chose the type.
        policy: OverlapPolicy,
    },
    /// No variable range covers the address: MTRRdefType.Type.
    DefaultType,
}

impl fmt::Display for MtrrRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MtrrRule::Disabled => f.write_str("MTRRs disabled (MTRRdefType.E=0): UC"),
            MtrrRule::FixedRange { msr, field } => {
                write!(f, "fixed-range MTRR {msr:#x} field {field}")
            }
            MtrrRule::Variable { index } => write!(f, "variable MTRR {index} matches"),
            MtrrRule::VariableIdentical { count } => {
                write!(f, "{count} overlapping variable MTRRs, all of one type")
            }
            MtrrRule::OverlapUcWins => f.write_str("overlapping variable MTRRs: UC wins"),
            MtrrRule::OverlapWtOverWb => {
                f.write_str("overlapping variable MTRRs of types WT and WB: WT wins")
            }
            MtrrRule::UndefinedOverlap { policy } => {
                let choice = match policy {
                    OverlapPolicy::Wb => "WB, as KVM's MTRR emulation chose",
                    OverlapPolicy::Uc => "UC",
                    OverlapPolicy::Reject => "nothing (rejected)",
                };
                write!(
                    f,
                    "overlapping variable MTRRs the SDM leaves undefined: resolved to {choice}"
                )
            }
            MtrrRule::DefaultType => f.write_str("no MTRR matches: default type"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::MemType::*;
    use std::string::ToString;

    #[test]
    fn rule_messages() {
        let cases = [
            (MtrrRule::Disabled, "MTRRs disabled (MTRRdefType.E=0): UC"),
            (
                MtrrRule::FixedRange {
                    msr: 0x268,
                    field: 3,
                },
                "fixed-range MTRR 0x268 field 3",
            ),
            (MtrrRule::Variable { index: 2 }, "variable MTRR 2 matches"),
            (
                MtrrRule::VariableIdentical { count: 3 },
                "3 overlapping variable MTRRs, all of one type",
            ),
            (
                MtrrRule::OverlapUcWins,
                "overlapping variable MTRRs: UC wins",
            ),
            (
                MtrrRule::OverlapWtOverWb,
                "overlapping variable MTRRs of types WT and WB: WT wins",
            ),
            (
                MtrrRule::UndefinedOverlap {
                    policy: OverlapPolicy::Wb,
                },
                "overlapping variable MTRRs the SDM leaves undefined: \
                 resolved to WB, as KVM's MTRR emulation chose",
            ),
            (
                MtrrRule::UndefinedOverlap {
                    policy: OverlapPolicy::Uc,
                },
                "overlapping variable MTRRs the SDM leaves undefined: resolved to UC",
            ),
            (MtrrRule::DefaultType, "no MTRR matches: default type"),
        ];
        for (rule, text) in cases {
            assert_eq!(rule.to_string(), text);
        }
        let hit = MtrrLookup {
            mem_type: Wb,
            rule: MtrrRule::DefaultType,
        };
        assert_eq!(hit.to_string(), "WB (no MTRR matches: default type)");
    }
}
