//! How scalar fields are written in a replay file: numbers (JSON numbers, or strings in
//! decimal or `0x` hex), flag sets (a number, or a list of names), capabilities and device
//! types (a number or a KVM name). Each submodule is a serde `with` module for one kind of
//! field, so the format's public types keep plain integers.

use std::fmt;

use serde::Deserialize as _;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};

/// Numbers below this are written back as JSON numbers, larger ones as hex strings: slots
/// and small values stay readable, addresses and sizes look like addresses and sizes.
const HEX_FROM: u64 = 0x1_0000;

/// Parses `123`, `0x7b`, `0X7B`, `0x7b_00` (underscores ignored).
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    let digits: String = digits.chars().filter(|c| *c != '_').collect();
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

/// A u64 written as a JSON number or a number string.
struct U64Visitor;

impl<'de> Visitor<'de> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative number, or a string holding a decimal or 0x-hex number")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format_args!("{v} is negative")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_u64(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Plain integers (`u32`, `u64`): a JSON number or a number string, range-checked.
pub(crate) mod num {
    use super::*;

    pub(crate) fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
    {
        let v = d.deserialize_any(U64Visitor)?;
        T::try_from(v).map_err(|_| {
            de::Error::custom(format_args!(
                "{v:#x} does not fit in {} bits",
                8 * std::mem::size_of::<T>()
            ))
        })
    }

    pub(crate) fn serialize<S, T>(v: &T, s: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        T: Copy + Into<u64>,
    {
        let v: u64 = (*v).into();
        if v < HEX_FROM {
            s.serialize_u64(v)
        } else {
            s.serialize_str(&format!("{v:#x}"))
        }
    }
}

/// A flag name table: `(bit value, KVM name, short name)`, as `uapi` spells them.
type FlagTable = [(u32, &'static str, &'static str)];

/// Resolves one list item: a short or KVM name (any case) or a number.
fn flag_bits(item: &str, table: &FlagTable) -> Option<u32> {
    table
        .iter()
        .find(|(_, kvm, short)| item.eq_ignore_ascii_case(kvm) || item.eq_ignore_ascii_case(short))
        .map(|(bit, _, _)| *bit)
        .or_else(|| parse_u64(item).and_then(|v| u32::try_from(v).ok()))
}

struct FlagsVisitor(&'static FlagTable);

impl FlagsVisitor {
    fn names(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(_, _, short)| *short).collect();
        names.join(", ")
    }

    fn item<E: de::Error>(&self, item: &str) -> Result<u32, E> {
        flag_bits(item, self.0).ok_or_else(|| {
            E::custom(format_args!(
                "unknown flag \"{item}\" (expected one of {}, a KVM name, or a number)",
                self.names()
            ))
        })
    }
}

impl<'de> Visitor<'de> for FlagsVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number or a list of flag names ({})", self.names())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u32, E> {
        u32::try_from(v).map_err(|_| E::custom(format_args!("{v:#x} does not fit in 32 bits")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u32, E> {
        Err(E::custom(format_args!("{v} is negative")))
    }

    /// A string is a comma-separated list: `"log-dirty,readonly"`, `"0x30"`.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u32, E> {
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .try_fold(0, |acc, item| Ok(acc | self.item(item)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u32, A::Error> {
        let mut bits = 0;
        while let Some(item) = seq.next_element::<FlagItem>()? {
            bits |= match item {
                FlagItem::Bits(b) => b,
                FlagItem::Name(n) => self.item(&n)?,
            };
        }
        Ok(bits)
    }
}

/// One element of a flag list.
#[derive(serde::Deserialize)]
#[serde(untagged, expecting = "a flag name or a number")]
enum FlagItem {
    Bits(u32),
    Name(String),
}

fn deserialize_flags<'de, D: Deserializer<'de>>(
    d: D,
    table: &'static FlagTable,
) -> Result<u32, D::Error> {
    d.deserialize_any(FlagsVisitor(table))
}

/// Writes the named bits by short name and any other bits as one hex item.
fn serialize_flags<S: Serializer>(bits: u32, table: &FlagTable, s: S) -> Result<S::Ok, S::Error> {
    let named: Vec<&str> = table
        .iter()
        .filter(|(bit, _, _)| bits & bit != 0)
        .map(|(_, _, short)| *short)
        .collect();
    let rest = table.iter().fold(bits, |rest, (bit, _, _)| rest & !bit);
    let mut seq = s.serialize_seq(None)?;
    for name in named {
        seq.serialize_element(name)?;
    }
    if rest != 0 {
        seq.serialize_element(&format!("{rest:#x}"))?;
    }
    seq.end()
}

/// Memslot flags: `["log-dirty", "readonly", "guest-memfd", "non-coherent-dma"]`, the
/// `KVM_MEM_*` names, or numbers.
pub(crate) mod memslot_flags {
    use super::*;
    use uapi::memslot::MEMSLOT_FLAG_NAMES;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        deserialize_flags(d, &MEMSLOT_FLAG_NAMES)
    }

    pub(crate) fn serialize<S: Serializer>(bits: &u32, s: S) -> Result<S::Ok, S::Error> {
        serialize_flags(*bits, &MEMSLOT_FLAG_NAMES, s)
    }
}

/// `KVM_CREATE_DEVICE` flags: `["test"]` (`KVM_CREATE_DEVICE_TEST`) or numbers.
pub(crate) mod create_flags {
    use super::*;
    use uapi::device::KVM_CREATE_DEVICE_TEST;

    const NAMES: [(u32, &str, &str); 1] =
        [(KVM_CREATE_DEVICE_TEST, "KVM_CREATE_DEVICE_TEST", "test")];

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        deserialize_flags(d, &NAMES)
    }

    pub(crate) fn serialize<S: Serializer>(bits: &u32, s: S) -> Result<S::Ok, S::Error> {
        serialize_flags(*bits, &NAMES, s)
    }
}

/// A number, or a name that `lookup` resolves; written back as a number.
fn deserialize_named<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    lookup: fn(&str) -> Option<u32>,
) -> Result<u32, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum NumberOrName {
        Number(u64),
        Name(String),
    }
    let v = match NumberOrName::deserialize(d)
        .map_err(|_| de::Error::custom(format_args!("expected a {what} number or name")))?
    {
        NumberOrName::Number(n) => n,
        NumberOrName::Name(s) => match parse_u64(&s) {
            Some(n) => n,
            None => u64::from(
                lookup(&s)
                    .ok_or_else(|| de::Error::custom(format_args!("unknown {what} \"{s}\"")))?,
            ),
        },
    };
    u32::try_from(v).map_err(|_| de::Error::custom(format_args!("{v:#x} does not fit in 32 bits")))
}

/// Capabilities: a number or a `KVM_CAP_*` name that `uapi::Cap` knows (prefix optional).
pub(crate) mod cap {
    use super::*;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        deserialize_named(d, "capability", |s| uapi::Cap::parse(s).map(uapi::Cap::raw))
    }

    pub(crate) fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*v)
    }
}

/// Device types: a number, `vfio`/`virtio`, or `KVM_DEV_TYPE_VFIO`/`KVM_DEV_TYPE_VIRTIO`.
pub(crate) mod device_type {
    use super::*;
    use uapi::device::{KVM_DEV_TYPE_VFIO, KVM_DEV_TYPE_VIRTIO};

    fn lookup(s: &str) -> Option<u32> {
        let s = s.to_ascii_uppercase();
        match s.strip_prefix("KVM_DEV_TYPE_").unwrap_or(&s) {
            "VFIO" => Some(KVM_DEV_TYPE_VFIO),
            "VIRTIO" => Some(KVM_DEV_TYPE_VIRTIO),
            _ => None,
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        deserialize_named(d, "device type", lookup)
    }

    pub(crate) fn serialize<S: Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(*v)
    }
}

/// `kvm_enable_cap.args`: a list of at most four numbers, missing ones zero.
pub(crate) mod cap_args {
    use super::*;

    struct ArgsVisitor;

    impl<'de> Visitor<'de> for ArgsVisitor {
        type Value = [u64; 4];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of at most 4 numbers")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u64; 4], A::Error> {
            let mut args = [0; 4];
            let mut n = 0;
            while let Some(Arg(v)) = seq.next_element()? {
                *args
                    .get_mut(n)
                    .ok_or_else(|| de::Error::invalid_length(n + 1, &self))? = v;
                n += 1;
            }
            Ok(args)
        }
    }

    struct Arg(u64);

    impl<'de> serde::Deserialize<'de> for Arg {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arg, D::Error> {
            d.deserialize_any(U64Visitor).map(Arg)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u64; 4], D::Error> {
        d.deserialize_seq(ArgsVisitor)
    }

    /// Trailing zero arguments are left out.
    pub(crate) fn serialize<S: Serializer>(args: &[u64; 4], s: S) -> Result<S::Ok, S::Error> {
        let used = args.iter().rposition(|a| *a != 0).map_or(0, |i| i + 1);
        let mut seq = s.serialize_seq(Some(used))?;
        for a in &args[..used] {
            seq.serialize_element(&HexOrNumber(*a))?;
        }
        seq.end()
    }

    struct HexOrNumber(u64);

    impl serde::Serialize for HexOrNumber {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            num::serialize(&self.0, s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Sample {
        #[serde(with = "num")]
        size: u64,
        #[serde(with = "num")]
        slot: u32,
        #[serde(with = "memslot_flags")]
        flags: u32,
        #[serde(with = "create_flags")]
        create: u32,
        #[serde(with = "cap")]
        cap: u32,
        #[serde(with = "device_type")]
        dev: u32,
        #[serde(with = "cap_args")]
        args: [u64; 4],
    }

    fn sample(v: serde_json::Value) -> Result<Sample, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn numbers_parse_in_every_spelling() {
        assert_eq!(parse_u64("0x20_0000"), Some(0x20_0000));
        assert_eq!(parse_u64("4096"), Some(4096));
        assert_eq!(parse_u64("0X1f"), Some(31));
        assert_eq!(parse_u64("0x"), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64("0x1_0000_0000_0000_0000"), None);
    }

    #[test]
    fn fields_accept_names_and_numbers_and_round_trip() {
        let s = sample(json!({
            "size": "0x200000", "slot": 3, "flags": ["log-dirty", "KVM_MEM_NON_COHERENT_DMA", 16],
            "create": ["test"], "cap": "DISABLE_QUIRKS2", "dev": "virtio", "args": ["0x200", 1]
        }))
        .unwrap();
        assert_eq!(
            s,
            Sample {
                size: 0x20_0000,
                slot: 3,
                flags: 0x19,
                create: 1,
                cap: 213,
                dev: 12,
                args: [0x200, 1, 0, 0]
            }
        );
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(
            back,
            json!({
                "size": "0x200000", "slot": 3, "flags": ["log-dirty", "non-coherent-dma", "0x10"],
                "create": ["test"], "cap": 213, "dev": 12, "args": [512, 1]
            })
        );
        assert_eq!(sample(back).unwrap(), s);
        let s = sample(json!({
            "size": 0, "slot": "0x10005", "flags": "readonly, 0x4", "create": 0,
            "cap": "KVM_CAP_NR_MEMSLOTS", "dev": "KVM_DEV_TYPE_VFIO", "args": []
        }))
        .unwrap();
        assert_eq!((s.slot, s.flags, s.cap, s.dev), (0x10005, 6, 10, 4));
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let base = json!({
            "size": 0, "slot": 0, "flags": [], "create": [], "cap": 10, "dev": 4, "args": []
        });
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            sample(b).unwrap_err()
        };
        assert!(with("slot", json!("0x1_0000_0000")).contains("does not fit in 32 bits"));
        assert!(with("size", json!(-1)).contains("negative"));
        assert!(with("size", json!("big")).contains("0x-hex number"));
        assert!(with("size", json!(1.5)).contains("0x-hex number"));
        assert!(with("flags", json!(["dma"])).contains("unknown flag \"dma\""));
        assert!(with("flags", json!({})).contains("list of flag names"));
        assert!(with("create", json!(["log-dirty"])).contains("unknown flag"));
        assert!(with("cap", json!("NO_SUCH")).contains("unknown capability \"NO_SUCH\""));
        assert!(with("dev", json!("gpu")).contains("unknown device type"));
        assert!(with("dev", json!(true)).contains("device type number or name"));
        assert!(with("args", json!([1, 2, 3, 4, 5])).contains("at most 4"));
    }
}
