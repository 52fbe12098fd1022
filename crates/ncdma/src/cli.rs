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
