//! What one run of a scenario on one kernel found: how each noncoherent region was
//! registered, the memory type of each region's key access and why, the hazards with their
//! evidence, the cost estimate, and how that compares with the expectation. Serializes to the
//! JSON of `ncdma run --json`.

use std::collections::BTreeSet;

use kvm_model::KernelProfile;
use memtype::MemType;
use serde::{Serialize, Serializer};

use crate::cost::Cost;
use crate::expect::Expectation;
use crate::hazard::Hazard;
use crate::register::Registration;
use crate::step::StepKind;

/// One scenario on one kernel profile and vendor.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The profile's name (`6.16+memslot-flag`).
    pub kernel: &'static str,
    /// `intel` or `amd`.
    pub vendor: &'static str,
    /// The whole profile.
    #[serde(skip)]
    pub profile: KernelProfile,
    /// One per noncoherent region.
    pub registrations: Vec<Registration>,
    /// The key access of every region the guest accesses, in region order.
    pub accesses: Vec<KeyAccess>,
    /// One per hazard found, with the first occurrence's evidence.
    pub verdicts: Vec<Finding>,
    /// The estimated cost of the guest's accesses.
    pub cost: Cost,
    /// The expectation that covers this run, if any.
    pub expectation: Option<Expectation>,
    /// What every read step returned, in step order (`ncdma run --backend kvm` compares them
    /// with the real run's; the model's own JSON leaves them out).
    #[serde(skip)]
    pub reads: Vec<Read>,
}

impl RunReport {
    /// The hazards found.
    pub fn hazards(&self) -> BTreeSet<Hazard> {
        self.verdicts.iter().map(|f| f.hazard).collect()
    }

    /// Whether an expectation covers the run and does not hold.
    pub fn expectation_failed(&self) -> bool {
        self.expectation.as_ref().is_some_and(|e| !e.holds)
    }

    /// The key access to the region named `region`, if the guest accessed it.
    pub fn access(&self, region: &str) -> Option<&KeyAccess> {
        self.accesses.iter().find(|a| a.region == region)
    }
}

/// A region's key access: the guest's first load or store to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyAccess {
    /// The region.
    pub region: String,
    /// The step (1-based).
    pub step: usize,
    /// Its kind.
    pub op: StepKind,
    /// Offset in the region.
    pub offset: u64,
    /// The guest PAT entry used.
    pub pat_index: u8,
    /// The type that PAT entry holds.
    #[serde(serialize_with = "memtype_name")]
    pub guest_pat: MemType,
    /// The type the access is performed with.
    #[serde(serialize_with = "memtype_name")]
    pub effective: MemType,
    /// Whether the guest's PAT took part (`Access::honors_guest_pat`).
    pub honors_guest_pat: bool,
    /// The EPT leaf's type (Intel with EPT only).
    #[serde(serialize_with = "opt_memtype_name")]
    pub ept_memtype: Option<MemType>,
    /// The EPT leaf's IPAT bit (Intel with EPT only).
    pub ipat: Option<bool>,
    /// The decision path: `make_spte → get_mt_mask branch; hardware rule → type`.
    pub reason: String,
}

impl KeyAccess {
    /// `WC (guest PAT honored)` / `WB (guest PAT ignored)`.
    pub fn summary(&self) -> String {
        let how = if self.honors_guest_pat {
            "honored"
        } else {
            "ignored"
        };
        format!("{} (guest PAT {how})", self.effective)
    }
}

/// What one read step returned: a guest load, a device's DMA read, or the host's read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Read {
    /// The step (1-based).
    pub step: usize,
    /// Its kind.
    pub op: StepKind,
    /// Who read: `vcpu0`, `host`, or the device's name.
    pub who: String,
    /// The region read.
    pub region: String,
    /// Offset in the region.
    pub offset: u64,
    /// The bytes returned, in address order (`[f0 f0] x2048` in JSON: see [`bytes_summary`]).
    #[serde(serialize_with = "summarized")]
    pub bytes: Vec<u8>,
}

impl Read {
    /// `bar+0x0`.
    pub fn place(&self) -> String {
        format!("{}+{:#x}", self.region, self.offset)
    }
}

fn summarized<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&bytes_summary(bytes))
}

/// Bytes as people compare them: the shortest repeating pattern (up to 64 bytes) and how
/// often it repeats, `[ff 00 ff 00 00 00 f0 f0] x512`; data that does not repeat is shown
/// whole up to 64 bytes, else its first 16 and its length.
pub fn bytes_summary(bytes: &[u8]) -> String {
    let n = bytes.len();
    let period = (1..=n.min(64))
        .filter(|p| n.is_multiple_of(*p))
        .find(|&p| bytes.chunks(p).all(|c| c == &bytes[..p]));
    match period {
        Some(p) if p == n => hex(bytes),
        Some(p) => format!("{} x{}", hex(&bytes[..p]), n / p),
        None => format!("{}… ({n} bytes)", hex(&bytes[..16])),
    }
}

/// One hazard of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which.
    pub hazard: Hazard,
    /// How many times it occurred.
    pub count: u64,
    /// The step of the first occurrence (1-based).
    pub step: usize,
    /// That step's kind.
    pub op: StepKind,
    /// Who read, overwrote, or accessed uncached.
    pub who: String,
    /// The region of the address.
    pub region: Option<String>,
    /// The offset in that region.
    pub offset: Option<u64>,
    /// The bytes that should have been there (stale read, info leak, lost write).
    pub expected: Option<String>,
    /// The bytes found instead.
    pub got: Option<String>,
    /// The simulator's account, both sides named.
    pub evidence: String,
}

impl Finding {
    /// `bar+0x40`, or the bare address's absence.
    pub fn place(&self) -> String {
        match (&self.region, self.offset) {
            (Some(r), Some(o)) => format!("{r}+{o:#x}"),
            _ => "outside every region".to_string(),
        }
    }
}

pub(crate) fn memtype_name<S: Serializer>(mt: &MemType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(mt.name())
}

fn opt_memtype_name<S: Serializer>(mt: &Option<MemType>, s: S) -> Result<S::Ok, S::Error> {
    match mt {
        Some(mt) => s.serialize_some(mt.name()),
        None => s.serialize_none(),
    }
}

/// Bytes as `[de ad be ef]`, as the simulator prints them.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_summarized_by_their_pattern() {
        let frame: Vec<u8> = (0..4096).map(|i| [0xff, 0x00][i % 2]).collect();
        assert_eq!(bytes_summary(&frame), "[ff 00] x2048");
        assert_eq!(bytes_summary(&[0; 64]), "[00] x64");
        assert_eq!(bytes_summary(&[1, 2, 3]), "[01 02 03]");
        let noise: Vec<u8> = (0..100u8).collect();
        assert_eq!(
            bytes_summary(&noise),
            "[00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f]… (100 bytes)"
        );
    }
}
