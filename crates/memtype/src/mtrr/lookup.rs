//! MTRR lookup of one address: the SDM's precedence rules ("MTRR
//! Precedences"), and the fixed-range field layout below 1 MiB.

use crate::MemType;

use super::msrs::{FIXED_MSRS, FIXED_RANGES_END};
use super::{MtrrError, MtrrLookup, MtrrRule, MtrrState, OverlapPolicy};

/// Where a sub-1 MiB address falls among the fixed ranges.
pub(super) struct FixedSlot {
    /// Index into [`FIXED_MSRS`].
    pub(super) msr_index: usize,
    /// Byte field within that MSR.
    pub(super) field: u8,
    /// Last address of the field (inclusive).
    pub(super) last: u64,
}

/// Maps an address below [`FIXED_RANGES_END`] to its fixed-range field:
/// 0x250 has 64 KiB fields from 0, 0x258/0x259 16 KiB fields from
/// 0x80000/0xA0000, 0x268..0x26F 4 KiB fields from 0xC0000 in 32 KiB steps.
pub(super) fn fixed_slot(addr: u64) -> FixedSlot {
    let (msr_index, region_start, field_shift) = match addr {
        0..0x8_0000 => (0, 0, 16),
        0x8_0000..0xA_0000 => (1, 0x8_0000, 14),
        0xA_0000..0xC_0000 => (2, 0xA_0000, 14),
        // One MSR per 32 KiB from 0xC0000; below 1 MiB the quotient is at most 7.
        _ => (3 + ((addr - 0xC_0000) >> 15) as usize, 0, 12),
    };
    let field = ((addr - region_start) >> field_shift) & 7;
    FixedSlot {
        msr_index,
        // Masked to 3 bits, so the cast is exact.
        field: field as u8,
        last: addr | ((1u64 << field_shift) - 1),
    }
}

/// A set of MTRR types, one bit per MTRR encoding (all below 8).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct TypeSet(u8);

/// {WT, WB}: the one mixed overlap the SDM defines besides those with UC.
const WT_WB: TypeSet = TypeSet((1 << 4) | (1 << 6));

impl TypeSet {
    pub(super) fn insert(&mut self, t: MemType) {
        // Stored ranges hold MTRR types only; anything else is left out.
        if let Some(enc) = t.mtrr_encoding() {
            self.0 |= 1 << enc;
        }
    }

    pub(super) fn union(self, other: TypeSet) -> TypeSet {
        TypeSet(self.0 | other.0)
    }

    fn contains(self, t: MemType) -> bool {
        t.mtrr_encoding()
            .is_some_and(|enc| self.0 & (1 << enc) != 0)
    }

    /// Every subset of `self`, the empty one included.
    pub(super) fn subsets(self) -> impl Iterator<Item = TypeSet> {
        let all = self.0;
        // Counts down through the submasks of `all`, ending after 0.
        let mut next = Some(all);
        core::iter::from_fn(move || {
            let sub = next?;
            next = if sub == 0 {
                None
            } else {
                Some((sub - 1) & all)
            };
            Some(TypeSet(sub))
        })
    }
}

impl MtrrState {
    /// The MTRR type of physical address `addr`, by the SDM's precedence:
    /// E=0 gives UC; with FE=1 an address below 1 MiB takes its fixed-range
    /// field; then the variable ranges that cover it (one, or several of one
    /// type: that type; any UC: UC; only WT and WB: WT; anything else is
    /// undefined and goes to the [`OverlapPolicy`]); none: the default type.
    ///
    /// Fails only under [`OverlapPolicy::Reject`], on an undefined overlap.
    /// Address bits at or above MAXPHYADDR are ignored, as the range masks
    /// have none.
    ///
    /// ```
    /// use memtype::mtrr::*;
    /// use memtype::MemType;
    /// let msrs = MtrrMsrs {
    ///     cap: MTRRCAP_FIX | 2,
    ///     def_type: def_type_value(MemType::Wb, true, true).unwrap(),
    ///     fixed: [fixed_msr_value([MemType::Uc; 8]).unwrap(); 11],
    ///     variable: &[],
    ///     maxphyaddr: 36,
    /// };
    /// let mtrrs = MtrrState::from_msrs(&msrs)?;
    /// let vga = mtrrs.lookup(0xB_8000)?;
    /// assert_eq!(vga.mem_type, MemType::Uc);
    /// assert_eq!(vga.rule, MtrrRule::FixedRange { msr: 0x259, field: 6 });
    /// assert_eq!(vga.rule.to_string(), "fixed-range MTRR 0x259 field 6");
    /// # Ok::<(), MtrrError>(())
    /// ```
    pub fn lookup(&self, addr: u64) -> Result<MtrrLookup, MtrrError> {
        if !self.enabled {
            return Ok(MtrrLookup {
                mem_type: MemType::Uc,
                rule: MtrrRule::Disabled,
            });
        }
        if self.fixed_enabled && addr < FIXED_RANGES_END {
            let slot = fixed_slot(addr);
            return Ok(MtrrLookup {
                mem_type: self.fixed[slot.msr_index][usize::from(slot.field)],
                rule: MtrrRule::FixedRange {
                    msr: FIXED_MSRS[slot.msr_index],
                    field: slot.field,
                },
            });
        }
        self.variable_lookup(addr)
    }

    fn variable_lookup(&self, addr: u64) -> Result<MtrrLookup, MtrrError> {
        let mut matches = self.variable_ranges().iter().filter(|r| r.contains(addr));
        let Some(first) = matches.next() else {
            return Ok(MtrrLookup {
                mem_type: self.default,
                rule: MtrrRule::DefaultType,
            });
        };
        let mut types = TypeSet::default();
        types.insert(first.mem_type);
        let mut count: u8 = 1;
        let mut other = None;
        for r in matches {
            // At most 255 ranges are stored, so this never saturates.
            count = count.saturating_add(1);
            types.insert(r.mem_type);
            if r.mem_type != first.mem_type && other.is_none() {
                other = Some(r.mem_type);
            }
        }
        let Some(b) = other else {
            let rule = if count == 1 {
                MtrrRule::Variable { index: first.index }
            } else {
                MtrrRule::VariableIdentical { count }
            };
            return Ok(MtrrLookup {
                mem_type: first.mem_type,
                rule,
            });
        };
        let rule = if types.contains(MemType::Uc) {
            MtrrRule::OverlapUcWins
        } else if types == WT_WB {
            MtrrRule::OverlapWtOverWb
        } else {
            MtrrRule::UndefinedOverlap {
                policy: self.policy,
            }
        };
        match self.resolve(types) {
            Some(mem_type) => Ok(MtrrLookup { mem_type, rule }),
            None => Err(MtrrError::UndefinedOverlap {
                addr,
                a: first.mem_type,
                b,
            }),
        }
    }

    /// The type an address gets when the variable ranges covering it have
    /// exactly the types in `types`; `None` for an undefined overlap under
    /// [`OverlapPolicy::Reject`]. The single source of truth for precedence,
    /// shared by [`MtrrState::lookup`] and the range walk.
    pub(super) fn resolve(&self, types: TypeSet) -> Option<MemType> {
        match types.0.count_ones() {
            0 => return Some(self.default),
            // A lone bit below 8: its position fits in a u8.
            1 => return MemType::from_mtrr_encoding(types.0.trailing_zeros() as u8),
            _ => {}
        }
        if types.contains(MemType::Uc) {
            Some(MemType::Uc)
        } else if types == WT_WB {
            Some(MemType::Wt)
        } else {
            match self.policy {
                OverlapPolicy::Wb => Some(MemType::Wb),
                OverlapPolicy::Uc => Some(MemType::Uc),
                OverlapPolicy::Reject => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn fixed_slot_layout() {
        let cases = [
            (0, (0, 0, 0xFFFF)),
            (0x7_FFFF, (0, 7, 0x7_FFFF)),
            (0x8_0000, (1, 0, 0x8_3FFF)),
            (0x9_FFFF, (1, 7, 0x9_FFFF)),
            (0xA_0000, (2, 0, 0xA_3FFF)),
            (0xC_0000, (3, 0, 0xC_0FFF)),
            (0xC_8000, (4, 0, 0xC_8FFF)),
            (0xF_FFFF, (10, 7, 0xF_FFFF)),
        ];
        for (addr, want) in cases {
            let s = fixed_slot(addr);
            assert_eq!((s.msr_index, s.field, s.last), want, "{addr:#x}");
        }
    }

    #[test]
    fn subsets_enumerates_every_submask_once() {
        let set = TypeSet(0b0101_0011);
        let mut subs: Vec<u8> = set.subsets().map(|s| s.0).collect();
        subs.sort_unstable();
        let want: Vec<u8> = (0u8..=255).filter(|m| m & !set.0 == 0).collect();
        assert_eq!(subs, want);
        assert_eq!(TypeSet(0).subsets().count(), 1);
    }
}
