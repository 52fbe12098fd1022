//! The combining tables themselves, as data: each is laid out with the same
//! rows and columns, in the same order, as in `memtypes.md` and the manual
//! it was taken from, so a cell can be checked against the source by eye.
//!
//! Provenance, cell by cell:
//! - [`INTEL`]: Intel SDM vol. 3, "Effective Page-Level Memory Types for
//!   Pentium III and More Recent Processor Families" (Table 11-7 in older
//!   editions). Xen's `xen/arch/x86/hvm/mtrr.c` table agrees cell for cell.
//! - [`AMD_PAT_MTRR`] rows UC, UC-, WC, WP, WT, WB: confirmed against the
//!   English AMD APM vol. 2, §7.8.5, Table 7-11 "Combined Effect of MTRR and
//!   PAT Memory Types", which §15.25.8's Table 15-20 extends.
//! - [`AMD_PAT_MTRR`] row WC+, and all of [`AMD_GUEST_HOST`]: transcribed from a
//!   (Chinese) translation of APM §15.25.8 (Tables 15-19 and 15-20); not
//!   checked against the English original. Four of those cells are
//!   corroborated by an independent source, the SimpleSvm hypervisor's
//!   comment on NPT memory types (guest WC × host WB = WC+, guest UC- × host
//!   WB = UC, WC+ × MTRR WP/WT/WB = WC+). The remaining ones, marked
//!   "unconfirmed" below, rest on the translation alone.

use crate::MemType;
use crate::MemType::{Cd, Uc, UcMinus, Wb, Wc, WcPlus, Wp, Wt};

/// Rows of [`INTEL`]: the MTRR type (or, under EPT, the EPT type).
pub(super) const INTEL_ROWS: [MemType; 5] = [Uc, Wc, Wt, Wb, Wp];
/// Columns of [`INTEL`]: the PAT type.
pub(super) const INTEL_COLS: [MemType; 6] = [Uc, UcMinus, Wc, Wt, Wb, Wp];
/// Intel: MTRR (row) × PAT (column), CR0.CD=0.
#[rustfmt::skip]
pub(super) const INTEL: [[MemType; 6]; 5] = [
    //  PAT:     UC  UC-      WC  WT  WB  WP
    /* UC */    [Uc, Uc,      Wc, Uc, Uc, Uc],
    /* WC */    [Uc, Wc,      Wc, Uc, Wc, Uc],
    /* WT */    [Uc, Uc,      Wc, Wt, Wt, Wp],
    /* WB */    [Uc, Uc,      Wc, Wt, Wb, Wp],
    /* WP */    [Uc, Wc,      Wc, Wt, Wp, Wp],
];

/// Rows of [`AMD_GUEST_HOST`]: the guest PAT type.
pub(super) const AMD_GUEST_ROWS: [MemType; 6] = [Uc, UcMinus, Wc, Wp, Wt, Wb];
/// Columns of [`AMD_GUEST_HOST`]: the host (nested) PAT type.
pub(super) const AMD_HOST_COLS: [MemType; 6] = [Uc, UcMinus, Wc, Wp, Wt, Wb];
/// AMD nested paging: guest PAT (row) × host PAT (column) = combined PAT type
/// (APM Table 15-19). Unconfirmed against the English APM except WC×WB and
/// UC-×WB (see the module comment).
#[rustfmt::skip]
pub(super) const AMD_GUEST_HOST: [[MemType; 6]; 6] = [
    //  host:    UC  UC-      WC  WP      WT      WB
    /* UC  */   [Uc, Uc,      Uc, Uc,     Uc,     Uc],
    /* UC- */   [Uc, UcMinus, Wc, Uc,     Uc,     Uc],
    /* WC  */   [Wc, Wc,      Wc, WcPlus, WcPlus, WcPlus],
    /* WP  */   [Uc, Uc,      Uc, Wp,     Uc,     Wp],
    /* WT  */   [Uc, Uc,      Uc, Uc,     Wt,     Wt],
    /* WB  */   [Uc, Uc,      Wc, Wp,     Wt,     Wb],
];

/// Rows of [`AMD_PAT_MTRR`]: the (combined) PAT type.
pub(super) const AMD_PAT_ROWS: [MemType; 7] = [Uc, UcMinus, Wc, WcPlus, Wp, Wt, Wb];
/// Columns of [`AMD_PAT_MTRR`]: the host MTRR type of the system-physical address.
pub(super) const AMD_MTRR_COLS: [MemType; 5] = [Uc, Wc, Wp, Wt, Wb];
/// AMD: PAT (row) × MTRR (column) (APM Table 15-20, extending Table 7-11).
/// Row WC+, columns UC and WC: unconfirmed (translation only).
#[rustfmt::skip]
pub(super) const AMD_PAT_MTRR: [[MemType; 5]; 7] = [
    //  MTRR:    UC  WC  WP      WT      WB
    /* UC  */   [Uc, Cd, Cd,     Cd,     Cd],
    /* UC- */   [Uc, Wc, Cd,     Cd,     Cd],
    /* WC  */   [Wc, Wc, Wc,     Wc,     Wc],
    /* WC+ */   [Wc, Wc, WcPlus, WcPlus, WcPlus],
    /* WP  */   [Uc, Cd, Wp,     Cd,     Wp],
    /* WT  */   [Uc, Cd, Cd,     Wt,     Wt],
    /* WB  */   [Uc, Wc, Wp,     Wt,     Wb],
];

/// The cell of `table` at row `row` and column `col`, or `None` if either
/// type is not on that axis.
pub(super) fn cell<const R: usize, const C: usize>(
    table: &[[MemType; C]; R],
    rows: &[MemType; R],
    cols: &[MemType; C],
    row: MemType,
    col: MemType,
) -> Option<MemType> {
    let r = rows.iter().position(|&t| t == row)?;
    let c = cols.iter().position(|&t| t == col)?;
    Some(table[r][c])
}

pub(super) fn intel(mtrr: MemType, pat: MemType) -> Option<MemType> {
    cell(&INTEL, &INTEL_ROWS, &INTEL_COLS, mtrr, pat)
}

pub(super) fn amd_guest_host(guest: MemType, host: MemType) -> Option<MemType> {
    cell(
        &AMD_GUEST_HOST,
        &AMD_GUEST_ROWS,
        &AMD_HOST_COLS,
        guest,
        host,
    )
}

pub(super) fn amd_pat_mtrr(pat: MemType, mtrr: MemType) -> Option<MemType> {
    cell(&AMD_PAT_MTRR, &AMD_PAT_ROWS, &AMD_MTRR_COLS, pat, mtrr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_are_the_input_domains() {
        // Every MTRR type is a row/column exactly once, and nothing else is.
        for t in MemType::ALL {
            let mtrr = t.mtrr_encoding().is_some();
            let pat = t.pat_encoding().is_some();
            assert_eq!(INTEL_ROWS.contains(&t), mtrr, "{t}");
            assert_eq!(AMD_MTRR_COLS.contains(&t), mtrr, "{t}");
            assert_eq!(INTEL_COLS.contains(&t), pat, "{t}");
            assert_eq!(AMD_GUEST_ROWS.contains(&t), pat, "{t}");
            assert_eq!(AMD_HOST_COLS.contains(&t), pat, "{t}");
            assert_eq!(AMD_PAT_ROWS.contains(&t), pat || t == WcPlus, "{t}");
        }
    }

    #[test]
    fn guest_host_results_are_rows_of_the_second_table() {
        for row in AMD_GUEST_HOST {
            for t in row {
                assert!(AMD_PAT_ROWS.contains(&t), "{t}");
            }
        }
    }

    #[test]
    fn cell_outside_the_axes_is_none() {
        assert_eq!(intel(UcMinus, Wb), None);
        assert_eq!(intel(Wb, Cd), None);
        assert_eq!(amd_guest_host(WcPlus, Wb), None);
        assert_eq!(amd_pat_mtrr(Cd, Wb), None);
        assert_eq!(amd_pat_mtrr(Wb, UcMinus), None);
    }
}
