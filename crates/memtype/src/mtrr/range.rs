//! Uniformity of the MTRR type over an address range.
//!
//! Variable ranges may have discontinuous masks (the SDM discourages them
//! but WRMSR accepts them: the addresses the mask leaves out get the default
//! type), so the walk does not look for "where a range starts and ends". It
//! descends a binary trie of aligned blocks instead: in a block of 2^k bytes
//! a range covers all of it, none of it, or (if its mask has bits below k)
//! part of it. A block is uniform at once when every choice of the partial
//! ranges resolves to one type; otherwise only the address bits the partial
//! ranges test can matter, and the block is decided by splitting on the
//! highest of them. 4 KiB blocks are always uniform, as masks start at bit
//! 12. The walk visits blocks in address order and stops at the first one
//! whose type differs.
//!
//! For contiguous masks this touches O(64) blocks per range, however long
//! the range asked about. Discontinuous masks cost up to 2 to the number of
//! distinct low mask bits involved, which stays small for any set a BIOS or
//! guest would write, but is not bounded by the range's length either.

use crate::MemType;

use super::lookup::{TypeSet, fixed_slot};
use super::msrs::FIXED_RANGES_END;
use super::{MtrrError, MtrrLookup, MtrrState, VariableRange};

/// How a variable range covers an aligned block.
enum Cover {
    All,
    Part,
    Nothing,
}

/// The bits below `k`, for `k` in 0..=64.
fn low_bits(k: u32) -> u64 {
    if k >= 64 { u64::MAX } else { (1u64 << k) - 1 }
}

fn cover(r: &VariableRange, block: u64, low: u64) -> Cover {
    let fixed_bits = r.mask & !low;
    if block & fixed_bits != r.base & fixed_bits {
        Cover::Nothing
    } else if r.mask & low == 0 {
        Cover::All
    } else {
        Cover::Part
    }
}

impl MtrrState {
    /// The outcome every address of the 2^`k`-byte block at `block` gets
    /// (`Some(None)`: all are undefined overlaps under `Reject`), or `None`
    /// if the block is not uniform.
    fn block_outcome(&self, block: u64, k: u32) -> Option<Option<MemType>> {
        let low = low_bits(k);
        let (mut all, mut part, mut part_bits) = (TypeSet::default(), TypeSet::default(), 0);
        for r in self.variable_ranges() {
            match cover(r, block, low) {
                Cover::All => all.insert(r.mem_type),
                Cover::Part => {
                    part.insert(r.mem_type);
                    part_bits |= r.mask & low;
                }
                Cover::Nothing => {}
            }
        }
        // Letting each partial range cover or not, independently, over-
        // approximates what the block can see: agreement proves uniformity.
        let mut outcomes = part.subsets().map(|s| self.resolve(all.union(s)));
        let one = outcomes.next()?;
        if outcomes.all(|o| o == one) {
            return Some(one);
        }
        // Otherwise the answer depends only on the address bits the partial
        // ranges test, the highest being `h`: the block repeats the pattern
        // of its first 2^(h+1) bytes, whose two halves must agree. (With no
        // partial range the block was settled above, so `part_bits` is
        // non-zero and `h < k`.)
        let h = 63 - part_bits.leading_zeros();
        let lower = self.block_outcome(block, h)?;
        let upper = self.block_outcome(block | (1 << h), h)?;
        (lower == upper).then_some(lower)
    }
}

/// One uniformity check in progress: the range and the type it must have.
struct Walk<'s> {
    state: &'s MtrrState,
    /// First address still to check (inclusive).
    from: u64,
    /// Last address of the range (inclusive).
    last: u64,
    first: MtrrLookup,
}

impl Walk<'_> {
    /// Checks the part of `[from, last]` inside the 2^`k`-byte block at
    /// `block`, in address order, stopping at the first difference.
    fn block(&self, block: u64, k: u32) -> Result<(), MtrrError> {
        if block | low_bits(k) < self.from || block > self.last {
            return Ok(());
        }
        if self.state.block_outcome(block, k).is_some() {
            return self.check(block.max(self.from));
        }
        // Blocks of 4 KiB or less are always uniform (masks start at bit
        // 12), so here k > 12.
        let half = k - 1;
        self.block(block, half)?;
        self.block(block | (1 << half), half)
    }

    /// Compares the (uniform) run starting at `at` with the range's start.
    fn check(&self, at: u64) -> Result<(), MtrrError> {
        let here = self.state.lookup(at)?;
        if here.mem_type == self.first.mem_type {
            Ok(())
        } else {
            Err(MtrrError::NonUniform {
                at,
                first: self.first.mem_type,
                other: here.mem_type,
            })
        }
    }
}

impl MtrrState {
    /// The one MTRR type of every byte of `[start, start + len)`, reported
    /// as the lookup of `start`; or [`MtrrError::NonUniform`] naming the
    /// first address whose type differs. This is what a hypervisor needs
    /// before mapping the range with one large page.
    ///
    /// Only types are compared: a range covered partly by a variable MTRR
    /// and partly by a default type of the same type is uniform. The cost
    /// does not grow with `len` (see the module documentation). `len == 0`
    /// returns the lookup of `start`; a range running past the top of the
    /// 64-bit space is cut there. Under
    /// [`OverlapPolicy::Reject`](super::OverlapPolicy::Reject) the first
    /// undefined overlap in the range fails the call, unless a type change
    /// comes before it.
    ///
    /// ```
    /// use memtype::mtrr::*;
    /// use memtype::MemType;
    /// let wc = variable_pair(0xE000_0000, 0x1000_0000, MemType::Wc, 36).unwrap();
    /// let msrs = MtrrMsrs {
    ///     cap: MTRRCAP_WC | 1,
    ///     def_type: def_type_value(MemType::Wb, true, false).unwrap(),
    ///     fixed: [0; 11],
    ///     variable: &[wc],
    ///     maxphyaddr: 36,
    /// };
    /// let mtrrs = MtrrState::from_msrs(&msrs)?;
    /// assert_eq!(mtrrs.range_type(0xE000_0000, 0x1000_0000)?.mem_type, MemType::Wc);
    /// assert_eq!(
    ///     mtrrs.range_type(0xC000_0000, 0x4000_0000),
    ///     Err(MtrrError::NonUniform { at: 0xE000_0000, first: MemType::Wb, other: MemType::Wc })
    /// );
    /// # Ok::<(), MtrrError>(())
    /// ```
    pub fn range_type(&self, start: u64, len: u64) -> Result<MtrrLookup, MtrrError> {
        let first = self.lookup(start)?;
        let Some(len_minus_1) = len.checked_sub(1) else {
            return Ok(first);
        };
        if !self.enabled {
            return Ok(first);
        }
        let mut walk = Walk {
            state: self,
            from: start,
            last: start.saturating_add(len_minus_1),
            first,
        };
        if self.fixed_enabled {
            // Fixed-range fields are few (88); step through them directly.
            while walk.from < FIXED_RANGES_END {
                walk.check(walk.from)?;
                let field_last = fixed_slot(walk.from).last;
                if field_last >= walk.last {
                    return Ok(first);
                }
                walk.from = field_last + 1;
            }
        }
        walk.block(0, 64)?;
        Ok(first)
    }
}
