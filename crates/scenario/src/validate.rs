//! From the file as written ([`crate::format`]) to a [`Scenario`]: every reference resolved,
//! every number parsed and range-checked, every key checked against the step kind that uses
//! it. Each refusal is a [`ScenarioError`] at the offending value's line.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::ops::Range as Span;

use kvm_model::{KernelProfile, Vendor};
use memtype::MemType;
use memtype::pat::{PAT_LINUX_DEFAULT, Pat};
use toml::Spanned;

use crate::error::ScenarioError;
use crate::expect::Expect;
use crate::format::{RawDevice, RawExpect, RawRegion, RawScenario, RawStep, RawVm};
use crate::location::Location;
use crate::number::Quantity;
use crate::scenario::{Device, Region, Scenario, VmSpec};
use crate::step::{Fence, GuestAccess, HostOp, Need, Op, Range, Step, StepKind};

/// Guest-physical addresses and sizes must be whole pages (memslot rule).
const PAGE: u64 = uapi::PAGE_SIZE;

impl Scenario {
    /// Parses and validates a scenario file; `origin` names it in errors (a path, or
    /// `builtin:NAME`).
    ///
    /// ```
    /// let err = scenario::Scenario::parse("name = \"x\"\nsumary = \"typo\"\n", "x.toml").unwrap_err();
    /// assert_eq!(err.line, 2);
    /// assert!(err.to_string().starts_with("x.toml:2:1: `sumary`: unknown field `sumary`"), "{err}");
    /// ```
    pub fn parse(source: &str, origin: &str) -> std::result::Result<Scenario, ScenarioError> {
        let ctx = Ctx { source, origin };
        let raw: RawScenario = toml::from_str(source).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            // A missing key's span is its table, whose first line may assign another key.
            let key = !e.message().starts_with("missing field");
            ctx.locate(span, e.message(), key)
        })?;
        ctx.scenario(raw)
    }
}

/// The file being validated, for locating errors.
struct Ctx<'a> {
    source: &'a str,
    origin: &'a str,
}

type Result<T> = std::result::Result<T, ScenarioError>;

impl Ctx<'_> {
    fn error(&self, span: Span<usize>, message: impl Display) -> ScenarioError {
        self.locate(span, message, true)
    }

    /// An error at `span`, naming its table and, if `key`, the key assigned on its line.
    fn locate(&self, span: Span<usize>, message: impl Display, key: bool) -> ScenarioError {
        let mut loc = Location::of(self.source, span.start);
        if !key {
            loc.key = None;
        }
        // One line, whatever the message: toml's may span several.
        let message = message.to_string().replace('\n', " ");
        let message = match loc.context() {
            Some(context) => format!("{context}: {message}"),
            None => message,
        };
        ScenarioError {
            origin: self.origin.to_string(),
            line: loc.line,
            column: loc.column,
            message,
        }
    }

    fn at<T>(&self, value: &Spanned<T>, message: impl Display) -> ScenarioError {
        self.error(value.span(), message)
    }

    fn line(&self, span: Span<usize>) -> usize {
        Location::of(self.source, span.start).line
    }

    fn scenario(&self, raw: RawScenario) -> Result<Scenario> {
        if raw.name.get_ref().trim().is_empty() {
            return Err(self.at(&raw.name, "the name is empty"));
        }
        let vm = self.vm(&raw.vm)?;
        let mut regions: Vec<Region> = Vec::with_capacity(raw.regions.len());
        for r in &raw.regions {
            let region = self.region(r, &regions)?;
            regions.push(region);
        }
        let mut devices: Vec<Device> = Vec::with_capacity(raw.devices.len());
        for d in &raw.devices {
            let device = self.device(d, &devices)?;
            devices.push(device);
        }
        let steps = raw
            .steps
            .iter()
            .map(|s| self.step(s, &regions, &devices))
            .collect::<Result<Vec<_>>>()?;
        let expects = raw
            .expects
            .iter()
            .map(|e| self.expect(e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Scenario {
            name: raw.name.into_inner(),
            summary: raw.summary,
            description: raw.description,
            vm,
            regions,
            devices,
            steps,
            expects,
        })
    }

    fn vm(&self, raw: &RawVm) -> Result<VmSpec> {
        let vendor: Vendor = raw
            .vendor
            .get_ref()
            .parse()
            .map_err(|e| self.at(&raw.vendor, e))?;
        let kernel = KernelProfile::parse(raw.kernel.get_ref(), vendor)
            .map_err(|e| self.at(&raw.kernel, e))?;
        let guest_pat = match &raw.guest_pat {
            None => Pat::new(PAT_LINUX_DEFAULT),
            Some(q) => {
                let value = q.get_ref().number().map_err(|e| self.at(q, e))?;
                Pat::new(value)
            }
        };
        let guest_pat = guest_pat.map_err(|e| {
            let span = raw.guest_pat.as_ref().map_or(0..0, Spanned::span);
            self.error(span, e)
        })?;
        let guest_mtrr = match &raw.guest_mtrr {
            None => MemType::Wb,
            Some(t) => {
                let mt: MemType = t.get_ref().parse().map_err(|e| self.at(t, e))?;
                if mt.mtrr_encoding().is_none() {
                    return Err(self.at(
                        t,
                        format!("{mt} is not an MTRR type (UC, WC, WT, WP or WB)"),
                    ));
                }
                mt
            }
        };
        Ok(VmSpec {
            kernel,
            guest_pat,
            guest_mtrr,
        })
    }

    fn bytes(&self, q: &Spanned<Quantity>) -> Result<u64> {
        q.get_ref().bytes().map_err(|e| self.at(q, e))
    }

    fn region(&self, raw: &Spanned<RawRegion>, earlier: &[Region]) -> Result<Region> {
        let r = raw.get_ref();
        let name = r.name.get_ref().clone();
        if name.is_empty() {
            return Err(self.at(&r.name, "the name is empty"));
        }
        if earlier.iter().any(|e| e.name == name) {
            return Err(self.at(&r.name, format!("a region named \"{name}\" already exists")));
        }
        let gpa = self.bytes(&r.gpa)?;
        let size = self.bytes(&r.size)?;
        if !gpa.is_multiple_of(PAGE) {
            return Err(self.at(&r.gpa, format!("{gpa:#x} is not page aligned (4 KiB)")));
        }
        if size == 0 || !size.is_multiple_of(PAGE) {
            return Err(self.at(
                &r.size,
                format!("{size:#x} is not a non-zero number of 4 KiB pages"),
            ));
        }
        if gpa.checked_add(size).is_none() {
            return Err(self.at(&r.size, "gpa + size overflows 64 bits"));
        }
        if let Some(other) = earlier.iter().find(|e| gpa < e.end() && e.gpa < gpa + size) {
            return Err(self.at(
                &r.gpa,
                format!(
                    "{gpa:#x}..{:#x} overlaps region \"{}\" ({:#x}..{:#x})",
                    gpa + size,
                    other.name,
                    other.gpa,
                    other.end()
                ),
            ));
        }
        let register = match &r.register {
            Some(list) if !r.noncoherent && !list.get_ref().is_empty() => {
                return Err(self.at(
                    list,
                    "only a noncoherent region is registered (set noncoherent = true)",
                ));
            }
            Some(list) => list.get_ref().clone(),
            None => Vec::new(),
        };
        Ok(Region {
            name,
            kind: r.kind,
            gpa,
            size,
            noncoherent: r.noncoherent,
            register,
        })
    }

    fn device(&self, raw: &Spanned<RawDevice>, earlier: &[Device]) -> Result<Device> {
        let d = raw.get_ref();
        let name = d.name.get_ref().clone();
        if name.is_empty() {
            return Err(self.at(&d.name, "the name is empty"));
        }
        if earlier.iter().any(|e| e.name == name) {
            return Err(self.at(&d.name, format!("a device named \"{name}\" already exists")));
        }
        Ok(Device {
            name,
            snoop: d.snoop,
        })
    }

    /// Refuses a key the kind does not take, or a missing one it needs.
    fn need<T>(
        &self,
        raw: &Spanned<RawStep>,
        key: &str,
        need: Need,
        value: Option<&Spanned<T>>,
    ) -> Result<()> {
        let kind = raw.get_ref().kind;
        match (need, value) {
            (Need::No, Some(v)) => Err(self.at(v, format!("{kind} does not take `{key}`"))),
            (Need::Required, None) => Err(self.at(raw, format!("{kind} needs `{key}`"))),
            _ => Ok(()),
        }
    }

    /// The position of the `what` (region, device) called `name` among `names`.
    fn find<'n>(
        &self,
        what: &str,
        name: &Spanned<String>,
        names: impl Iterator<Item = &'n String> + Clone,
    ) -> Result<usize> {
        names
            .clone()
            .position(|n| n == name.get_ref())
            .ok_or_else(|| {
                let known: Vec<&str> = names.map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                self.at(
                    name,
                    format!("no {what} named \"{}\" ({what}s: {known})", name.get_ref()),
                )
            })
    }

    fn step(&self, raw: &Spanned<RawStep>, regions: &[Region], devices: &[Device]) -> Result<Step> {
        let s = raw.get_ref();
        let keys = s.kind.keys();
        self.need(raw, "region", keys.region, s.region.as_ref())?;
        let offset_need = if keys.region == Need::No {
            Need::No
        } else {
            Need::Optional
        };
        self.need(raw, "offset", offset_need, s.offset.as_ref())?;
        self.need(raw, "device", keys.device, s.device.as_ref())?;
        self.need(raw, "value", keys.value, s.value.as_ref())?;
        self.need(raw, "len", keys.len, s.len.as_ref())?;
        self.need(raw, "pat_index", keys.pat_index, s.pat_index.as_ref())?;
        self.need(raw, "flush", keys.flush, s.flush.as_ref())?;

        let region = s
            .region
            .as_ref()
            .map(|name| self.find("region", name, regions.iter().map(|r| &r.name)))
            .transpose()?;
        let device = s
            .device
            .as_ref()
            .map(|name| self.find("device", name, devices.iter().map(|d| &d.name)))
            .transpose()?;

        let offset = match &s.offset {
            Some(q) => self.bytes(q)?,
            None => 0,
        };
        let len = match (&s.len, keys.region, keys.len) {
            (Some(q), _, _) => self.bytes(q)?,
            (None, Need::No, _) => 0,
            // A line flush names one byte: the line holding it.
            (None, _, Need::No) => 1,
            (None, _, _) => 8,
        };
        if let Some(q) = &s.len {
            if len == 0 {
                return Err(self.at(q, "len is 0"));
            }
            if let Some(max) = keys.max_len.filter(|max| len > *max) {
                return Err(self.at(
                    q,
                    format!("{} accesses at most {max} bytes, not {len}", s.kind),
                ));
            }
        }
        if let Some(r) = region.map(|i| &regions[i])
            && offset.checked_add(len).is_none_or(|end| end > r.size)
        {
            let span = s
                .offset
                .as_ref()
                .or(s.len.as_ref())
                .map_or_else(|| raw.span(), Spanned::span);
            return Err(self.error(
                span,
                format!(
                    "bytes {offset:#x}..{:#x} lie outside region \"{}\" (size {:#x})",
                    offset.saturating_add(len),
                    r.name,
                    r.size
                ),
            ));
        }
        let value = match &s.value {
            Some(q) => {
                let v = q.get_ref().number().map_err(|e| self.at(q, e))?;
                if keys.max_len.is_some() && len < 8 && v >> (8 * len) != 0 {
                    return Err(self.at(q, format!("{v:#x} does not fit in len = {len} bytes")));
                }
                v
            }
            None => 0,
        };
        let pat_index = match &s.pat_index {
            Some(i) => u8::try_from(*i.get_ref())
                .ok()
                .filter(|i| *i < 8)
                .ok_or_else(|| {
                    self.at(
                        i,
                        format!("{} is not a PAT entry index (0..=7)", i.get_ref()),
                    )
                })?,
            None => 0,
        };
        let flush = s.flush.as_ref().is_some_and(|f| *f.get_ref());
        let needs = |key: &str| self.at(raw, format!("{} needs `{key}`", s.kind));
        let range = || {
            region
                .map(|region| Range {
                    region,
                    offset,
                    len,
                })
                .ok_or_else(|| needs("region"))
        };
        let guest = |access| -> Result<Op> {
            Ok(Op::Guest {
                access,
                range: range()?,
                pat_index,
                value,
            })
        };
        let dma = |write| -> Result<Op> {
            Ok(Op::Dma {
                device: device.ok_or_else(|| needs("device"))?,
                write,
                range: range()?,
                value,
            })
        };
        let host = |op| -> Result<Op> {
            Ok(Op::Host {
                op,
                range: range()?,
                value,
                flush,
            })
        };
        let op = match s.kind {
            StepKind::GuestStore => guest(GuestAccess::Store)?,
            StepKind::GuestNtStore => guest(GuestAccess::NtStore)?,
            StepKind::GuestLoad => guest(GuestAccess::Load)?,
            StepKind::GuestFill => guest(GuestAccess::Fill)?,
            StepKind::GuestClflush => Op::GuestFlush {
                opt: false,
                range: range()?,
            },
            StepKind::GuestClflushopt => Op::GuestFlush {
                opt: true,
                range: range()?,
            },
            StepKind::GuestSfence => Op::GuestFence(Fence::Sfence),
            StepKind::GuestMfence => Op::GuestFence(Fence::Mfence),
            StepKind::GuestWbinvd => Op::GuestFence(Fence::Wbinvd),
            StepKind::DmaRead => dma(false)?,
            StepKind::DmaWrite => dma(true)?,
            StepKind::HostZero => host(HostOp::Zero)?,
            StepKind::HostFlush => host(HostOp::Flush)?,
            StepKind::HostRead => host(HostOp::Read)?,
            StepKind::HostWrite => host(HostOp::Write)?,
            StepKind::HostGive => host(HostOp::Give)?,
            StepKind::HostTake => host(HostOp::Take)?,
        };
        Ok(Step {
            kind: s.kind,
            line: self.line(raw.span()),
            op,
        })
    }

    fn expect(&self, raw: &Spanned<RawExpect>) -> Result<Expect> {
        let e = raw.get_ref();
        let wildcard = |s: &Spanned<String>| s.get_ref() == "*";
        let profiles = if e.profiles.iter().any(wildcard) {
            None
        } else {
            let mut list = Vec::with_capacity(e.profiles.len());
            for p in &e.profiles {
                let profile = KernelProfile::parse(p.get_ref(), Vendor::Intel)
                    .map_err(|err| self.at(p, err))?;
                list.push(profile.name());
            }
            if list.is_empty() {
                return Err(self.at(raw, "`profiles` is empty (use [\"*\"] for every profile)"));
            }
            Some(list)
        };
        let vendor = if wildcard(&e.vendor) {
            None
        } else {
            Some(
                e.vendor
                    .get_ref()
                    .parse::<Vendor>()
                    .map_err(|err| self.at(&e.vendor, format!("{err} or \"*\"")))?,
            )
        };
        Ok(Expect {
            line: self.line(raw.span()),
            profiles,
            vendor,
            verdicts: e.verdicts.iter().copied().collect::<BTreeSet<_>>(),
        })
    }
}
