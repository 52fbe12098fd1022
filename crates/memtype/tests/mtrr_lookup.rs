//! MTRR precedence and range uniformity, through the public API only.

use memtype::MemType::{self, *};
use memtype::mtrr::*;

const MAXPHYADDR: u8 = 36;

/// A CPU with 8 pairs, fixed ranges and WC.
const CAP: u64 = 8 | MTRRCAP_FIX | MTRRCAP_WC;

fn pair(base: u64, size: u64, t: MemType) -> (u64, u64) {
    variable_pair(base, size, t, MAXPHYADDR).unwrap()
}

fn state(def_type: u64, fixed: [u64; 11], variable: &[(u64, u64)]) -> MtrrState {
    MtrrState::from_msrs(&MtrrMsrs {
        cap: CAP,
        def_type,
        fixed,
        variable,
        maxphyaddr: MAXPHYADDR,
    })
    .unwrap()
}

fn on(default: MemType, fe: bool) -> u64 {
    def_type_value(default, true, fe).unwrap()
}

fn ty(s: &MtrrState, addr: u64) -> MemType {
    s.lookup(addr).unwrap().mem_type
}

const MTRR_TYPES: [MemType; 5] = [Uc, Wc, Wt, Wp, Wb];

/// The fixed-range fields as the SDM describes them: (MSR, first address,
/// field size), written out independently of the crate's layout code.
fn fixed_fields() -> Vec<(u32, u64, u64)> {
    let mut regions = vec![(0x250, 0x0, 0x1_0000), (0x258, 0x8_0000, 0x4000)];
    regions.push((0x259, 0xA_0000, 0x4000));
    for k in 0..8u32 {
        regions.push((0x268 + k, 0xC_0000 + u64::from(k) * 0x8000, 0x1000));
    }
    regions
}

/// Fixed MSR values in which consecutive fields (across MSR boundaries too)
/// always differ: field number `g` over all 88 gets `MTRR_TYPES[g % 5]`.
fn striped_fixed() -> [u64; 11] {
    let mut fixed = [0; 11];
    for (i, value) in fixed.iter_mut().enumerate() {
        let types: [MemType; 8] = core::array::from_fn(|f| MTRR_TYPES[(i * 8 + f) % 5]);
        *value = fixed_msr_value(types).unwrap();
    }
    fixed
}

#[test]
fn every_fixed_field_first_and_last_byte() {
    let s = state(on(Wb, true), striped_fixed(), &[]);
    for (i, (msr, start, size)) in fixed_fields().into_iter().enumerate() {
        for field in 0..8u8 {
            let want = MTRR_TYPES[(i * 8 + usize::from(field)) % 5];
            let first = start + u64::from(field) * size;
            let last = first + size - 1;
            for addr in [first, last] {
                let hit = s.lookup(addr).unwrap();
                assert_eq!(hit.mem_type, want, "{addr:#x}");
                assert_eq!(hit.rule, MtrrRule::FixedRange { msr, field }, "{addr:#x}");
            }
        }
    }
}

#[test]
fn fixed_region_boundaries() {
    let s = state(on(Wb, true), striped_fixed(), &[]);
    // The last field of one MSR and the first of the next.
    let cases = [
        (0x7_FFFF, 0x250, 7, 0x8_0000, 0x258, 0),
        (0x9_FFFF, 0x258, 7, 0xA_0000, 0x259, 0),
        (0xB_FFFF, 0x259, 7, 0xC_0000, 0x268, 0),
        (0xC_7FFF, 0x268, 7, 0xC_8000, 0x269, 0),
        (0xF_7FFF, 0x26E, 7, 0xF_8000, 0x26F, 0),
    ];
    for (a, msr_a, field_a, b, msr_b, field_b) in cases {
        let (la, lb) = (s.lookup(a).unwrap(), s.lookup(b).unwrap());
        assert_eq!(
            la.rule,
            MtrrRule::FixedRange {
                msr: msr_a,
                field: field_a
            }
        );
        assert_eq!(
            lb.rule,
            MtrrRule::FixedRange {
                msr: msr_b,
                field: field_b
            }
        );
        assert_ne!(la.mem_type, lb.mem_type, "{a:#x} / {b:#x}");
    }
    // The last fixed byte, then variable ranges and the default take over.
    assert_eq!(
        s.lookup(0xF_FFFF).unwrap().rule,
        MtrrRule::FixedRange {
            msr: 0x26F,
            field: 7
        }
    );
    assert_eq!(s.lookup(0x10_0000).unwrap().rule, MtrrRule::DefaultType);
}

#[test]
fn fixed_ranges_beat_variable_ranges_below_1mib() {
    let pairs = [pair(0, 0x20_0000, Uc)];
    let s = state(
        on(Wb, true),
        [fixed_msr_value([Wb; 8]).unwrap(); 11],
        &pairs,
    );
    assert_eq!(ty(&s, 0xA_0000), Wb);
    assert_eq!(ty(&s, 0xF_FFFF), Wb);
    assert_eq!(
        s.lookup(0x10_0000).unwrap().rule,
        MtrrRule::Variable { index: 0 }
    );
    assert_eq!(ty(&s, 0x10_0000), Uc);
}

#[test]
fn fe_clear_sends_low_memory_to_variable_ranges_and_default() {
    let pairs = [pair(0xA_0000, 0x2_0000, Uc)];
    let s = state(on(Wb, false), striped_fixed(), &pairs);
    assert!(!s.fixed_enabled());
    assert_eq!(s.lookup(0).unwrap().rule, MtrrRule::DefaultType);
    assert_eq!(ty(&s, 0), Wb);
    let vga = s.lookup(0xA_0000).unwrap();
    assert_eq!(
        (vga.mem_type, vga.rule),
        (Uc, MtrrRule::Variable { index: 0 })
    );
    assert_eq!(ty(&s, 0xC_0000), Wb);
}

#[test]
fn e_clear_makes_everything_uc() {
    let pairs = [pair(0, 0x1000_0000, Wb)];
    let def_type = def_type_value(Wb, false, true).unwrap();
    let s = state(def_type, [fixed_msr_value([Wb; 8]).unwrap(); 11], &pairs);
    for addr in [0, 0xA_0000, 0x10_0000, 0x800_0000, 0xF_FFFF_FFFF, u64::MAX] {
        let hit = s.lookup(addr).unwrap();
        assert_eq!((hit.mem_type, hit.rule), (Uc, MtrrRule::Disabled));
    }
    assert_eq!(s.range_type(0, u64::MAX).unwrap().mem_type, Uc);
    assert_eq!(
        MtrrState::disabled().lookup(0x1234).unwrap().rule,
        MtrrRule::Disabled
    );
}

#[test]
fn one_variable_match_and_default() {
    let pairs = [pair(0x4000_0000, 0x4000_0000, Wt)];
    let s = state(on(Uc, false), [0; 11], &pairs);
    assert_eq!(s.lookup(0x3FFF_FFFF).unwrap().rule, MtrrRule::DefaultType);
    assert_eq!(ty(&s, 0x3FFF_FFFF), Uc);
    let hit = s.lookup(0x4000_0000).unwrap();
    assert_eq!(
        (hit.mem_type, hit.rule),
        (Wt, MtrrRule::Variable { index: 0 })
    );
    assert_eq!(ty(&s, 0x7FFF_FFFF), Wt);
    assert_eq!(ty(&s, 0x8000_0000), Uc);
}

#[test]
fn identical_overlap_keeps_the_type() {
    let pairs = [
        pair(0, 0x1_0000_0000, Wp),
        pair(0x1000_0000, 0x1000_0000, Wp),
    ];
    let s = state(on(Uc, false), [0; 11], &pairs);
    let hit = s.lookup(0x1000_0000).unwrap();
    assert_eq!(
        (hit.mem_type, hit.rule),
        (Wp, MtrrRule::VariableIdentical { count: 2 })
    );
}

#[test]
fn uc_wins_in_either_order() {
    for types in [[Uc, Wb], [Wb, Uc], [Uc, Wc], [Wp, Uc]] {
        let pairs = [
            pair(0, 0x1_0000_0000, types[0]),
            pair(0, 0x1000_0000, types[1]),
        ];
        let s = state(on(Wb, false), [0; 11], &pairs);
        let hit = s.lookup(0x800_0000).unwrap();
        assert_eq!(
            (hit.mem_type, hit.rule),
            (Uc, MtrrRule::OverlapUcWins),
            "{types:?}"
        );
    }
    // UC wins even when the other two would be an undefined pair.
    let pairs = [
        pair(0, 0x1000_0000, Wc),
        pair(0, 0x1000_0000, Wp),
        pair(0, 0x1000_0000, Uc),
    ];
    let s = state(on(Wb, false), [0; 11], &pairs).with_overlap_policy(OverlapPolicy::Reject);
    assert_eq!(s.lookup(0).unwrap().rule, MtrrRule::OverlapUcWins);
}

#[test]
fn wt_wins_over_wb() {
    for types in [[Wt, Wb], [Wb, Wt]] {
        let pairs = [
            pair(0, 0x1_0000_0000, types[0]),
            pair(0, 0x1000_0000, types[1]),
        ];
        let s = state(on(Uc, false), [0; 11], &pairs);
        let hit = s.lookup(0).unwrap();
        assert_eq!((hit.mem_type, hit.rule), (Wt, MtrrRule::OverlapWtOverWb));
    }
    let pairs = [
        pair(0, 0x1000_0000, Wt),
        pair(0, 0x1000_0000, Wb),
        pair(0, 0x1000_0000, Wt),
    ];
    let s = state(on(Uc, false), [0; 11], &pairs);
    assert_eq!(ty(&s, 0), Wt);
}

#[test]
fn undefined_overlaps_follow_the_policy() {
    // Every pair of distinct MTRR types other than the defined ones.
    for a in MTRR_TYPES {
        for b in MTRR_TYPES {
            let defined = a == b || a == Uc || b == Uc || matches!((a, b), (Wt, Wb) | (Wb, Wt));
            if defined {
                continue;
            }
            let pairs = [
                pair(0x2000_0000, 0x1000_0000, a),
                pair(0x2000_0000, 0x1000, b),
            ];
            let s = state(on(Uc, false), [0; 11], &pairs);
            assert_eq!(
                s.overlap_policy(),
                OverlapPolicy::Wb,
                "the default is KVM's choice"
            );
            let hit = s.lookup(0x2000_0000).unwrap();
            let want = MtrrRule::UndefinedOverlap {
                policy: OverlapPolicy::Wb,
            };
            assert_eq!((hit.mem_type, hit.rule), (Wb, want), "{a} + {b}");

            let s = s.with_overlap_policy(OverlapPolicy::Uc);
            let hit = s.lookup(0x2000_0000).unwrap();
            let want = MtrrRule::UndefinedOverlap {
                policy: OverlapPolicy::Uc,
            };
            assert_eq!((hit.mem_type, hit.rule), (Uc, want), "{a} + {b}");

            let s = s.with_overlap_policy(OverlapPolicy::Reject);
            assert_eq!(
                s.lookup(0x2000_0123),
                Err(MtrrError::UndefinedOverlap {
                    addr: 0x2000_0123,
                    a,
                    b
                }),
                "{a} + {b}"
            );
            // Where only one range covers, nothing is undefined.
            assert_eq!(ty(&s, 0x2000_1000), a);
        }
    }
}

#[test]
fn address_bits_above_maxphyaddr_are_ignored() {
    let pairs = [pair(0x4000_0000, 0x4000_0000, Wc)];
    let s = state(on(Wb, false), [0; 11], &pairs);
    assert_eq!(ty(&s, (1 << 36) | 0x4000_0000), Wc);
}

#[test]
fn discontinuous_mask_matches_per_the_formula() {
    // Mask bits 12 and 30..35: every other 4 KiB page of the first GiB.
    let mask = 0xF_C000_1000 | MTRR_PHYS_MASK_VALID;
    let s = state(on(Wb, false), [0; 11], &[(0x1000 | 5, mask)]);
    assert_eq!(ty(&s, 0), Wb);
    assert_eq!(ty(&s, 0x1000), Wp);
    assert_eq!(ty(&s, 0x2000), Wb);
    assert_eq!(ty(&s, 0x3FFF_F000), Wp);
    assert_eq!(ty(&s, 0x4000_1000), Wb);
    assert_eq!(
        s.range_type(0, 0x4000_0000),
        Err(MtrrError::NonUniform {
            at: 0x1000,
            first: Wb,
            other: Wp
        })
    );
    assert_eq!(s.range_type(0x5000, 0x1000).unwrap().mem_type, Wp);
}

#[test]
fn discontinuous_masks_that_tile_a_region_are_uniform() {
    // Two WB ranges that between them cover alternate pages of the first
    // 64 GiB: uniform WB over a huge range although it is cut into 2^24
    // pieces. The walk must settle this without visiting every piece.
    let mask = 0x1000 | MTRR_PHYS_MASK_VALID;
    let pairs = [(6, mask), (0x1000 | 6, mask)];
    let s = state(on(Uc, false), [0; 11], &pairs);
    assert_eq!(s.range_type(0, 1 << 36).unwrap().mem_type, Wb);
}

#[test]
fn range_type_across_a_variable_boundary() {
    let pairs = [pair(0xC000_0000, 0x4000_0000, Uc)];
    let s = state(on(Wb, false), [0; 11], &pairs);
    // A 2 MiB page ending exactly at the boundary is uniform, one byte more is not.
    assert_eq!(s.range_type(0xBFE0_0000, 0x20_0000).unwrap().mem_type, Wb);
    assert_eq!(
        s.range_type(0xBFE0_0000, 0x20_0001),
        Err(MtrrError::NonUniform {
            at: 0xC000_0000,
            first: Wb,
            other: Uc
        })
    );
    assert_eq!(
        s.range_type(0xFFFF_F000, 0x2000),
        Err(MtrrError::NonUniform {
            at: 0x1_0000_0000,
            first: Uc,
            other: Wb
        })
    );
}

#[test]
fn range_type_over_large_ranges() {
    let pairs = [
        pair(0x8000_0000, 0x8000_0000, Uc),
        pair(0x1_0000_0000, 0x1_0000_0000, Wb),
    ];
    let s = state(
        on(Wb, true),
        [fixed_msr_value([Wb; 8]).unwrap(); 11],
        &pairs,
    );
    // 1 GiB pages.
    assert_eq!(s.range_type(0, 1 << 30).unwrap().mem_type, Wb);
    assert_eq!(s.range_type(0xC000_0000, 1 << 30).unwrap().mem_type, Uc);
    let hit = s.range_type(0x1_0000_0000, 1 << 30).unwrap();
    assert_eq!(
        (hit.mem_type, hit.rule),
        (Wb, MtrrRule::Variable { index: 1 })
    );
    // The whole physical address space, and beyond.
    assert_eq!(
        s.range_type(0, 1 << 36),
        Err(MtrrError::NonUniform {
            at: 0x8000_0000,
            first: Wb,
            other: Uc
        })
    );
    let top = (1 << 36) - 0x1_0000_0000;
    assert_eq!(s.range_type(0x1_0000_0000, top).map(|h| h.mem_type), Ok(Wb));
}

#[test]
fn range_type_within_the_fixed_ranges() {
    let s = state(on(Wb, true), striped_fixed(), &[]);
    // One 4 KiB field exactly, then one byte into the next.
    assert_eq!(
        s.range_type(0xC_0000, 0x1000).unwrap().mem_type,
        MTRR_TYPES[24 % 5]
    );
    assert_eq!(
        s.range_type(0xC_0000, 0x1001),
        Err(MtrrError::NonUniform {
            at: 0xC_1000,
            first: MTRR_TYPES[24 % 5],
            other: MTRR_TYPES[25 % 5]
        })
    );
    // Fixed fields of equal type next to each other are uniform together,
    // and so is the step out of the fixed area into a same-type default.
    let s = state(on(Wb, true), [fixed_msr_value([Wb; 8]).unwrap(); 11], &[]);
    assert_eq!(s.range_type(0, 0x20_0000).unwrap().mem_type, Wb);
    let mut fixed = [fixed_msr_value([Wb; 8]).unwrap(); 11];
    fixed[10] = fixed_msr_value([Wb, Wb, Wb, Wb, Wb, Wb, Wb, Uc]).unwrap();
    let s = state(on(Wb, true), fixed, &[]);
    assert_eq!(
        s.range_type(0, 0x20_0000),
        Err(MtrrError::NonUniform {
            at: 0xF_F000,
            first: Wb,
            other: Uc
        })
    );
    // Crossing 1 MiB into a variable range of another type.
    let s = state(
        on(Wb, true),
        [fixed_msr_value([Wb; 8]).unwrap(); 11],
        &[pair(0x10_0000, 0x10_0000, Wt)],
    );
    assert_eq!(
        s.range_type(0xF_F000, 0x2000),
        Err(MtrrError::NonUniform {
            at: 0x10_0000,
            first: Wb,
            other: Wt
        })
    );
}

#[test]
fn range_type_edges() {
    let pairs = [pair(0x1000, 0x1000, Uc)];
    let s = state(on(Wb, false), [0; 11], &pairs);
    // Empty range: the start's lookup.
    assert_eq!(s.range_type(0x1000, 0), s.lookup(0x1000));
    // Ranges past the top of the 64-bit space are cut there.
    assert_eq!(s.range_type(u64::MAX, u64::MAX).unwrap().mem_type, Wb);
    assert_eq!(
        s.range_type(0x2000, (1 << 36) - 0x2000).unwrap().mem_type,
        Wb
    );
    // Bits above MAXPHYADDR are ignored, so past 2^36 the map repeats.
    assert_eq!(
        s.range_type(0x2000, u64::MAX),
        Err(MtrrError::NonUniform {
            at: (1 << 36) | 0x1000,
            first: Wb,
            other: Uc
        })
    );
    // Unaligned starts and ends.
    assert_eq!(s.range_type(0x1FFF, 1).unwrap().mem_type, Uc);
    assert_eq!(
        s.range_type(0xFFF, 2),
        Err(MtrrError::NonUniform {
            at: 0x1000,
            first: Wb,
            other: Uc
        })
    );
}

#[test]
fn range_type_reports_undefined_overlaps_under_reject() {
    let pairs = [
        pair(0x2000_0000, 0x1000_0000, Wc),
        pair(0x2800_0000, 0x1000, Wp),
    ];
    let s = state(on(Wc, false), [0; 11], &pairs).with_overlap_policy(OverlapPolicy::Reject);
    assert_eq!(
        s.range_type(0x2000_0000, 0x1000_0000),
        Err(MtrrError::UndefinedOverlap {
            addr: 0x2800_0000,
            a: Wc,
            b: Wp
        })
    );
    // Under WB the same overlap is a type change instead.
    let s = s.with_overlap_policy(OverlapPolicy::Wb);
    assert_eq!(
        s.range_type(0x2000_0000, 0x1000_0000),
        Err(MtrrError::NonUniform {
            at: 0x2800_0000,
            first: Wc,
            other: Wb
        })
    );
}

#[test]
fn uniform_state_is_uniform_everywhere() {
    for t in MTRR_TYPES {
        let s = MtrrState::uniform(t).unwrap();
        assert_eq!(s.range_type(0, u64::MAX).unwrap().mem_type, t);
    }
}
