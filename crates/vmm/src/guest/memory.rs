//! The guest's main memory (slot 0, from GPA 0): an [`AnonMapping`] the VMM reads and
//! writes between runs.

use migration::destination::RegionMemory;
use uapi::Errno;

use crate::mmap::AnonMapping;

/// Guest RAM at GPA 0, backed by an anonymous mapping of the VMM.
#[derive(Debug)]
pub struct GuestMemory {
    map: AnonMapping,
    size: u64,
}

impl GuestMemory {
    /// Maps `size` bytes (a multiple of the page size).
    pub fn new(size: u64) -> Result<GuestMemory, Errno> {
        let map = AnonMapping::for_guest(usize::try_from(size).map_err(|_| Errno::EINVAL)?)?;
        Ok(GuestMemory { map, size })
    }

    /// Guest RAM backed by a migration destination's staging memory, as it is (see
    /// [`AnonMapping::adopt`]).
    pub fn adopt(memory: RegionMemory) -> Result<GuestMemory, Errno> {
        let size = memory.len() as u64;
        Ok(GuestMemory {
            map: AnonMapping::adopt(memory)?,
            size,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The host address of GPA 0, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn host_addr(&self) -> u64 {
        self.map.addr()
    }

    /// All of guest memory. The vCPU writes it only inside `KVM_RUN`, which runs on the
    /// thread that holds the `GuestVm` mutably, so no run can overlap this borrow.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `size` readable bytes owned by `self.map` for as long as
        // `self` lives; the guest cannot write it concurrently (see above).
        unsafe { std::slice::from_raw_parts(self.map.addr() as *const u8, self.size as usize) }
    }

    /// All of guest memory, writable (same reasoning as [`GuestMemory::as_slice`]).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only live borrow, and the
        // mapping is writable.
        unsafe { std::slice::from_raw_parts_mut(self.map.addr() as *mut u8, self.size as usize) }
    }

    /// Copies `bytes` to `gpa`, or `None` if they would not fit.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> Option<()> {
        let start = usize::try_from(gpa).ok()?;
        let end = start.checked_add(bytes.len())?;
        self.as_mut_slice()
            .get_mut(start..end)?
            .copy_from_slice(bytes);
        Some(())
    }

    /// Reads the little-endian `u64` at `gpa`, or `None` past the end of memory.
    pub fn read_u64(&self, gpa: u64) -> Option<u64> {
        let start = usize::try_from(gpa).ok()?;
        let bytes = self.as_slice().get(start..start.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back_and_bounds_are_kept() {
        let mut mem = GuestMemory::new(0x2000).unwrap();
        assert_eq!(mem.write(0x1ff8, &7u64.to_le_bytes()), Some(()));
        assert_eq!(mem.read_u64(0x1ff8), Some(7));
        assert_eq!(mem.read_u64(0x1ffc), None);
        assert_eq!(mem.write(0x1ffc, &[0; 8]), None);
        assert_eq!(mem.write(u64::MAX, &[0]), None);
    }
}
