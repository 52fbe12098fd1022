//! [`VmImage`]: what a destination hands over once a stream verified completely, and how a
//! region's memory is handed on to the new VM (flushed first under `flush`).

use super::RegionMemory;
use crate::cache::CacheMaintenance;
use crate::format::{
    DeviceState, MAX_PAGES_PER_CHUNK, PAGE_SIZE, Policy, RegionConfig, StreamHeader, VcpuState,
    VmConfig,
};

/// A verified VM: configuration, memory, vCPUs and devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmImage {
    /// The stream's header (source facts).
    pub header: StreamHeader,
    /// vCPUs declared (and present in `vcpus`).
    pub vcpu_count: u32,
    /// The regions, in configuration order.
    pub regions: Vec<RegionImage>,
    /// vCPU states, ordered by id (`vcpus[i].id == i`).
    pub vcpus: Vec<VcpuState>,
    /// Device states, in stream order.
    pub devices: Vec<DeviceState>,
}

/// One region of a [`VmImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionImage {
    /// The region as the source declared it.
    pub config: RegionConfig,
    /// Its contents.
    pub contents: RegionContents,
}

/// A region's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionContents {
    /// Every page, `config.size` bytes.
    Memory(RegionMemory),
    /// Sent empty under the `skip` policy: the device that owns it must re-create it.
    Recreate,
}

impl RegionContents {
    /// The region's bytes, or `None` for a region to re-create.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            RegionContents::Memory(memory) => Some(memory),
            RegionContents::Recreate => None,
        }
    }
}

impl VmImage {
    /// The configuration the image was sent with.
    pub fn config(&self) -> VmConfig {
        VmConfig {
            vcpu_count: self.vcpu_count,
            regions: self.regions.iter().map(|r| r.config.clone()).collect(),
        }
    }

    /// The region with this name.
    pub fn region(&self, name: &str) -> Option<&RegionImage> {
        self.regions.iter().find(|r| r.config.name == name)
    }
}

impl RegionImage {
    /// The region's memory, to back the new VM's region as it is: the destination staged
    /// the pages in memory of the region's own (see [`RegionMemory`]), so handing it over
    /// costs no copy and no second first-touch of every page inside the guest's downtime.
    /// Under the `flush` policy every line is flushed first (a run's worth of pages per
    /// fence), because the destination wrote the pages through its cache and the device
    /// reads memory without snooping. `None`: a `skip` region, for the device to re-create.
    pub fn into_memory(self, cache: &dyn CacheMaintenance) -> Option<RegionMemory> {
        let RegionContents::Memory(memory) = self.contents else {
            return None;
        };
        if self.config.policy == Policy::Flush {
            for run in memory.chunks(MAX_PAGES_PER_CHUNK * PAGE_SIZE) {
                for page in run.chunks(PAGE_SIZE) {
                    cache.flush_lines(page);
                }
                cache.fence();
            }
        }
        Some(memory)
    }
}
