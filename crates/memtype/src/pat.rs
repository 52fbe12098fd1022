//! The page attribute table: the IA32_PAT MSR, its validation, and how a
//! paging entry's PAT/PCD/PWT bits select one of its eight entries.
//!
//! The PAT is laid out identically on Intel (SDM vol. 3, "Page Attribute
//! Table") and AMD (APM vol. 2, §7.8), so there is one type for both; the
//! guest PAT in an AMD VMCB (`g_pat`) uses the same format.

use core::fmt;

use crate::MemType;

/// The IA32_PAT MSR index.
pub const MSR_IA32_CR_PAT: u32 = 0x277;

/// The PAT's power-on (and INIT) value: WB, WT, UC-, UC, WB, WT, UC-, UC.
pub const PAT_RESET_VALUE: u64 = 0x0007_0406_0007_0406;

/// The PAT Linux programs (arch/x86/mm/pat/memtype.c): WB, WC, UC-, UC, WB,
/// WP, UC-, WT.
pub const PAT_LINUX_DEFAULT: u64 = 0x0407_0506_0007_0106;

/// A valid IA32_PAT value: every one of its eight bytes holds a defined
/// encoding. The only way to build one with an arbitrary value is
/// [`Pat::new`], which rejects what WRMSR would reject.
///
/// ```
/// use memtype::pat::{Pat, PageLevel, PAT_LINUX_DEFAULT, pat_index};
/// use memtype::MemType;
///
/// let pat = Pat::new(PAT_LINUX_DEFAULT)?;
/// // A 4 KiB PTE with PWT set and PCD, PAT clear selects PA1.
/// let pte = 1 << 3;
/// assert_eq!(pat.entry(pat_index(pte, PageLevel::Pte4K)), MemType::Wc);
/// # Ok::<(), memtype::pat::PatError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pat(u64);

impl Pat {
    /// Validates an IA32_PAT value. Any byte whose encoding is reserved
    /// (2, 3, or any value ≥ 8, i.e. one of the upper five bits set) is an
    /// error, as WRMSR raises #GP for it; the error names the lowest such
    /// entry.
    ///
    /// ```
    /// use memtype::pat::{Pat, PatError};
    /// assert!(Pat::new(0x0606_0606_0606_0606).is_ok());
    /// assert_eq!(
    ///     Pat::new(0x0000_0000_0200_0000),
    ///     Err(PatError::ReservedEncoding { entry: 3, byte: 0x02 })
    /// );
    /// ```
    pub fn new(value: u64) -> Result<Pat, PatError> {
        for (entry, byte) in value.to_le_bytes().into_iter().enumerate() {
            if MemType::from_pat_encoding(byte).is_none() {
                return Err(PatError::ReservedEncoding {
                    // At most 7: a u64 has eight bytes.
                    entry: entry as u8,
                    byte,
                });
            }
        }
        Ok(Pat(value))
    }

    /// Builds the PAT whose entries PA0..PA7 are `entries`, or `None` if one
    /// of them (WC+, CD) has no PAT encoding.
    ///
    /// ```
    /// use memtype::pat::{Pat, PAT_RESET_VALUE};
    /// use memtype::MemType::*;
    /// let pat = Pat::from_entries([Wb, Wt, UcMinus, Uc, Wb, Wt, UcMinus, Uc]);
    /// assert_eq!(pat.map(Pat::value), Some(PAT_RESET_VALUE));
    /// ```
    pub fn from_entries(entries: [MemType; 8]) -> Option<Pat> {
        let mut bytes = [0u8; 8];
        for (byte, t) in bytes.iter_mut().zip(entries) {
            *byte = t.pat_encoding()?;
        }
        Some(Pat(u64::from_le_bytes(bytes)))
    }

    /// The power-on value, [`PAT_RESET_VALUE`].
    pub const fn reset() -> Pat {
        Pat(PAT_RESET_VALUE)
    }

    /// The raw MSR value.
    pub const fn value(self) -> u64 {
        self.0
    }

    /// The type in entry PA`index`. Only the low three bits of `index` are
    /// used (`index & 7`), so this never panics; [`pat_index`] always returns
    /// a value in range.
    pub fn entry(self, index: u8) -> MemType {
        let byte = self.0.to_le_bytes()[usize::from(index & 7)];
        // `Pat::new` and `Pat::from_entries` admit only valid encodings, so the
        // fallback is never taken; UC is the safe answer if it ever were.
        MemType::from_pat_encoding(byte).unwrap_or(MemType::Uc)
    }

    /// All eight entries, PA0 first.
    pub fn entries(self) -> [MemType; 8] {
        let mut out = [MemType::Uc; 8];
        for (i, slot) in (0u8..8).zip(out.iter_mut()) {
            *slot = self.entry(i);
        }
        out
    }
}

impl Default for Pat {
    /// The power-on value, as after RESET or INIT.
    fn default() -> Pat {
        Pat::reset()
    }
}

impl TryFrom<u64> for Pat {
    type Error = PatError;

    fn try_from(value: u64) -> Result<Pat, PatError> {
        Pat::new(value)
    }
}

impl From<Pat> for u64 {
    fn from(pat: Pat) -> u64 {
        pat.value()
    }
}

/// Why a value is not a valid IA32_PAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatError {
    /// Entry PA`entry` holds `byte`, a reserved encoding.
    ReservedEncoding {
        /// Which entry, 0..=7.
        entry: u8,
        /// The whole byte as written.
        byte: u8,
    },
}

impl fmt::Display for PatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PatError::ReservedEncoding { entry, byte } => write!(
                f,
                "PA{entry} = {byte:#04x} is a reserved encoding: WRMSR IA32_PAT raises #GP"
            ),
        }
    }
}

impl core::error::Error for PatError {}

/// The level of the leaf paging entry that maps a page, which decides where
/// its PAT bit sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageLevel {
    /// A 4 KiB page-table entry: PAT is bit 7.
    Pte4K,
    /// A 2 MiB or 1 GiB leaf (PS=1 in a PDE or PDPTE): PAT is bit 12, because
    /// bit 7 is PS there.
    Large,
}

impl PageLevel {
    /// The bit position of the PAT bit in a leaf entry of this level.
    pub const fn pat_bit(self) -> u32 {
        match self {
            PageLevel::Pte4K => PAT_BIT_4K,
            PageLevel::Large => PAT_BIT_LARGE,
        }
    }
}

/// PWT's position in every paging entry.
pub const PWT_BIT: u32 = 3;
/// PCD's position in every paging entry.
pub const PCD_BIT: u32 = 4;
/// The PAT bit's position in a 4 KiB PTE.
pub const PAT_BIT_4K: u32 = 7;
/// The PAT bit's position in a 2 MiB / 1 GiB leaf.
pub const PAT_BIT_LARGE: u32 = 12;

/// The PAT entry a leaf paging entry selects: 4·PAT + 2·PCD + PWT.
///
/// ```
/// use memtype::pat::{pat_index, PageLevel};
/// let pcd_pwt = (1 << 4) | (1 << 3);
/// assert_eq!(pat_index(pcd_pwt | (1 << 7), PageLevel::Pte4K), 7);
/// // In a large leaf bit 7 is PS, not PAT.
/// assert_eq!(pat_index(pcd_pwt | (1 << 7), PageLevel::Large), 3);
/// assert_eq!(pat_index(pcd_pwt | (1 << 12), PageLevel::Large), 7);
/// ```
pub const fn pat_index(entry: u64, level: PageLevel) -> u8 {
    pat_index_from_bits(
        entry & (1 << level.pat_bit()) != 0,
        entry & (1 << PCD_BIT) != 0,
        entry & (1 << PWT_BIT) != 0,
    )
}

/// The PAT entry selected by the three index bits: 4·PAT + 2·PCD + PWT.
pub const fn pat_index_from_bits(pat: bool, pcd: bool, pwt: bool) -> u8 {
    ((pat as u8) << 2) | ((pcd as u8) << 1) | (pwt as u8)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::MemType::*;
    use std::string::ToString;

    #[test]
    fn reset_value_decodes() {
        assert_eq!(Pat::reset().value(), 0x0007_0406_0007_0406);
        assert_eq!(
            Pat::reset().entries(),
            [Wb, Wt, UcMinus, Uc, Wb, Wt, UcMinus, Uc]
        );
        assert_eq!(Pat::default(), Pat::reset());
    }

    #[test]
    fn linux_default_decodes() {
        let pat = Pat::new(0x0407_0506_0007_0106).unwrap();
        assert_eq!(pat.entries(), [Wb, Wc, UcMinus, Uc, Wb, Wp, UcMinus, Wt]);
        assert_eq!(PAT_LINUX_DEFAULT, 0x0407_0506_0007_0106);
    }

    /// Every byte value in every position: reserved iff the low three bits
    /// are 2 or 3, or any of the upper five bits is set.
    #[test]
    fn validity_of_every_byte_in_every_position() {
        let wb_everywhere = 0x0606_0606_0606_0606u64;
        for pos in 0u8..8 {
            for byte in 0u8..=255 {
                let shift = 8 * u32::from(pos);
                let value = (wb_everywhere & !(0xFF << shift)) | (u64::from(byte) << shift);
                let reserved = byte >= 8 || matches!(byte & 7, 2 | 3);
                match Pat::new(value) {
                    Ok(pat) => {
                        assert!(!reserved, "PA{pos} = {byte:#x} accepted");
                        assert_eq!(pat.value(), value);
                        assert_eq!(pat.entry(pos).pat_encoding(), Some(byte));
                    }
                    Err(e) => {
                        assert!(reserved, "PA{pos} = {byte:#x} rejected");
                        assert_eq!(e, PatError::ReservedEncoding { entry: pos, byte });
                    }
                }
            }
        }
    }

    #[test]
    fn error_names_lowest_bad_entry() {
        // PA1 = 0x03 and PA6 = 0x80 are both reserved.
        let err = Pat::new(0x0680_0606_0606_0306).unwrap_err();
        assert_eq!(err, PatError::ReservedEncoding { entry: 1, byte: 3 });
    }

    #[test]
    fn error_message() {
        let err = PatError::ReservedEncoding { entry: 3, byte: 2 };
        assert_eq!(
            err.to_string(),
            "PA3 = 0x02 is a reserved encoding: WRMSR IA32_PAT raises #GP"
        );
    }

    #[test]
    fn entry_masks_index() {
        let pat = Pat::new(PAT_LINUX_DEFAULT).unwrap();
        for i in 0u8..=255 {
            assert_eq!(pat.entry(i), pat.entry(i & 7));
        }
    }

    #[test]
    fn from_entries_round_trips_and_rejects_amd_only_types() {
        let pat = Pat::new(PAT_LINUX_DEFAULT).unwrap();
        assert_eq!(Pat::from_entries(pat.entries()), Some(pat));
        assert_eq!(Pat::from_entries([WcPlus; 8]), None);
        assert_eq!(Pat::from_entries([Wb, Wb, Wb, Wb, Wb, Wb, Wb, Cd]), None);
        assert_eq!(Pat::try_from(0x0202_0202_0202_0202).ok(), None);
        assert_eq!(u64::from(pat), PAT_LINUX_DEFAULT);
    }

    #[test]
    fn pat_index_4k_uses_bit_7() {
        for idx in 0u8..8 {
            let (pat, pcd, pwt) = (idx & 4 != 0, idx & 2 != 0, idx & 1 != 0);
            assert_eq!(pat_index_from_bits(pat, pcd, pwt), idx);
            let pte = (u64::from(pat) << 7) | (u64::from(pcd) << 4) | (u64::from(pwt) << 3);
            assert_eq!(pat_index(pte, PageLevel::Pte4K), idx);
            // Bit 12 is an address bit in a 4 KiB PTE: it must not leak in.
            assert_eq!(pat_index(pte | (1 << 12), PageLevel::Pte4K), idx);
        }
    }

    #[test]
    fn pat_index_large_uses_bit_12() {
        for idx in 0u8..8 {
            let (pat, pcd, pwt) = (idx & 4 != 0, idx & 2 != 0, idx & 1 != 0);
            let pde = (u64::from(pat) << 12) | (u64::from(pcd) << 4) | (u64::from(pwt) << 3);
            assert_eq!(pat_index(pde, PageLevel::Large), idx);
            // Bit 7 is PS in a large leaf and always set there.
            assert_eq!(pat_index(pde | (1 << 7), PageLevel::Large), idx);
        }
    }

    #[test]
    fn pat_index_ignores_other_bits() {
        let noise = !((1u64 << 3) | (1 << 4) | (1 << 7) | (1 << 12));
        assert_eq!(pat_index(noise, PageLevel::Pte4K), 0);
        assert_eq!(pat_index(noise, PageLevel::Large), 0);
        assert_eq!(pat_index(u64::MAX, PageLevel::Pte4K), 7);
        assert_eq!(pat_index(u64::MAX, PageLevel::Large), 7);
    }
}
