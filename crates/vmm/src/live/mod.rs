//! [`LiveVm`]: a real KVM guest that keeps changing its memory while it is snapshotted or
//! migrated, with a noncoherent GPU BAR a device model keeps rendering into.
//!
//! - The guest ([`GuestOp::Dirty`]) runs at CPL3 on a vCPU thread of its own
//!   ([`vcpu`]), dirtying a working set of its RAM at a chosen rate, forever.
//! - The GPU ([`gpu`]) writes the BAR without snooping at its own rate, and tracks what it
//!   wrote, because KVM's dirty log never sees a device's writes.
//! - The BAR is registered by the VMM's strategy chain ([`crate::region`]), so the stream
//!   says how it was registered, and a restore registers it again through the
//!   destination's own chain.
//! - [`LiveVm`] is a [`migration::MigrationSource`] ([`source`]): pages in place, KVM's
//!   dirty log merged with the GPU's, pause and resume of both, vCPU state
//!   ([`state`]) and the GPU's state. [`LiveVm::restore`] builds a running VM from a
//!   verified [`VmImage`](migration::destination::VmImage) ([`restore`]).
//!
//! Guest-physical layout: RAM from 0 (its first 2 MiB is the runtime's system area, the
//! rest is filled with seeded bytes so that no page is a zero page), the BAR at
//! [`BAR_GPA`], mapped by the guest through its WC PAT entry.

mod error;
pub mod gpu;
mod restore;
mod source;
pub mod state;
mod vcpu;

pub use error::LiveError;
pub use gpu::{GPU_DEVICE, GpuState};

use std::sync::Mutex;
use std::time::Duration;

use memtype::pat::PAT_LINUX_DEFAULT;
use migration::DirtyBitmap;
use migration::format::{PAGE_SIZE, Policy as WirePolicy};
use uapi::SlotId;

use crate::guest::layout::{RESULTS_GPA, SYSTEM_END};
use crate::guest::{GuestMapping, GuestOp, GuestVm, Program};
use crate::region::{Coherence, GuestRegion, RegionKind};
use crate::strategy::{Policy, Registration};
use gpu::Gpu;
use vcpu::VcpuThread;

/// The BAR's guest-physical address: above 4 GiB, as a 64-bit BAR of a virtio-GPU.
pub const BAR_GPA: u64 = 0x1_0000_0000;
/// The RAM region's name in the stream.
pub const RAM_REGION: &str = "ram";
/// The BAR region's name in the stream.
pub const BAR_REGION: &str = "gpu-bar";
/// PAT entry of the Linux guest PAT that is WC: the guest's mapping of the BAR.
const WC_PAT_INDEX: u8 = 1;

/// What to boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveVmConfig {
    /// RAM bytes, the 2 MiB system area included; a multiple of 4 KiB.
    pub ram_size: u64,
    /// BAR bytes (0: no BAR); a multiple of 4 KiB.
    pub bar_size: u64,
    /// How the BAR travels in a snapshot or migration.
    pub bar_policy: WirePolicy,
    /// What the strategy chain may do to register the BAR.
    pub strategy: Policy,
    /// Bytes of RAM, from the end of the system area, that the guest keeps rewriting.
    pub working_set: u64,
    /// Pages per second the guest dirties (0: as fast as it can).
    pub dirty_rate: u64,
    /// BAR pages per second the GPU renders (0: the GPU is idle).
    pub gpu_rate: u64,
    /// Seed of the RAM's initial contents.
    pub seed: u64,
}

impl Default for LiveVmConfig {
    /// 64 MiB of RAM, a 16 MiB BAR migrated with `flush`, the chain's default policy, a
    /// guest dirtying 2000 pages/s of a 16 MiB working set, a GPU rendering 1000 pages/s.
    fn default() -> Self {
        LiveVmConfig {
            ram_size: 64 << 20,
            bar_size: 16 << 20,
            bar_policy: WirePolicy::Flush,
            strategy: Policy::default(),
            working_set: 16 << 20,
            dirty_rate: 2000,
            gpu_rate: 1000,
            seed: 0x6e63_646d_615f_6c76,
        }
    }
}

/// A running VM on `/dev/kvm` (see the module documentation). Dropping it stops the GPU,
/// then the vCPU, then closes the VM.
#[derive(Debug)]
pub struct LiveVm {
    // Field order is drop order: the threads stop before the memory they use goes away.
    gpu: Option<Gpu>,
    vcpu: VcpuThread,
    vm: GuestVm,
    bar: Option<Bar>,
    /// Dirty bits out of the logs but not yet handed to a migration, by region id: bits a
    /// failed migration handed back, and bits taken to look whether pages being sent were
    /// written ([`MigrationSource::written_since_last_check`]). The next
    /// [`MigrationSource::dirty_pages`] hands them out. Locked because that look is made
    /// through a shared borrow.
    ///
    /// [`MigrationSource::written_since_last_check`]: migration::MigrationSource::written_since_last_check
    /// [`MigrationSource::dirty_pages`]: migration::MigrationSource::dirty_pages
    held: Mutex<[DirtyBitmap; 2]>,
}

/// The BAR's slot, registration and travel policy.
#[derive(Debug, Clone)]
struct Bar {
    slot: SlotId,
    registration: Registration,
    policy: WirePolicy,
}

impl LiveVm {
    /// Boots the VM: RAM filled with seeded bytes, the BAR registered through the strategy
    /// chain and rendered by the GPU, the guest started.
    ///
    /// ```no_run
    /// use vmm::live::{LiveVm, LiveVmConfig};
    /// use vmm::strategy::Policy;
    ///
    /// let config = LiveVmConfig {
    ///     strategy: Policy { allow_unsafe: true, ..Policy::default() },
    ///     ..LiveVmConfig::default()
    /// };
    /// let vm = LiveVm::boot(&config)?;
    /// std::thread::sleep(std::time::Duration::from_millis(50));
    /// assert!(vm.guest_pages_written() > 0);
    /// # Ok::<(), vmm::live::LiveError>(())
    /// ```
    pub fn boot(config: &LiveVmConfig) -> Result<LiveVm, LiveError> {
        let work_end = SYSTEM_END
            .checked_add(config.working_set)
            .filter(|&end| config.working_set > 0 && end <= config.ram_size)
            .ok_or_else(|| {
                LiveError::Config(format!(
                    "a working set of {:#x} bytes does not fit in {:#x} bytes of RAM after the \
                     {SYSTEM_END:#x}-byte system area",
                    config.working_set, config.ram_size
                ))
            })?;
        let mut vm = GuestVm::with_policy(config.ram_size, config.strategy)?;
        fill(
            &mut vm.memory_mut().as_mut_slice()[SYSTEM_END as usize..],
            config.seed,
        );
        let bar = if config.bar_size > 0 {
            Some(add_bar(
                &mut vm,
                bar_region(config.bar_size)?,
                config.bar_policy,
            )?)
        } else {
            None
        };
        let ticks_per_page = match config.dirty_rate {
            0 => 0,
            rate => u64::from(vm.tsc_khz()?) * 1000 / rate,
        };
        // One wait per 10 ms worth of pages: the vCPU sleeps between bursts instead of
        // spinning a core the migration needs, and at 100 exits a second the exits cost
        // little even where each is dear (on kvm_pvm one costs tens of microseconds).
        let burst = config.dirty_rate.div_ceil(100).max(1);
        let program = Program {
            mappings: guest_mappings(config.ram_size, config.bar_size),
            guest_pat: PAT_LINUX_DEFAULT,
            ops: vec![GuestOp::Dirty {
                gpa: SYSTEM_END,
                len: work_end - SYSTEM_END,
                ticks_per_page,
                burst,
                laps: 0,
            }],
            ..Program::default()
        };
        vm.prepare(&program)?;
        let gpu_state = GpuState {
            frame: 0,
            next_page: 0,
            pages_per_second: config.gpu_rate,
        };
        LiveVm::start(vm, bar, gpu_state, true)
    }

    /// Starts the threads of a VM whose vCPU is loaded; `render_bar` has the GPU render
    /// the whole current frame first (a BAR filled at boot, or re-created after `skip`).
    fn start(
        vm: GuestVm,
        bar: Option<Bar>,
        gpu_state: GpuState,
        render_bar: bool,
    ) -> Result<LiveVm, LiveError> {
        let bar_pages = bar.as_ref().map_or(0, |b| {
            let size = vm.regions().region(b.slot).map_or(0, GuestRegion::size);
            (size / PAGE_SIZE as u64) as u32
        });
        let gpu = match &bar {
            Some(b) => {
                let addr = vm
                    .regions()
                    .region(b.slot)
                    .expect("the BAR's own slot")
                    .host()
                    .addr();
                let gpu = Gpu::start(addr, bar_pages, gpu_state).map_err(|e| LiveError::Spawn {
                    thread: "GPU model",
                    kind: e.kind(),
                })?;
                if render_bar {
                    gpu.render_frame();
                }
                Some(gpu)
            }
            None => None,
        };
        let ram_pages = (vm.memory().size() / PAGE_SIZE as u64) as u32;
        let vcpu = VcpuThread::start(vm.shared_vcpu(), vm.tsc_khz()?)?;
        Ok(LiveVm {
            gpu,
            vcpu,
            vm,
            bar,
            held: Mutex::new([DirtyBitmap::new(ram_pages), DirtyBitmap::new(bar_pages)]),
        })
    }

    /// Pages the guest has written since it booted: its own running count, which keeps
    /// growing while it runs (also across a migration: the count is in its memory).
    pub fn guest_pages_written(&self) -> u64 {
        let bytes = &self.vm.memory().as_slice()[RESULTS_GPA as usize..][..8];
        // The guest updates the word concurrently; an 8-byte aligned load is atomic on x86.
        // SAFETY: the pointer is inside guest memory (the results area), 8-byte aligned.
        unsafe { (bytes.as_ptr() as *const u64).read_volatile() }
    }

    /// Why the guest stopped by itself, if it did (it never should).
    pub fn failure(&self) -> Option<crate::guest::GuestError> {
        self.vcpu.failure()
    }

    /// How the BAR was registered (`None` without a BAR).
    pub fn bar_registration(&self) -> Option<&Registration> {
        self.bar.as_ref().map(|b| &b.registration)
    }

    /// The GPU's state (`None` without a BAR).
    pub fn gpu_state(&self) -> Option<GpuState> {
        self.gpu.as_ref().map(Gpu::state)
    }

    /// RAM bytes.
    pub fn ram(&self) -> &[u8] {
        self.vm.memory().as_slice()
    }

    /// BAR bytes (empty without a BAR).
    pub fn bar(&self) -> &[u8] {
        self.bar
            .as_ref()
            .and_then(|b| self.vm.region_bytes(b.slot))
            .unwrap_or(&[])
    }

    /// `KVM_RUN` returns of the vCPU so far (kicks, pauses).
    pub fn vcpu_exits(&self) -> u64 {
        self.vcpu.exits()
    }

    /// CPU time the vCPU thread has used since it started: the guest's own instructions
    /// and the host kernel's handling of its exits and faults, which under dirty logging
    /// includes one write-protection fault per page the guest dirties after a look.
    pub fn vcpu_cpu_time(&self) -> Option<Duration> {
        self.vcpu.cpu_time()
    }
}

/// The guest's view: RAM above the system area WB, the BAR WC.
fn guest_mappings(ram_size: u64, bar_size: u64) -> Vec<GuestMapping> {
    let mut mappings = vec![GuestMapping {
        gpa: SYSTEM_END,
        len: ram_size - SYSTEM_END,
        pat_index: 0,
    }];
    if bar_size > 0 {
        mappings.push(GuestMapping {
            gpa: BAR_GPA,
            len: bar_size,
            pat_index: WC_PAT_INDEX,
        });
    }
    mappings
}

/// Fresh memory for a BAR of `size` bytes.
fn bar_region(size: u64) -> Result<GuestRegion, LiveError> {
    Ok(GuestRegion::new(
        BAR_REGION,
        BAR_GPA,
        size,
        RegionKind::DeviceBar,
        Coherence::NoncoherentDma,
    )?)
}

/// Adds the BAR `region` through the strategy chain of `vm`'s policy.
fn add_bar(vm: &mut GuestVm, region: GuestRegion, policy: WirePolicy) -> Result<Bar, LiveError> {
    let slot = vm.add_region(region)?;
    let registration = vm
        .registration(slot)
        .expect("a noncoherent region has a registration")
        .clone();
    Ok(Bar {
        slot,
        registration,
        policy,
    })
}

/// Fills `bytes` with a seeded xorshift stream: no page is a zero page, runs repeat.
fn fill(bytes: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}
