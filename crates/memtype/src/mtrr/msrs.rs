//! The MTRR MSRs as the architecture defines them: their indices, their bit
//! layout, the reserved-bit checks WRMSR performs (SDM vol. 3, "Memory Type
//! Range Registers"), and decoding them into an [`MtrrState`]. Also small
//! encoders that build valid MSR values, for tests and for models that
//! program MTRRs.

use crate::MemType;

use super::{MtrrError, MtrrMsrs, MtrrState, OverlapPolicy, UNUSED, VariableRange};

/// IA32_MTRRCAP (read-only): VCNT in bits 7:0, FIX bit 8, WC bit 10.
pub const MSR_MTRRCAP: u32 = 0xFE;
/// IA32_MTRR_DEF_TYPE: default type in bits 7:0, FE bit 10, E bit 11.
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2FF;
/// Fixed range: eight 64 KiB fields covering 0x00000..0x7FFFF.
pub const MSR_MTRR_FIX_64K_00000: u32 = 0x250;
/// Fixed range: eight 16 KiB fields covering 0x80000..0x9FFFF.
pub const MSR_MTRR_FIX_16K_80000: u32 = 0x258;
/// Fixed range: eight 16 KiB fields covering 0xA0000..0xBFFFF.
pub const MSR_MTRR_FIX_16K_A0000: u32 = 0x259;
/// Fixed range: eight 4 KiB fields covering 0xC0000..0xC7FFF.
pub const MSR_MTRR_FIX_4K_C0000: u32 = 0x268;
/// Fixed range: eight 4 KiB fields covering 0xC8000..0xCFFFF.
pub const MSR_MTRR_FIX_4K_C8000: u32 = 0x269;
/// Fixed range: eight 4 KiB fields covering 0xD0000..0xD7FFF.
pub const MSR_MTRR_FIX_4K_D0000: u32 = 0x26A;
/// Fixed range: eight 4 KiB fields covering 0xD8000..0xDFFFF.
pub const MSR_MTRR_FIX_4K_D8000: u32 = 0x26B;
/// Fixed range: eight 4 KiB fields covering 0xE0000..0xE7FFF.
pub const MSR_MTRR_FIX_4K_E0000: u32 = 0x26C;
/// Fixed range: eight 4 KiB fields covering 0xE8000..0xEFFFF.
pub const MSR_MTRR_FIX_4K_E8000: u32 = 0x26D;
/// Fixed range: eight 4 KiB fields covering 0xF0000..0xF7FFF.
pub const MSR_MTRR_FIX_4K_F0000: u32 = 0x26E;
/// Fixed range: eight 4 KiB fields covering 0xF8000..0xFFFFF.
pub const MSR_MTRR_FIX_4K_F8000: u32 = 0x26F;

/// The eleven fixed-range MTRRs in architectural (address) order; the
/// `fixed` array of [`MtrrMsrs`] follows this order.
pub const FIXED_MSRS: [u32; 11] = [
    MSR_MTRR_FIX_64K_00000,
    MSR_MTRR_FIX_16K_80000,
    MSR_MTRR_FIX_16K_A0000,
    MSR_MTRR_FIX_4K_C0000,
    MSR_MTRR_FIX_4K_C8000,
    MSR_MTRR_FIX_4K_D0000,
    MSR_MTRR_FIX_4K_D8000,
    MSR_MTRR_FIX_4K_E0000,
    MSR_MTRR_FIX_4K_E8000,
    MSR_MTRR_FIX_4K_F0000,
    MSR_MTRR_FIX_4K_F8000,
];

/// IA32_MTRR_PHYSBASE`n`.
pub const fn msr_mtrr_phys_base(n: u8) -> u32 {
    0x200 + 2 * n as u32
}

/// IA32_MTRR_PHYSMASK`n`.
pub const fn msr_mtrr_phys_mask(n: u8) -> u32 {
    0x201 + 2 * n as u32
}

/// MTRRcap.VCNT: how many variable-range pairs the CPU has.
pub const MTRRCAP_VCNT_MASK: u64 = 0xFF;
/// MTRRcap.FIX: the fixed-range MTRRs exist.
pub const MTRRCAP_FIX: u64 = 1 << 8;
/// MTRRcap.WC: the WC type may be used in MTRRs.
pub const MTRRCAP_WC: u64 = 1 << 10;

/// MTRRdefType.Type (bits 7:0).
pub const MTRR_DEF_TYPE_TYPE_MASK: u64 = 0xFF;
/// MTRRdefType.FE: fixed ranges enabled.
pub const MTRR_DEF_TYPE_FE: u64 = 1 << 10;
/// MTRRdefType.E: MTRRs enabled; when clear all memory is UC.
pub const MTRR_DEF_TYPE_E: u64 = 1 << 11;
/// MTRRdefType reserved bits: 8, 9, and 12..63.
pub const MTRR_DEF_TYPE_RESERVED: u64 =
    !(MTRR_DEF_TYPE_TYPE_MASK | MTRR_DEF_TYPE_FE | MTRR_DEF_TYPE_E);

/// PHYSMASK.V: the pair is valid.
pub const MTRR_PHYS_MASK_VALID: u64 = 1 << 11;

/// The first address the fixed-range MTRRs do not cover (1 MiB).
pub const FIXED_RANGES_END: u64 = 0x10_0000;

/// The largest VCNT an 8-bit field can state.
pub(super) const MAX_VARIABLE: usize = 255;

const PAGE_MASK: u64 = 0xFFF;

/// Bits 12..maxphyaddr: the address bits PHYSBASE/PHYSMASK carry.
pub(super) const fn address_bits(maxphyaddr: u8) -> u64 {
    ((1u64 << maxphyaddr) - 1) & !PAGE_MASK
}

/// Reserved in PHYSBASE: bits 8..11 and everything at or above MAXPHYADDR.
pub(super) const fn phys_base_reserved(maxphyaddr: u8) -> u64 {
    !(address_bits(maxphyaddr) | MTRR_DEF_TYPE_TYPE_MASK)
}

/// Reserved in PHYSMASK: bits 0..10 and everything at or above MAXPHYADDR.
pub(super) const fn phys_mask_reserved(maxphyaddr: u8) -> u64 {
    !(address_bits(maxphyaddr) | MTRR_PHYS_MASK_VALID)
}

pub(super) fn check_maxphyaddr(maxphyaddr: u8) -> Result<(), MtrrError> {
    if (32..=52).contains(&maxphyaddr) {
        Ok(())
    } else {
        Err(MtrrError::InvalidMaxPhyAddr { maxphyaddr })
    }
}

pub(super) fn check_reserved(msr: u32, value: u64, reserved_mask: u64) -> Result<(), MtrrError> {
    let reserved = value & reserved_mask;
    if reserved == 0 {
        Ok(())
    } else {
        Err(MtrrError::ReservedBits {
            msr,
            value,
            reserved,
        })
    }
}

/// Decodes one type byte of `msr`, refusing WC when the CPU lacks it.
pub(super) fn decode_type(
    msr: u32,
    encoding: u8,
    wc_supported: bool,
) -> Result<MemType, MtrrError> {
    match MemType::from_mtrr_encoding(encoding) {
        None => Err(MtrrError::InvalidType { msr, encoding }),
        Some(MemType::Wc) if !wc_supported => Err(MtrrError::WcNotSupported { msr }),
        Some(t) => Ok(t),
    }
}

/// The MTRRdefType value for a default type and the two enable bits, or
/// `None` if `default` has no MTRR encoding.
///
/// ```
/// use memtype::mtrr::def_type_value;
/// use memtype::MemType;
/// assert_eq!(def_type_value(MemType::Wb, true, true), Some(0xC06));
/// assert_eq!(def_type_value(MemType::UcMinus, true, false), None);
/// ```
pub const fn def_type_value(default: MemType, enabled: bool, fixed_enabled: bool) -> Option<u64> {
    let Some(enc) = default.mtrr_encoding() else {
        return None;
    };
    let mut value = enc as u64;
    if enabled {
        value |= MTRR_DEF_TYPE_E;
    }
    if fixed_enabled {
        value |= MTRR_DEF_TYPE_FE;
    }
    Some(value)
}

/// The value of a fixed-range MTRR whose eight fields (lowest address first)
/// have the given types, or `None` if one has no MTRR encoding.
///
/// ```
/// use memtype::mtrr::fixed_msr_value;
/// use memtype::MemType::*;
/// assert_eq!(fixed_msr_value([Wb; 8]), Some(0x0606_0606_0606_0606));
/// assert_eq!(fixed_msr_value([Uc, Wc, Wt, Wp, Wb, Uc, Uc, Uc]), Some(0x0000_0006_0504_0100));
/// ```
pub fn fixed_msr_value(types: [MemType; 8]) -> Option<u64> {
    let mut bytes = [0u8; 8];
    for (byte, t) in bytes.iter_mut().zip(types) {
        *byte = t.mtrr_encoding()?;
    }
    Some(u64::from_le_bytes(bytes))
}

/// The (PHYSBASE, PHYSMASK) pair, with V set, that maps `[base, base + size)`
/// to `mem_type`.
///
/// Returns `None` unless `size` is a power of two of at least 4 KiB, `base`
/// is a multiple of `size`, the range lies below 2^`maxphyaddr`,
/// `maxphyaddr` is in 32..=52, and `mem_type` has an MTRR encoding.
///
/// ```
/// use memtype::mtrr::variable_pair;
/// use memtype::MemType;
/// let (base, mask) = variable_pair(0x8000_0000, 0x4000_0000, MemType::Uc, 36).unwrap();
/// assert_eq!(base, 0x8000_0000);
/// assert_eq!(mask, 0xF_C000_0800);
/// assert_eq!(variable_pair(0x1000, 0x3000, MemType::Wb, 36), None);
/// ```
pub fn variable_pair(
    base: u64,
    size: u64,
    mem_type: MemType,
    maxphyaddr: u8,
) -> Option<(u64, u64)> {
    check_maxphyaddr(maxphyaddr).ok()?;
    let enc = mem_type.mtrr_encoding()?;
    let limit = 1u64 << maxphyaddr;
    if !size.is_power_of_two() || size < 0x1000 || size > limit || !base.is_multiple_of(size) {
        return None;
    }
    // base is a multiple of a power-of-two size no larger than limit, so
    // base + size ≤ limit exactly when base < limit.
    if base >= limit {
        return None;
    }
    let mask = (!(size - 1) & address_bits(maxphyaddr)) | MTRR_PHYS_MASK_VALID;
    Some((base | u64::from(enc), mask))
}

impl MtrrState {
    /// Validates and decodes MTRR MSR contents, rejecting whatever WRMSR
    /// would have refused with #GP (reserved bits, reserved type encodings,
    /// WC on a CPU without MTRRcap.WC) and what MTRRcap rules out (FE=1
    /// without MTRRcap.FIX, more pairs than VCNT).
    ///
    /// Every MSR is checked, including fixed ranges while FE=0 and pairs
    /// with V=0, because their contents were written with WRMSR all the same.
    /// AMD's RdMem/WrMem extension bits (3 and 4 of a fixed-range field) are
    /// not modelled and count as invalid types. The overlap policy starts at
    /// its default, [`OverlapPolicy::Wb`].
    pub fn from_msrs(msrs: &MtrrMsrs<'_>) -> Result<MtrrState, MtrrError> {
        check_maxphyaddr(msrs.maxphyaddr)?;
        let wc_ok = msrs.cap & MTRRCAP_WC != 0;
        // Masked to 8 bits, so the cast is exact.
        let vcnt = (msrs.cap & MTRRCAP_VCNT_MASK) as u8;
        if msrs.variable.len() > usize::from(vcnt) {
            return Err(MtrrError::TooManyVariable {
                given: msrs.variable.len(),
                vcnt,
            });
        }

        check_reserved(MSR_MTRR_DEF_TYPE, msrs.def_type, MTRR_DEF_TYPE_RESERVED)?;
        let default = decode_type(MSR_MTRR_DEF_TYPE, msrs.def_type.to_le_bytes()[0], wc_ok)?;
        let fixed_enabled = msrs.def_type & MTRR_DEF_TYPE_FE != 0;
        if fixed_enabled && msrs.cap & MTRRCAP_FIX == 0 {
            return Err(MtrrError::FixedNotSupported);
        }

        let mut fixed = [[MemType::Uc; 8]; 11];
        for ((row, &value), msr) in fixed.iter_mut().zip(&msrs.fixed).zip(FIXED_MSRS) {
            for (slot, byte) in row.iter_mut().zip(value.to_le_bytes()) {
                *slot = decode_type(msr, byte, wc_ok)?;
            }
        }

        let mut variable = [UNUSED; MAX_VARIABLE];
        let mut variable_len = 0;
        let addr_bits = address_bits(msrs.maxphyaddr);
        // `variable.len() <= vcnt <= 255`, so every index fits in a u8.
        for (n, &(base, mask)) in (0..=u8::MAX).zip(msrs.variable) {
            let base_msr = msr_mtrr_phys_base(n);
            check_reserved(base_msr, base, phys_base_reserved(msrs.maxphyaddr))?;
            let mem_type = decode_type(base_msr, base.to_le_bytes()[0], wc_ok)?;
            check_reserved(
                msr_mtrr_phys_mask(n),
                mask,
                phys_mask_reserved(msrs.maxphyaddr),
            )?;
            if mask & MTRR_PHYS_MASK_VALID != 0 {
                variable[variable_len] = VariableRange {
                    index: n,
                    base: base & addr_bits,
                    mask: mask & addr_bits,
                    mem_type,
                };
                variable_len += 1;
            }
        }

        Ok(MtrrState {
            enabled: msrs.def_type & MTRR_DEF_TYPE_E != 0,
            fixed_enabled,
            default,
            fixed,
            variable,
            variable_len,
            maxphyaddr: msrs.maxphyaddr,
            policy: OverlapPolicy::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemType::*;
    use crate::mtrr::MtrrRule;

    #[test]
    fn msr_indices() {
        assert_eq!(MSR_MTRRCAP, 0xFE);
        assert_eq!(MSR_MTRR_DEF_TYPE, 0x2FF);
        assert_eq!(
            FIXED_MSRS,
            [
                0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F
            ]
        );
        assert_eq!(msr_mtrr_phys_base(0), 0x200);
        assert_eq!(msr_mtrr_phys_mask(0), 0x201);
        assert_eq!(msr_mtrr_phys_base(7), 0x20E);
        assert_eq!(msr_mtrr_phys_mask(7), 0x20F);
        assert_eq!(msr_mtrr_phys_base(255), 0x3FE);
        assert_eq!(msr_mtrr_phys_mask(255), 0x3FF);
    }

    #[test]
    fn reserved_masks() {
        assert_eq!(MTRR_DEF_TYPE_RESERVED, 0xFFFF_FFFF_FFFF_F300);
        // MAXPHYADDR 36: bits 36..63 reserved, plus the low-bit holes.
        assert_eq!(phys_base_reserved(36), 0xFFFF_FFF0_0000_0F00);
        assert_eq!(phys_mask_reserved(36), 0xFFFF_FFF0_0000_07FF);
        assert_eq!(phys_base_reserved(52), 0xFFF0_0000_0000_0F00);
        assert_eq!(phys_mask_reserved(52), 0xFFF0_0000_0000_07FF);
    }

    #[test]
    fn maxphyaddr_range() {
        for m in 0..=u8::MAX {
            assert_eq!(check_maxphyaddr(m).is_ok(), (32..=52).contains(&m), "{m}");
        }
    }

    #[test]
    fn variable_pair_rejects_bad_shapes() {
        assert!(variable_pair(0, 0x1000, MemType::Wb, 36).is_some());
        assert_eq!(variable_pair(0, 0x800, MemType::Wb, 36), None); // below 4 KiB
        assert_eq!(variable_pair(0x1000, 0x2000, MemType::Wb, 36), None); // misaligned
        assert_eq!(variable_pair(0, 0, MemType::Wb, 36), None);
        assert_eq!(variable_pair(1 << 36, 0x1000, MemType::Wb, 36), None); // above MAXPHYADDR
        assert!(variable_pair(0, 1 << 36, MemType::Wb, 36).is_some()); // all of memory
        assert_eq!(variable_pair(0, 1 << 37, MemType::Wb, 36), None);
        assert_eq!(variable_pair(0, 0x1000, MemType::UcMinus, 36), None);
        assert_eq!(variable_pair(0, 0x1000, MemType::Wb, 53), None);
    }

    #[test]
    fn def_type_values() {
        assert_eq!(def_type_value(MemType::Uc, false, false), Some(0));
        assert_eq!(def_type_value(MemType::Wb, true, false), Some(0x806));
        assert_eq!(def_type_value(MemType::Wt, false, true), Some(0x404));
        assert_eq!(def_type_value(MemType::Cd, true, true), None);
    }

    const WB_FIXED: u64 = 0x0606_0606_0606_0606;

    /// A CPU with 8 pairs, fixed ranges and WC; MTRRs on, FE on, default WB.
    fn msrs(variable: &[(u64, u64)]) -> MtrrMsrs<'_> {
        MtrrMsrs {
            cap: 8 | MTRRCAP_FIX | MTRRCAP_WC,
            def_type: MTRR_DEF_TYPE_E | MTRR_DEF_TYPE_FE | 6,
            fixed: [WB_FIXED; 11],
            variable,
            maxphyaddr: 36,
        }
    }

    #[test]
    fn decodes_a_valid_setup() {
        let pairs = [
            variable_pair(0x8000_0000, 0x8000_0000, Uc, 36).unwrap(),
            (0x1000_0006, 0x0), // V=0: validated, then ignored
            variable_pair(0xE000_0000, 0x1000_0000, Wc, 36).unwrap(),
        ];
        let s = MtrrState::from_msrs(&msrs(&pairs)).unwrap();
        assert!(s.enabled() && s.fixed_enabled());
        assert_eq!(s.default_type(), Wb);
        assert_eq!(s.maxphyaddr(), 36);
        assert_eq!(s.overlap_policy(), OverlapPolicy::Wb);
        assert_eq!(s.fixed_types(), &[[Wb; 8]; 11]);
        assert_eq!(
            s.variable_ranges(),
            [
                VariableRange {
                    index: 0,
                    base: 0x8000_0000,
                    mask: 0xF_8000_0000,
                    mem_type: Uc
                },
                VariableRange {
                    index: 2,
                    base: 0xE000_0000,
                    mask: 0xF_F000_0000,
                    mem_type: Wc
                },
            ]
        );
    }

    #[test]
    fn def_type_reserved_bits() {
        for bit in [8, 9, 12, 13, 31, 32, 63] {
            let mut m = msrs(&[]);
            m.def_type |= 1 << bit;
            assert_eq!(
                MtrrState::from_msrs(&m),
                Err(MtrrError::ReservedBits {
                    msr: 0x2FF,
                    value: m.def_type,
                    reserved: 1 << bit
                }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn def_type_invalid_types() {
        for enc in [2u8, 3, 7, 8, 0x10, 0xFF] {
            let mut m = msrs(&[]);
            m.def_type = MTRR_DEF_TYPE_E | u64::from(enc);
            assert_eq!(
                MtrrState::from_msrs(&m),
                Err(MtrrError::InvalidType {
                    msr: 0x2FF,
                    encoding: enc
                })
            );
        }
    }

    #[test]
    fn fixed_invalid_type_names_the_msr() {
        for (i, &msr) in FIXED_MSRS.iter().enumerate() {
            for field in 0..8 {
                let mut m = msrs(&[]);
                m.fixed[i] = (WB_FIXED & !(0xFF << (8 * field))) | (7 << (8 * field));
                assert_eq!(
                    MtrrState::from_msrs(&m),
                    Err(MtrrError::InvalidType { msr, encoding: 7 })
                );
            }
        }
        // Validated even while FE=0: the value was still written with WRMSR.
        let mut m = msrs(&[]);
        m.def_type &= !MTRR_DEF_TYPE_FE;
        m.fixed[10] = 0x0200_0000_0000_0000;
        assert_eq!(
            MtrrState::from_msrs(&m),
            Err(MtrrError::InvalidType {
                msr: 0x26F,
                encoding: 2
            })
        );
    }

    #[test]
    fn phys_base_reserved_bits() {
        for bit in [8, 9, 10, 11, 36, 40, 63] {
            let base = 0x1000_0006 | (1u64 << bit);
            let pairs = [(0, 0), (base, 0xF_F000_0800)];
            assert_eq!(
                MtrrState::from_msrs(&msrs(&pairs)),
                Err(MtrrError::ReservedBits {
                    msr: 0x202,
                    value: base,
                    reserved: 1 << bit
                }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn phys_mask_reserved_bits() {
        for bit in [0, 5, 10, 36, 51, 63] {
            let mask = 0xF_F000_0800 | (1u64 << bit);
            let pairs = [(0x1000_0006, mask)];
            assert_eq!(
                MtrrState::from_msrs(&msrs(&pairs)),
                Err(MtrrError::ReservedBits {
                    msr: 0x201,
                    value: mask,
                    reserved: 1 << bit
                }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn reserved_bits_follow_maxphyaddr() {
        let pairs = [(1 << 39 | 6, 0xFF_F000_0800 | 1 << 39)];
        let mut m = msrs(&pairs);
        assert!(matches!(
            MtrrState::from_msrs(&m),
            Err(MtrrError::ReservedBits { msr: 0x200, .. })
        ));
        m.maxphyaddr = 40;
        let s = MtrrState::from_msrs(&m).unwrap();
        assert_eq!(s.variable_ranges()[0].base, 1 << 39);
    }

    #[test]
    fn phys_base_invalid_type() {
        let pairs = [(0x1000_0003, 0xF_F000_0800)];
        assert_eq!(
            MtrrState::from_msrs(&msrs(&pairs)),
            Err(MtrrError::InvalidType {
                msr: 0x200,
                encoding: 3
            })
        );
        // Even with V=0.
        let pairs = [(0x1000_0002, 0)];
        assert_eq!(
            MtrrState::from_msrs(&msrs(&pairs)),
            Err(MtrrError::InvalidType {
                msr: 0x200,
                encoding: 2
            })
        );
    }

    #[test]
    fn vcnt_limits_the_pairs() {
        let pair = variable_pair(0, 0x1000, Wb, 36).unwrap();
        let pairs = [pair; 3];
        let mut m = msrs(&pairs);
        m.cap = (m.cap & !MTRRCAP_VCNT_MASK) | 2;
        assert_eq!(
            MtrrState::from_msrs(&m),
            Err(MtrrError::TooManyVariable { given: 3, vcnt: 2 })
        );
        m.variable = &pairs[..2];
        assert!(MtrrState::from_msrs(&m).is_ok());
        m.cap &= !MTRRCAP_VCNT_MASK;
        assert_eq!(
            MtrrState::from_msrs(&m),
            Err(MtrrError::TooManyVariable { given: 2, vcnt: 0 })
        );
    }

    #[test]
    fn all_255_pairs() {
        let pairs = [variable_pair(0x10_0000, 0x1000, Wt, 36).unwrap(); 255];
        let mut m = msrs(&pairs);
        m.cap |= 0xFF;
        let s = MtrrState::from_msrs(&m).unwrap();
        assert_eq!(s.variable_ranges().len(), 255);
        assert_eq!(
            s.lookup(0x10_0000).unwrap().rule,
            MtrrRule::VariableIdentical { count: 255 }
        );
    }

    #[test]
    fn wc_needs_mtrrcap_wc() {
        let no_wc = |mut m: MtrrMsrs<'_>| {
            m.cap &= !MTRRCAP_WC;
            MtrrState::from_msrs(&m)
        };
        let mut m = msrs(&[]);
        m.def_type = MTRR_DEF_TYPE_E | 1;
        assert!(MtrrState::from_msrs(&m).is_ok());
        assert_eq!(no_wc(m), Err(MtrrError::WcNotSupported { msr: 0x2FF }));

        let mut m = msrs(&[]);
        m.fixed[2] = WB_FIXED & !0xFF00 | 0x0100;
        assert!(MtrrState::from_msrs(&m).is_ok());
        assert_eq!(no_wc(m), Err(MtrrError::WcNotSupported { msr: 0x259 }));

        let pairs = [
            (0, 0),
            variable_pair(0xE000_0000, 0x1000_0000, Wc, 36).unwrap(),
        ];
        assert!(MtrrState::from_msrs(&msrs(&pairs)).is_ok());
        assert_eq!(
            no_wc(msrs(&pairs)),
            Err(MtrrError::WcNotSupported { msr: 0x202 })
        );
    }

    #[test]
    fn fe_needs_mtrrcap_fix() {
        let mut m = msrs(&[]);
        m.cap &= !MTRRCAP_FIX;
        assert_eq!(MtrrState::from_msrs(&m), Err(MtrrError::FixedNotSupported));
        m.def_type &= !MTRR_DEF_TYPE_FE;
        assert!(MtrrState::from_msrs(&m).is_ok());
    }

    #[test]
    fn maxphyaddr_must_be_architectural() {
        for bad in [0, 12, 31, 53, 64, 255] {
            let mut m = msrs(&[]);
            m.maxphyaddr = bad;
            assert_eq!(
                MtrrState::from_msrs(&m),
                Err(MtrrError::InvalidMaxPhyAddr { maxphyaddr: bad })
            );
        }
    }
}
