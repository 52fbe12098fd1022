//! Property tests: the EPT rules memtypes.md derives, the cacheability
//! bound the tables obey, and the MTRR range walk against brute force.

use memtype::MemType::{self, *};
use memtype::combine::{
    CombineError, EptLeaf, Reason, amd_bare_metal, amd_npt, intel_bare_metal, intel_ept,
};
use memtype::mtrr::*;
use memtype::pat::Pat;
use proptest::prelude::*;
use proptest::sample::select;

const MTRR_TYPES: [MemType; 5] = [Uc, Wc, Wt, Wp, Wb];
const PAT_TYPES: [MemType; 6] = [Uc, UcMinus, Wc, Wt, Wp, Wb];

fn mtrr_type() -> impl Strategy<Value = MemType> {
    select(&MTRR_TYPES[..])
}

fn pat_type() -> impl Strategy<Value = MemType> {
    select(&PAT_TYPES[..])
}

/// How much a type lets the caches hold: 0 = nothing (UC, UC-, WC, WC+,
/// CD), 1 = clean copies only (WT, WP: reads allocate, writes go through),
/// 2 = dirty lines too (WB).
///
/// WT and WP share a level: neither can leave a dirty line, and the tables
/// do trade one for the other (Intel MTRR WP × PAT WT = WT). WC shares level
/// 0 with UC: it caches nothing, though it buffers writes, and Intel's table
/// really does turn MTRR WP × PAT UC- into WC, so "WC only from a WC input"
/// is *not* asserted.
fn caching_level(t: MemType) -> u8 {
    match t {
        Wb => 2,
        Wt | Wp => 1,
        Uc | UcMinus | Wc | WcPlus | Cd => 0,
    }
}

proptest! {
    #[test]
    fn ipat_gives_the_ept_type_whatever_the_guest_pat(ept in mtrr_type(), pat in pat_type()) {
        let d = intel_ept(EptLeaf::new(ept, true).unwrap(), pat, false).unwrap();
        prop_assert_eq!(d.effective, ept);
        prop_assert_eq!(d.reason, Reason::EptIpat { ept });
    }

    #[test]
    fn ept_wb_without_ipat_gives_the_guest_pat(pat in pat_type()) {
        let d = intel_ept(EptLeaf::new(Wb, false).unwrap(), pat, false).unwrap();
        let want = if pat == UcMinus { Uc } else { pat };
        prop_assert_eq!(d.effective, want);
    }

    #[test]
    fn ept_uc_without_ipat_is_uc_unless_the_guest_says_wc(pat in pat_type()) {
        let d = intel_ept(EptLeaf::new(Uc, false).unwrap(), pat, false).unwrap();
        let want = if pat == Wc { Wc } else { Uc };
        prop_assert_eq!(d.effective, want);
    }

    #[test]
    fn guest_cr0_cd_gives_uc(spte in any::<u64>(), pat in pat_type()) {
        let leaf = EptLeaf::from_spte_bits(spte);
        match leaf.mem_type() {
            Ok(_) => {
                let d = intel_ept(leaf, pat, true).unwrap();
                prop_assert_eq!((d.effective, d.reason), (Uc, Reason::Cr0CdNoFill));
            }
            Err(e) => {
                prop_assert!(matches!(leaf.memtype, 2 | 3 | 7));
                prop_assert_eq!(intel_ept(leaf, pat, true), Err(e));
                prop_assert_eq!(e, CombineError::EptMisconfig { encoding: leaf.memtype });
            }
        }
    }

    #[test]
    fn cr0_cd_never_leaves_anything_cacheable(
        g in pat_type(), h in pat_type(), m in mtrr_type()
    ) {
        prop_assert_eq!(intel_bare_metal(m, g, true).unwrap().effective, Uc);
        prop_assert!(!amd_npt(g, h, m, true).unwrap().effective.is_cacheable());
        prop_assert!(!amd_bare_metal(m, g, true).unwrap().effective.is_cacheable());
    }

    /// Where the hardware combines (bare metal, EPT with IPAT=0, AMD NPT),
    /// the result caches no more than the least-caching input allows. EPT
    /// with IPAT=1 is deliberately absent: ignoring the guest's UC or WC and
    /// caching anyway is the hazard ncdma exists to remove.
    #[test]
    fn combining_never_caches_more_than_the_inputs_allow(
        m in mtrr_type(), g in pat_type(), h in pat_type()
    ) {
        let bare = intel_bare_metal(m, g, false).unwrap().effective;
        prop_assert!(caching_level(bare) <= caching_level(m).min(caching_level(g)));

        let leaf = EptLeaf::new(m, false).unwrap();
        let ept = intel_ept(leaf, g, false).unwrap().effective;
        prop_assert!(caching_level(ept) <= caching_level(m).min(caching_level(g)));

        let amd = amd_bare_metal(m, g, false).unwrap().effective;
        prop_assert!(caching_level(amd) <= caching_level(m).min(caching_level(g)));

        let npt = amd_npt(g, h, m, false).unwrap().effective;
        let least = caching_level(g).min(caching_level(h)).min(caching_level(m));
        prop_assert!(caching_level(npt) <= least);
        // In particular: WB (dirty lines) only when every input is WB.
        if npt == Wb || bare == Wb {
            prop_assert!(g == Wb && m == Wb);
        }
    }

    #[test]
    fn pat_validity_and_round_trip(value in any::<u64>()) {
        let valid = value
            .to_le_bytes()
            .iter()
            .all(|&b| b < 8 && !matches!(b, 2 | 3));
        match Pat::new(value) {
            Ok(pat) => {
                prop_assert!(valid);
                prop_assert_eq!(Pat::from_entries(pat.entries()), Some(pat));
            }
            Err(_) => prop_assert!(!valid),
        }
    }
}

// ---- MTRR states ----

/// The window the brute-force comparison works in: 16 MiB, 4096 pages.
const WINDOW: u64 = 1 << 24;
const PAGE: u64 = 0x1000;

/// One variable pair for the brute-force window: a contiguous range
/// (`size_log2` in 12..=24) or an arbitrary, possibly discontinuous mask.
fn window_pair() -> impl Strategy<Value = (u64, u64)> {
    let contiguous = (
        12u32..=24,
        0..WINDOW,
        mtrr_type(),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(size_log2, base, t, valid)| {
            let size = 1u64 << size_log2;
            let (b, m) = variable_pair(base & !(size - 1), size, t, 36).unwrap();
            (b, if valid { m } else { m & !MTRR_PHYS_MASK_VALID })
        });
    let arbitrary = (any::<u64>(), 0..WINDOW, mtrr_type()).prop_map(|(bits, base, t)| {
        let addr_bits = ((1u64 << 36) - 1) & !(PAGE - 1);
        // Mostly low bits, so the holes fall inside the window.
        let mask = bits & addr_bits & (0xFF_F000 | (bits >> 40 << 24));
        let base = (base & !(PAGE - 1)) | u64::from(t.mtrr_encoding().unwrap());
        (base, mask | MTRR_PHYS_MASK_VALID)
    });
    prop_oneof![3 => contiguous, 1 => arbitrary]
}

fn policy() -> impl Strategy<Value = OverlapPolicy> {
    select(&[OverlapPolicy::Wb, OverlapPolicy::Uc, OverlapPolicy::Reject][..])
}

fn fixed_values() -> impl Strategy<Value = [u64; 11]> {
    prop::array::uniform11(prop::array::uniform8(mtrr_type()))
        .prop_map(|rows| rows.map(|types| fixed_msr_value(types).unwrap()))
}

prop_compose! {
    fn window_state()(
        pairs in prop::collection::vec(window_pair(), 0..=5),
        default in mtrr_type(),
        enabled in prop::bool::weighted(0.9),
        fixed_enabled in any::<bool>(),
        fixed in fixed_values(),
        policy in policy(),
    ) -> MtrrState {
        MtrrState::from_msrs(&MtrrMsrs {
            cap: 8 | MTRRCAP_FIX | MTRRCAP_WC,
            def_type: def_type_value(default, enabled, fixed_enabled).unwrap(),
            fixed,
            variable: &pairs,
            maxphyaddr: 36,
        })
        .unwrap()
        .with_overlap_policy(policy)
    }
}

/// `range_type` by brute force: the type can only change at a 4 KiB page
/// boundary (fixed fields and mask bits start there), so look up the start
/// and every page boundary after it, in order.
fn range_type_brute(s: &MtrrState, start: u64, len: u64) -> Result<MtrrLookup, MtrrError> {
    let first = s.lookup(start)?;
    if len == 0 {
        return Ok(first);
    }
    let last = start + (len - 1);
    let mut at = (start | (PAGE - 1)) + 1;
    while at <= last {
        let here = s.lookup(at)?;
        if here.mem_type != first.mem_type {
            return Err(MtrrError::NonUniform {
                at,
                first: first.mem_type,
                other: here.mem_type,
            });
        }
        at += PAGE;
    }
    Ok(first)
}

proptest! {
    #[test]
    fn range_type_agrees_with_brute_force(
        s in window_state(),
        start in 0..WINDOW,
        len_frac in 0.0f64..=1.0,
        tiny in any::<bool>(),
    ) {
        let room = WINDOW - start;
        // Half the cases are short ranges, where boundaries are close.
        let len = if tiny { (room as f64 * len_frac) as u64 % (4 * PAGE) } else { (room as f64 * len_frac) as u64 };
        prop_assert_eq!(s.range_type(start, len), range_type_brute(&s, start, len));
    }

    #[test]
    fn the_type_is_constant_within_a_page(s in window_state(), addr in 0..WINDOW) {
        let page = addr & !(PAGE - 1);
        // Errors (undefined overlaps under Reject) name the address: compare
        // only that both fail.
        prop_assert_eq!(
            s.lookup(addr).map(|h| h.mem_type).ok(),
            s.lookup(page).map(|h| h.mem_type).ok()
        );
    }
}

// ---- Robustness over arbitrary inputs ----

prop_compose! {
    /// A valid state anywhere in the architectural envelope: any MAXPHYADDR,
    /// up to 8 pairs with arbitrary in-range address bits.
    fn any_valid_state()(
        maxphyaddr in 32u8..=52,
        raw_pairs in prop::collection::vec((any::<u64>(), any::<u64>(), mtrr_type(), any::<bool>()), 0..=8),
        default in mtrr_type(),
        enabled in any::<bool>(),
        fixed_enabled in any::<bool>(),
        fixed in fixed_values(),
        policy in policy(),
    ) -> MtrrState {
        let addr_bits = ((1u64 << maxphyaddr) - 1) & !(PAGE - 1);
        let pairs: Vec<(u64, u64)> = raw_pairs
            .into_iter()
            .map(|(base, mask, t, v)| {
                let base = (base & addr_bits) | u64::from(t.mtrr_encoding().unwrap());
                let mask = (mask & addr_bits) | if v { MTRR_PHYS_MASK_VALID } else { 0 };
                (base, mask)
            })
            .collect();
        MtrrState::from_msrs(&MtrrMsrs {
            cap: 8 | MTRRCAP_FIX | MTRRCAP_WC,
            def_type: def_type_value(default, enabled, fixed_enabled).unwrap(),
            fixed,
            variable: &pairs,
            maxphyaddr,
        })
        .unwrap()
        .with_overlap_policy(policy)
    }
}

proptest! {
    #[test]
    fn from_msrs_never_panics(
        cap in any::<u64>(),
        def_type in any::<u64>(),
        fixed in prop::array::uniform11(any::<u64>()),
        pairs in prop::collection::vec((any::<u64>(), any::<u64>()), 0..=10),
        maxphyaddr in any::<u8>(),
    ) {
        let _ = MtrrState::from_msrs(&MtrrMsrs { cap, def_type, fixed, variable: &pairs, maxphyaddr });
    }

    #[test]
    fn lookup_and_range_type_never_panic(
        s in any_valid_state(),
        addr in any::<u64>(),
        start in any::<u64>(),
        len in any::<u64>(),
    ) {
        let hit = s.lookup(addr);
        if s.overlap_policy() != OverlapPolicy::Reject {
            prop_assert!(hit.is_ok());
        }
        match s.range_type(start, len) {
            Ok(whole) => {
                prop_assert_eq!(Ok(whole), s.lookup(start));
                let last = start.saturating_add(len.saturating_sub(1));
                prop_assert_eq!(s.lookup(last).map(|h| h.mem_type), Ok(whole.mem_type));
            }
            Err(MtrrError::NonUniform { at, first, other }) => {
                prop_assert!(at > start && at - start < len);
                prop_assert_eq!(s.lookup(start).map(|h| h.mem_type), Ok(first));
                prop_assert_eq!(s.lookup(at).map(|h| h.mem_type), Ok(other));
                prop_assert_ne!(first, other);
            }
            Err(MtrrError::UndefinedOverlap { addr, .. }) => {
                prop_assert_eq!(s.overlap_policy(), OverlapPolicy::Reject);
                prop_assert!(s.lookup(addr).is_err());
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?}"),
        }
    }
}
