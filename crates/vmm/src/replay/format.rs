//! The replay file: a JSON list of uAPI calls, each an object naming its `call`, its
//! arguments, and optionally the result it `expect`s. `docs/replay.md` is the user's
//! description; this module is the definition.
//!
//! ```text
//! [ { "call": "set_user_memory_region", "slot": 0, "flags": ["log-dirty"],
//!     "guest_phys_addr": "0x100000", "memory_size": "0x200000",
//!     "userspace_offset": "0x0", "expect": "ok" },
//!   { "call": "create_device", "type": "virtio", "as": "gpu0", "expect": "ENODEV" } ]
//! ```
//!
//! Parsing is strict and never panics: an unknown call or field, a value of the wrong type,
//! a host range past the pool or a device name never created is a [`FormatError`] naming
//! the entry (0-based) and the field. Any entry may carry a `"note"` for the reader.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uapi::Errno;

use super::call::{Call, CreateDevice, V2_ONLY_FIELDS};
use super::value::{num, parse_u64};

/// What an entry expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `"ok"`: success, whatever the value.
    Ok,
    /// `"EINVAL"` (any errno name): failure with that errno.
    Errno(Errno),
    /// A number: success with that value (the capability's value for `check_extension`,
    /// the attribute for `get_device_attr`, the number of dirty pages for `get_dirty_log`).
    Value(u64),
}

impl Serialize for Expect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expect::Ok => s.serialize_str("ok"),
            Expect::Errno(e) => s.serialize_str(&e.to_string()),
            Expect::Value(v) => num::serialize(v, s),
        }
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Expect, D::Error> {
        use serde::de::Error;
        let bad = || {
            D::Error::custom(
                "expected \"ok\", an errno name such as \"EINVAL\", or a value (a number or a \
                 number string)",
            )
        };
        match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64().map(Expect::Value).ok_or_else(bad),
            Value::String(s) if s.eq_ignore_ascii_case("ok") => Ok(Expect::Ok),
            Value::String(s) => parse_u64(&s)
                .map(Expect::Value)
                .or_else(|| Errno::parse(&s).map(Expect::Errno))
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Ok => f.write_str("ok"),
            Expect::Errno(e) => write!(f, "{e}"),
            Expect::Value(v) => write!(f, "{v}"),
        }
    }
}

/// One entry of a replay file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The call and its arguments.
    #[serde(flatten)]
    pub call: Call,
    /// The result the entry expects, if it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// A comment for the reader of the file; the replay ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Entry {
    /// An entry without an expectation.
    pub fn new(call: Call) -> Entry {
        Entry {
            call,
            expect: None,
            note: None,
        }
    }

    /// The same entry expecting `expect`.
    pub fn expect(self, expect: Expect) -> Entry {
        Entry {
            expect: Some(expect),
            ..self
        }
    }
}

/// A replay file that cannot be used, with the entry (0-based) and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The text is not JSON, or not a list.
    #[error("not a JSON list of calls: {0}")]
    Json(#[source] serde_json::Error),
    /// An entry is not a JSON object.
    #[error("entry {index}: not an object (each entry is {{\"call\": NAME, ...}})")]
    NotAnObject {
        /// The entry.
        index: usize,
    },
    /// An entry has no `"call"` string.
    #[error("entry {index}: field `call`: missing, or not a string")]
    MissingCall {
        /// The entry.
        index: usize,
    },
    /// `"call"` names no call this format knows.
    #[error("entry {index}: field `call`: unknown call \"{name}\" (expected one of {})", Call::NAMES.join(", "))]
    UnknownCall {
        /// The entry.
        index: usize,
        /// What the file said.
        name: String,
    },
    /// A field is missing, unknown, or has a bad value.
    #[error("entry {index} ({call}): {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Field {
        /// The entry.
        index: usize,
        /// The call it makes.
        call: &'static str,
        /// The field at fault, when one field is.
        field: Option<String>,
        /// What is wrong with it (serde's words).
        message: String,
    },
    /// A device name used before any `create_device` gave it.
    #[error(
        "entry {index} ({call}): field `device`: no earlier create_device is named \"{name}\" (give one \"as\": \"{name}\")"
    )]
    UnknownDevice {
        /// The entry.
        index: usize,
        /// The call it makes.
        call: &'static str,
        /// The name.
        name: String,
    },
}

/// A field-level failure, before it learns its entry.
struct FieldError {
    field: Option<String>,
    message: String,
}

impl From<serde_path_to_error::Error<serde_json::Error>> for FieldError {
    fn from(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
        let path = e.path().to_string();
        // A whole-entry rule ("give exactly one of ...") and a field serde already names in
        // its message ("missing field `slot`") come without a useful path.
        let field = (path != "." && !path.is_empty()).then_some(path);
        FieldError {
            field,
            message: e.into_inner().to_string(),
        }
    }
}

/// Builds the call named `name` from its fields (everything but `call` and `expect`);
/// `None` if no call has that name.
fn call_from_fields(name: &str, fields: Value) -> Option<Result<Call, FieldError>> {
    fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, FieldError> {
        serde_path_to_error::deserialize(v).map_err(FieldError::from)
    }
    Some(match name {
        "check_extension" => de(fields).map(Call::CheckExtension),
        "set_user_memory_region" => de(fields).map(Call::SetUserMemoryRegion),
        "set_user_memory_region2" => de(fields).map(Call::SetUserMemoryRegion2),
        "create_device" => de(fields).map(Call::CreateDevice),
        "set_device_attr" => de(fields).map(Call::SetDeviceAttr),
        "has_device_attr" => de(fields).map(Call::HasDeviceAttr),
        "get_device_attr" => de(fields).map(Call::GetDeviceAttr),
        "close_device" => de(fields).map(Call::CloseDevice),
        "enable_cap" => de(fields).map(Call::EnableCap),
        "get_dirty_log" => de(fields).map(Call::GetDirtyLog),
        _ => return None,
    })
}

/// Parses a replay file.
pub fn parse(text: &str) -> Result<Vec<Entry>, FormatError> {
    let items: Vec<Value> = serde_json::from_str(text).map_err(FormatError::Json)?;
    let mut created = HashSet::new();
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let entry = parse_entry(index, item)?;
            if let Call::CreateDevice(CreateDevice {
                name: Some(name), ..
            }) = &entry.call
            {
                created.insert(name.clone());
            }
            match entry.call.device() {
                Some(name) if !created.contains(name) => Err(FormatError::UnknownDevice {
                    index,
                    call: entry.call.name(),
                    name: name.to_string(),
                }),
                _ => Ok(entry),
            }
        })
        .collect()
}

fn parse_entry(index: usize, item: Value) -> Result<Entry, FormatError> {
    let Value::Object(mut fields) = item else {
        return Err(FormatError::NotAnObject { index });
    };
    let Some(Value::String(name)) = fields.remove("call") else {
        return Err(FormatError::MissingCall { index });
    };
    let Some(call) = Call::NAMES.into_iter().find(|n| *n == name) else {
        return Err(FormatError::UnknownCall { index, name });
    };
    let field_error = |field: &str, message: String| FormatError::Field {
        index,
        call,
        field: Some(field.to_string()),
        message,
    };
    let expect = fields
        .remove("expect")
        .map(|v| {
            serde_json::from_value::<Expect>(v).map_err(|e| field_error("expect", e.to_string()))
        })
        .transpose()?;
    let note = match fields.remove("note") {
        None => None,
        Some(Value::String(note)) => Some(note),
        Some(_) => return Err(field_error("note", "expected a string".to_string())),
    };
    // The version-1 struct has no guest_memfd fields; naming one is a mistake in the file.
    let v2_only = V2_ONLY_FIELDS.into_iter().find(|f| fields.contains_key(*f));
    if let (true, Some(f)) = (call == "set_user_memory_region", v2_only) {
        return Err(field_error(
            f,
            "only set_user_memory_region2 has this field".to_string(),
        ));
    }
    let call = call_from_fields(call, Value::Object(fields))
        .ok_or_else(|| FormatError::UnknownCall {
            index,
            name: call.to_string(),
        })?
        .map_err(|FieldError { field, message }| FormatError::Field {
            index,
            call,
            field,
            message,
        })?;
    Ok(Entry { call, expect, note })
}

/// Writes entries as a replay file that [`parse`] reads back unchanged: one entry per line.
pub fn to_json(entries: &[Entry]) -> Result<String, serde_json::Error> {
    let lines = entries
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("[\n  {}\n]\n", lines.join(",\n  ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::{HostAddr, Region};

    /// One entry of every call, written the way a person would.
    const EVERY_CALL: &str = r#"[
      {"call": "check_extension", "cap": "KVM_CAP_USER_CONFIGURE_NONCOHERENT_DMA", "expect": 0},
      {"call": "set_user_memory_region", "slot": 0, "flags": ["log-dirty"],
       "guest_phys_addr": "0x100000", "memory_size": "0x200000", "userspace_offset": "0x0"},
      {"call": "set_user_memory_region2", "slot": "0x10001", "flags": 8,
       "guest_phys_addr": "0x400000", "memory_size": 4096, "userspace_addr": "0x1001",
       "guest_memfd": 3, "guest_memfd_offset": "0x1000", "expect": "EINVAL"},
      {"call": "create_device", "type": "virtio", "as": "gpu0", "expect": "enodev"},
      {"call": "create_device", "type": 4, "flags": ["test"]},
      {"call": "set_device_attr", "device": "gpu0", "group": 1, "attr": 1},
      {"call": "has_device_attr", "device": "gpu0", "group": 1, "attr": 1, "flags": 2},
      {"call": "get_device_attr", "device": "gpu0", "group": 1, "attr": 1, "addr": "0x10"},
      {"call": "close_device", "device": "gpu0", "expect": "ok", "note": "unregisters"},
      {"call": "enable_cap", "cap": "DISABLE_QUIRKS2", "args": ["0x200"], "expect": "0x0"},
      {"call": "get_dirty_log", "slot": 0, "expect": "0"}
    ]"#;

    #[test]
    fn every_call_parses_and_round_trips() {
        let entries = parse(EVERY_CALL).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.call.name()).collect();
        for name in Call::NAMES {
            assert!(names.contains(&name), "{name} missing from the sample");
        }
        assert_eq!(
            entries[1].call,
            Call::SetUserMemoryRegion(Region {
                slot: 0,
                flags: 1,
                guest_phys_addr: 0x10_0000,
                memory_size: 0x20_0000,
                host: HostAddr::PoolOffset(0),
                guest_memfd: 0,
                guest_memfd_offset: 0,
            })
        );
        assert_eq!(entries[2].expect, Some(Expect::Errno(Errno::EINVAL)));
        assert_eq!(entries[3].expect, Some(Expect::Errno(Errno::ENODEV)));
        assert_eq!(entries[9].expect, Some(Expect::Value(0)));
        let written = to_json(&entries).unwrap();
        assert_eq!(parse(&written).unwrap(), entries, "{written}");
        // Serde's tag and our name table agree for every call.
        for (entry, line) in entries.iter().zip(written.lines().skip(1)) {
            assert!(
                line.contains(&format!("\"call\":\"{}\"", entry.call.name())),
                "{line}"
            );
        }
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn malformed_files_name_the_entry_and_the_field() {
        let ok_region = r#"{"call": "set_user_memory_region", "slot": 0, "guest_phys_addr": 0, "memory_size": 4096, "userspace_offset": 0}"#;
        let cases: [(String, &str); 14] = [
            ("{}".into(), "not a JSON list of calls"),
            ("[1,".into(), "not a JSON list of calls"),
            ("[3]".into(), "entry 0: not an object"),
            (r#"[{"slot": 0}]"#.into(), "entry 0: field `call`: missing"),
            (
                r#"[{"call": "set_memory_region"}]"#.into(),
                "entry 0: field `call`: unknown call \"set_memory_region\"",
            ),
            (
                format!(r#"[{ok_region}, {{"call": "get_dirty_log"}}]"#),
                "entry 1 (get_dirty_log): missing field `slot`",
            ),
            (
                r#"[{"call": "get_dirty_log", "slot": 0, "slott": 1}]"#.into(),
                "entry 0 (get_dirty_log): field `slott`: unknown field `slott`, expected `slot`",
            ),
            (
                r#"[{"call": "get_dirty_log", "slot": "zero"}]"#.into(),
                "entry 0 (get_dirty_log): field `slot`: invalid value: string \"zero\"",
            ),
            (
                r#"[{"call": "check_extension", "cap": 10, "expect": "maybe"}]"#.into(),
                "entry 0 (check_extension): field `expect`: expected \"ok\", an errno name",
            ),
            (
                r#"[{"call": "set_user_memory_region", "slot": 0, "flags": ["dma"], "guest_phys_addr": 0, "memory_size": 0, "userspace_offset": 0}]"#.into(),
                "entry 0 (set_user_memory_region): field `flags`: unknown flag \"dma\"",
            ),
            (
                r#"[{"call": "set_user_memory_region", "slot": 0, "guest_phys_addr": 0, "memory_size": 4096}]"#.into(),
                "entry 0 (set_user_memory_region): give exactly one of `userspace_offset` and `userspace_addr`",
            ),
            (
                r#"[{"call": "set_user_memory_region2", "slot": 0, "guest_phys_addr": 0, "memory_size": "0x40000000", "userspace_offset": "0x1000"}]"#.into(),
                "entry 0 (set_user_memory_region2): `userspace_offset` 0x1000 + `memory_size` 0x40000000 is past the end of the 0x40000000-byte pool",
            ),
            (
                r#"[{"call": "set_user_memory_region", "slot": 0, "guest_phys_addr": 0, "memory_size": 0, "userspace_offset": 0, "guest_memfd": 1}]"#.into(),
                "entry 0 (set_user_memory_region): field `guest_memfd`: only set_user_memory_region2 has this field",
            ),
            (
                r#"[{"call": "create_device", "type": 12, "as": "gpu0"}, {"call": "close_device", "device": "gpu1"}]"#.into(),
                "entry 1 (close_device): field `device`: no earlier create_device is named \"gpu1\"",
            ),
        ];
        for (text, want) in cases {
            let got = error(&text);
            assert!(
                got.starts_with(want),
                "{text}\n  got:  {got}\n  want: {want}"
            );
        }
    }

    #[test]
    fn a_device_must_be_named_before_it_is_used() {
        let use_then_create = r#"[{"call": "close_device", "device": "gpu0"},
                                  {"call": "create_device", "type": 12, "as": "gpu0"}]"#;
        assert!(matches!(
            parse(use_then_create),
            Err(FormatError::UnknownDevice { index: 0, .. })
        ));
    }
}
