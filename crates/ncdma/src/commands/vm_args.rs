//! The flags shared by `ncdma snapshot`, `restore` and `migrate`: the live guest to boot
//! (sizes, dirty rates, how its BAR travels) and what the strategy chain may do to
//! register the BAR, and running a restored guest for a while to show it goes on.

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use migration::destination::{Limits, VmImage};
use migration::format::Policy as WirePolicy;
use serde_json::{Value, json};
use vmm::live::{LiveError, LiveVm, LiveVmConfig};
use vmm::strategy::Policy;

use crate::Output;
use crate::error::CliError;

/// How the noncoherent BAR travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BarPolicy {
    /// CLFLUSHOPT + SFENCE every line of a page before reading it, and after writing it on
    /// the destination.
    Flush,
    /// Send nothing: the destination's GPU re-creates the BAR from its state.
    Skip,
    /// Fail before anything is sent (the RFC's plan).
    Refuse,
}

impl BarPolicy {
    pub(crate) fn wire(self) -> WirePolicy {
        match self {
            BarPolicy::Flush => WirePolicy::Flush,
            BarPolicy::Skip => WirePolicy::Skip,
            BarPolicy::Refuse => WirePolicy::Refuse,
        }
    }
}

/// What the strategy chain may do for the BAR.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct StrategyArgs {
    /// When no mechanism can make the BAR's memory types safe (as on hosts whose KVM refuses
    /// both proposals), register it plainly anyway, marked unsafe.
    #[arg(long)]
    pub allow_unsafe: bool,
    /// Accept mechanisms that honor guest memory types for all of the VM's memory
    /// (disabling KVM_X86_QUIRK_IGNORE_GUEST_PAT).
    #[arg(long)]
    pub allow_vm_wide: bool,
}

impl StrategyArgs {
    pub(crate) fn policy(self) -> Policy {
        Policy {
            allow_vm_wide: self.allow_vm_wide,
            allow_unsafe: self.allow_unsafe,
            force_flag_on_ram: false,
        }
    }
}

/// The guest to boot.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct VmArgs {
    /// Guest RAM in MiB (the first 2 MiB hold the runtime).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(4..=65536))]
    pub ram_mib: u64,
    /// The noncoherent GPU BAR in MiB (0: none).
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(0..=16384))]
    pub bar_mib: u64,
    /// How the BAR travels.
    #[arg(long, value_enum, default_value_t = BarPolicy::Flush)]
    pub bar_policy: BarPolicy,
    /// MiB of RAM the guest keeps rewriting.
    #[arg(long, value_name = "MIB", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub working_set_mib: u64,
    /// Pages per second the guest dirties (0: as fast as it can).
    #[arg(long, value_name = "PAGES", default_value_t = 2000)]
    pub dirty_rate: u64,
    /// BAR pages per second the GPU model renders (0: idle).
    #[arg(long, value_name = "PAGES", default_value_t = 1000)]
    pub gpu_rate: u64,
    /// How long the guest runs before the snapshot or migration starts.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub warmup_ms: u64,
    #[command(flatten)]
    pub strategy: StrategyArgs,
}

impl VmArgs {
    /// Boots the guest and lets it warm up.
    pub(crate) fn boot(&self) -> Result<LiveVm, CliError> {
        let config = LiveVmConfig {
            ram_size: self.ram_mib << 20,
            bar_size: self.bar_mib << 20,
            bar_policy: self.bar_policy.wire(),
            strategy: self.strategy.policy(),
            working_set: self.working_set_mib << 20,
            dirty_rate: self.dirty_rate,
            gpu_rate: self.gpu_rate,
            ..LiveVmConfig::default()
        };
        let vm = LiveVm::boot(&config).map_err(live_error)?;
        std::thread::sleep(Duration::from_millis(self.warmup_ms));
        if let Some(e) = vm.failure() {
            return Err(CliError::Failed(format!("the guest stopped: {e}")));
        }
        Ok(vm)
    }
}

/// A boot or restore failure: sizes that make no VM are bad input, the rest failed.
pub(crate) fn live_error(e: LiveError) -> CliError {
    match e {
        LiveError::Config(_) | LiveError::Shape(_) | LiveError::GpuState(_) => {
            CliError::BadInput(e.to_string())
        }
        // The strategy chain's refusal is the host's answer to what the user asked for.
        other => CliError::Failed(other.to_string()),
    }
}

/// How a noncoherent BAR was registered, for reports.
pub(crate) fn registration(vm: &LiveVm) -> Value {
    vm.bar_registration()
        .map_or(Value::Null, vmm::strategy::Registration::to_json)
}

/// How a destination takes a VM in (`restore`, `migrate receive`): what it accepts, how
/// it registers the BAR, and how long it runs the guest to show that it goes on.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct RestoreArgs {
    /// How long to run the restored guest before stopping it.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub run_ms: u64,
    /// The most guest memory the source may declare, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 16384)]
    pub max_memory_mib: u64,
    /// Do not populate the guest's memory before the first page arrives: pages fault in
    /// as they come, and pages never sent (zero pages) cost no memory. For large guests
    /// that are mostly empty; by default every page is committed up front, and no page
    /// fault slows the copy.
    #[arg(long)]
    pub no_prefault: bool,
    #[command(flatten)]
    pub strategy: StrategyArgs,
}

impl RestoreArgs {
    /// What the destination accepts.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_memory: self.max_memory_mib << 20,
            prefault: !self.no_prefault,
            ..Limits::default()
        }
    }

    /// Restores `image` (received from `what`, e.g. "restored vm.snap"), runs it, and
    /// renders the report; `key`/`value` name where it came from in the JSON. The restore
    /// takes the image's memory over and is timed: after a live migration it is the
    /// destination's share of the guest's downtime.
    pub(crate) fn restore_and_run(
        &self,
        image: VmImage,
        what: &str,
        (key, value): (&str, String),
        json: bool,
    ) -> Output {
        let source = image.header.facts.host.clone();
        let started = Instant::now();
        let vm = LiveVm::restore(image, self.strategy.policy()).map_err(live_error)?;
        let restore_ms = started.elapsed().as_secs_f64() * 1e3;
        let report = run_restored(&vm, Duration::from_millis(self.run_ms))?;
        Ok(if json {
            let doc = json!({
                key: value,
                "source": source,
                "restore_ms": restore_ms,
                "run": report,
            });
            format!("{doc:#}\n")
        } else {
            format!(
                "{what} (from {source}) in {restore_ms:.1} ms: BAR registered here: {}\nthe \
                 guest ran on for {} ms: {} -> {} pages written\n",
                mechanism(&vm),
                report["ran_ms"],
                report["guest_pages_before"],
                report["guest_pages_after"],
            )
        })
    }
}

/// `unsafe (no mechanism honors the guest's memory types here)`, or the mechanism's name.
pub(crate) fn mechanism(vm: &LiveVm) -> String {
    match vm.bar_registration() {
        None => "no BAR".into(),
        Some(r) if r.is_safe() => format!("{:?}", r.mechanism),
        Some(r) => format!(
            "{:?} (marked unsafe: no mechanism makes the guest's memory types take effect \
             on this host)",
            r.mechanism
        ),
    }
}

/// Runs a restored guest for `run`, then reports that it went on: its page count before
/// and after. A guest that made no progress, or stopped, fails.
fn run_restored(vm: &LiveVm, run: Duration) -> Result<Value, CliError> {
    let before = vm.guest_pages_written();
    let started = Instant::now();
    std::thread::sleep(run);
    let after = vm.guest_pages_written();
    if let Some(e) = vm.failure() {
        return Err(CliError::Failed(format!("the restored guest stopped: {e}")));
    }
    if after <= before {
        return Err(CliError::Failed(format!(
            "the restored guest made no progress in {run:?} (pages written: {before})"
        )));
    }
    Ok(json!({
        "ran_ms": started.elapsed().as_millis() as u64,
        "guest_pages_before": before,
        "guest_pages_after": after,
        "gpu_frame": vm.gpu_state().map(|g| g.frame),
        "bar_registration": registration(vm),
    }))
}
