//! [`VmImage`]: what a destination hands over once a stream verified completely, and how a
//! region of it is installed into the new VM's memory (flushing `flush` pages after writing
//! them).

use super::RegionMemory;
use crate::cache::CacheMaintenance;
use crate::format::{
    DeviceState, PAGE_SIZE, Policy, RegionConfig, StreamHeader, VcpuState, VmConfig,
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

/// What [`RegionImage::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The pages were written; `flushed` says whether each was flushed after writing.
    Copied {
        /// Pages written.
        pages: u32,
        /// Whether the `flush` policy applied.
        flushed: bool,
    },
    /// Nothing written: the caller tells the device to re-create the region.
    Recreate,
}

/// Why a region could not be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The target memory is not the region's size.
    #[error("region {region:?} is {expected} bytes, the target memory {found}")]
    SizeMismatch {
        /// The region's name.
        region: String,
        /// The region's size.
        expected: u64,
        /// The target's size.
        found: u64,
    },
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
    /// Writes the region into `target`, the new VM's memory for it. Under the `flush`
    /// policy each page's cache lines are flushed right after the page is written, so the
    /// non-snooping device reads what was written, not what memory held before.
    pub fn install(
        &self,
        target: &mut [u8],
        cache: &dyn CacheMaintenance,
    ) -> Result<Installed, InstallError> {
        let memory = match &self.contents {
            RegionContents::Recreate => return Ok(Installed::Recreate),
            RegionContents::Memory(memory) => memory,
        };
        if target.len() as u64 != self.config.size {
            return Err(InstallError::SizeMismatch {
                region: self.config.name.clone(),
                expected: self.config.size,
                found: target.len() as u64,
            });
        }
        let flushed = self.config.policy == Policy::Flush;
        for (dst, src) in target
            .chunks_exact_mut(PAGE_SIZE)
            .zip(memory.chunks_exact(PAGE_SIZE))
        {
            dst.copy_from_slice(src);
            if flushed {
                cache.flush_range(dst);
            }
        }
        Ok(Installed::Copied {
            pages: self.config.pages(),
            flushed,
        })
    }
}
