//! `ncdma explain`: one guest access's memory type on a chosen kernel, and the path that
//! produced it (`kvm_model::explain`).

use clap::Args;
use kvm_model::explain::{ExplainInput, GuestPat, QuirkState};
use kvm_model::{CpuFacts, KernelProfile, Vendor};
use memtype::MemType;
use serde_json::json;
use uapi::memslot::MemslotFlags;

use crate::Output;
use crate::cli::parse_hex_u64;
use crate::error::CliError;

/// Kernel profile names, for clap (`KernelProfile::NAMES`).
fn parse_kernel(s: &str) -> Result<String, String> {
    KernelProfile::parse(s, Vendor::Intel)
        .map(|p| p.name().to_string())
        .map_err(|e| e.to_string())
}

fn parse_slot_flags(s: &str) -> Result<MemslotFlags, String> {
    MemslotFlags::parse_list(s).map_err(|e| e.to_string())
}

/// What to explain: the kernel, the VM's setup and the guest's view of the page.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// Kernel profile: 6.7, 6.7+virtio-device, 6.7+memslot-flag, 6.11-selfsnoop, 6.12, 6.16,
    /// 6.16+memslot-flag.
    #[arg(long, value_name = "P", value_parser = parse_kernel)]
    pub kernel: String,
    /// CPU vendor.
    #[arg(long, value_name = "intel|amd")]
    pub vendor: Vendor,
    /// The CPU lacks self-snoop (CPUID.1:EDX[27]).
    #[arg(long)]
    pub no_self_snoop: bool,
    /// Two-dimensional paging off (shadow paging), as on this project's kvm_pvm hosts.
    #[arg(long)]
    pub no_tdp: bool,
    /// KVM_X86_QUIRK_IGNORE_GUEST_PAT (6.16 era): leave, or ask for, enabled or disabled.
    #[arg(long, value_name = "enabled|disabled")]
    pub quirk_ignore_guest_pat: Option<QuirkState>,
    /// KVM_X86_QUIRK_CD_NW_CLEARED: leave, or ask for, enabled or disabled.
    #[arg(long, value_name = "enabled|disabled")]
    pub quirk_cd_nw_cleared: Option<QuirkState>,
    /// Noncoherent DMA registrations (virtio devices where the profile has them, else
    /// KVM-VFIO files without snoop control, which count once per VM).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub noncoherent_dma: u32,
    /// Memslot flags, comma-separated: log-dirty, readonly, guest-memfd, non-coherent-dma
    /// (or KVM_MEM_* names, or numbers).
    #[arg(long, value_name = "LIST", value_parser = parse_slot_flags)]
    pub slot_flags: Option<MemslotFlags>,
    /// The slot is backed by a host device BAR (VM_PFNMAP): host MMIO.
    #[arg(long)]
    pub mmio: bool,
    /// The guest runs with CR0.CD=1.
    #[arg(long)]
    pub guest_cr0_cd: bool,
    /// The guest PAT type of the mapping (UC, UC-, WC, WT, WP, WB).
    #[arg(long, value_name = "T", conflicts_with_all = ["guest_pat", "pat_index"])]
    pub guest_pat_type: Option<MemType>,
    /// The guest's IA32_PAT value, hex; needs --pat-index.
    #[arg(long, value_name = "HEX", value_parser = parse_hex_u64, requires = "pat_index")]
    pub guest_pat: Option<u64>,
    /// The PAT entry the mapping selects (0..=7, 4*PAT + 2*PCD + PWT); needs --guest-pat.
    #[arg(long, value_name = "I", requires = "guest_pat")]
    pub pat_index: Option<u8>,
    /// The guest's MTRR type for the page (MTRRs enabled, default type T; WB if not given).
    #[arg(long, value_name = "T")]
    pub guest_mtrr: Option<MemType>,
}

impl ExplainArgs {
    fn input(&self) -> Result<ExplainInput, CliError> {
        let profile = KernelProfile::parse(&self.kernel, self.vendor)
            .map_err(|e| CliError::BadInput(format!("explain: {e}")))?
            .with_cpu(CpuFacts {
                self_snoop: !self.no_self_snoop,
                tdp: !self.no_tdp,
            });
        let guest_pat = match (self.guest_pat_type, self.guest_pat, self.pat_index) {
            (_, Some(pat), Some(index)) => GuestPat::Value { pat, index },
            (Some(t), _, _) => GuestPat::Type(t),
            _ => GuestPat::Type(MemType::Wb),
        };
        Ok(ExplainInput {
            profile,
            quirk_ignore_guest_pat: self.quirk_ignore_guest_pat,
            quirk_cd_nw_cleared: self.quirk_cd_nw_cleared,
            noncoherent_dma: self.noncoherent_dma,
            slot_flags: self.slot_flags.unwrap_or_default().0,
            mmio: self.mmio,
            guest_cr0_cd: self.guest_cr0_cd,
            guest_pat,
            guest_mtrr: self.guest_mtrr,
        })
    }
}

pub(crate) fn run(args: &ExplainArgs, json: bool) -> Output {
    let input = args.input()?;
    let e = kvm_model::explain(&input).map_err(|e| CliError::BadInput(format!("explain: {e}")))?;
    let name = |t: Option<MemType>| t.map(MemType::name);
    if json {
        return Ok(format!(
            "{}\n",
            json!({
                "kernel": e.profile.name(),
                "vendor": e.profile.vendor.name(),
                "self_snoop": e.profile.cpu.self_snoop,
                "tdp": e.profile.cpu.tdp,
                "profile": e.profile.to_string(),
                "effective": e.effective.name(),
                "ept_memtype": name(e.ept_memtype),
                "ipat": e.ipat,
                "honors_guest_pat": e.honors_guest_pat,
                "guest_pat": e.guest_pat.name(),
                "branch": e.branch.name(),
                "branch_text": e.branch.to_string(),
                "noncoherent_dma_count": e.noncoherent_dma_count,
                "noncoherent_mechanism": e.noncoherent_mechanism,
                "level": e.level.to_string(),
                "reason": e.reason,
            })
        ));
    }
    let leaf = match (e.ept_memtype, e.ipat) {
        (Some(t), Some(ipat)) => format!("{t}, IPAT={}", u8::from(ipat)),
        _ => "none (no EPT memory type on this configuration)".to_string(),
    };
    let noncoherent = match e.noncoherent_mechanism {
        Some(m) => format!("{} via {m}", e.noncoherent_dma_count),
        None => "0".to_string(),
    };
    Ok(format!(
        "kernel:           {}\n\
         branch:           {}\n\
         EPT leaf:         {leaf}\n\
         guest PAT:        {}\n\
         effective:        {}\n\
         honors guest PAT: {}\n\
         noncoherent DMA:  {noncoherent}\n\
         reason:           {}\n",
        e.profile,
        e.branch,
        e.guest_pat,
        e.effective,
        if e.honors_guest_pat { "yes" } else { "no" },
        e.reason
    ))
}
