//! [`RegionMemory`]: a region's staging memory, zeroed and faulted in before the first page
//! arrives.
//!
//! A region's staging memory is written once per page sent, in stream order. Left to fault
//! on first write, the destination would pay one page fault (and the kernel's zeroing of
//! the page) inside the copy loop for every 4 KiB it receives: on a host where faults are
//! dear (a nested or shadow-paged one, like this project's) that alone halves the stream's
//! throughput. So the memory is an anonymous mapping of its own, made when the
//! configuration is accepted, asked for transparent huge pages (as QEMU and
//! cloud-hypervisor ask for guest RAM), and by default populated with
//! `MADV_POPULATE_WRITE` then (as QEMU's `-mem-prealloc` does): the cost is paid before the
//! source starts sending pages (the live transport says READY only afterwards), and
//! counted in the migration's total. The price is that every page is committed, zero or
//! not; [`Limits::prefault`](super::Limits::prefault) off leaves pages to fault in as they
//! arrive, for a large guest that is mostly empty. memmap2 makes the mapping and the
//! advice calls, so this crate stays free of `unsafe`.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};

use memmap2::{Advice, MmapMut};

/// Zeroed, populated memory for one region (empty for a region that carries no pages).
pub struct RegionMemory {
    /// `None` when empty: a mapping cannot have length 0.
    map: Option<MmapMut>,
}

impl RegionMemory {
    /// `len` zero bytes, populated, by as many threads as the host has CPUs (as QEMU's
    /// `prealloc-threads` do): a first touch costs the kernel's zeroing of the page, and on
    /// a nested host also the hypervisor's backing of it, which run side by side. Population
    /// is best effort: a kernel without `MADV_POPULATE_WRITE` (before 5.14) gets each page
    /// touched instead.
    pub fn populated(len: usize) -> io::Result<Self> {
        let mut memory = Self::zeroed(len)?;
        if let Some(map) = &mut memory.map {
            // Huge pages are an optimization the kernel may decline; either way the
            // memory works.
            let _ = map.advise(Advice::HugePage);
            if !populate(map) {
                for page in map.chunks_mut(4096) {
                    // Not a plain store of 0: the compiler knows fresh anonymous memory
                    // is zero and may drop it.
                    page[0] = std::hint::black_box(0);
                }
            }
        }
        Ok(memory)
    }

    /// `len` zero bytes, faulted in as they are first written: a page never written costs
    /// no memory.
    pub fn zeroed(len: usize) -> io::Result<Self> {
        Ok(RegionMemory {
            map: if len == 0 {
                None
            } else {
                Some(MmapMut::map_anon(len)?)
            },
        })
    }
}

/// Populates `map` with `MADV_POPULATE_WRITE`, a share per CPU in parallel; whether every
/// share was.
fn populate(map: &MmapMut) -> bool {
    const HUGE_PAGE: usize = 2 << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let share = map.len().div_ceil(threads).next_multiple_of(HUGE_PAGE);
    std::thread::scope(|scope| {
        let shares: Vec<_> = (0..map.len())
            .step_by(share)
            .map(|offset| {
                let len = share.min(map.len() - offset);
                scope.spawn(move || map.advise_range(Advice::PopulateWrite, offset, len).is_ok())
            })
            .collect();
        // A share whose thread could not even report is a share not known populated.
        shares.into_iter().all(|s| s.join().unwrap_or(false))
    })
}

impl Deref for RegionMemory {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for RegionMemory {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Clone for RegionMemory {
    /// A copy in a mapping of its own. Panics if that cannot be mapped, as a `Vec` clone
    /// aborts when it cannot allocate.
    fn clone(&self) -> Self {
        let mut copy = Self::zeroed(self.len()).expect("mapping memory for a clone");
        copy.copy_from_slice(self);
        copy
    }
}

impl PartialEq for RegionMemory {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl Eq for RegionMemory {}

impl fmt::Debug for RegionMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A region is up to gigabytes: its length says what a dump of it would not.
        write!(f, "RegionMemory({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_zero_writable_and_of_the_size_asked_for() {
        let sizes = [0, 1, 4095, 4096, 3 << 20, (3 << 20) + 17];
        let made = sizes.iter().flat_map(|&len| {
            [RegionMemory::zeroed(len), RegionMemory::populated(len)].map(|m| (len, m))
        });
        for (len, memory) in made {
            let mut memory = memory.unwrap();
            assert_eq!(memory.len(), len);
            assert!(memory.iter().all(|&b| b == 0), "len {len}");
            if len > 0 {
                memory[len - 1] = 7;
                let copy = memory.clone();
                assert_eq!(copy, memory);
                assert_eq!(copy[len - 1], 7);
            }
        }
    }
}
