//! A validated scenario: the VM a VMM sets up (regions, devices, guest PAT and MTRRs), the
//! program it then runs, and the verdicts expected per kernel. Built from TOML by
//! [`Scenario::parse`] (`validate.rs`); run by [`crate::run`].

use kvm_model::{KernelProfile, Vendor};
use memtype::MemType;
use memtype::pat::Pat;
use serde::{Deserialize, Serialize};

use crate::expect::Expect;
use crate::register::Mechanism;
use crate::step::Step;

/// A scenario, ready to run on any kernel profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Its name (`ncdma run NAME`).
    pub name: String,
    /// One line for `ncdma scenarios`.
    pub summary: String,
    /// What it shows and why it matters.
    pub description: String,
    /// The VM and its guest's memory-type setup.
    pub vm: VmSpec,
    /// The memslots, in the order the VMM creates them.
    pub regions: Vec<Region>,
    /// DMA agents.
    pub devices: Vec<Device>,
    /// The program.
    pub steps: Vec<Step>,
    /// Expected verdicts, first match wins.
    pub expects: Vec<Expect>,
}

/// `[vm]`: the default kernel and the guest's memory-type registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSpec {
    /// The profile a single run uses unless told otherwise.
    pub kernel: KernelProfile,
    /// The guest's IA32_PAT, written with `KVM_SET_MSRS`.
    pub guest_pat: Pat,
    /// The default type of the guest's MTRRs (enabled, no ranges), as firmware leaves them.
    pub guest_mtrr: MemType,
}

/// What a region is to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegionKind {
    /// System RAM: every guest component may map it, with any memory type.
    Ram,
    /// A device BAR backed by host memory the device also reaches (a virtio-GPU blob, VRAM
    /// of an emulated display): only its driver maps it.
    Bar,
}

impl RegionKind {
    /// `ram` or `bar`.
    pub const fn name(self) -> &'static str {
        match self {
            RegionKind::Ram => "ram",
            RegionKind::Bar => "bar",
        }
    }
}

/// One memslot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Its name in steps and reports.
    pub name: String,
    /// RAM or BAR.
    pub kind: RegionKind,
    /// First guest-physical address (page aligned).
    pub gpa: u64,
    /// Size in bytes (page aligned, non-zero).
    pub size: u64,
    /// The target of non-snooping DMA: the VMM tries to register it.
    pub noncoherent: bool,
    /// The mechanisms the VMM tries, in order, for a noncoherent region.
    pub register: Vec<Mechanism>,
}

impl Region {
    /// One past the last guest-physical address.
    pub const fn end(&self) -> u64 {
        self.gpa + self.size
    }
}

/// One DMA agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its name in steps and reports.
    pub name: String,
    /// Whether its DMA snoops CPU caches.
    pub snoop: bool,
}

impl Scenario {
    /// The region holding guest-physical address `gpa`, and the offset in it.
    pub fn region_at(&self, gpa: u64) -> Option<(&Region, u64)> {
        self.regions
            .iter()
            .find(|r| (r.gpa..r.end()).contains(&gpa))
            .map(|r| (r, gpa - r.gpa))
    }

    /// The default profile with another vendor.
    pub fn profile_for(&self, vendor: Vendor) -> KernelProfile {
        KernelProfile {
            vendor,
            ..self.vm.kernel
        }
    }
}
