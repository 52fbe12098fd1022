//! Host memory for memslots: an anonymous private mapping owned by one value and unmapped
//! when it is dropped.
//!
//! Mappings are made with `MAP_NORESERVE` (or adopted from a migration destination, which
//! made and populated them) and never touched by this module, so a large one
//! (the replay pool, the benchmarks' shared backing) costs address space, not memory. Only
//! guest memory, which is filled, asks for huge pages ([`AnonMapping::for_guest`]): sparse
//! use of a huge-page mapping would cost 2 MiB a touch.

use migration::destination::RegionMemory;
use uapi::Errno;

/// An anonymous, private, read-write mapping.
#[derive(Debug)]
pub struct AnonMapping {
    addr: *mut libc::c_void,
    len: usize,
    /// Who unmaps it: this value, or the staging memory it adopted.
    owner: Owner,
}

#[derive(Debug)]
enum Owner {
    /// Mapped by [`AnonMapping::new`]; unmapped on drop.
    Mapped,
    /// A destination's staging memory, adopted as it is; held only to be unmapped when it
    /// drops.
    Adopted { _memory: RegionMemory },
}

impl AnonMapping {
    /// Maps `len` bytes (rounded up to whole pages by the kernel), page aligned.
    pub fn new(len: usize) -> Result<AnonMapping, Errno> {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses cannot alias any
        // existing memory; the result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Errno(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        Ok(AnonMapping {
            addr,
            len,
            owner: Owner::Mapped,
        })
    }

    /// Takes over a migration destination's staging memory (an anonymous mapping of its
    /// own, page aligned, already populated), so a restored guest runs on the very pages
    /// the stream was received into. Empty memory is `EINVAL`, as for [`AnonMapping::new`].
    pub fn adopt(mut memory: RegionMemory) -> Result<AnonMapping, Errno> {
        if memory.is_empty() {
            return Err(Errno::EINVAL);
        }
        let (addr, len) = (memory.as_mut_ptr().cast(), memory.len());
        Ok(AnonMapping {
            addr,
            len,
            owner: Owner::Adopted { _memory: memory },
        })
    }

    /// [`AnonMapping::new`] for guest memory, asking for transparent huge pages (as QEMU
    /// and cloud-hypervisor do for guest RAM): a 1 GiB guest then costs 512 faults to fill
    /// instead of 262 144, and the VMM's sweeps over it (a migration reads every page) miss
    /// the TLB once per 2 MiB. Best effort: where the kernel declines, pages are 4 KiB.
    pub fn for_guest(len: usize) -> Result<AnonMapping, Errno> {
        let map = AnonMapping::new(len)?;
        // SAFETY: the range is exactly this value's own mapping; MADV_HUGEPAGE changes how
        // later faults are served, never the contents. Its failure is ignored on purpose.
        unsafe { libc::madvise(map.addr, map.len, libc::MADV_HUGEPAGE) };
        Ok(map)
    }

    /// Whether the memory was adopted with contents ([`AnonMapping::adopt`]) rather than
    /// mapped fresh.
    pub fn is_adopted(&self) -> bool {
        matches!(self.owner, Owner::Adopted { .. })
    }

    /// The host virtual address of the first byte, as `userspace_addr` takes it.
    pub fn addr(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        if self.is_adopted() {
            // The adopted memory unmaps itself when the field drops.
            return;
        }
        // SAFETY: `addr`/`len` are exactly what `mmap` returned and was given, and this value
        // is the mapping's only owner. A memslot still using the range would be the caller's
        // broken contract (`Backend::set_user_memory_region`'s `# Safety`), not this one's.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_page_aligned_memory_and_refuses_nothing_to_map() {
        let m = AnonMapping::new(1 << 30).unwrap();
        assert_eq!(m.addr() % uapi::PAGE_SIZE, 0);
        assert_eq!(AnonMapping::new(0).unwrap_err(), Errno::EINVAL);
    }

    #[test]
    fn adopted_memory_is_the_same_pages_and_empty_memory_is_refused() {
        let mut memory = RegionMemory::zeroed(3 * 4096).unwrap();
        memory[4096] = 7;
        let at = memory.as_ptr() as u64;
        let m = AnonMapping::adopt(memory).unwrap();
        assert!(m.is_adopted() && !AnonMapping::new(4096).unwrap().is_adopted());
        assert_eq!(m.addr(), at);
        assert_eq!(m.addr() % uapi::PAGE_SIZE, 0);
        assert_eq!(
            AnonMapping::adopt(RegionMemory::zeroed(0).unwrap()).unwrap_err(),
            Errno::EINVAL
        );
    }
}
