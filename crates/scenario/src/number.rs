//! Numbers as scenario files write them: TOML integers, or strings in hex (`"0x1000"`),
//! decimal (`"4096"`) or with a binary size suffix (`"256MiB"`, `"4 KiB"`). `_` separates
//! digits anywhere. Kept as written ([`Quantity`]) until validation, so that a bad one is
//! reported with its key and line.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A number as written in the file: an integer or a string still to be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Quantity {
    /// A TOML integer.
    Int(i64),
    /// A string: hex, decimal, or a size with a suffix.
    Text(String),
}

impl Quantity {
    /// The value as a plain number (hex or decimal; no size suffix).
    pub(crate) fn number(&self) -> Result<u64, String> {
        match self {
            Quantity::Int(n) => non_negative(*n),
            Quantity::Text(s) => parse_number(s),
        }
    }

    /// The value as a size in bytes: a number, or a number followed by `KiB`, `MiB` or `GiB`.
    pub(crate) fn bytes(&self) -> Result<u64, String> {
        match self {
            Quantity::Int(n) => non_negative(*n),
            Quantity::Text(s) => parse_size(s),
        }
    }
}

fn non_negative(n: i64) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("{n} is negative"))
}

/// Parses `0x…` hex or decimal, with `_` separators.
pub(crate) fn parse_number(s: &str) -> Result<u64, String> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (t.as_str(), 10),
    };
    if digits.is_empty() {
        return Err(format!("\"{s}\" is not a number"));
    }
    u64::from_str_radix(digits, radix)
        .map_err(|_| format!("\"{s}\" is not a 64-bit number (hex with 0x, or decimal)"))
}

/// Binary size suffixes, longest first so `KiB` is not read as `B`.
const SUFFIXES: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

/// Parses a size: a number (see [`parse_number`]) optionally followed by `B`, `KiB`, `MiB` or
/// `GiB` (space allowed before the suffix).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| t.strip_suffix(suffix).map(|d| (d, *unit)))
        .unwrap_or((t, 1));
    let n = parse_number(digits).map_err(|_| {
        format!("\"{s}\" is not a size (bytes as hex or decimal, or with KiB, MiB or GiB)")
    })?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("\"{s}\" does not fit in 64 bits"))
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Quantity, D::Error> {
        struct QuantityVisitor;

        impl Visitor<'_> for QuantityVisitor {
            type Value = Quantity;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string such as \"0x1000\" or \"256MiB\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity::Int(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                i64::try_from(v)
                    .map(Quantity::Int)
                    .map_err(|_| E::custom(format!("{v} does not fit in a TOML integer")))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity::Text(v.to_string()))
            }
        }

        d.deserialize_any(QuantityVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_hex_and_decimal() {
        assert_eq!(parse_number("0x100000000"), Ok(0x1_0000_0000));
        assert_eq!(parse_number("0X1_0000"), Ok(0x1_0000));
        assert_eq!(parse_number("4096"), Ok(4096));
        assert!(parse_number("0x").is_err());
        assert!(parse_number("12k").is_err());
        assert!(parse_number("0x1_0000_0000_0000_0000").is_err());
        assert!(parse_number("-1").is_err());
    }

    #[test]
    fn sizes_with_suffixes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("64B"), Ok(64));
        assert_eq!(parse_size("0x1000"), Ok(4096));
        let err = parse_size("256MB").unwrap_err();
        assert!(err.contains("KiB, MiB or GiB"), "{err}");
        assert!(parse_size("0xffffffffffffffffGiB").is_err());
    }

    #[test]
    fn integers_must_not_be_negative() {
        assert_eq!(Quantity::Int(4096).bytes(), Ok(4096));
        assert!(Quantity::Int(-1).number().is_err());
        assert_eq!(Quantity::Text("1MiB".into()).bytes(), Ok(1 << 20));
        assert!(Quantity::Text("1MiB".into()).number().is_err());
    }
}
