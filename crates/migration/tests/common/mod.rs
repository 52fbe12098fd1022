//! Test support shared by the integration tests: a seeded RNG, a fake VM that keeps
//! writing its memory while it runs (and whose device writes only its own dirty log sees),
//! and a cache-maintenance recorder.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;

use migration::format::*;
use migration::{CacheMaintenance, DirtyBitmap, MigrationSource, SourceError};

/// SplitMix64: small, seeded, good enough to pick pages and offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Which source operation fails, and on which call (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFault {
    pub op: &'static str,
    pub nth: u32,
}

/// A VM whose guest writes `dirty_per_read` random pages for every page the migration reads
/// while it runs (a dirty rate relative to the copy rate, so runs are deterministic).
#[derive(Debug)]
pub struct FakeVm {
    pub config: VmConfig,
    pub memory: Vec<Vec<u8>>,
    pub vcpus: Vec<VcpuState>,
    pub devices: Vec<DeviceState>,
    pub dirty_per_read: f64,
    pub faults: Vec<SourceFault>,
    pub running: bool,
    pub logging: bool,
    pub pauses: u32,
    pub resumes: u32,
    pub guest_writes: u64,
    /// Offer its memory in place, with `written_since_last_check`, as a VMM does: a live sender
    /// then sends pages straight from it.
    pub in_place: bool,
    /// Pages (region id, index) the guest is taken to write while a run holding them is
    /// sent in place: `written_since_last_check` reports each once, as a write it saw.
    pub tears: Mutex<Vec<(u32, u32)>>,
    /// Writes by the CPU: what KVM's dirty log sees.
    kvm_log: Vec<DirtyBitmap>,
    /// Writes by the device (DMA into noncoherent regions): only the device model sees them.
    device_log: Vec<DirtyBitmap>,
    /// Everything `dirty_pages` ever handed out.
    pub handed_out: Vec<DirtyBitmap>,
    calls: HashMap<&'static str, u32>,
    debt: f64,
    rng: Rng,
}

pub const GIB: u64 = 1 << 30;

impl FakeVm {
    /// Three regions — "ram" (coherent), "gpu-bar" (noncoherent, memslot flag, `bar_policy`)
    /// and "scanout" (noncoherent, virtio device, skip) — two vCPUs and one device. About a
    /// third of the pages are zero.
    pub fn new(seed: u64, ram_pages: u32, bar_pages: u32, bar_policy: Policy) -> Self {
        let page = PAGE_SIZE as u64;
        let mut bar = RegionConfig::noncoherent(
            1,
            "gpu-bar",
            RegionKind::Bar,
            Registration::MemslotFlag,
            4 * GIB,
            u64::from(bar_pages) * page,
        );
        bar.policy = bar_policy;
        let mut scanout = RegionConfig::noncoherent(
            7,
            "scanout",
            RegionKind::Bar,
            Registration::VirtioDevice,
            5 * GIB,
            8 * page,
        );
        scanout.policy = Policy::Skip;
        let config = VmConfig {
            vcpu_count: 2,
            regions: vec![
                RegionConfig::coherent(0, "ram", RegionKind::Ram, 0, u64::from(ram_pages) * page),
                bar,
                scanout,
            ],
        };
        let mut rng = Rng::new(seed);
        let memory = config
            .regions
            .iter()
            .map(|r| {
                let mut bytes = vec![0u8; r.size as usize];
                for p in bytes.chunks_mut(PAGE_SIZE) {
                    if rng.below(3) != 0 {
                        rng.fill(p);
                    }
                }
                bytes
            })
            .collect();
        let logs: Vec<DirtyBitmap> = config
            .regions
            .iter()
            .map(|r| DirtyBitmap::new(r.pages()))
            .collect();
        let vcpus = (0..2).map(|id| vcpu(id, &mut rng)).collect();
        let mut blob = vec![0u8; 3000];
        rng.fill(&mut blob);
        FakeVm {
            config,
            memory,
            vcpus,
            devices: vec![DeviceState {
                name: "virtio-gpu".into(),
                state: blob,
            }],
            dirty_per_read: 0.0,
            faults: Vec::new(),
            running: true,
            logging: false,
            pauses: 0,
            resumes: 0,
            guest_writes: 0,
            in_place: false,
            tears: Mutex::new(Vec::new()),
            kvm_log: logs.clone(),
            device_log: logs.clone(),
            handed_out: logs,
            calls: HashMap::new(),
            debt: 0.0,
            rng,
        }
    }

    /// The region's position in the configuration.
    pub fn position(&self, id: u32) -> usize {
        self.config
            .regions
            .iter()
            .position(|r| r.id == id)
            .expect("a declared region")
    }

    /// Counts a call of `op` and fails it if it is an injected fault.
    fn call(&mut self, op: &'static str) -> Result<(), SourceError> {
        let n = self.calls.entry(op).or_insert(0);
        *n += 1;
        if self.faults.iter().any(|f| f.op == op && f.nth == *n) {
            return Err(SourceError::new(format!("injected failure of {op} #{n}")));
        }
        Ok(())
    }

    /// How many times `op` was called.
    pub fn calls(&self, op: &'static str) -> u32 {
        self.calls.get(op).copied().unwrap_or(0)
    }

    /// The running guest writes: CPU writes to any region, device DMA to noncoherent ones
    /// half of the time; one write in eight zeroes the page.
    fn guest_runs(&mut self) {
        if !self.running {
            return;
        }
        self.debt += self.dirty_per_read;
        while self.debt >= 1.0 {
            self.debt -= 1.0;
            let total: u64 = self
                .config
                .regions
                .iter()
                .map(|r| u64::from(r.pages()))
                .sum();
            let mut pick = self.rng.below(total);
            let mut position = 0;
            while pick >= u64::from(self.config.regions[position].pages()) {
                pick -= u64::from(self.config.regions[position].pages());
                position += 1;
            }
            let index = pick as u32;
            let at = index as usize * PAGE_SIZE;
            let page = &mut self.memory[position][at..at + PAGE_SIZE];
            if self.rng.below(8) == 0 {
                page.fill(0);
            } else {
                self.rng.fill(page);
            }
            self.guest_writes += 1;
            let by_device = self.config.regions[position].coherence == Coherence::Noncoherent
                && self.rng.below(2) == 0;
            if self.logging {
                let log = if by_device {
                    &mut self.device_log
                } else {
                    &mut self.kvm_log
                };
                log[position].set(index);
            }
        }
    }

    /// Whether every bit ever handed out by `dirty_pages` is back in the log.
    pub fn all_dirty_bits_returned(&self) -> bool {
        self.handed_out.iter().zip(&self.kvm_log).all(|(out, log)| {
            let mut merged = log.clone();
            merged.union_with(out);
            merged == *log
        })
    }

    /// The guest's memory of region `id`.
    pub fn region_memory(&self, id: u32) -> &[u8] {
        &self.memory[self.position(id)]
    }

    /// Where page `index` of region position `position` lives, for the cache recorder.
    pub fn page_addr(&self, position: usize, index: u32) -> usize {
        self.memory[position][index as usize * PAGE_SIZE..].as_ptr() as usize
    }
}

/// A vCPU in long mode with Linux's PAT (entry 1 = WC), MTRRs enabled (default WB, one
/// variable range UC), and an XSAVE area.
pub fn vcpu(id: u32, rng: &mut Rng) -> VcpuState {
    let mut xsave = vec![0u8; 4096];
    rng.fill(&mut xsave);
    let mut regs = Regs {
        rip: 0x10_0000 + u64::from(id) * 0x1000,
        rflags: 0x2,
        rsp: 0x8000,
        ..Regs::default()
    };
    regs.rax = rng.next_u64();
    let code = Segment {
        selector: 0x8,
        limit: 0xffff_ffff,
        type_: 11,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Segment::default()
    };
    let data = Segment {
        selector: 0x10,
        type_: 3,
        l: 0,
        db: 1,
        ..code
    };
    VcpuState {
        id,
        regs,
        sregs: Sregs {
            cs: code,
            ds: data,
            es: data,
            fs: data,
            gs: data,
            ss: data,
            cr0: 0x8000_0031,
            cr3: 0x9000,
            cr4: 0x20,
            efer: 0x500,
            apic_base: 0xfee0_0900,
            ..Sregs::default()
        },
        msrs: vec![
            Msr {
                index: msr::IA32_PAT,
                value: 0x0007_0406_0007_0106,
            },
            Msr {
                index: msr::MTRR_DEF_TYPE,
                value: 0xc06,
            },
            Msr {
                index: msr::MTRR_PHYS_BASE0,
                value: 0xc000_0000,
            },
            Msr {
                index: msr::MTRR_PHYS_BASE0 + 1,
                value: 0xf_c000_0800,
            },
            Msr {
                index: msr::MTRR_FIX64K_00000,
                value: 0x0606_0606_0606_0606,
            },
        ],
        xsave,
    }
}

impl MigrationSource for FakeVm {
    fn facts(&self) -> SourceFacts {
        SourceFacts {
            kernel_profile: "6.16+memslot-flag".into(),
            host: "fake".into(),
            vendor: Vendor::Intel,
        }
    }

    fn config(&self) -> VmConfig {
        self.config.clone()
    }

    fn page(&mut self, region: u32, index: u32) -> Result<&[u8], SourceError> {
        self.call("page")?;
        self.guest_runs();
        let at = index as usize * PAGE_SIZE;
        let position = self.position(region);
        Ok(&self.memory[position][at..at + PAGE_SIZE])
    }

    fn memory(&self, region: u32) -> Option<&[u8]> {
        self.in_place
            .then(|| &self.memory[self.position(region)][..])
    }

    fn written_since_last_check(
        &self,
        region: u32,
        indexes: &[u32],
    ) -> Option<Result<bool, SourceError>> {
        if !self.in_place {
            return None;
        }
        // Sent in place, pages are not read through `page`, so this guest writes nothing
        // meanwhile: the only writes seen are the tears the test asked for.
        let mut tears = self.tears.lock().unwrap();
        let torn = tears
            .iter()
            .position(|&(r, i)| r == region && indexes.contains(&i));
        if let Some(t) = torn {
            tears.remove(t);
        }
        Some(Ok(torn.is_some()))
    }

    fn start_dirty_log(&mut self) -> Result<(), SourceError> {
        self.call("start_dirty_log")?;
        self.logging = true;
        Ok(())
    }

    fn dirty_pages(&mut self, region: u32) -> Result<DirtyBitmap, SourceError> {
        self.call("dirty_pages")?;
        let position = self.position(region);
        let pages = self.config.regions[position].pages();
        let mut bits = std::mem::replace(&mut self.kvm_log[position], DirtyBitmap::new(pages));
        bits.union_with(&std::mem::replace(
            &mut self.device_log[position],
            DirtyBitmap::new(pages),
        ));
        self.handed_out[position].union_with(&bits);
        Ok(bits)
    }

    fn return_dirty_pages(&mut self, region: u32, pages: &DirtyBitmap) {
        let position = self.position(region);
        self.kvm_log[position].union_with(pages);
    }

    fn stop_dirty_log(&mut self) {
        self.logging = false;
    }

    fn pause(&mut self) -> Result<(), SourceError> {
        self.call("pause")?;
        self.running = false;
        self.pauses += 1;
        Ok(())
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        self.call("resume")?;
        self.running = true;
        self.resumes += 1;
        Ok(())
    }

    fn vcpu_states(&mut self) -> Result<Vec<VcpuState>, SourceError> {
        self.call("vcpu_states")?;
        Ok(self.vcpus.clone())
    }

    fn device_states(&mut self) -> Result<Vec<DeviceState>, SourceError> {
        self.call("device_states")?;
        Ok(self.devices.clone())
    }
}

/// Records every range flushed (start address, length).
#[derive(Debug, Default)]
pub struct RecordingCache {
    pub flushed: RefCell<Vec<(usize, usize)>>,
}

impl CacheMaintenance for RecordingCache {
    fn flush_range(&self, bytes: &[u8]) {
        self.flushed
            .borrow_mut()
            .push((bytes.as_ptr() as usize, bytes.len()));
    }
}

impl RecordingCache {
    /// How many times each start address was flushed.
    pub fn counts(&self) -> HashMap<usize, usize> {
        let mut counts = HashMap::new();
        for &(addr, len) in self.flushed.borrow().iter() {
            assert_eq!(len, PAGE_SIZE, "flushes are per page");
            *counts.entry(addr).or_insert(0) += 1;
        }
        counts
    }
}
