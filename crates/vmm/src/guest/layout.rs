//! Where the runtime puts things in guest-physical memory.
//!
//! The first 2 MiB of guest memory (slot 0 starts at GPA 0) is the *system area*: descriptor
//! tables, exception stubs, page tables, the program's code, its results and its stack. It is
//! identity-mapped by one 2 MiB leaf, user-accessible (everything the program touches runs at
//! CPL3) and writable. A program's own [`GuestMapping`](super::program::GuestMapping)s must
//! lie above it.
//!
//! ```text
//! 0x00_0000  (unused)
//! 0x00_1000  GDT                     descriptors::gdt()
//! 0x00_2000  IDT, 32 gates           exceptions::idt()
//! 0x00_3000  TSS + I/O bitmap        descriptors::tss()
//! 0x00_6000  exception stubs         exceptions::stubs()
//! 0x00_8000  exception stack (IST1), top at 0x01_0000
//! 0x01_0000  page-table pool, 240 pages
//! 0x10_0000  program code, 512 KiB
//! 0x18_0000  results, 448 KiB (57 344 u64 slots)
//! 0x1f_0000  program stack, top at 0x20_0000
//! ```

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// The global descriptor table.
pub const GDT_GPA: u64 = 0x1000;
/// The interrupt descriptor table.
pub const IDT_GPA: u64 = 0x2000;
/// The 64-bit task-state segment, followed by its I/O permission bitmap.
pub const TSS_GPA: u64 = 0x3000;
/// The exception stubs the IDT points at.
pub const STUBS_GPA: u64 = 0x6000;
/// Bytes reserved for the exception stubs.
pub const STUBS_SIZE: u64 = 0x2000;
/// Top of the stack exceptions are delivered on (IST1), separate from the program's stack so
/// that a fault on the program's stack is still reported.
pub const EXCEPTION_STACK_TOP: u64 = 0x1_0000;
/// First page of the page-table pool.
pub const PAGE_TABLES_GPA: u64 = 0x1_0000;
/// End (exclusive) of the page-table pool.
pub const PAGE_TABLES_END: u64 = 0x10_0000;
/// The program's first instruction.
pub const CODE_GPA: u64 = 0x10_0000;
/// Bytes reserved for the program's code.
pub const CODE_SIZE: u64 = 0x8_0000;
/// The results array: one `u64` per recorded value, in program order.
pub const RESULTS_GPA: u64 = 0x18_0000;
/// How many `u64` results fit.
pub const RESULTS_CAPACITY: usize = 0x7_0000 / 8;
/// Top of the program's stack (RSP at entry).
pub const STACK_TOP: u64 = 0x20_0000;
/// End (exclusive) of the system area; program mappings start at or above it.
pub const SYSTEM_END: u64 = 0x20_0000;

/// The port the program writes to when it has finished.
pub const DONE_PORT: u16 = 0xf4;
/// The port an exception stub writes the vector to.
pub const FAULT_PORT: u16 = 0xf5;
/// The port a paced `Dirty` loop writes the TSC ticks it is about to wait to: the VMM
/// sleeps the vCPU thread for about that long instead of letting the guest spin (a guest
/// kernel would HLT until its TSC-deadline timer; CPL3 code has no HLT).
pub const IDLE_PORT: u16 = 0xf6;
