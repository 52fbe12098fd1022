//! [`LiveVm`] as a [`MigrationSource`]: region 0 is the RAM (slot 0), region 1 the BAR; the
//! dirty log is KVM's merged with the GPU model's own (and with bits a failed migration
//! handed back); pausing stops the GPU first, then the vCPU.

use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

use migration::format::{
    DeviceState, PAGE_SIZE, RegionConfig, RegionKind, SourceFacts, VcpuState, Vendor, VmConfig,
};
use std::sync::{MutexGuard, PoisonError};

use migration::{DirtyBitmap, MigrationSource, SourceError};
use uapi::SlotId;

use super::{BAR_GPA, BAR_REGION, LiveVm, RAM_REGION, state};

/// Region ids in the stream.
const RAM_ID: u32 = 0;
const BAR_ID: u32 = 1;

impl LiveVm {
    /// The slot and the bytes of region `id`.
    fn region_memory(&self, id: u32) -> Result<(SlotId, &[u8]), SourceError> {
        match (id, &self.bar) {
            (RAM_ID, _) => Ok((SlotId { as_id: 0, id: 0 }, self.vm.memory().as_slice())),
            (BAR_ID, Some(bar)) => {
                let bytes = self.vm.region_bytes(bar.slot).expect("the BAR's own slot");
                Ok((bar.slot, bytes))
            }
            _ => Err(SourceError::new(format!("no region {id}"))),
        }
    }

    /// KVM's log of region `id` (`words`, just taken; `pages` long) with, for the BAR, the
    /// GPU model's, taken too: every write since the last take, by the vCPU or the device.
    fn with_device_writes(&self, id: u32, pages: u32, words: Vec<u64>) -> DirtyBitmap {
        let mut bits = DirtyBitmap::from_words(pages, words);
        if id == BAR_ID
            && let Some(gpu) = &self.gpu
        {
            bits.union_with(&gpu.take_dirty());
        }
        bits
    }

    /// The bits out of the logs but not handed out (a poisoned lock still holds them: every
    /// update of them is a single union or reset).
    fn held(&self) -> MutexGuard<'_, [DirtyBitmap; 2]> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The largest region sent in place. A look reads, and takes, the log of the region's whole
/// slot, once per 1 MiB run: work in proportion to the region, which for a 1 GiB region was
/// about 2 % of the sending thread's samples here (BENCHMARKS.md), against the fifth of
/// its time that sending in place saves. Past a few GiB the looks would eat the saving, so
/// a larger region is copied, with no look; a dirty ring (`KVM_CAP_DIRTY_LOG_RING`), whose
/// reads cost what was written rather than the slot's size, would lift the limit.
const IN_PLACE_MAX_BYTES: usize = 4 << 30;

/// Whether a region of `bytes` is small enough for a look per run to pay
/// ([`IN_PLACE_MAX_BYTES`]).
fn looks_pay(bytes: usize) -> bool {
    bytes <= IN_PLACE_MAX_BYTES
}

/// A hint to fetch the first cache line of `bytes` (if any) into the cache.
fn prefetch(bytes: &[u8]) {
    if let Some(first) = bytes.first() {
        // SAFETY: PREFETCHT0 (SSE, baseline on x86-64) is a hint: it never faults and
        // changes no architectural state; the address is a live borrow anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(first).cast()) };
    }
}

impl MigrationSource for LiveVm {
    fn facts(&self) -> SourceFacts {
        let platform = self.vm.backend().platform();
        let modules = if platform.modules.is_empty() {
            "kvm".to_string()
        } else {
            platform.modules.join("+")
        };
        SourceFacts {
            kernel_profile: "host".into(),
            host: truncate(format!("{modules} {}", kernel_release()), HOST_FIELD_LEN),
            vendor: match platform.vendor {
                Some(kvm_model::Vendor::Amd) => Vendor::Amd,
                _ => Vendor::Intel,
            },
        }
    }

    fn config(&self) -> VmConfig {
        let mut regions = vec![RegionConfig::coherent(
            RAM_ID,
            RAM_REGION,
            RegionKind::Ram,
            0,
            self.vm.memory().size(),
        )];
        if let Some(bar) = &self.bar {
            let size = self.vm.regions().region(bar.slot).map_or(0, |r| r.size());
            let mut config = RegionConfig::noncoherent(
                BAR_ID,
                BAR_REGION,
                RegionKind::Bar,
                bar.registration.mechanism.wire(),
                BAR_GPA,
                size,
            );
            config.policy = bar.policy;
            regions.push(config);
        }
        VmConfig {
            vcpu_count: 1,
            regions,
        }
    }

    fn page(&mut self, region: u32, index: u32) -> Result<&[u8], SourceError> {
        let (_, bytes) = self.region_memory(region)?;
        let start = index as usize * PAGE_SIZE;
        let page = bytes
            .get(start..start + PAGE_SIZE)
            .ok_or_else(|| SourceError::new(format!("region {region} has no page {index}")))?;
        // The engine asks for pages in ascending order, and the CPU's prefetchers stop at a
        // page boundary: start the next page's first line on its way from DRAM now, so the
        // copy of this one hides the miss that would otherwise open the next.
        if let Some(next) = bytes.get(start + PAGE_SIZE..) {
            prefetch(next);
        }
        Ok(page)
    }

    fn memory(&self, region: u32) -> Option<&[u8]> {
        self.region_memory(region).ok().map(|(_, bytes)| bytes)
    }

    fn start_dirty_log(&mut self) -> Result<(), SourceError> {
        self.vm.set_dirty_logging(true).map_err(SourceError::new)?;
        if let Some(gpu) = &self.gpu {
            gpu.set_logging(true);
        }
        Ok(())
    }

    fn dirty_pages(&mut self, region: u32) -> Result<DirtyBitmap, SourceError> {
        let (slot, bytes) = self.region_memory(region)?;
        let pages = (bytes.len() / PAGE_SIZE) as u32;
        // KVM's log first: if it fails, nothing has been taken yet.
        let words = self.vm.dirty_log(slot).map_err(SourceError::new)?;
        let mut dirty = self.with_device_writes(region, pages, words);
        let held = &mut self.held()[region as usize];
        dirty.union_with(held);
        *held = DirtyBitmap::new(pages);
        Ok(dirty)
    }

    fn written_since_last_check(
        &self,
        region: u32,
        indexes: &[u32],
    ) -> Option<Result<bool, SourceError>> {
        let (slot, bytes) = match self.region_memory(region) {
            Ok(found) => found,
            Err(e) => return Some(Err(e)),
        };
        if !looks_pay(bytes.len()) {
            return None;
        }
        let pages = (bytes.len() / PAGE_SIZE) as u32;
        // KVM's log can only be read by taking it: what is taken is held, for the next
        // `dirty_pages` to hand out with the rest.
        let words = match self.vm.backend().get_dirty_log_shared(slot.raw())? {
            Ok(words) => words,
            Err(e) => return Some(Err(SourceError::new(e))),
        };
        // What was taken is exactly what was written since the last look or `dirty_pages`.
        let written = self.with_device_writes(region, pages, words);
        self.held()[region as usize].union_with(&written);
        Some(Ok(indexes.iter().any(|&index| written.get(index))))
    }

    fn return_dirty_pages(&mut self, region: u32, pages: &DirtyBitmap) {
        if let Some(held) = self.held().get_mut(region as usize)
            && held.pages() == pages.pages()
        {
            held.union_with(pages);
        }
    }

    fn stop_dirty_log(&mut self) {
        if let Some(gpu) = &self.gpu {
            gpu.set_logging(false);
        }
        // Nothing to undo if this fails: the slots keep logging, which costs the guest
        // write faults but loses nothing.
        let _ = self.vm.set_dirty_logging(false);
    }

    fn pause(&mut self) -> Result<(), SourceError> {
        if let Some(gpu) = &self.gpu {
            gpu.pause();
        }
        self.vcpu.pause().map_err(SourceError::new)
    }

    fn resume(&mut self) -> Result<(), SourceError> {
        self.vcpu.resume().map_err(SourceError::new)?;
        if let Some(gpu) = &self.gpu {
            gpu.resume();
        }
        Ok(())
    }

    fn vcpu_states(&mut self) -> Result<Vec<VcpuState>, SourceError> {
        let vcpu = self.vm.vcpu();
        Ok(vec![state::save(&vcpu, 0).map_err(SourceError::new)?])
    }

    fn device_states(&mut self) -> Result<Vec<DeviceState>, SourceError> {
        Ok(self
            .gpu
            .iter()
            .map(|gpu| gpu.state().to_device_state())
            .collect())
    }
}

/// The running kernel's release (`uname -r`), for the stream header.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(unknown kernel)".into())
}

/// Bytes of the header's host field.
const HOST_FIELD_LEN: usize = 64;

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(mut s: String, max: usize) -> String {
    while s.len() > max {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_up_to_the_limit_are_sent_in_place_larger_ones_copied() {
        // The benchmark's regions (1 GiB RAM, a 256 MiB BAR) are looked at; past 4 GiB a
        // look per run would cost more than the copy it saves.
        assert!(looks_pay(256 << 20) && looks_pay(1 << 30) && looks_pay(IN_PLACE_MAX_BYTES));
        assert!(!looks_pay(IN_PLACE_MAX_BYTES + PAGE_SIZE));
    }
}
