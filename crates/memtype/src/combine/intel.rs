//! Intel without virtualization: the MTRR type of the physical address
//! combined with the PAT type of the mapping.

use crate::MemType;

use super::{CombineError, Decision, Reason, mtrr_input, pat_input, tables};

/// The effective memory type on Intel bare metal: MTRR type `mtrr` × PAT
/// type `pat` by the SDM's "Effective Page-Level Memory Types" table, or UC
/// with [`Reason::Cr0CdNoFill`] when `cr0_cd` (CR0.CD=1, NW=0: no-fill mode).
///
/// Inputs are validated first, so an invalid type is an error even when
/// CR0.CD would make it moot. CR0.CD=0 with NW=1 raises #GP on the MOV to
/// CR0 and so cannot be asked about.
///
/// ```
/// use memtype::combine::{intel_bare_metal, Reason};
/// use memtype::MemType;
/// let d = intel_bare_metal(MemType::Wb, MemType::Wc, false)?;
/// assert_eq!(d.effective, MemType::Wc);
/// assert_eq!(d.reason, Reason::IntelTable { mtrr: MemType::Wb, pat: MemType::Wc });
/// // UC- from the PAT yields to an MTRR WC: that is what makes it "minus".
/// assert_eq!(intel_bare_metal(MemType::Wc, MemType::UcMinus, false)?.effective, MemType::Wc);
/// assert_eq!(intel_bare_metal(MemType::Wb, MemType::Wb, true)?.effective, MemType::Uc);
/// # Ok::<(), memtype::CombineError>(())
/// ```
pub fn intel_bare_metal(
    mtrr: MemType,
    pat: MemType,
    cr0_cd: bool,
) -> Result<Decision, CombineError> {
    let mtrr = mtrr_input(mtrr)?;
    let pat = pat_input(pat)?;
    if cr0_cd {
        return Ok(Decision {
            effective: MemType::Uc,
            reason: Reason::Cr0CdNoFill,
        });
    }
    Ok(Decision {
        effective: table_cell(mtrr, pat),
        reason: Reason::IntelTable { mtrr, pat },
    })
}

/// The Intel table's cell for validated inputs; shared with EPT, which puts
/// the EPT type in the MTRR row.
pub(super) fn table_cell(row: MemType, pat: MemType) -> MemType {
    // Both axes were validated by the caller, so the cell exists; UC is the
    // safe answer should that ever change.
    tables::intel(row, pat).unwrap_or(MemType::Uc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemType::*;

    /// memtypes.md, "Bare metal: MTRR × PAT (CR0.CD=0)", copied row by row.
    /// Columns: PAT UC, UC-, WC, WT, WB, WP.
    const EXPECTED: [(MemType, [MemType; 6]); 5] = [
        (Uc, [Uc, Uc, Wc, Uc, Uc, Uc]),
        (Wc, [Uc, Wc, Wc, Uc, Wc, Uc]),
        (Wt, [Uc, Uc, Wc, Wt, Wt, Wp]),
        (Wb, [Uc, Uc, Wc, Wt, Wb, Wp]),
        (Wp, [Uc, Wc, Wc, Wt, Wp, Wp]),
    ];
    const PAT_COLUMNS: [MemType; 6] = [Uc, UcMinus, Wc, Wt, Wb, Wp];

    #[test]
    fn every_cell_of_the_bare_metal_table() {
        for (mtrr, row) in EXPECTED {
            for (pat, want) in PAT_COLUMNS.into_iter().zip(row) {
                let d = intel_bare_metal(mtrr, pat, false).unwrap();
                assert_eq!(d.effective, want, "MTRR {mtrr} x PAT {pat}");
                assert_eq!(d.reason, Reason::IntelTable { mtrr, pat });
            }
        }
    }

    #[test]
    fn cr0_cd_gives_uc_everywhere() {
        for (mtrr, _) in EXPECTED {
            for pat in PAT_COLUMNS {
                let d = intel_bare_metal(mtrr, pat, true).unwrap();
                assert_eq!(d.effective, Uc);
                assert_eq!(d.reason, Reason::Cr0CdNoFill);
            }
        }
    }

    #[test]
    fn rejects_types_off_the_table() {
        for cd in [false, true] {
            for bad in [UcMinus, WcPlus, Cd] {
                assert_eq!(
                    intel_bare_metal(bad, Wb, cd),
                    Err(CombineError::NotAnMtrrType(bad))
                );
            }
            for bad in [WcPlus, Cd] {
                assert_eq!(
                    intel_bare_metal(Wb, bad, cd),
                    Err(CombineError::NotAPatType(bad))
                );
            }
        }
    }
}
