//! [`ModelVm`]: the model twin of a live VM, for migrations whose data hazards can be judged.
//!
//! Its regions are registered by the VMM's own code ([`GuestMemory`] and the strategy chain)
//! on the reference kernel ([`ModelKvm`]); its memory is the coherence simulator's, with three
//! agents: the guest's vCPU, the host CPU that runs the migration, and a GPU that writes the
//! BAR without snooping. While it runs, every page the migration reads lets the guest and the
//! GPU write a few pages (a dirty rate relative to the copy rate, so runs repeat exactly),
//! and the pages they write are in the dirty log.
//!
//! The host reads a page through its write-back mapping: each [`MigrationSource::page`] call
//! performs those loads in the simulator, so a line the host cached in an earlier round and
//! the GPU has since rewritten in memory comes back stale, exactly as on hardware. The
//! `flush` policy's [`MigrationSource::flush_pages`] hands the pages' addresses to the
//! [`ModelCache`], which performs CLFLUSHOPT + SFENCE in the simulator. After a
//! migration, [`ModelVm::truth`] (every byte's last committed write) is what the destination
//! must have received, and [`ModelVm::stale_reads`] counts the host reads that were not it.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;

use coherence::{Action, AgentId, Capacity, Config, DevId, MemType, Property, State, Value, host};
use kvm_model::{KernelProfile, Vendor};
use memtype::pat::PAT_LINUX_DEFAULT;
use migration::format::{
    DeviceState, Msr, PAGE_SIZE, Policy as WirePolicy, RegionConfig, RegionKind as WireKind, Regs,
    SourceFacts, Sregs, VcpuState, Vendor as WireVendor, VmConfig, msr,
};
use migration::{CacheMaintenance, DirtyBitmap, MigrationSource, SourceError};

use crate::backend::ModelKvm;
use crate::region::{Coherence, GuestMemory, GuestRegion, RegionError, RegionKind};
use crate::strategy::{Policy, Registration};

/// Where the model's RAM and BAR sit in guest-physical (and simulated physical) memory.
pub const RAM_GPA: u64 = 0;
/// The BAR's guest-physical address.
pub const BAR_GPA: u64 = 0x1_0000_0000;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVmConfig {
    /// The kernel the VM runs on.
    pub profile: KernelProfile,
    /// RAM pages.
    pub ram_pages: u32,
    /// BAR pages.
    pub bar_pages: u32,
    /// How the BAR travels (`flush`, `skip` or `refuse`).
    pub bar_policy: WirePolicy,
    /// What the strategy chain may do to register the BAR.
    pub strategy: Policy,
    /// Pages written (half by the guest in RAM, half by the GPU in the BAR) for every page
    /// the migration reads while the VM runs.
    pub writes_per_read: u32,
    /// Seed of the writers' choices.
    pub seed: u64,
}

impl Default for ModelVmConfig {
    /// The memslot-flag kernel on Intel, 1 MiB of RAM, a 512 KiB BAR migrated with `flush`,
    /// one write per page read.
    fn default() -> Self {
        ModelVmConfig {
            profile: KernelProfile::parse("6.16+memslot-flag", Vendor::Intel)
                .expect("a built-in profile name"),
            ram_pages: 256,
            bar_pages: 128,
            bar_policy: WirePolicy::Flush,
            strategy: Policy::default(),
            writes_per_read: 1,
            seed: 0x006d_6f64_656c_766d,
        }
    }
}

/// The simulated machine and the page the host read last, shared by the VM and its
/// [`ModelCache`].
#[derive(Debug)]
struct Machine {
    sim: RefCell<State>,
    host: AgentId,
    /// Guest-physical address of the page `flush_pages` is flushing, and the address of the
    /// buffer it hands the cache: a flush of those bytes is a flush of that page.
    flushing: Cell<Option<(u64, usize)>>,
    /// Flushes of anything else (an engine bug the tests catch).
    stray_flushes: Cell<u64>,
}

/// A VM on the reference kernel and the coherence simulator (see the module documentation).
pub struct ModelVm {
    config: ModelVmConfig,
    machine: Rc<Machine>,
    guest: AgentId,
    gpu: DevId,
    memory: GuestMemory,
    registration: Registration,
    wire: VmConfig,
    buffer: Box<[u8; PAGE_SIZE]>,
    logging: bool,
    dirty: [DirtyBitmap; 2],
    running: bool,
    rng: u64,
    gpu_writes: u64,
}

impl fmt::Debug for ModelVm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelVm")
            .field("config", &self.config)
            .field("memory", &self.memory)
            .field("registration", &self.registration)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// Why a model VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ModelVmError {
    /// A region could not be registered (the strategy chain's reasons included).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The simulator refused an action.
    #[error("coherence simulator: {0}")]
    Simulator(#[from] coherence::Error),
}

impl ModelVm {
    /// Builds the VM: both regions registered through the strategy chain on `profile`'s
    /// kernel, RAM and BAR filled by the guest with seeded bytes, the BAR handed over the way
    /// `region` hands noncoherent memory over (the host flushes it), and the VM running.
    pub fn new(config: ModelVmConfig) -> Result<ModelVm, ModelVmError> {
        let mut memory = GuestMemory::new(Box::new(ModelKvm::new(config.profile)), config.strategy);
        let ram_size = u64::from(config.ram_pages) * PAGE_SIZE as u64;
        let bar_size = u64::from(config.bar_pages) * PAGE_SIZE as u64;
        memory.add_region(GuestRegion::new(
            "ram",
            RAM_GPA,
            ram_size,
            RegionKind::Ram,
            Coherence::Coherent,
        )?)?;
        let bar = memory.add_region(GuestRegion::new(
            "gpu-bar",
            BAR_GPA,
            bar_size,
            RegionKind::DeviceBar,
            Coherence::NoncoherentDma,
        )?)?;
        let registration = memory
            .registration(bar)
            .expect("a noncoherent region has a registration")
            .clone();
        let mut bar_config = RegionConfig::noncoherent(
            1,
            "gpu-bar",
            WireKind::Bar,
            registration.mechanism.wire(),
            BAR_GPA,
            bar_size,
        );
        bar_config.policy = config.bar_policy;
        let wire = VmConfig {
            vcpu_count: 1,
            regions: vec![
                RegionConfig::coherent(0, "ram", WireKind::Ram, RAM_GPA, ram_size),
                bar_config,
            ],
        };

        let mut sim = State::new(Config::default());
        let guest = sim.add_cpu("vcpu0", Capacity::Unbounded)?;
        let host = sim.add_cpu("host", Capacity::Unbounded)?;
        let gpu = sim.add_dma("gpu", false)?;
        let mut vm = ModelVm {
            dirty: [
                DirtyBitmap::new(config.ram_pages),
                DirtyBitmap::new(config.bar_pages),
            ],
            rng: config.seed,
            config,
            machine: Rc::new(Machine {
                sim: RefCell::new(sim),
                host,
                flushing: Cell::new(None),
                stray_flushes: Cell::new(0),
            }),
            guest,
            gpu,
            memory,
            registration,
            wire,
            buffer: Box::new([0; PAGE_SIZE]),
            logging: false,
            running: true,
            gpu_writes: 0,
        };
        vm.fill()?;
        Ok(vm)
    }

    /// How the BAR was registered.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// The cache maintenance of this VM's host CPU, in the simulator.
    pub fn cache(&self) -> ModelCache {
        ModelCache {
            machine: Rc::clone(&self.machine),
        }
    }

    /// What region `region` (0 RAM, 1 BAR) must hold: every byte's last committed write.
    pub fn truth(&self, region: u32) -> Vec<u8> {
        let r = &self.wire.regions[region as usize];
        self.machine.sim.borrow().truth(r.gpa, r.size as usize)
    }

    /// Host or device reads that returned something other than the truth, so far.
    pub fn stale_reads(&self) -> u64 {
        self.machine
            .sim
            .borrow()
            .verdict_count(Property::NoStaleRead)
    }

    /// The first stale read, explained (which write was missed, which cached line served).
    pub fn first_stale_read(&self) -> Option<String> {
        let sim = self.machine.sim.borrow();
        sim.check(Property::NoStaleRead)
            .err()
            .map(|v| sim.explain(v))
    }

    /// Flushes of bytes that were not the page last read: zero unless the engine flushed
    /// something it did not read.
    pub fn stray_flushes(&self) -> u64 {
        self.machine.stray_flushes.get()
    }

    /// Pages the GPU has written.
    pub fn gpu_writes(&self) -> u64 {
        self.gpu_writes
    }

    /// The guest writes every page once (RAM write-back, the BAR through its WC mapping);
    /// the host flushes the BAR before the device uses it, as `region` does.
    fn fill(&mut self) -> Result<(), ModelVmError> {
        let bar_type = self.bar_type();
        let regions = [
            (RAM_GPA, self.config.ram_pages, MemType::Wb),
            (BAR_GPA, self.config.bar_pages, bar_type),
        ];
        let mut sim = self.machine.sim.borrow_mut();
        for (gpa, pages, mem_type) in regions {
            for word in 0..u64::from(pages) * (PAGE_SIZE as u64 / 8) {
                let value = Value::from_u64(next(&mut self.rng), 8).expect("8 bytes");
                sim.store(self.guest, gpa + word * 8, value, mem_type)?;
            }
        }
        sim.run(&[Action::Sfence { agent: self.guest }])?;
        let bar_size = self.config.bar_pages as usize * PAGE_SIZE;
        sim.run(&host::flush_range(self.machine.host, BAR_GPA, bar_size))?;
        Ok(())
    }

    /// The guest's effective type for the BAR: WC where the registration makes KVM honor its
    /// PAT, else what KVM forces, WB.
    fn bar_type(&self) -> MemType {
        if self.registration.is_safe() {
            MemType::Wc
        } else {
            MemType::Wb
        }
    }

    /// While running: the guest rewrites a word of a RAM page, the GPU a line of a BAR page,
    /// `writes_per_read` pages in all, each marked dirty.
    fn activity(&mut self) -> Result<(), coherence::Error> {
        if !self.running {
            return Ok(());
        }
        let machine = Rc::clone(&self.machine);
        let mut sim = machine.sim.borrow_mut();
        for i in 0..self.config.writes_per_read {
            let r = next(&mut self.rng);
            if i % 2 == 0 {
                let page = (r % u64::from(self.config.ram_pages)) as u32;
                let word = (r >> 32) % (PAGE_SIZE as u64 / 8);
                let gpa = RAM_GPA + u64::from(page) * PAGE_SIZE as u64 + word * 8;
                let value = Value::from_u64(next(&mut self.rng), 8).expect("8 bytes");
                sim.store(self.guest, gpa, value, MemType::Wb)?;
                self.mark(0, page);
            } else {
                let page = (r % u64::from(self.config.bar_pages)) as u32;
                let line = (r >> 32) % (PAGE_SIZE as u64 / 64);
                let addr = BAR_GPA + u64::from(page) * PAGE_SIZE as u64 + line * 64;
                let bytes = (0..8)
                    .flat_map(|_| next(&mut self.rng).to_le_bytes())
                    .collect();
                sim.step(&Action::DmaWrite {
                    dev: self.gpu,
                    addr,
                    bytes,
                })?;
                self.gpu_writes += 1;
                self.mark(1, page);
            }
        }
        Ok(())
    }

    fn mark(&mut self, region: usize, page: u32) {
        if self.logging {
            self.dirty[region].set(page);
        }
    }

    fn region(&self, region: u32) -> Result<&RegionConfig, SourceError> {
        self.wire
            .regions
            .get(region as usize)
            .ok_or_else(|| SourceError::new(format!("no region {region}")))
    }

    fn page_gpa(&self, region: u32, index: u32) -> Result<u64, SourceError> {
        let r = self.region(region)?;
        if index >= r.pages() {
            return Err(SourceError::new(format!("no page {index} in {}", r.name)));
        }
        Ok(r.gpa + u64::from(index) * PAGE_SIZE as u64)
    }
}

impl MigrationSource for ModelVm {
    fn facts(&self) -> SourceFacts {
        SourceFacts {
            kernel_profile: self.config.profile.to_string(),
            host: "model".into(),
            vendor: match self.config.profile.vendor {
                Vendor::Intel => WireVendor::Intel,
                Vendor::Amd => WireVendor::Amd,
            },
        }
    }

    fn config(&self) -> VmConfig {
        self.wire.clone()
    }

    /// The host's loads of the page through its write-back mapping, performed now.
    fn page(&mut self, region: u32, index: u32) -> Result<&[u8], SourceError> {
        let gpa = self.page_gpa(region, index)?;
        self.activity().map_err(SourceError::new)?;
        let host = self.machine.host;
        {
            let mut sim = self.machine.sim.borrow_mut();
            for (i, word) in self.buffer.chunks_exact_mut(8).enumerate() {
                let value = sim
                    .load(host, gpa + 8 * i as u64, 8, MemType::Wb)
                    .map_err(SourceError::new)?;
                word.copy_from_slice(value.as_slice());
            }
        }
        Ok(&self.buffer[..])
    }

    /// Flushes each page's addresses in the simulator through `cache`, one page at a time
    /// and without reading it (a read here would be a host load of its own, judged like
    /// any other).
    fn flush_pages(
        &mut self,
        region: u32,
        indexes: &[u32],
        cache: &dyn CacheMaintenance,
    ) -> Result<(), SourceError> {
        for &index in indexes {
            let gpa = self.page_gpa(region, index)?;
            self.machine
                .flushing
                .set(Some((gpa, self.buffer.as_ptr() as usize)));
            cache.flush_range(&self.buffer[..]);
            self.machine.flushing.set(None);
        }
        Ok(())
    }

    fn start_dirty_log(&mut self) -> Result<(), SourceError> {
        self.logging = true;
        Ok(())
    }

    fn dirty_pages(&mut self, region: u32) -> Result<DirtyBitmap, SourceError> {
        let pages = self.region(region)?.pages();
        Ok(std::mem::replace(
            &mut self.dirty[region as usize],
            DirtyBitmap::new(pages),
        ))
    }

    fn return_dirty_pages(&mut self, region: u32, pages: &DirtyBitmap) {
        if let Some(bits) = self.dirty.get_mut(region as usize) {
            bits.union_with(pages);
        }
    }

    fn stop_dirty_log(&mut self) {
        self.logging = false;
    }

    fn pause(&mut self) -> Result<(), SourceError> {
        self.running = false;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        self.running = true;
        Ok(())
    }

    /// The model's vCPU: reset registers, Linux's PAT (entry 1 WC, the BAR's mapping) and
    /// MTRRs enabled with a WB default.
    fn vcpu_states(&mut self) -> Result<Vec<VcpuState>, SourceError> {
        Ok(vec![VcpuState {
            id: 0,
            regs: Regs::default(),
            sregs: Sregs::default(),
            msrs: vec![
                Msr {
                    index: msr::IA32_PAT,
                    value: PAT_LINUX_DEFAULT,
                },
                Msr {
                    index: msr::MTRR_DEF_TYPE,
                    value: crate::guest::program::MTRR_DEF_TYPE_WB,
                },
            ],
            xsave: Vec::new(),
        }])
    }

    /// The GPU's state: how many lines it has written.
    fn device_states(&mut self) -> Result<Vec<DeviceState>, SourceError> {
        Ok(vec![DeviceState {
            name: "gpu".into(),
            state: self.gpu_writes.to_le_bytes().to_vec(),
        }])
    }
}

/// The host CPU's cache maintenance in a [`ModelVm`]'s simulator: CLFLUSHOPT of every line
/// of the page being flushed, then SFENCE.
#[derive(Debug, Clone)]
pub struct ModelCache {
    machine: Rc<Machine>,
}

impl CacheMaintenance for ModelCache {
    /// `bytes` must be what [`ModelVm`]'s `flush_pages` hands over; anything else is counted
    /// in [`ModelVm::stray_flushes`] and not flushed.
    fn flush_range(&self, bytes: &[u8]) {
        match self.machine.flushing.get() {
            Some((gpa, at)) if at == bytes.as_ptr() as usize && bytes.len() == PAGE_SIZE => {
                let actions = host::flush_range(self.machine.host, gpa, PAGE_SIZE);
                self.machine
                    .sim
                    .borrow_mut()
                    .run(&actions)
                    .expect("a flush of a page the simulator just read is valid");
            }
            _ => self
                .machine
                .stray_flushes
                .set(self.machine.stray_flushes.get() + 1),
        }
    }
}

/// SplitMix64: the writers' choices and the bytes they write.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
