//! What a replay produced: each call's answer (value or errno), checked against the entry's
//! expectation, rendered as text lines or as JSON.

use std::fmt;

use serde_json::{Value, json};
use uapi::Errno;
use uapi::memslot::MemslotFlags;

use super::call::{Call, HostAddr};
use super::format::{Entry, Expect};

/// A successful call's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The ioctl returned 0 and nothing else (also `KVM_CREATE_DEVICE_TEST`).
    Done,
    /// `KVM_CHECK_EXTENSION`'s value.
    Value(i64),
    /// `KVM_GET_DEVICE_ATTR`'s value.
    Attr(u64),
    /// `KVM_CREATE_DEVICE` made a device.
    Device,
    /// `KVM_GET_DIRTY_LOG`'s bitmap words.
    DirtyLog(Vec<u64>),
}

impl Answer {
    /// Whether this answer is the value `v` an entry expects.
    fn is_value(&self, v: u64) -> bool {
        match self {
            Answer::Value(x) => u64::try_from(*x) == Ok(v),
            Answer::Attr(x) => *x == v,
            Answer::DirtyLog(words) => dirty_pages(words) == v,
            Answer::Done | Answer::Device => false,
        }
    }
}

fn dirty_pages(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

/// One entry and what the backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The entry's position in the file (0-based).
    pub index: usize,
    /// The entry.
    pub entry: Entry,
    /// The answer, or the errno.
    pub result: Result<Answer, Errno>,
}

impl Step {
    /// Records an answer.
    pub fn new(index: usize, entry: Entry, result: Result<Answer, Errno>) -> Step {
        Step {
            index,
            entry,
            result,
        }
    }

    /// Whether the answer is what the entry expected; `None` when it expected nothing.
    pub fn as_expected(&self) -> Option<bool> {
        self.entry
            .expect
            .map(|expect| match (expect, &self.result) {
                (Expect::Ok, r) => r.is_ok(),
                (Expect::Errno(e), r) => *r == Err(e),
                (Expect::Value(v), Ok(a)) => a.is_value(v),
                (Expect::Value(_), Err(_)) => false,
            })
    }

    /// The answer as printed: `ok`, a value, or the errno name.
    pub fn result_text(&self) -> String {
        match &self.result {
            Ok(answer) => answer_text(&self.entry.call, answer),
            Err(e) => e.to_string(),
        }
    }

    /// The step as one JSON object: the entry's fields, `index`, `result` and `as_expected`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.entry).unwrap_or(Value::Null);
        let result = match &self.result {
            Ok(Answer::Done | Answer::Device) => json!("ok"),
            Ok(Answer::Value(x)) => json!(x),
            Ok(Answer::Attr(x)) => json!(x),
            Ok(Answer::DirtyLog(words)) => json!(dirty_pages(words)),
            Err(e) => json!(e.to_string()),
        };
        if let Value::Object(map) = &mut v {
            map.insert("index".into(), json!(self.index));
            map.insert("result".into(), result);
            if let Ok(Answer::DirtyLog(words)) = &self.result {
                map.insert("bitmap".into(), json!(words));
            }
            if let Some(ok) = self.as_expected() {
                map.insert("as_expected".into(), json!(ok));
            }
        }
        v
    }
}

impl fmt::Display for Step {
    /// `#3 set_user_memory_region slot=0 ... -> EINVAL  (expected ok: MISMATCH)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} -> {}",
            self.index,
            CallText(&self.entry.call),
            self.result_text()
        )?;
        match (self.entry.expect, self.as_expected()) {
            (Some(e), Some(true)) => write!(f, "  (expected {e}: as expected)"),
            (Some(e), Some(false)) => write!(f, "  (expected {e}: MISMATCH)"),
            _ => Ok(()),
        }
    }
}

fn answer_text(call: &Call, answer: &Answer) -> String {
    match answer {
        Answer::Done => "ok".to_string(),
        Answer::Value(v) if *v > 9 => format!("{v} ({v:#x})"),
        Answer::Value(v) => v.to_string(),
        Answer::Attr(v) => format!("{v:#x}"),
        Answer::Device => match call {
            Call::CreateDevice(c) => match &c.name {
                Some(name) => format!("ok (device \"{name}\")"),
                None => "ok (unnamed device)".to_string(),
            },
            _ => "ok".to_string(),
        },
        Answer::DirtyLog(words) => format!(
            "{} dirty page(s) ({} bitmap word(s))",
            dirty_pages(words),
            words.len()
        ),
    }
}

/// A call's name and arguments on one line.
struct CallText<'a>(&'a Call);

impl fmt::Display for CallText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = self.0;
        write!(f, "{}", call.name())?;
        match call {
            Call::CheckExtension(c) => write!(f, " {}", uapi::Cap::from_raw(c.cap)),
            Call::SetUserMemoryRegion(r) | Call::SetUserMemoryRegion2(r) => {
                let slot = uapi::SlotId::from_raw(r.slot);
                write!(
                    f,
                    " slot={}:{} flags={} gpa={:#x} size={:#x}",
                    slot.as_id,
                    slot.id,
                    MemslotFlags(r.flags),
                    r.guest_phys_addr,
                    r.memory_size
                )?;
                match r.host {
                    HostAddr::PoolOffset(o) => write!(f, " host=pool+{o:#x}")?,
                    HostAddr::Raw(a) => write!(f, " host={a:#x}")?,
                }
                if r.guest_memfd != 0 || r.guest_memfd_offset != 0 {
                    write!(
                        f,
                        " guest_memfd={} offset={:#x}",
                        r.guest_memfd, r.guest_memfd_offset
                    )?;
                }
                Ok(())
            }
            Call::CreateDevice(c) => {
                write!(f, " {}", uapi::DeviceType::from_raw(c.dev_type))?;
                if c.flags != 0 {
                    write!(f, " flags={:#x}", c.flags)?;
                }
                match &c.name {
                    Some(name) => write!(f, " as \"{name}\""),
                    None => Ok(()),
                }
            }
            Call::SetDeviceAttr(a) | Call::HasDeviceAttr(a) | Call::GetDeviceAttr(a) => {
                write!(f, " \"{}\" group={} attr={}", a.device, a.group, a.attr)?;
                if a.flags != 0 {
                    write!(f, " flags={:#x}", a.flags)?;
                }
                if a.addr != 0 {
                    write!(f, " addr={:#x}", a.addr)?;
                }
                Ok(())
            }
            Call::CloseDevice(c) => write!(f, " \"{}\"", c.device),
            Call::EnableCap(c) => {
                write!(f, " {}", uapi::Cap::from_raw(c.cap))?;
                if c.flags != 0 {
                    write!(f, " flags={:#x}", c.flags)?;
                }
                let used = c.args.iter().rposition(|a| *a != 0).map_or(0, |i| i + 1);
                let args: Vec<String> = c.args[..used].iter().map(|a| format!("{a:#x}")).collect();
                write!(f, " args=[{}]", args.join(", "))
            }
            Call::GetDirtyLog(d) => {
                let slot = uapi::SlotId::from_raw(d.slot);
                write!(f, " slot={}:{}", slot.as_id, slot.id)
            }
        }
    }
}

/// Everything a replay produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The backend's one-line description.
    pub backend: String,
    /// One step per entry, in order.
    pub steps: Vec<Step>,
    /// The VM's noncoherent DMA count after the last call, where the backend shows it.
    pub noncoherent_dma_count: Option<u32>,
}

impl Report {
    /// The steps whose answer differs from their expectation.
    pub fn mismatches(&self) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(|s| s.as_expected() == Some(false))
    }

    /// The steps that said what they expected.
    pub fn checked(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.entry.expect.is_some())
            .count()
    }

    /// The whole report as one JSON document.
    pub fn to_json(&self) -> Value {
        json!({
            "backend": self.backend,
            "steps": self.steps.iter().map(Step::to_json).collect::<Vec<_>>(),
            "checked": self.checked(),
            "mismatches": self.mismatches().count(),
            "noncoherent_dma_count": self.noncoherent_dma_count,
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "backend: {}", self.backend)?;
        for step in &self.steps {
            writeln!(f, "{step}")?;
        }
        if let Some(n) = self.noncoherent_dma_count {
            writeln!(f, "noncoherent DMA count: {n}")?;
        }
        let mismatches = self.mismatches().count();
        writeln!(
            f,
            "{} call(s), {} with expectations, {} mismatch(es)",
            self.steps.len(),
            self.checked(),
            mismatches
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::GetDirtyLog;

    fn step(expect: Option<Expect>, result: Result<Answer, Errno>) -> Step {
        let mut entry = Entry::new(Call::GetDirtyLog(GetDirtyLog { slot: 0x1_0002 }));
        entry.expect = expect;
        Step::new(7, entry, result)
    }

    #[test]
    fn expectations_match_results() {
        let dirty = || Ok(Answer::DirtyLog(vec![0b101, 1 << 63]));
        assert_eq!(step(None, dirty()).as_expected(), None);
        assert_eq!(step(Some(Expect::Ok), dirty()).as_expected(), Some(true));
        assert_eq!(
            step(Some(Expect::Value(3)), dirty()).as_expected(),
            Some(true)
        );
        assert_eq!(
            step(Some(Expect::Value(2)), dirty()).as_expected(),
            Some(false)
        );
        let enoent = || Err(Errno::ENOENT);
        assert_eq!(step(Some(Expect::Ok), enoent()).as_expected(), Some(false));
        assert_eq!(
            step(Some(Expect::Value(0)), enoent()).as_expected(),
            Some(false)
        );
        assert_eq!(
            step(Some(Expect::Errno(Errno::ENOENT)), enoent()).as_expected(),
            Some(true)
        );
        assert_eq!(
            step(Some(Expect::Errno(Errno::EINVAL)), enoent()).as_expected(),
            Some(false)
        );
    }

    #[test]
    fn steps_print_as_a_line_and_as_json() {
        let s = step(
            Some(Expect::Value(2)),
            Ok(Answer::DirtyLog(vec![0b101, 1 << 63])),
        );
        assert_eq!(
            s.to_string(),
            "#7 get_dirty_log slot=1:2 -> 3 dirty page(s) (2 bitmap word(s))  (expected 2: MISMATCH)"
        );
        assert_eq!(
            s.to_json(),
            json!({"call": "get_dirty_log", "slot": "0x10002", "expect": 2, "index": 7,
                   "result": 3, "bitmap": [5, 1u64 << 63], "as_expected": false})
        );
        let e = step(None, Err(Errno::EINVAL));
        assert_eq!(e.to_string(), "#7 get_dirty_log slot=1:2 -> EINVAL");
        assert_eq!(e.to_json()["result"], "EINVAL");
    }
}
