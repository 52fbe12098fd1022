//! [`LiveVm::restore`]: a running VM from a verified [`VmImage`], built by this host's own
//! VMM code — the BAR registered again through the destination's strategy chain (the source's
//! mechanism is a fact about the source, not a promise about this host), RAM and BAR
//! written (`flush` pages flushed after writing), the vCPU loaded, the GPU continued from
//! its state — and only then started. Any failure drops the half-built VM: nothing runs.

use migration::destination::{RegionContents, VmImage};
use migration::format::{Coherence, RegionKind as WireKind};

use super::gpu::{GPU_DEVICE, GpuState};
use super::{BAR_GPA, BAR_REGION, LiveError, LiveVm, RAM_REGION, add_bar, state};
use crate::cache::HostCache;
use crate::guest::GuestVm;
use crate::strategy::Policy;

impl LiveVm {
    /// Builds and starts the VM of `image`, registering its BAR under `strategy`.
    pub fn restore(image: &VmImage, strategy: Policy) -> Result<LiveVm, LiveError> {
        let shape = |what: String| LiveError::Shape(what);
        let (ram, bar) = match image.regions.as_slice() {
            [ram] => (ram, None),
            [ram, bar] => (ram, Some(bar)),
            regions => {
                return Err(shape(format!(
                    "{} regions, expected RAM and at most one BAR",
                    regions.len()
                )));
            }
        };
        let c = &ram.config;
        if c.name != RAM_REGION || c.kind != WireKind::Ram || c.gpa != 0 {
            return Err(shape(format!(
                "the first region is {:?} ({:?} at {:#x}), expected {RAM_REGION:?} RAM at 0",
                c.name, c.kind, c.gpa
            )));
        }
        if let Some(bar) = bar {
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
        let [vcpu] = image.vcpus.as_slice() else {
            return Err(shape(format!("{} vCPUs, expected 1", image.vcpus.len())));
        };

        let mut vm = GuestVm::with_policy(ram.config.size, strategy)?;
        ram.install(vm.memory_mut().as_mut_slice(), &HostCache)?;
        let (bar, gpu_state, recreate) = match bar {
            Some(image_bar) => {
                let bar = add_bar(&mut vm, image_bar.config.size, image_bar.config.policy)?;
                let target = vm.region_bytes_mut(bar.slot).expect("the BAR's own slot");
                image_bar.install(target, &HostCache)?;
                let device = image
                    .devices
                    .iter()
                    .find(|d| d.name == GPU_DEVICE)
                    .ok_or_else(|| shape(format!("a BAR but no {GPU_DEVICE:?} device state")))?;
                let gpu = GpuState::from_device_state(&device.state, image_bar.config.pages())?;
                let recreate = image_bar.contents == RegionContents::Recreate;
                (Some(bar), gpu, recreate)
            }
            None => (
                None,
                GpuState {
                    frame: 0,
                    next_page: 0,
                    pages_per_second: 0,
                },
                false,
            ),
        };
        state::load(&vm.vcpu(), vcpu)?;
        LiveVm::start(vm, bar, gpu_state, recreate)
    }
}
