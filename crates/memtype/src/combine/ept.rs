//! Intel EPT: the memory-type bits of a leaf EPT entry and how they combine
//! with the guest's PAT (SDM vol. 3, "Memory Type Used for Translated
//! Guest-Physical Addresses").

use crate::MemType;

use super::{CombineError, Decision, Reason, intel::table_cell, mtrr_input, pat_input};

/// The memory-typing bits of a leaf EPT entry: the type in bits 5:3 and
/// IPAT ("ignore PAT") in bit 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptLeaf {
    /// The raw type field, bits 5:3 (0..=7; 2, 3 and 7 are reserved).
    pub memtype: u8,
    /// Bit 6: ignore the guest PAT.
    pub ipat: bool,
}

impl EptLeaf {
    /// Where the type field starts.
    pub const MEMTYPE_SHIFT: u32 = 3;
    /// The type field, bits 5:3.
    pub const MEMTYPE_MASK: u64 = 0x38;
    /// IPAT, bit 6.
    pub const IPAT_BIT: u64 = 1 << 6;

    /// A leaf of type `t` (UC, WC, WT, WP or WB).
    pub fn new(t: MemType, ipat: bool) -> Result<EptLeaf, CombineError> {
        let t = mtrr_input(t)?;
        Ok(EptLeaf {
            // mtrr_input admitted only types with an encoding.
            memtype: t.mtrr_encoding().unwrap_or(0),
            ipat,
        })
    }

    /// Extracts the typing bits from a whole EPT entry; other bits are ignored.
    ///
    /// ```
    /// use memtype::combine::EptLeaf;
    /// use memtype::MemType;
    /// // KVM's "WB + IPAT" leaf bits, on top of RWX and a frame address.
    /// let leaf = EptLeaf::from_spte_bits(0x1234_5000 | (6 << 3) | (1 << 6) | 0b111);
    /// assert_eq!(leaf, EptLeaf::new(MemType::Wb, true)?);
    /// assert_eq!(leaf.to_spte_bits(), 0x70);
    /// # Ok::<(), memtype::CombineError>(())
    /// ```
    pub const fn from_spte_bits(spte: u64) -> EptLeaf {
        EptLeaf {
            // The mask leaves three bits, so the cast is exact.
            memtype: ((spte & Self::MEMTYPE_MASK) >> Self::MEMTYPE_SHIFT) as u8,
            ipat: spte & Self::IPAT_BIT != 0,
        }
    }

    /// The typing bits as they sit in an EPT entry (bits 6:3 only). A
    /// hand-built `memtype` above 7 is cut to its low three bits.
    pub const fn to_spte_bits(self) -> u64 {
        let t = ((self.memtype as u64) << Self::MEMTYPE_SHIFT) & Self::MEMTYPE_MASK;
        if self.ipat { t | Self::IPAT_BIT } else { t }
    }

    /// The leaf's memory type; 2, 3 and 7 (and anything ≥ 8) are an EPT
    /// misconfiguration.
    pub fn mem_type(self) -> Result<MemType, CombineError> {
        MemType::from_mtrr_encoding(self.memtype).ok_or(CombineError::EptMisconfig {
            encoding: self.memtype,
        })
    }
}

/// The effective type of a guest access through an EPT leaf.
///
/// In order: a reserved EPT type is a misconfiguration (an error, as the
/// access never happens); guest CR0.CD=1 reaching hardware gives UC
/// ([`Reason::Cr0CdNoFill`]; KVM on VMX never lets it reach hardware);
/// IPAT=1 gives the EPT type ([`Reason::EptIpat`]); IPAT=0 uses Intel's
/// MTRR × PAT table with the EPT type in the MTRR row ([`Reason::EptPat`]).
/// Host and guest MTRRs take no part. `guest_pat` must be a PAT type even
/// where it is ignored.
///
/// ```
/// use memtype::combine::{intel_ept, EptLeaf, Reason};
/// use memtype::MemType;
/// // Host MMIO is mapped UC without IPAT: the guest can still ask for WC.
/// let mmio = EptLeaf::new(MemType::Uc, false)?;
/// assert_eq!(intel_ept(mmio, MemType::Wc, false)?.effective, MemType::Wc);
/// assert_eq!(intel_ept(mmio, MemType::Wb, false)?.effective, MemType::Uc);
/// # Ok::<(), memtype::CombineError>(())
/// ```
pub fn intel_ept(
    leaf: EptLeaf,
    guest_pat: MemType,
    guest_cr0_cd: bool,
) -> Result<Decision, CombineError> {
    let ept = leaf.mem_type()?;
    let pat = pat_input(guest_pat)?;
    if guest_cr0_cd {
        return Ok(Decision {
            effective: MemType::Uc,
            reason: Reason::Cr0CdNoFill,
        });
    }
    if leaf.ipat {
        return Ok(Decision {
            effective: ept,
            reason: Reason::EptIpat { ept },
        });
    }
    Ok(Decision {
        effective: table_cell(ept, pat),
        reason: Reason::EptPat { ept, pat },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemType::*;

    const MTRR_TYPES: [MemType; 5] = [Uc, Wc, Wt, Wp, Wb];
    const PAT_TYPES: [MemType; 6] = [Uc, UcMinus, Wc, Wt, Wp, Wb];

    #[test]
    fn leaf_bits_round_trip() {
        for enc in 0u8..8 {
            for ipat in [false, true] {
                let leaf = EptLeaf { memtype: enc, ipat };
                let bits = leaf.to_spte_bits();
                assert_eq!(bits & !(EptLeaf::MEMTYPE_MASK | EptLeaf::IPAT_BIT), 0);
                assert_eq!(EptLeaf::from_spte_bits(bits), leaf);
                assert_eq!(EptLeaf::from_spte_bits(bits | !0x78), leaf);
            }
        }
    }

    #[test]
    fn new_accepts_only_mtrr_types() {
        for t in MemType::ALL {
            match EptLeaf::new(t, false) {
                Ok(leaf) => {
                    assert!(MTRR_TYPES.contains(&t));
                    assert_eq!(leaf.mem_type(), Ok(t));
                }
                Err(e) => {
                    assert!(!MTRR_TYPES.contains(&t));
                    assert_eq!(e, CombineError::NotAnMtrrType(t));
                }
            }
        }
    }

    #[test]
    fn reserved_types_are_misconfigurations() {
        for enc in [2u8, 3, 7, 8, 0xFF] {
            let leaf = EptLeaf {
                memtype: enc,
                ipat: true,
            };
            assert_eq!(
                leaf.mem_type(),
                Err(CombineError::EptMisconfig { encoding: enc })
            );
            // The misconfiguration wins over everything else.
            assert_eq!(
                intel_ept(leaf, Wb, true),
                Err(CombineError::EptMisconfig { encoding: enc })
            );
        }
    }

    #[test]
    fn ipat_gives_the_ept_type() {
        for ept in MTRR_TYPES {
            for pat in PAT_TYPES {
                let d = intel_ept(EptLeaf::new(ept, true).unwrap(), pat, false).unwrap();
                assert_eq!(d.effective, ept);
                assert_eq!(d.reason, Reason::EptIpat { ept });
            }
        }
    }

    #[test]
    fn without_ipat_the_ept_type_takes_the_mtrr_row() {
        for ept in MTRR_TYPES {
            for pat in PAT_TYPES {
                let d = intel_ept(EptLeaf::new(ept, false).unwrap(), pat, false).unwrap();
                let bare = intel_bare_metal_cell(ept, pat);
                assert_eq!(d.effective, bare, "EPT {ept} x PAT {pat}");
                assert_eq!(d.reason, Reason::EptPat { ept, pat });
            }
        }
    }

    fn intel_bare_metal_cell(mtrr: MemType, pat: MemType) -> MemType {
        crate::combine::intel_bare_metal(mtrr, pat, false)
            .unwrap()
            .effective
    }

    #[test]
    fn guest_cr0_cd_gives_uc() {
        for ept in MTRR_TYPES {
            for ipat in [false, true] {
                let d = intel_ept(EptLeaf::new(ept, ipat).unwrap(), Wb, true).unwrap();
                assert_eq!((d.effective, d.reason), (Uc, Reason::Cr0CdNoFill));
            }
        }
    }

    #[test]
    fn guest_pat_is_validated_even_under_ipat() {
        let leaf = EptLeaf::new(Wb, true).unwrap();
        assert_eq!(
            intel_ept(leaf, Cd, false),
            Err(CombineError::NotAPatType(Cd))
        );
    }
}
