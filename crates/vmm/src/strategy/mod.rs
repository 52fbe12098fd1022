//! The registration strategy: how a region marked noncoherent gets its guest memory types
//! honored on whatever kernel the VMM runs on, and a report of how it got there.
//!
//! No shipping kernel has the memslot flag, and the numbers that would advertise it (caps
//! 236 and 239, device type 12) mean other things upstream. So nothing is inferred from a
//! number: each mechanism is tried, best first, and only the kernel's acceptance counts.
//!
//! | step | mechanism | scope | refused when |
//! |---|---|---|---|
//! | a | memslot flag `KVM_MEM_NON_COHERENT_DMA` (system.md §3) | this slot | `EINVAL` (the slot is then created without it); system RAM unless forced (aliasing) |
//! | b | KVM virtio device, type 12, `SET_DEVICE_ATTR(1, 1)` (§2) | VM-wide | `ENODEV`, or `ENXIO` from a type 12 that is another device |
//! | c | `KVM_ENABLE_CAP(DISABLE_QUIRKS2, IGNORE_GUEST_PAT)` (§4) | VM-wide, one way | quirk not reported; AMD (no effect); policy forbids VM-wide |
//! | d | the vendor honors guest PAT natively (AMD NPT) | VM-wide | not AMD, or TDP not in use (shadow paging) |
//! | e | a plain slot, marked unsafe | nothing honored | unless the policy allows unsafe |
//!
//! Every step leaves an [`Attempt`] with its reason; the [`Registration`] says which
//! mechanism was used, and [`StrategyError::NoSafeMechanism`] lists why each was refused.

mod steps;

use std::fmt;

use serde_json::{Value, json};
use uapi::Errno;
use uapi::memslot::kvm_userspace_memory_region;

use crate::backend::{Backend, BackendError, DeviceHandle};
use crate::region::RegionKind;

pub(crate) use steps::{
    cap_hints, try_disable_ignore_guest_pat, try_memslot_flag, try_virtio_device,
};

/// What the user lets the strategy do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// Accept mechanisms that honor guest memory types for *all* of the VM's memory
    /// (disabling `IGNORE_GUEST_PAT`): page aliasing then concerns system RAM too.
    pub allow_vm_wide: bool,
    /// When nothing is safe, register the region plainly anyway and mark it unsafe.
    pub allow_unsafe: bool,
    /// Put the memslot flag on system RAM too (the proposal allows it; aliasing with the
    /// host's WB mapping is then the user's problem).
    pub force_flag_on_ram: bool,
}

/// A way to make KVM honor the guest's memory types for a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// (a) The memslot flag `KVM_MEM_NON_COHERENT_DMA` (proposal B).
    MemslotFlag,
    /// (b) The KVM virtio device marked noncoherent (proposal A).
    VirtioDevice,
    /// (c) `KVM_X86_QUIRK_IGNORE_GUEST_PAT` disabled (upstream 6.16+).
    DisableIgnoreGuestPat,
    /// (d) AMD NPT, which combines guest PAT with the host's without being asked.
    VendorNpt,
    /// (e) None: a plain slot, guest memory types possibly ignored.
    Unsafe,
}

/// How much of the VM a mechanism affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Only the region's slot.
    Slot,
    /// Every slot of the VM.
    VmWide,
    /// Nothing is honored.
    Nothing,
}

impl Mechanism {
    /// Every mechanism, in the order they are tried.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::MemslotFlag,
        Mechanism::VirtioDevice,
        Mechanism::DisableIgnoreGuestPat,
        Mechanism::VendorNpt,
        Mechanism::Unsafe,
    ];

    /// A short stable name, for JSON and tests.
    pub const fn id(self) -> &'static str {
        match self {
            Mechanism::MemslotFlag => "memslot-flag",
            Mechanism::VirtioDevice => "virtio-device",
            Mechanism::DisableIgnoreGuestPat => "disable-ignore-guest-pat",
            Mechanism::VendorNpt => "vendor-npt",
            Mechanism::Unsafe => "unsafe",
        }
    }

    /// The registration a migration stream records for a region registered this way.
    pub const fn wire(self) -> migration::format::Registration {
        use migration::format::Registration as Wire;
        match self {
            Mechanism::MemslotFlag => Wire::MemslotFlag,
            Mechanism::VirtioDevice => Wire::VirtioDevice,
            Mechanism::DisableIgnoreGuestPat => Wire::Quirk,
            Mechanism::VendorNpt => Wire::Npt,
            Mechanism::Unsafe => Wire::Unsafe,
        }
    }

    /// How much of the VM it affects.
    pub const fn scope(self) -> Scope {
        match self {
            Mechanism::MemslotFlag => Scope::Slot,
            Mechanism::VirtioDevice | Mechanism::DisableIgnoreGuestPat | Mechanism::VendorNpt => {
                Scope::VmWide
            }
            Mechanism::Unsafe => Scope::Nothing,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mechanism::MemslotFlag => "memslot flag KVM_MEM_NON_COHERENT_DMA",
            Mechanism::VirtioDevice => "KVM virtio device (type 12)",
            Mechanism::DisableIgnoreGuestPat => "disabling KVM_X86_QUIRK_IGNORE_GUEST_PAT",
            Mechanism::VendorNpt => "vendor honors guest PAT (AMD NPT)",
            Mechanism::Unsafe => "plain slot",
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Slot => "this slot only",
            Scope::VmWide => "VM-wide",
            Scope::Nothing => "nothing honored",
        })
    }
}

/// What came of trying one mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The mechanism is in effect for the region.
    Used,
    /// The kernel or the machine does not offer it; with the errno when an ioctl said so.
    Refused(Option<Errno>),
    /// Not tried: the policy or the region's kind rules it out, or it would change nothing.
    Skipped,
}

/// One step of the strategy and why it ended as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The mechanism tried.
    pub mechanism: Mechanism,
    /// What came of it.
    pub outcome: Outcome,
    /// Why, in a sentence.
    pub reason: String,
}

impl Attempt {
    pub(crate) fn new(mechanism: Mechanism, outcome: Outcome, reason: impl Into<String>) -> Self {
        Attempt {
            mechanism,
            outcome,
            reason: reason.into(),
        }
    }

    /// `used`, `skipped`, `refused` or the errno's name.
    pub fn outcome_name(&self) -> String {
        match self.outcome {
            Outcome::Used => "used".into(),
            Outcome::Skipped => "skipped".into(),
            Outcome::Refused(None) => "refused".into(),
            Outcome::Refused(Some(e)) => e.to_string(),
        }
    }

    /// `{"mechanism", "outcome", "errno", "reason"}`.
    pub fn to_json(&self) -> Value {
        let (outcome, errno) = match self.outcome {
            Outcome::Used => ("used", None),
            Outcome::Skipped => ("skipped", None),
            Outcome::Refused(e) => ("refused", e.map(|e| e.to_string())),
        };
        json!({
            "mechanism": self.mechanism.id(),
            "outcome": outcome,
            "errno": errno,
            "reason": self.reason,
        })
    }
}

impl fmt::Display for Attempt {
    /// `memslot flag KVM_MEM_NON_COHERENT_DMA: EINVAL (kernel does not know the flag; …)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({})",
            self.mechanism,
            self.outcome_name(),
            self.reason
        )
    }
}

/// How a noncoherent region was registered, and what was tried before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The mechanism in effect.
    pub mechanism: Mechanism,
    /// Every step taken, in order, the last one [`Outcome::Used`].
    pub attempts: Vec<Attempt>,
}

impl Registration {
    /// Whether the guest's memory types are honored for the region ([`Mechanism::Unsafe`]
    /// is the one that does not).
    pub fn is_safe(&self) -> bool {
        self.mechanism != Mechanism::Unsafe
    }

    /// `{"mechanism", "scope", "safe", "attempts": [...]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "mechanism": self.mechanism.id(),
            "scope": self.mechanism.scope().to_string(),
            "safe": self.is_safe(),
            "attempts": self.attempts.iter().map(Attempt::to_json).collect::<Vec<_>>(),
        })
    }
}

impl fmt::Display for Registration {
    /// A headline, then one indented line per attempt.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_safe() {
            writeln!(
                f,
                "registered with the {} ({})",
                self.mechanism,
                self.mechanism.scope()
            )?;
        } else {
            writeln!(
                f,
                "UNSAFE: registered as a plain slot; guest memory types are NOT honored, \
                 non-snooping DMA may read stale data"
            )?;
        }
        write_attempts(f, &self.attempts)
    }
}

/// One indented, numbered line per attempt (reports; errors keep to one line).
pub(crate) fn write_attempts(f: &mut fmt::Formatter<'_>, attempts: &[Attempt]) -> fmt::Result {
    for (i, a) in attempts.iter().enumerate() {
        writeln!(f, "  {}. {a}", i + 1)?;
    }
    Ok(())
}

/// The attempts of a refusal, one indented line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts(pub Vec<Attempt>);

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.0.iter().map(Attempt::to_string).collect();
        f.write_str(&list.join("; "))
    }
}

/// The strategy failed: every mechanism was refused, or an ioctl failed in a way none of
/// the steps expects (named after the operation, with the kernel's errno).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// No mechanism is safe and the policy does not allow an unsafe registration.
    #[error("no safe way to honor guest memory types for noncoherent DMA: {0}")]
    NoSafeMechanism(Attempts),
    /// Creating the slot failed (with or without the flag).
    #[error("creating the slot: {0}")]
    CreateSlot(BackendError),
    /// Deleting the slot again after every mechanism was refused failed.
    #[error("deleting the slot: {0}")]
    DeleteSlot(BackendError),
    /// `KVM_CREATE_DEVICE` of the virtio device failed other than with `ENODEV`.
    #[error("creating the KVM virtio device: {0}")]
    CreateDevice(BackendError),
    /// `KVM_SET_DEVICE_ATTR(NONCOHERENT, SET)` failed other than with `ENXIO`.
    #[error("marking the KVM virtio device noncoherent: {0}")]
    SetDeviceAttr(BackendError),
    /// Closing a device the strategy made failed.
    #[error("closing the KVM virtio device: {0}")]
    CloseDevice(BackendError),
    /// `KVM_ENABLE_CAP(DISABLE_QUIRKS2)` refused a quirk the kernel reported as disableable.
    #[error("disabling KVM_X86_QUIRK_IGNORE_GUEST_PAT: {0}")]
    EnableCap(BackendError),
}

/// What [`register`] leaves behind: the report, and the device that must stay open for as
/// long as the region is registered (closing it unregisters).
#[derive(Debug)]
pub(crate) struct Registered {
    pub registration: Registration,
    pub device: Option<DeviceHandle>,
}

/// Creates the slot `region` (whose `flags` must not carry the proposal's flag) for a
/// noncoherent region of `kind`, with the first mechanism of the chain that the kernel, the
/// machine and `policy` allow. On refusal no slot is left behind.
///
/// # Safety
///
/// As for [`Backend::set_user_memory_region`]: if this succeeds, the host range of `region`
/// must stay mapped for as long as the slot exists.
pub(crate) unsafe fn register(
    backend: &mut dyn Backend,
    region: &kvm_userspace_memory_region,
    kind: RegionKind,
    policy: Policy,
) -> Result<Registered, StrategyError> {
    let mut attempts = Vec::new();
    // (a) The flag: only the kernel's acceptance is proof.
    let flag = if kind == RegionKind::Ram && !policy.force_flag_on_ram {
        Attempt::new(
            Mechanism::MemslotFlag,
            Outcome::Skipped,
            "system RAM: the host's own WB mapping would alias the guest's WC/UC one \
             (system.md §3); force_flag_on_ram overrides",
        )
    } else {
        // SAFETY: forwarded from this function's contract.
        unsafe { try_memslot_flag(backend, region) }?
    };
    let used = flag.outcome == Outcome::Used;
    attempts.push(flag);
    if used {
        return Ok(done(Mechanism::MemslotFlag, attempts, None));
    }
    // The rest are VM-wide or nothing: the slot is an ordinary one.
    // SAFETY: forwarded from this function's contract.
    unsafe { backend.set_user_memory_region(region) }.map_err(StrategyError::CreateSlot)?;
    match vm_wide(backend, policy, &mut attempts) {
        Ok(Some((mechanism, device))) => Ok(done(mechanism, attempts, device)),
        refused_or_failed => {
            let delete = kvm_userspace_memory_region {
                memory_size: 0,
                ..*region
            };
            // SAFETY: deleting a slot maps nothing.
            unsafe { backend.set_user_memory_region(&delete) }
                .map_err(StrategyError::DeleteSlot)?;
            Err(match refused_or_failed {
                Err(e) => e,
                Ok(_) => StrategyError::NoSafeMechanism(Attempts(attempts)),
            })
        }
    }
}

fn done(mechanism: Mechanism, attempts: Vec<Attempt>, device: Option<DeviceHandle>) -> Registered {
    Registered {
        registration: Registration {
            mechanism,
            attempts,
        },
        device,
    }
}

/// Steps (b) to (e) for a slot that exists: the mechanism used (and the virtio device it
/// needs kept open), or `None` when all were refused.
fn vm_wide(
    backend: &mut dyn Backend,
    policy: Policy,
    attempts: &mut Vec<Attempt>,
) -> Result<Option<(Mechanism, Option<DeviceHandle>)>, StrategyError> {
    // (b) The virtio device.
    let (attempt, device) = try_virtio_device(backend)?;
    attempts.push(attempt);
    if device.is_some() {
        return Ok(Some((Mechanism::VirtioDevice, device)));
    }
    // (c) The quirk, and (d) the vendor, both read the machine's facts.
    let platform = backend.platform();
    let quirk = try_disable_ignore_guest_pat(backend, &platform, policy)?;
    let used = quirk.outcome == Outcome::Used;
    attempts.push(quirk);
    if used {
        return Ok(Some((Mechanism::DisableIgnoreGuestPat, None)));
    }
    let vendor = steps::vendor_npt(&platform);
    let used = vendor.outcome == Outcome::Used;
    attempts.push(vendor);
    if used {
        return Ok(Some((Mechanism::VendorNpt, None)));
    }
    // (e) Unsafe, only on request.
    if policy.allow_unsafe {
        attempts.push(Attempt::new(
            Mechanism::Unsafe,
            Outcome::Used,
            "UNSAFE, as the policy allows: guest WC stores may stay in CPU caches and \
             non-snooping DMA may read stale data",
        ));
        return Ok(Some((Mechanism::Unsafe, None)));
    }
    attempts.push(Attempt::new(
        Mechanism::Unsafe,
        Outcome::Skipped,
        "the policy does not allow an unsafe registration; allow_unsafe overrides",
    ));
    Ok(None)
}
