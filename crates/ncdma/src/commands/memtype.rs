//! `ncdma memtype pat|combine`: the raw algebra of the `memtype` crate.

use clap::{Args, Subcommand};
use memtype::pat::Pat;
use memtype::{CombineError, Decision, EptLeaf, MemType, combine};
use serde_json::json;

use crate::Output;
use crate::cli::parse_hex_u64;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub(crate) enum MemtypeCommand {
    /// Decode an IA32_PAT value into its eight entries (or the #GP a reserved entry raises).
    Pat {
        /// The 64-bit MSR value, hex (with or without 0x; `_` separators allowed).
        #[arg(value_name = "HEX", value_parser = parse_hex_u64)]
        value: u64,
    },
    /// Combine memory types: Intel bare metal (--mtrr --pat), Intel EPT (--ept --ipat|--no-ipat
    /// --pat), or AMD NPT (--amd --guest-pat --host-pat --mtrr).
    Combine(CombineArgs),
}

/// Which combination is asked for follows from the flags given; mixing them is an error.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("ipat-choice").args(["ipat", "no_ipat"]))]
pub(crate) struct CombineArgs {
    /// AMD NPT: guest PAT x host PAT, then x MTRR.
    #[arg(long, requires_all = ["guest_pat", "host_pat", "mtrr"], conflicts_with_all = ["ept", "pat"])]
    pub amd: bool,
    /// MTRR type of the physical address (Intel bare metal, AMD).
    #[arg(long, value_name = "T")]
    pub mtrr: Option<MemType>,
    /// PAT type of the mapping (Intel bare metal; guest PAT with --ept).
    #[arg(long, value_name = "T")]
    pub pat: Option<MemType>,
    /// EPT leaf memory type (bits 5:3): UC, WC, WT, WP or WB.
    #[arg(
        long,
        value_name = "T",
        requires = "ipat-choice",
        conflicts_with = "mtrr"
    )]
    pub ept: Option<MemType>,
    /// EPT leaf has IPAT set: guest PAT ignored.
    #[arg(long)]
    pub ipat: bool,
    /// EPT leaf has IPAT clear: guest PAT combines with the EPT type.
    #[arg(long)]
    pub no_ipat: bool,
    /// AMD: the guest's PAT type.
    #[arg(long, value_name = "T", requires = "amd")]
    pub guest_pat: Option<MemType>,
    /// AMD: the host (nested page table) PAT type.
    #[arg(long, value_name = "T", requires = "amd")]
    pub host_pat: Option<MemType>,
    /// CR0.CD=1: caching disabled (no-fill mode) for the accessing CPU.
    #[arg(long)]
    pub cr0_cd: bool,
}

pub(crate) fn run(cmd: &MemtypeCommand, json: bool) -> Output {
    match cmd {
        MemtypeCommand::Pat { value } => pat(*value, json),
        MemtypeCommand::Combine(args) => combine_cmd(args, json),
    }
}

fn pat(value: u64, json: bool) -> Output {
    let pat = Pat::new(value).map_err(|e| CliError::BadInput(format!("{value:#018x}: {e}")))?;
    let entries = pat.entries();
    if json {
        let list: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, t)| json!({ "index": i, "type": t.name(), "encoding": t.pat_encoding() }))
            .collect();
        return Ok(format!(
            "{}\n",
            json!({ "value": format!("{value:#018x}"), "entries": list })
        ));
    }
    let mut out = format!("IA32_PAT = {value:#018x}\n");
    for (i, t) in entries.iter().enumerate() {
        let (pat_bit, pcd, pwt) = (i >> 2 & 1, i >> 1 & 1, i & 1);
        out += &format!("  PA{i} (PAT={pat_bit} PCD={pcd} PWT={pwt})  {t}\n");
    }
    Ok(out)
}

/// The three combinations, chosen by which flags were given.
enum Combination {
    IntelBareMetal {
        mtrr: MemType,
        pat: MemType,
    },
    IntelEpt {
        ept: MemType,
        ipat: bool,
        pat: MemType,
    },
    AmdNpt {
        guest_pat: MemType,
        host_pat: MemType,
        mtrr: MemType,
    },
}

fn select(a: &CombineArgs) -> Result<Combination, CliError> {
    let missing = |what: &str| {
        CliError::BadInput(format!(
            "memtype combine: {what} (use --mtrr T --pat T, --ept T --ipat|--no-ipat --pat T, or --amd --guest-pat T --host-pat T --mtrr T)"
        ))
    };
    if a.amd {
        // clap's `requires_all` guarantees the three are present.
        return match (a.guest_pat, a.host_pat, a.mtrr) {
            (Some(guest_pat), Some(host_pat), Some(mtrr)) => Ok(Combination::AmdNpt {
                guest_pat,
                host_pat,
                mtrr,
            }),
            _ => Err(missing("--amd needs --guest-pat, --host-pat and --mtrr")),
        };
    }
    let pat = a.pat.ok_or_else(|| missing("--pat is required"))?;
    match (a.ept, a.mtrr) {
        (Some(ept), None) => Ok(Combination::IntelEpt {
            ept,
            ipat: a.ipat,
            pat,
        }),
        (None, Some(mtrr)) => Ok(Combination::IntelBareMetal { mtrr, pat }),
        _ => Err(missing("give either --mtrr (bare metal) or --ept (EPT)")),
    }
}

fn combine_cmd(a: &CombineArgs, json: bool) -> Output {
    let which = select(a)?;
    let bad = |e: CombineError| CliError::BadInput(format!("memtype combine: {e}"));
    let (mode, inputs, decision): (&str, serde_json::Value, Decision) = match which {
        Combination::IntelBareMetal { mtrr, pat } => (
            "intel-bare-metal",
            json!({ "mtrr": mtrr.name(), "pat": pat.name(), "cr0_cd": a.cr0_cd }),
            combine::intel_bare_metal(mtrr, pat, a.cr0_cd).map_err(bad)?,
        ),
        Combination::IntelEpt { ept, ipat, pat } => {
            let leaf = EptLeaf::new(ept, ipat).map_err(bad)?;
            (
                "intel-ept",
                json!({ "ept": ept.name(), "ipat": ipat, "guest_pat": pat.name(), "guest_cr0_cd": a.cr0_cd }),
                combine::intel_ept(leaf, pat, a.cr0_cd).map_err(bad)?,
            )
        }
        Combination::AmdNpt {
            guest_pat,
            host_pat,
            mtrr,
        } => (
            "amd-npt",
            json!({ "guest_pat": guest_pat.name(), "host_pat": host_pat.name(), "mtrr": mtrr.name(), "cr0_cd": a.cr0_cd }),
            combine::amd_npt(guest_pat, host_pat, mtrr, a.cr0_cd).map_err(bad)?,
        ),
    };
    if json {
        return Ok(format!(
            "{}\n",
            json!({
                "mode": mode,
                "inputs": inputs,
                "effective": decision.effective.name(),
                "reason": decision.reason.to_string(),
            })
        ));
    }
    Ok(format!(
        "effective: {}\nreason:    {}\n",
        decision.effective, decision.reason
    ))
}
