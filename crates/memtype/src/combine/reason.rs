//! The result of combining memory types and the reason attached to it, so
//! that every effective type can be traced to the rule or table cell that
//! produced it.

use core::fmt;

use crate::MemType;

use super::tables;

/// An effective memory type and why it is that type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The memory type the access is performed with.
    pub effective: MemType,
    /// The rule or table cell that produced it.
    pub reason: Reason,
}

impl Decision {
    /// For an Intel table result of UC, which side the UC came from. The SDM
    /// footnotes the table: a UC from the MTRRs need not snoop caches (the
    /// line could never have been cached), a UC from the page tables must
    /// (an alias may have cached it). `None` for any other decision.
    ///
    /// ```
    /// use memtype::combine::{intel_bare_metal, UcOrigin};
    /// use memtype::MemType;
    /// let d = intel_bare_metal(MemType::Wb, MemType::Uc, false)?;
    /// assert_eq!(d.uc_origin(), Some(UcOrigin::PageTables));
    /// let d = intel_bare_metal(MemType::Uc, MemType::Wb, false)?;
    /// assert_eq!(d.uc_origin(), Some(UcOrigin::Mtrr));
    /// # Ok::<(), memtype::CombineError>(())
    /// ```
    pub fn uc_origin(&self) -> Option<UcOrigin> {
        match self.reason {
            Reason::IntelTable { mtrr, .. } if self.effective == MemType::Uc => {
                Some(if mtrr == MemType::Uc {
                    UcOrigin::Mtrr
                } else {
                    UcOrigin::PageTables
                })
            }
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.effective, self.reason)
    }
}

/// Where a UC in Intel's MTRR × PAT table comes from; see
/// [`Decision::uc_origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UcOrigin {
    /// The MTRR row is UC: the processor need not snoop its caches.
    Mtrr,
    /// The PAT made it UC: the processor must snoop its caches.
    PageTables,
}

/// Why a [`Decision`] has its effective type: the rule or table cell.
///
/// Table variants carry the inputs that select the cell, so a test can
/// assert the exact cell and a person can look it up in the manual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Intel SDM table "Effective Page-Level Memory Types": row `mtrr`,
    /// column `pat`.
    IntelTable {
        /// The MTRR type (row).
        mtrr: MemType,
        /// The PAT type (column).
        pat: MemType,
    },
    /// Intel CR0.CD=1 (no-fill cache mode): the access is UC whatever the
    /// MTRRs, PAT or EPT say.
    Cr0CdNoFill,
    /// EPT leaf with IPAT=1: the guest PAT is ignored and the EPT type is
    /// the effective type.
    EptIpat {
        /// The EPT leaf's memory type.
        ept: MemType,
    },
    /// EPT leaf with IPAT=0: Intel's table with the EPT type in the MTRR row.
    EptPat {
        /// The EPT leaf's memory type (row).
        ept: MemType,
        /// The guest PAT type (column).
        pat: MemType,
    },
    /// AMD APM Table 15-19 "Combining Guest and Host PAT Types" alone.
    AmdGuestHost {
        /// The guest PAT type (row).
        guest: MemType,
        /// The host PAT type (column).
        host: MemType,
    },
    /// AMD APM Table 15-20 "Combining PAT and MTRR Types" alone (Table 7-11
    /// when nested paging is off).
    AmdPatMtrr {
        /// The PAT type (row).
        pat: MemType,
        /// The MTRR type (column).
        mtrr: MemType,
    },
    /// AMD nested paging: Table 15-19 gave `combined` from `guest` × `host`,
    /// then Table 15-20 combined it with `mtrr`.
    AmdNested {
        /// The guest PAT type.
        guest: MemType,
        /// The host PAT type.
        host: MemType,
        /// The combined PAT type from the first table.
        combined: MemType,
        /// The host MTRR type of the system-physical address.
        mtrr: MemType,
    },
    /// AMD CR0.CD=1 (guest or host) turned the cacheable type `tables` that
    /// the tables gave into CD.
    AmdCd {
        /// What the tables gave (WB, WT or WP).
        tables: MemType,
    },
}

/// Writes "= T" for a table cell, or a marker if the inputs are off the table
/// (a hand-built `Reason` can hold anything).
struct Cell(Option<MemType>);

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(t) => write!(f, "= {t}"),
            None => f.write_str("is not a cell of the table"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::IntelTable { mtrr, pat } => write!(
                f,
                "SDM table 'Effective Page-Level Memory Types': MTRR {mtrr} x PAT {pat} {}",
                Cell(tables::intel(mtrr, pat))
            ),
            Reason::Cr0CdNoFill => f.write_str("CR0.CD=1 (no-fill cache mode): the access is UC"),
            Reason::EptIpat { ept } => {
                write!(f, "EPT IPAT=1: guest PAT ignored, EPT type {ept}")
            }
            Reason::EptPat { ept, pat } => write!(
                f,
                "EPT IPAT=0: EPT type {ept} in the MTRR row x guest PAT {pat} {}",
                Cell(tables::intel(ept, pat))
            ),
            Reason::AmdGuestHost { guest, host } => write!(
                f,
                "APM table 'Combining Guest and Host PAT Types': guest {guest} x host {host} {}",
                Cell(tables::amd_guest_host(guest, host))
            ),
            Reason::AmdPatMtrr { pat, mtrr } => write!(
                f,
                "APM table 'Combining PAT and MTRR Types': PAT {pat} x MTRR {mtrr} {}",
                Cell(tables::amd_pat_mtrr(pat, mtrr))
            ),
            Reason::AmdNested {
                guest,
                host,
                combined,
                mtrr,
            } => write!(
                f,
                "APM nested paging: guest PAT {guest} x host PAT {host} = {combined}, \
                 then x MTRR {mtrr} {}",
                Cell(tables::amd_pat_mtrr(combined, mtrr))
            ),
            Reason::AmdCd { tables } => write!(
                f,
                "CR0.CD=1 (guest or host) disables caching: the tables' {tables} becomes CD"
            ),
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
    fn display_names_the_cell() {
        let cases = [
            (
                Reason::IntelTable { mtrr: Wb, pat: Wc },
                "SDM table 'Effective Page-Level Memory Types': MTRR WB x PAT WC = WC",
            ),
            (
                Reason::Cr0CdNoFill,
                "CR0.CD=1 (no-fill cache mode): the access is UC",
            ),
            (
                Reason::EptIpat { ept: Wb },
                "EPT IPAT=1: guest PAT ignored, EPT type WB",
            ),
            (
                Reason::EptPat {
                    ept: Wb,
                    pat: UcMinus,
                },
                "EPT IPAT=0: EPT type WB in the MTRR row x guest PAT UC- = UC",
            ),
            (
                Reason::AmdGuestHost {
                    guest: Wc,
                    host: Wb,
                },
                "APM table 'Combining Guest and Host PAT Types': guest WC x host WB = WC+",
            ),
            (
                Reason::AmdPatMtrr {
                    pat: WcPlus,
                    mtrr: Uc,
                },
                "APM table 'Combining PAT and MTRR Types': PAT WC+ x MTRR UC = WC",
            ),
            (
                Reason::AmdNested {
                    guest: Wb,
                    host: Wb,
                    combined: Wb,
                    mtrr: Wt,
                },
                "APM nested paging: guest PAT WB x host PAT WB = WB, then x MTRR WT = WT",
            ),
            (
                Reason::AmdCd { tables: Wb },
                "CR0.CD=1 (guest or host) disables caching: the tables' WB becomes CD",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
        }
    }

    #[test]
    fn display_of_an_off_table_reason() {
        let r = Reason::IntelTable {
            mtrr: UcMinus,
            pat: Wb,
        };
        assert!(r.to_string().ends_with("is not a cell of the table"));
    }

    #[test]
    fn decision_display() {
        let d = Decision {
            effective: Wc,
            reason: Reason::IntelTable { mtrr: Wb, pat: Wc },
        };
        assert_eq!(
            d.to_string(),
            "WC (SDM table 'Effective Page-Level Memory Types': MTRR WB x PAT WC = WC)"
        );
    }

    #[test]
    fn uc_origin_only_for_intel_uc() {
        let d = |effective, reason| Decision { effective, reason };
        assert_eq!(
            d(Uc, Reason::IntelTable { mtrr: Uc, pat: Uc }).uc_origin(),
            Some(UcOrigin::Mtrr)
        );
        assert_eq!(
            d(Uc, Reason::IntelTable { mtrr: Wc, pat: Wt }).uc_origin(),
            Some(UcOrigin::PageTables)
        );
        assert_eq!(
            d(Wc, Reason::IntelTable { mtrr: Uc, pat: Wc }).uc_origin(),
            None
        );
        assert_eq!(d(Uc, Reason::Cr0CdNoFill).uc_origin(), None);
        assert_eq!(d(Uc, Reason::EptIpat { ept: Uc }).uc_origin(), None);
    }
}
