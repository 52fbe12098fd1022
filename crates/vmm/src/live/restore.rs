//! [`LiveVm::restore`]: a running VM from a verified [`VmImage`], built by this host's own
//! VMM code — RAM and BAR backed by the very memory the stream was received into (no copy:
//! a copy of every page here would sit inside the guest's downtime; `flush` memory flushed
//! first), the BAR registered again through the destination's strategy chain (the source's
//! mechanism is a fact about the source, not a promise about this host), the vCPU loaded,
//! the GPU continued from its state — and only then started. Any failure drops the
//! half-built VM: nothing runs.

use migration::destination::{RegionImage, VmImage};
use migration::format::{Coherence, Policy as WirePolicy, RegionKind as WireKind};

use super::gpu::{GPU_DEVICE, GpuState};
use super::{BAR_GPA, BAR_REGION, LiveError, LiveVm, RAM_REGION, add_bar, bar_region, state};
use crate::cache::HostCache;
use crate::guest::memory::GuestMemory;
use crate::guest::{GuestError, GuestVm};
use crate::region::{self, GuestRegion, RegionKind};
use crate::strategy::Policy;

impl LiveVm {
    /// Builds and starts the VM of `image` (whose memory it takes over), registering its
    /// BAR under `strategy`.
    pub fn restore(image: VmImage, strategy: Policy) -> Result<LiveVm, LiveError> {
        let shape = |what: String| LiveError::Shape(what);
        let VmImage {
            regions,
            vcpus,
            devices,
            ..
        } = image;
        let count = regions.len();
        let mut regions = regions.into_iter();
        let (Some(ram), bar, None) = (regions.next(), regions.next(), regions.next()) else {
            return Err(shape(format!(
                "{count} regions, expected RAM and at most one BAR"
            )));
        };
        let c = &ram.config;
        if c.name != RAM_REGION || c.kind != WireKind::Ram || c.gpa != 0 {
            return Err(shape(format!(
                "the first region is {:?} ({:?} at {:#x}), expected {RAM_REGION:?} RAM at 0",
                c.name, c.kind, c.gpa
            )));
        }
        if let Some(bar) = &bar {
            let c = &bar.config;
            if c.name != BAR_REGION
                || c.kind != WireKind::Bar
                || c.gpa != BAR_GPA
                || c.coherence != Coherence::Noncoherent
            {
                return Err(shape(format!(
                    "the second region is {:?} ({:?}, {:?} at {:#x}), expected the \
                     noncoherent {BAR_REGION:?} BAR at {BAR_GPA:#x}",
                    c.name, c.kind, c.coherence, c.gpa
                )));
            }
        }
        let [vcpu] = vcpus.as_slice() else {
            return Err(shape(format!("{} vCPUs, expected 1", vcpus.len())));
        };
        let gpu_state = match &bar {
            Some(bar) => {
                let device = devices
                    .iter()
                    .find(|d| d.name == GPU_DEVICE)
                    .ok_or_else(|| shape(format!("a BAR but no {GPU_DEVICE:?} device state")))?;
                GpuState::from_device_state(&device.state, bar.config.pages())?
            }
            None => GpuState {
                frame: 0,
                next_page: 0,
                pages_per_second: 0,
            },
        };

        let ram_size = ram.config.size;
        let memory = ram
            .into_memory(&HostCache)
            .ok_or_else(|| shape("the RAM arrived without its pages".into()))?;
        let memory = GuestMemory::adopt(memory).map_err(|errno| GuestError::MapMemory {
            size: ram_size,
            errno,
        })?;
        let mut vm = GuestVm::with_memory(memory, strategy)?;
        let (bar, recreate) = match bar {
            Some(image_bar) => {
                let (region, policy, recreate) = restored_bar(image_bar)?;
                (Some(add_bar(&mut vm, region, policy)?), recreate)
            }
            None => (None, false),
        };
        state::load(&vm.vcpu(), vcpu)?;
        LiveVm::start(vm, bar, gpu_state, recreate)
    }
}

/// The BAR's region: the memory it was received into (flushed under `flush`), or, for a
/// `skip` BAR, fresh memory the GPU renders again; with its policy and whether it must be
/// re-created.
fn restored_bar(bar: RegionImage) -> Result<(GuestRegion, WirePolicy, bool), LiveError> {
    let (policy, size) = (bar.config.policy, bar.config.size);
    Ok(match bar.into_memory(&HostCache) {
        Some(memory) => {
            let region = GuestRegion::adopt(
                BAR_REGION,
                BAR_GPA,
                memory,
                RegionKind::DeviceBar,
                region::Coherence::NoncoherentDma,
            )?;
            (region, policy, false)
        }
        None => (bar_region(size)?, policy, true),
    })
}
