//! The command line, declared with clap. The shapes here are a stable contract
//! (design.md "Command line"): tests and outside tools call these exact flags. Each
//! subcommand's own arguments are declared beside its code in `commands/`.

use clap::{Parser, Subcommand};

use crate::commands;

/// Noncoherent DMA on KVM: what each kernel design does to a guest's memory types, and what
/// this host really offers.
#[derive(Debug, Parser)]
#[command(name = "ncdma", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The raw x86 memory-type algebra: decode PAT values, combine memory types.
    #[command(subcommand)]
    Memtype(commands::memtype::MemtypeCommand),
    /// One guest access's memory type on a chosen kernel (reference model), and why.
    Explain(commands::explain::ExplainArgs),
    /// Replay a JSON list of KVM uAPI calls on the model or on /dev/kvm, printing each
    /// call's result (format: docs/replay.md).
    Replay(commands::replay::ReplayArgs),
    /// Run a benchmark (spte, memslots, coherence, migrate, stream), each side by side with
    /// what it is measured against, in one run (results and commands: BENCHMARKS.md).
    Bench(commands::bench::BenchArgs),
    /// The main job, no arguments: the seeds' virtio-GPU case on every kernel and vendor,
    /// the conclusion it supports, and why the frame's store gets its memory type.
    Demo,
    /// List the built-in scenarios `ncdma run` accepts by name.
    Scenarios,
    /// Run a scenario (built-in name or TOML file, docs/scenarios.md) on one kernel or, with
    /// --all-profiles, on every kernel and vendor; exit 1 if an expectation fails.
    Run(commands::run::RunArgs),
    /// What this host's KVM (or a modeled kernel) offers for noncoherent DMA: one line per
    /// check and the mechanism a noncoherent region would get (docs/probe.md).
    Probe(commands::probe::ProbeArgs),
    /// Boot a live guest on /dev/kvm (a CPL3 loop dirtying RAM, a GPU model rendering a
    /// noncoherent BAR) and write a snapshot of it, running, to FILE (docs/migration.md).
    Snapshot(commands::snapshot::SnapshotArgs),
    /// Verify a snapshot file, restore its guest through this host's strategy chain, and
    /// run it to show that it goes on.
    Restore(commands::snapshot::RestoreFileArgs),
    /// Live migration of a running guest over TCP: `send --to HOST:PORT`, `receive --listen
    /// ADDR:PORT`.
    #[command(subcommand)]
    Migrate(commands::migrate::MigrateCommand),
}

/// Parses a 64-bit hex value as users write it: `0x0007040600070406`, `7040600070406`,
/// `0x0007_0406_0007_0406`.
pub(crate) fn parse_hex_u64(s: &str) -> Result<u64, String> {
    let digits: String = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s)
        .chars()
        .filter(|c| *c != '_')
        .collect();
    if digits.is_empty() {
        return Err(format!("\"{s}\" is not a hex number"));
    }
    u64::from_str_radix(&digits, 16)
        .map_err(|e| format!("\"{s}\" is not a 64-bit hex number ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hex_parsing() {
        assert_eq!(
            parse_hex_u64("0x0007040600070406"),
            Ok(0x0007_0406_0007_0406)
        );
        assert_eq!(parse_hex_u64("7040600070406"), Ok(0x0007_0406_0007_0406));
        assert_eq!(
            parse_hex_u64("0X0007_0406_0007_0406"),
            Ok(0x0007_0406_0007_0406)
        );
        assert!(parse_hex_u64("").is_err());
        assert!(parse_hex_u64("0x").is_err());
        assert!(parse_hex_u64("0xZZ").is_err());
        assert!(parse_hex_u64("0x1_0000_0000_0000_0000").is_err());
    }
}
