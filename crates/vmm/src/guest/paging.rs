//! Identity page tables (4-level, long mode) built in guest memory, with each mapping's
//! PAT/PCD/PWT bits in its leaf entries.
//!
//! A mapping is mapped with 2 MiB leaves wherever a whole aligned 2 MiB of it lies inside,
//! and with 4 KiB pages elsewhere. Every entry is present, writable and user-accessible (the
//! program runs at CPL3), and leaves are built with Accessed and Dirty already set so the
//! (shadow-paging) MMU has no A/D updates to emulate.

use memtype::pat::{PCD_BIT, PWT_BIT, PageLevel};

use super::layout::{LARGE_PAGE_SIZE, PAGE_SIZE, PAGE_TABLES_END, PAGE_TABLES_GPA, SYSTEM_END};
use super::program::{GuestMapping, ProgramError};

/// Present.
pub const PTE_P: u64 = 1 << 0;
/// Writable.
pub const PTE_RW: u64 = 1 << 1;
/// User-accessible.
pub const PTE_US: u64 = 1 << 2;
/// Accessed.
pub const PTE_A: u64 = 1 << 5;
/// Dirty (leaves only).
pub const PTE_D: u64 = 1 << 6;
/// Page size: this PDE is a 2 MiB leaf.
pub const PTE_PS: u64 = 1 << 7;
/// The physical-address bits of an entry (bits 51:12).
pub const PTE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const TABLE_FLAGS: u64 = PTE_P | PTE_RW | PTE_US | PTE_A;
const LEAF_FLAGS: u64 = PTE_P | PTE_RW | PTE_US | PTE_A | PTE_D;

/// The PWT, PCD and PAT bits that select PAT entry `pat_index` (0..=7) in a leaf of `level`.
pub fn pat_bits(pat_index: u8, level: PageLevel) -> u64 {
    let bit = |n: u8, pos: u32| u64::from((pat_index >> n) & 1) << pos;
    bit(0, PWT_BIT) | bit(1, PCD_BIT) | bit(2, level.pat_bit())
}

/// Builds the page tables for the system area (PAT entry `system_pat_index`) and `mappings`
/// in the page-table pool of `mem`, which holds guest memory from GPA 0. Returns the CR3
/// value (the PML4's address).
///
/// `mappings` must have passed [`Program::validate`](super::program::Program::validate):
/// page aligned, non-overlapping, above the system area.
pub fn build(
    mem: &mut [u8],
    mappings: &[GuestMapping],
    system_pat_index: u8,
) -> Result<u64, ProgramError> {
    let system = GuestMapping {
        gpa: 0,
        len: SYSTEM_END,
        pat_index: system_pat_index,
    };
    let mut tables = Builder {
        mem,
        next: PAGE_TABLES_GPA,
    };
    let pml4 = tables.alloc()?;
    for m in std::iter::once(&system).chain(mappings) {
        let end = m.gpa + m.len;
        let mut addr = m.gpa;
        while addr < end {
            if addr.is_multiple_of(LARGE_PAGE_SIZE) && end - addr >= LARGE_PAGE_SIZE {
                let pd = tables.walk(pml4, addr, 2)?;
                let leaf = addr | LEAF_FLAGS | PTE_PS | pat_bits(m.pat_index, PageLevel::Large);
                tables.set(pd, index(addr, 1), leaf);
                addr += LARGE_PAGE_SIZE;
            } else {
                let pt = tables.walk(pml4, addr, 3)?;
                let leaf = addr | LEAF_FLAGS | pat_bits(m.pat_index, PageLevel::Pte4K);
                tables.set(pt, index(addr, 0), leaf);
                addr += PAGE_SIZE;
            }
        }
    }
    Ok(pml4)
}

/// The index of `addr` in the table of `level` (0 = PT, 1 = PD, 2 = PDPT, 3 = PML4).
pub fn index(addr: u64, level: u32) -> usize {
    ((addr >> (12 + 9 * level)) & 0x1ff) as usize
}

struct Builder<'a> {
    mem: &'a mut [u8],
    next: u64,
}

impl Builder<'_> {
    /// A zeroed page from the pool.
    fn alloc(&mut self) -> Result<u64, ProgramError> {
        if self.next >= PAGE_TABLES_END {
            return Err(ProgramError::PageTablesFull {
                pages: (PAGE_TABLES_END - PAGE_TABLES_GPA) / PAGE_SIZE,
            });
        }
        let page = self.next;
        self.next += PAGE_SIZE;
        self.mem[page as usize..(page + PAGE_SIZE) as usize].fill(0);
        Ok(page)
    }

    fn get(&self, table: u64, i: usize) -> u64 {
        let at = table as usize + i * 8;
        u64::from_le_bytes(self.mem[at..at + 8].try_into().expect("8 bytes"))
    }

    fn set(&mut self, table: u64, i: usize, entry: u64) {
        let at = table as usize + i * 8;
        self.mem[at..at + 8].copy_from_slice(&entry.to_le_bytes());
    }

    /// Descends `depth` levels from the PML4 towards `addr`, making missing tables, and
    /// returns the table reached (depth 2: the PD, depth 3: the PT).
    fn walk(&mut self, pml4: u64, addr: u64, depth: u32) -> Result<u64, ProgramError> {
        let mut table = pml4;
        for level in (4 - depth..4).rev() {
            let i = index(addr, level);
            let entry = self.get(table, i);
            table = if entry & PTE_P != 0 {
                entry & PTE_ADDR_MASK
            } else {
                let next = self.alloc()?;
                self.set(table, i, next | TABLE_FLAGS);
                next
            };
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use memtype::pat::pat_index;

    use super::*;

    /// A leaf found by walking the tables: the page's address, its size, and its entry.
    #[derive(Debug)]
    struct Leaf {
        base: u64,
        size: u64,
        entry: u64,
        level: PageLevel,
    }

    fn read(mem: &[u8], table: u64, i: usize) -> u64 {
        let at = table as usize + i * 8;
        u64::from_le_bytes(mem[at..at + 8].try_into().unwrap())
    }

    /// Walks the tables as the MMU does, checking that every level on the way is present,
    /// writable and user-accessible.
    fn translate(mem: &[u8], cr3: u64, va: u64) -> Option<Leaf> {
        let mut table = cr3;
        for level in (0..4).rev() {
            let entry = read(mem, table, index(va, level));
            if entry & PTE_P == 0 {
                return None;
            }
            assert_eq!(
                entry & (PTE_RW | PTE_US),
                PTE_RW | PTE_US,
                "{va:#x} L{level}"
            );
            let leaf_size = match level {
                0 => Some(PAGE_SIZE),
                1 if entry & PTE_PS != 0 => Some(LARGE_PAGE_SIZE),
                _ => None,
            };
            if let Some(size) = leaf_size {
                let level = if size == PAGE_SIZE {
                    PageLevel::Pte4K
                } else {
                    PageLevel::Large
                };
                let frame_mask = PTE_ADDR_MASK & !(size - 1);
                return Some(Leaf {
                    base: entry & frame_mask,
                    size,
                    entry,
                    level,
                });
            }
            table = entry & PTE_ADDR_MASK;
        }
        unreachable!("level 0 is always a leaf")
    }

    #[test]
    fn pat_bits_follow_the_index_formula() {
        assert_eq!(pat_bits(0, PageLevel::Pte4K), 0);
        assert_eq!(pat_bits(3, PageLevel::Pte4K), (1 << 4) | (1 << 3));
        assert_eq!(pat_bits(4, PageLevel::Pte4K), 1 << 7);
        assert_eq!(pat_bits(4, PageLevel::Large), 1 << 12);
        for i in 0..8 {
            assert_eq!(
                pat_index(pat_bits(i, PageLevel::Pte4K), PageLevel::Pte4K),
                i
            );
            assert_eq!(
                pat_index(pat_bits(i, PageLevel::Large), PageLevel::Large),
                i
            );
        }
    }

    #[test]
    fn every_page_maps_to_itself_with_its_mappings_pat_index() {
        let mappings = [
            // 4 KiB pages: not 2 MiB aligned at either end.
            GuestMapping {
                gpa: SYSTEM_END + 0x3000,
                len: 0x5000,
                pat_index: 1,
            },
            // One 2 MiB leaf plus a 4 KiB tail.
            GuestMapping {
                gpa: 4 * LARGE_PAGE_SIZE,
                len: LARGE_PAGE_SIZE + 0x2000,
                pat_index: 5,
            },
            // Above 512 GiB, so a second PML4 entry; PAT bit set in a large leaf.
            GuestMapping {
                gpa: 1 << 40,
                len: 2 * LARGE_PAGE_SIZE,
                pat_index: 6,
            },
            GuestMapping {
                gpa: 0x4000_0000 - 0x1000,
                len: 0x2000,
                pat_index: 7,
            },
        ];
        let mut mem = vec![0u8; PAGE_TABLES_END as usize];
        let cr3 = build(&mut mem, &mappings, 0).unwrap();
        assert_eq!(cr3, PAGE_TABLES_GPA);

        let system = GuestMapping {
            gpa: 0,
            len: SYSTEM_END,
            pat_index: 0,
        };
        let mut large = 0;
        for m in std::iter::once(&system).chain(&mappings) {
            let mut va = m.gpa;
            while va < m.gpa + m.len {
                let leaf = translate(&mem, cr3, va).unwrap_or_else(|| panic!("{va:#x} unmapped"));
                assert_eq!(leaf.base, va, "identity at {va:#x}");
                assert!(va + leaf.size <= m.gpa + m.len, "{va:#x}: leaf overruns");
                assert_eq!(leaf.entry & PTE_D, PTE_D);
                assert_eq!(
                    pat_index(leaf.entry, leaf.level),
                    m.pat_index,
                    "{va:#x}: entry {:#x}",
                    leaf.entry
                );
                large += usize::from(leaf.size == LARGE_PAGE_SIZE);
                va += leaf.size;
            }
        }
        // The system area, one leaf of the second mapping, both of the third.
        assert_eq!(large, 4);
        for unmapped in [
            SYSTEM_END,
            SYSTEM_END + 0x8000,
            5 * LARGE_PAGE_SIZE + 0x2000,
            (1 << 40) - 0x1000,
            0x4000_0000 + 0x1000,
        ] {
            assert!(translate(&mem, cr3, unmapped).is_none(), "{unmapped:#x}");
        }
    }

    #[test]
    fn reports_a_full_pool() {
        // One page table per 2 MiB region touched: more regions than the pool has pages.
        let mappings: Vec<GuestMapping> = (0..300)
            .map(|i| GuestMapping {
                gpa: (i + 1) * LARGE_PAGE_SIZE,
                len: PAGE_SIZE,
                pat_index: 0,
            })
            .collect();
        let mut mem = vec![0u8; PAGE_TABLES_END as usize];
        assert_eq!(
            build(&mut mem, &mappings, 0),
            Err(ProgramError::PageTablesFull { pages: 240 })
        );
    }
}
