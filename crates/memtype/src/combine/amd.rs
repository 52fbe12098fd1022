//! AMD: the PAT × MTRR table (APM vol. 2 §7.8.5) and, under nested paging,
//! the guest PAT × host PAT table in front of it (§15.25.8). The guest PAT
//! is always honoured there; KVM on SVM leaves the nested entries at host
//! PAT index 0 (WB) and loads the guest's PAT into the VMCB's `g_pat`.
//!
//! CR0.CD: §15.25.8 says only that "either gCR0.CD or hCR0.CD" disables
//! caching. §7.4 defines what that means: the CD type "is inferred when the
//! L1 caches are disabled [CR0.CD=1] ... for any reference to a region
//! designated as cacheable". So with CR0.CD set, a result of WB, WT or WP
//! becomes CD ([`Reason::AmdCd`]) and an uncached result (UC, WC, WC+, CD)
//! stands as the tables give it.

use crate::MemType;

use super::{CombineError, Decision, Reason, mtrr_input, pat_input, tables};

/// The combined PAT type of a guest PAT type and a host (nested) PAT type,
/// APM Table 15-19 alone. The result is a row of the PAT × MTRR table, so
/// it may be WC+.
///
/// ```
/// use memtype::combine::amd_guest_host_pat;
/// use memtype::MemType;
/// assert_eq!(amd_guest_host_pat(MemType::Wc, MemType::Wb)?.effective, MemType::WcPlus);
/// # Ok::<(), memtype::CombineError>(())
/// ```
pub fn amd_guest_host_pat(guest_pat: MemType, host_pat: MemType) -> Result<Decision, CombineError> {
    let guest = pat_input(guest_pat)?;
    let host = pat_input(host_pat)?;
    Ok(Decision {
        effective: guest_host_cell(guest, host),
        reason: Reason::AmdGuestHost { guest, host },
    })
}

/// The effective type on AMD without nested paging: PAT type `pat` × MTRR
/// type `mtrr` (APM Table 7-11), then CR0.CD as described in the module
/// documentation.
///
/// ```
/// use memtype::combine::amd_bare_metal;
/// use memtype::MemType;
/// // Intel gives WT here; AMD gives CD.
/// assert_eq!(amd_bare_metal(MemType::Wp, MemType::Wt, false)?.effective, MemType::Cd);
/// # Ok::<(), memtype::CombineError>(())
/// ```
pub fn amd_bare_metal(mtrr: MemType, pat: MemType, cr0_cd: bool) -> Result<Decision, CombineError> {
    let mtrr = mtrr_input(mtrr)?;
    let pat = pat_input(pat)?;
    let decision = Decision {
        effective: pat_mtrr_cell(pat, mtrr),
        reason: Reason::AmdPatMtrr { pat, mtrr },
    };
    Ok(apply_cr0_cd(decision, cr0_cd))
}

/// The effective type of a guest access under AMD nested paging: guest PAT
/// × host PAT (Table 15-19), then × the host MTRR type of the
/// system-physical address (Table 15-20), then CR0.CD (guest or host; pass
/// their OR) as described in the module documentation.
///
/// ```
/// use memtype::combine::{amd_npt, Reason};
/// use memtype::MemType;
/// // KVM: host PAT WB in the nested entry, host MTRR WB for RAM.
/// let d = amd_npt(MemType::Wc, MemType::Wb, MemType::Wb, false)?;
/// assert_eq!(d.effective, MemType::WcPlus);
/// assert_eq!(
///     d.reason,
///     Reason::AmdNested {
///         guest: MemType::Wc,
///         host: MemType::Wb,
///         combined: MemType::WcPlus,
///         mtrr: MemType::Wb,
///     }
/// );
/// assert_eq!(amd_npt(MemType::Wb, MemType::Wb, MemType::Wb, true)?.effective, MemType::Cd);
/// # Ok::<(), memtype::CombineError>(())
/// ```
pub fn amd_npt(
    guest_pat: MemType,
    host_pat: MemType,
    mtrr: MemType,
    cr0_cd: bool,
) -> Result<Decision, CombineError> {
    let guest = pat_input(guest_pat)?;
    let host = pat_input(host_pat)?;
    let mtrr = mtrr_input(mtrr)?;
    let combined = guest_host_cell(guest, host);
    let decision = Decision {
        effective: pat_mtrr_cell(combined, mtrr),
        reason: Reason::AmdNested {
            guest,
            host,
            combined,
            mtrr,
        },
    };
    Ok(apply_cr0_cd(decision, cr0_cd))
}

fn apply_cr0_cd(decision: Decision, cr0_cd: bool) -> Decision {
    if cr0_cd && decision.effective.is_cacheable() {
        Decision {
            effective: MemType::Cd,
            reason: Reason::AmdCd {
                tables: decision.effective,
            },
        }
    } else {
        decision
    }
}

// Both helpers take validated inputs, so the cells exist; UC is the safe
// answer should that ever change.
fn guest_host_cell(guest: MemType, host: MemType) -> MemType {
    tables::amd_guest_host(guest, host).unwrap_or(MemType::Uc)
}

fn pat_mtrr_cell(pat: MemType, mtrr: MemType) -> MemType {
    tables::amd_pat_mtrr(pat, mtrr).unwrap_or(MemType::Uc)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::MemType::*;

    /// memtypes.md, "Guest PAT × host PAT", copied row by row (rows guest).
    /// Columns: host UC, UC-, WC, WP, WT, WB.
    ///
    /// Unconfirmed: this table comes from a translation of APM §15.25.8
    /// (Table 15-19) and was not checked against the English APM. Only
    /// WC×WB = WC+ and UC-×WB = UC are corroborated (SimpleSvm's NPT comment).
    const GUEST_HOST: [(MemType, [MemType; 6]); 6] = [
        (Uc, [Uc, Uc, Uc, Uc, Uc, Uc]),
        (UcMinus, [Uc, UcMinus, Wc, Uc, Uc, Uc]),
        (Wc, [Wc, Wc, Wc, WcPlus, WcPlus, WcPlus]),
        (Wp, [Uc, Uc, Uc, Wp, Uc, Wp]),
        (Wt, [Uc, Uc, Uc, Uc, Wt, Wt]),
        (Wb, [Uc, Uc, Wc, Wp, Wt, Wb]),
    ];
    const HOST_COLUMNS: [MemType; 6] = [Uc, UcMinus, Wc, Wp, Wt, Wb];

    /// memtypes.md, "Combined PAT type × MTRR", copied row by row.
    /// Columns: MTRR UC, WC, WP, WT, WB.
    ///
    /// Rows UC, UC-, WC, WP, WT, WB match the English APM's Table 7-11. Row
    /// WC+ comes from the translation of Table 15-20; its WP, WT and WB cells
    /// are corroborated by SimpleSvm's comment, its UC and WC cells are
    /// unconfirmed.
    const PAT_MTRR: [(MemType, [MemType; 5]); 7] = [
        (Uc, [Uc, Cd, Cd, Cd, Cd]),
        (UcMinus, [Uc, Wc, Cd, Cd, Cd]),
        (Wc, [Wc, Wc, Wc, Wc, Wc]),
        (WcPlus, [Wc, Wc, WcPlus, WcPlus, WcPlus]),
        (Wp, [Uc, Cd, Wp, Cd, Wp]),
        (Wt, [Uc, Cd, Cd, Wt, Wt]),
        (Wb, [Uc, Wc, Wp, Wt, Wb]),
    ];
    const MTRR_COLUMNS: [MemType; 5] = [Uc, Wc, Wp, Wt, Wb];

    fn expected_combined(guest: MemType, host: MemType) -> MemType {
        let (_, row) = GUEST_HOST.iter().find(|(g, _)| *g == guest).unwrap();
        row[HOST_COLUMNS.iter().position(|&h| h == host).unwrap()]
    }

    fn expected_pat_mtrr(pat: MemType, mtrr: MemType) -> MemType {
        let (_, row) = PAT_MTRR.iter().find(|(p, _)| *p == pat).unwrap();
        row[MTRR_COLUMNS.iter().position(|&m| m == mtrr).unwrap()]
    }

    #[test]
    fn every_cell_of_the_guest_host_table() {
        for (guest, row) in GUEST_HOST {
            for (host, want) in HOST_COLUMNS.into_iter().zip(row) {
                let d = amd_guest_host_pat(guest, host).unwrap();
                assert_eq!(d.effective, want, "guest {guest} x host {host}");
                assert_eq!(d.reason, Reason::AmdGuestHost { guest, host });
            }
        }
    }

    /// The WC+ row cannot be reached through `amd_bare_metal` (a PAT never
    /// holds WC+), so every cell is checked through `amd_npt` with a guest ×
    /// host pair that yields the row's PAT type.
    #[test]
    fn every_cell_of_the_pat_mtrr_table() {
        let guest_host_for = |pat: MemType| match pat {
            WcPlus => (Wc, Wb),
            Wc => (Wb, Wc),
            UcMinus => (UcMinus, UcMinus),
            other => (other, Wb),
        };
        for (pat, row) in PAT_MTRR {
            let (guest, host) = guest_host_for(pat);
            assert_eq!(expected_combined(guest, host), pat);
            for (mtrr, want) in MTRR_COLUMNS.into_iter().zip(row) {
                let d = amd_npt(guest, host, mtrr, false).unwrap();
                assert_eq!(d.effective, want, "PAT {pat} x MTRR {mtrr}");
                assert_eq!(
                    d.reason,
                    Reason::AmdNested {
                        guest,
                        host,
                        combined: pat,
                        mtrr
                    }
                );
                if pat != WcPlus {
                    let d = amd_bare_metal(mtrr, pat, false).unwrap();
                    assert_eq!(d.effective, want, "bare metal PAT {pat} x MTRR {mtrr}");
                    assert_eq!(d.reason, Reason::AmdPatMtrr { pat, mtrr });
                }
            }
        }
    }

    #[test]
    fn npt_is_the_two_tables_in_sequence() {
        for guest in HOST_COLUMNS {
            for host in HOST_COLUMNS {
                for mtrr in MTRR_COLUMNS {
                    let want = expected_pat_mtrr(expected_combined(guest, host), mtrr);
                    let d = amd_npt(guest, host, mtrr, false).unwrap();
                    assert_eq!(d.effective, want, "{guest} x {host} x {mtrr}");
                }
            }
        }
    }

    /// memtypes.md: AMD differs from Intel's bare-metal table in exactly
    /// three cells, all CD on AMD.
    #[test]
    fn amd_differs_from_intel_in_three_cells() {
        let mut diffs = std::vec::Vec::new();
        for mtrr in MTRR_COLUMNS {
            for pat in HOST_COLUMNS {
                let amd = amd_bare_metal(mtrr, pat, false).unwrap().effective;
                let intel = crate::combine::intel_bare_metal(mtrr, pat, false)
                    .unwrap()
                    .effective;
                if amd == Cd && intel == Uc {
                    // CD is AMD's name for a UC that probes caches, which is
                    // what Intel's page-table UC (footnote 2) does as well.
                    continue;
                }
                if amd != intel {
                    diffs.push((mtrr, pat, intel, amd));
                }
            }
        }
        assert_eq!(
            diffs,
            [(Wp, UcMinus, Wc, Cd), (Wp, Wt, Wt, Cd), (Wt, Wp, Wp, Cd),]
        );
    }

    #[test]
    fn cr0_cd_turns_cacheable_results_into_cd() {
        for guest in HOST_COLUMNS {
            for host in HOST_COLUMNS {
                for mtrr in MTRR_COLUMNS {
                    let plain = amd_npt(guest, host, mtrr, false).unwrap();
                    let cd = amd_npt(guest, host, mtrr, true).unwrap();
                    if plain.effective.is_cacheable() {
                        assert_eq!(cd.effective, Cd);
                        assert_eq!(
                            cd.reason,
                            Reason::AmdCd {
                                tables: plain.effective
                            }
                        );
                    } else {
                        assert_eq!(cd, plain);
                    }
                }
            }
        }
        let d = amd_bare_metal(Wb, Wb, true).unwrap();
        assert_eq!((d.effective, d.reason), (Cd, Reason::AmdCd { tables: Wb }));
        assert_eq!(amd_bare_metal(Uc, Wb, true).unwrap().effective, Uc);
    }

    #[test]
    fn rejects_types_off_the_tables() {
        assert_eq!(
            amd_npt(WcPlus, Wb, Wb, false),
            Err(CombineError::NotAPatType(WcPlus))
        );
        assert_eq!(
            amd_npt(Wb, Cd, Wb, false),
            Err(CombineError::NotAPatType(Cd))
        );
        assert_eq!(
            amd_npt(Wb, Wb, UcMinus, false),
            Err(CombineError::NotAnMtrrType(UcMinus))
        );
        assert_eq!(
            amd_bare_metal(Cd, Wb, true),
            Err(CombineError::NotAnMtrrType(Cd))
        );
        assert_eq!(
            amd_guest_host_pat(Wb, WcPlus),
            Err(CombineError::NotAPatType(WcPlus))
        );
    }
}
