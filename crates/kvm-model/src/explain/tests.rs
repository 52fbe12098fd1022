//! `get_mt_mask` cell by cell (system.md §3 and §5) for every profile and vendor, through
//! `explain`, plus the impossible combinations.

use memtype::MemType::{self, Cd, Uc, UcMinus, Wb, Wc, WcPlus};
use uapi::Errno;
use uapi::memslot::{KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_NON_COHERENT_DMA};

use super::*;
use crate::mmu::GuestMtrrRule;
use crate::profile::{CpuFacts, Vendor};
use memtype::mtrr::MtrrRule;

fn profile(name: &str, vendor: Vendor) -> KernelProfile {
    KernelProfile::parse(name, vendor).unwrap()
}

fn input(name: &str, vendor: Vendor) -> ExplainInput {
    ExplainInput::new(profile(name, vendor))
}

fn with_pat(mut i: ExplainInput, t: MemType) -> ExplainInput {
    i.guest_pat = GuestPat::Type(t);
    i
}

/// (branch, EPT type, IPAT, effective) of one access.
fn cell(i: &ExplainInput) -> (MtMaskBranch, Option<MemType>, Option<bool>, MemType) {
    let e = explain(i).unwrap_or_else(|err| panic!("{err}"));
    (e.branch, e.ept_memtype, e.ipat, e.effective)
}

#[test]
fn host_mmio_is_uc_without_ipat_in_every_era() {
    for name in KernelProfile::NAMES {
        let mut i = with_pat(input(name, Vendor::Intel), Wc);
        i.mmio = true;
        i.noncoherent_dma = 1;
        let want = (MtMaskBranch::HostMmio, Some(Uc), Some(false), Wc);
        assert_eq!(cell(&i), want, "{name}: guest WC on a BAR");
        let i = with_pat(i, Wb);
        assert_eq!(cell(&i).3, Uc, "{name}: guest WB on a BAR");
    }
    // Host MMIO comes before the proposal's flag.
    let mut i = with_pat(input("6.16+memslot-flag", Vendor::Intel), Wc);
    i.mmio = true;
    i.slot_flags = KVM_MEM_NON_COHERENT_DMA;
    assert_eq!(cell(&i).0, MtMaskBranch::HostMmio);
}

#[test]
fn v6_7_cells() {
    let wc = with_pat(input("6.7", Vendor::Intel), Wc);
    assert_eq!(
        cell(&wc),
        (MtMaskBranch::NoNoncoherentDma, Some(Wb), Some(true), Wb)
    );

    let mut nc = wc;
    nc.noncoherent_dma = 1;
    let (branch, ept, ipat, effective) = cell(&nc);
    assert_eq!(
        branch,
        MtMaskBranch::GuestMtrr {
            mtrr: Wb,
            rule: GuestMtrrRule::Lookup(MtrrRule::DefaultType)
        }
    );
    assert_eq!((ept, ipat, effective), (Some(Wb), Some(false), Wc));

    // Guest MTRRs fold into the EPT type: MTRR WC with PAT UC- stays WC, as on bare metal.
    let mut mtrr_wc = with_pat(nc, UcMinus);
    mtrr_wc.guest_mtrr = Some(Wc);
    assert_eq!(cell(&mtrr_wc).1, Some(Wc));
    assert_eq!(cell(&mtrr_wc).3, Wc);
    let mut mtrr_uc = with_pat(nc, Wb);
    mtrr_uc.guest_mtrr = Some(Uc);
    assert_eq!(cell(&mtrr_uc).3, Uc);

    let mut cd = nc;
    cd.guest_cr0_cd = true;
    assert_eq!(
        cell(&cd),
        (MtMaskBranch::Cr0CdQuirk, Some(Wb), Some(false), Wc)
    );
    cd.quirk_cd_nw_cleared = Some(QuirkState::Disabled);
    assert_eq!(
        cell(&cd),
        (MtMaskBranch::Cr0CdNoQuirk, Some(Uc), Some(true), Uc)
    );
    cd.quirk_cd_nw_cleared = Some(QuirkState::Enabled);
    assert_eq!(cell(&cd).0, MtMaskBranch::Cr0CdQuirk);

    // Without noncoherent DMA neither CR0.CD nor MTRRs matter.
    let mut plain_cd = wc;
    plain_cd.guest_cr0_cd = true;
    plain_cd.guest_mtrr = Some(Uc);
    assert_eq!(cell(&plain_cd).0, MtMaskBranch::NoNoncoherentDma);
}

#[test]
fn v6_7_proposals() {
    // The RFC's device raises the count like VFIO; the branch is then 6.7's own.
    let mut virtio = with_pat(input("6.7+virtio-device", Vendor::Intel), Wc);
    virtio.noncoherent_dma = 2;
    let e = explain(&virtio).unwrap();
    assert_eq!(e.noncoherent_dma_count, 2);
    assert_eq!(e.noncoherent_mechanism, Some(VIRTIO_MECHANISM));
    assert!(matches!(e.branch, MtMaskBranch::GuestMtrr { .. }));
    assert_eq!(e.effective, Wc);

    // The flag: WB without IPAT; guest MTRRs and CR0.CD ignored (the stated loss: MTRR WC
    // with PAT UC- is UC here, WC on bare metal).
    let mut flag = with_pat(input("6.7+memslot-flag", Vendor::Intel), Wc);
    flag.slot_flags = KVM_MEM_NON_COHERENT_DMA;
    assert_eq!(
        cell(&flag),
        (MtMaskBranch::SlotNonCoherentDma, Some(Wb), Some(false), Wc)
    );
    let mut loss = with_pat(flag, UcMinus);
    loss.guest_mtrr = Some(Wc);
    loss.noncoherent_dma = 1;
    loss.guest_cr0_cd = true;
    assert_eq!(
        cell(&loss),
        (MtMaskBranch::SlotNonCoherentDma, Some(Wb), Some(false), Uc)
    );

    // An unflagged slot of the same kernel is upstream 6.7.
    let unflagged = with_pat(input("6.7+memslot-flag", Vendor::Intel), Wc);
    assert_eq!(cell(&unflagged).0, MtMaskBranch::NoNoncoherentDma);
}

#[test]
fn v6_11_self_snoop_cells() {
    let ss = with_pat(input("6.11-selfsnoop", Vendor::Intel), Wc);
    assert_eq!(
        cell(&ss),
        (MtMaskBranch::SelfSnoop, Some(Wb), Some(false), Wc)
    );
    let mut no_ss = ss;
    no_ss.profile = ss.profile.with_cpu(CpuFacts {
        self_snoop: false,
        tdp: true,
    });
    assert_eq!(
        cell(&no_ss),
        (
            MtMaskBranch::NoSelfSnoopNoNoncoherentDma,
            Some(Wb),
            Some(true),
            Wb
        )
    );
    no_ss.noncoherent_dma = 1;
    no_ss.guest_cr0_cd = true;
    no_ss.guest_mtrr = Some(Uc);
    assert_eq!(
        cell(&no_ss),
        (MtMaskBranch::NoncoherentDma, Some(Wb), Some(false), Wc)
    );
}

#[test]
fn v6_12_cells() {
    let i = with_pat(input("6.12", Vendor::Intel), Wc);
    assert_eq!(
        cell(&i),
        (MtMaskBranch::NoNoncoherentDma, Some(Wb), Some(true), Wb)
    );
    let mut nc = i;
    nc.noncoherent_dma = 3;
    nc.guest_mtrr = Some(Uc);
    nc.guest_cr0_cd = true;
    let e = explain(&nc).unwrap();
    assert_eq!(e.noncoherent_dma_count, 1, "KVM-VFIO counts once per VM");
    assert_eq!(e.noncoherent_mechanism, Some(VFIO_MECHANISM));
    assert_eq!((e.branch, e.effective), (MtMaskBranch::NoncoherentDma, Wc));
    assert_eq!(
        cell(&with_pat(nc, Wb)).3,
        Wb,
        "MTRR UC is not honored any more"
    );
}

#[test]
fn v6_16_cells() {
    let i = with_pat(input("6.16", Vendor::Intel), Wc);
    assert_eq!(
        cell(&i),
        (MtMaskBranch::QuirkIgnoreGuestPat, Some(Wb), Some(true), Wb)
    );
    let mut nc = i;
    nc.noncoherent_dma = 1;
    assert_eq!(
        cell(&nc),
        (MtMaskBranch::NoncoherentDma, Some(Wb), Some(false), Wc)
    );
    let mut off = i;
    off.quirk_ignore_guest_pat = Some(QuirkState::Disabled);
    assert_eq!(
        cell(&off),
        (MtMaskBranch::QuirkDisabled, Some(Wb), Some(false), Wc)
    );
    off.noncoherent_dma = 1;
    assert_eq!(cell(&off).0, MtMaskBranch::QuirkDisabled);
    let mut on = i;
    on.quirk_ignore_guest_pat = Some(QuirkState::Enabled);
    assert_eq!(cell(&on).0, MtMaskBranch::QuirkIgnoreGuestPat);

    let mut flag = i;
    flag.slot_flags = KVM_MEM_NON_COHERENT_DMA;
    flag.profile = profile("6.16+memslot-flag", Vendor::Intel);
    assert_eq!(
        cell(&flag),
        (MtMaskBranch::SlotNonCoherentDma, Some(Wb), Some(false), Wc)
    );
    let e = explain(&flag).unwrap();
    assert_eq!(
        e.reason,
        "6.16+memslot-flag/intel: make_spte → vmx_get_mt_mask: slot has KVM_MEM_NON_COHERENT_DMA → WB, IPAT=0 (guest PAT decides); guest PAT WC: EPT IPAT=0: EPT type WB in the MTRR row x guest PAT WC = WC → WC"
    );
    flag.slot_flags = 0;
    assert_eq!(cell(&flag).0, MtMaskBranch::QuirkIgnoreGuestPat);
}

#[test]
fn amd_honors_guest_pat_natively() {
    for name in KernelProfile::NAMES {
        let mut i = with_pat(input(name, Vendor::Amd), Wc);
        let e = explain(&i).unwrap();
        assert_eq!(
            (e.branch, e.ept_memtype, e.ipat),
            (MtMaskBranch::SvmNpt, None, None),
            "{name}"
        );
        assert!(e.honors_guest_pat);
        assert_eq!(e.effective, WcPlus, "{name}: guest WC x host WB");
        i.mmio = true;
        assert_eq!(cell(&i).3, Wc, "{name}: WC+ x MTRR UC of a BAR");
        i.mmio = false;
        i.guest_cr0_cd = true;
        assert_eq!(
            cell(&with_pat(i, Wb)).3,
            Wb,
            "{name}: CR0.CD kept from hardware"
        );
        i.quirk_cd_nw_cleared = Some(QuirkState::Disabled);
        assert_eq!(
            cell(&with_pat(i, Wb)).3,
            Cd,
            "{name}: CR0.CD reaches hardware"
        );
    }
    let mut flag = with_pat(input("6.16+memslot-flag", Vendor::Amd), Wc);
    flag.slot_flags = KVM_MEM_NON_COHERENT_DMA;
    assert_eq!(cell(&flag).0, MtMaskBranch::SvmNpt, "accepted and harmless");
    // Listed, starts disabled, may be "disabled" again; cannot be enabled.
    let mut q = with_pat(input("6.16", Vendor::Amd), Wc);
    q.quirk_ignore_guest_pat = Some(QuirkState::Disabled);
    assert_eq!(cell(&q).3, WcPlus);
    q.quirk_ignore_guest_pat = Some(QuirkState::Enabled);
    assert!(matches!(explain(&q), Err(ExplainError::EnableQuirk { .. })));
}

#[test]
fn shadow_paging_honors_nothing() {
    let host = ExplainInput::new(KernelProfile::this_host());
    for t in [Uc, UcMinus, Wc, Wb] {
        let mut i = with_pat(host, t);
        i.noncoherent_dma = 1;
        i.guest_mtrr = Some(Uc);
        let e = explain(&i).unwrap();
        assert_eq!(
            (e.branch, e.effective, e.honors_guest_pat),
            (MtMaskBranch::ShadowPaging, Wb, false),
            "guest {t}"
        );
        assert_eq!((e.ept_memtype, e.ipat), (None, None));
    }
    let mut bar = with_pat(host, Wc);
    bar.mmio = true;
    assert_eq!(
        cell(&bar).3,
        Uc,
        "the host's attributes: MTRR UC of the BAR"
    );
    let intel = profile("6.12", Vendor::Intel).with_cpu(CpuFacts {
        self_snoop: true,
        tdp: false,
    });
    let mut i = with_pat(ExplainInput::new(intel), Wc);
    i.noncoherent_dma = 1;
    assert_eq!(cell(&i), (MtMaskBranch::ShadowPaging, None, None, Wb));
    // The quirk cannot be disabled without TDP.
    let mut q = host;
    q.quirk_ignore_guest_pat = Some(QuirkState::Disabled);
    match explain(&q) {
        Err(ExplainError::DisableQuirk {
            errno, supported, ..
        }) => {
            assert_eq!((errno, supported), (Errno::EINVAL, 0x5ff));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn impossible_combinations_are_named() {
    let mut flag = input("6.16", Vendor::Intel);
    flag.slot_flags = KVM_MEM_NON_COHERENT_DMA | KVM_MEM_LOG_DIRTY_PAGES;
    let err = explain(&flag).unwrap_err();
    assert_eq!(
        err.to_string(),
        "6.16/intel: KVM_SET_USER_MEMORY_REGION2 with flags log-dirty,non-coherent-dma → EINVAL (KVM_MEM_NON_COHERENT_DMA exists only in 6.7+memslot-flag and 6.16+memslot-flag)"
    );
    let mut v1 = input("6.7+virtio-device", Vendor::Amd);
    v1.slot_flags = KVM_MEM_NON_COHERENT_DMA;
    assert!(err_text(&v1).starts_with("6.7+virtio-device/amd: KVM_SET_USER_MEMORY_REGION with"));

    let mut old = input("6.12", Vendor::Intel);
    old.quirk_ignore_guest_pat = Some(QuirkState::Enabled);
    assert_eq!(
        err_text(&old),
        "6.12/intel: KVM_X86_QUIRK_IGNORE_GUEST_PAT does not exist in this kernel (it appeared in 6.16)"
    );
    let mut no_ss = input("6.16", Vendor::Intel);
    no_ss.profile = no_ss.profile.with_cpu(CpuFacts {
        self_snoop: false,
        tdp: true,
    });
    no_ss.quirk_ignore_guest_pat = Some(QuirkState::Disabled);
    assert!(
        err_text(&no_ss).contains("→ EINVAL (supported mask 0x5ff)"),
        "{}",
        err_text(&no_ss)
    );
    let mut cd = input("6.16", Vendor::Intel);
    cd.quirk_cd_nw_cleared = Some(QuirkState::Enabled);
    assert_eq!(
        err_text(&cd),
        "6.16/intel: KVM_X86_QUIRK_CD_NW_CLEARED starts disabled on this vendor and cannot be enabled"
    );
    let mut pat = input("6.12", Vendor::Intel);
    pat.guest_pat = GuestPat::Value { pat: 0x2, index: 0 };
    assert!(err_text(&pat).starts_with("guest PAT: PA0 = 0x02"));
    pat.guest_pat = GuestPat::Value {
        pat: 0x0407_0506_0007_0106,
        index: 8,
    };
    assert_eq!(err_text(&pat), "PAT index 8 is out of range (0..=7)");
    pat.guest_pat = GuestPat::Type(WcPlus);
    assert!(matches!(
        explain(&pat),
        Err(ExplainError::GuestPatType(WcPlus))
    ));
    let mut mtrr = input("6.7", Vendor::Intel);
    mtrr.guest_mtrr = Some(UcMinus);
    assert!(matches!(
        explain(&mtrr),
        Err(ExplainError::SetGuestMtrr(UcMinus))
    ));
}

#[test]
fn pat_value_and_index_select_the_entry() {
    let mut i = input("6.12", Vendor::Intel);
    i.noncoherent_dma = 1;
    i.guest_pat = GuestPat::Value {
        pat: 0x0407_0506_0007_0106,
        index: 1,
    };
    let e = explain(&i).unwrap();
    assert_eq!((e.guest_pat, e.effective), (Wc, Wc));
    i.guest_pat = GuestPat::Value {
        pat: 0x0407_0506_0007_0106,
        index: 3,
    };
    assert_eq!(explain(&i).unwrap().effective, Uc);
}

fn err_text(i: &ExplainInput) -> String {
    explain(i).unwrap_err().to_string()
}
