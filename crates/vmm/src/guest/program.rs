//! The portable guest program as data: what to map, with which memory types, and the
//! operations to run.
//!
//! A [`Program`] says nothing about how it runs. On `/dev/kvm` it is compiled to x86-64
//! ([`super::codegen`]) and run at CPL3 on a vCPU ([`super::vm`]); the same value can be
//! interpreted by a model. Addresses are guest-physical and identity-mapped, so a `gpa` in an
//! operation is also the address the guest uses.

use memtype::mtrr::MTRR_DEF_TYPE_E;
use memtype::pat::{PAT_RESET_VALUE, Pat, PatError};

use super::layout::{DONE_PORT, FAULT_PORT, IDLE_PORT, PAGE_SIZE, SYSTEM_END};

/// `IA32_MTRR_DEF_TYPE` as firmware leaves it: MTRRs enabled (E, bit 11), fixed ranges off,
/// default type WB. (KVM's reset value, 0, has E=0, which makes everything UC where guest
/// MTRRs are honored.)
pub const MTRR_DEF_TYPE_WB: u64 = MTRR_DEF_TYPE_E | 6;

/// One identity mapping of guest-physical memory with a memory type chosen by PAT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestMapping {
    /// First byte; 4 KiB aligned, at or above the system area.
    pub gpa: u64,
    /// Length in bytes; a non-zero multiple of 4 KiB.
    pub len: u64,
    /// The PAT entry (0..=7) the leaf entries select through their PAT/PCD/PWT bits.
    pub pat_index: u8,
}

/// One operation of a guest program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestOp {
    /// Stores the low `len` bytes of `value` at `gpa` (`len` is 1, 2, 4 or 8).
    Store {
        /// Target address.
        gpa: u64,
        /// Value stored (truncated to `len` bytes).
        value: u64,
        /// Access width in bytes.
        len: u8,
    },
    /// Loads `len` bytes from `gpa`, zero-extended; records the value as one result.
    Load {
        /// Source address.
        gpa: u64,
        /// Access width in bytes: 1, 2, 4 or 8.
        len: u8,
    },
    /// An 8-byte non-temporal store (`MOVNTI`).
    NtStore {
        /// Target address.
        gpa: u64,
        /// Value stored.
        value: u64,
    },
    /// `CLFLUSH` of the line holding `gpa`.
    Clflush {
        /// Any address in the line.
        gpa: u64,
    },
    /// `CLFLUSHOPT` of the line holding `gpa` (unordered: follow it with a fence).
    Clflushopt {
        /// Any address in the line.
        gpa: u64,
    },
    /// `SFENCE`.
    Sfence,
    /// `MFENCE`.
    Mfence,
    /// Stores `value` into every 8-byte word of `[gpa, gpa + len)`, in a loop.
    Fill {
        /// First byte.
        gpa: u64,
        /// Bytes; a non-zero multiple of 8.
        len: u64,
        /// The word stored.
        value: u64,
    },
    /// `count` 8-byte loads from `gpa`, `gpa + stride`, …, bracketed by serialized TSC
    /// reads; records the elapsed TSC ticks as one result.
    TimedLoads {
        /// First address.
        gpa: u64,
        /// Number of loads; non-zero.
        count: u64,
        /// Bytes between consecutive loads.
        stride: u64,
    },
    /// Keeps dirtying `[gpa, gpa + len)` one 4 KiB page at a time, as a guest whose memory
    /// changes while it is migrated: lap `n` (from 1) stores `n` into word `n % 512` of every
    /// page, and after each page the running count of pages written goes to this op's result
    /// slot, so the VMM can watch the guest make progress while it runs. Pages are written
    /// `burst` at a time; after each burst the loop waits until `burst × ticks_per_page`
    /// TSC ticks have passed since the previous one (`ticks_per_page` 0: no wait), with an
    /// `OUT` of the ticks left to [`IDLE_PORT`] so the VMM can sleep the vCPU, repeated
    /// while more than 2¹⁸ ticks (about 100 µs) are left, then spinning on the TSC for
    /// the rest. A deadline already missed, or one further away than
    /// a whole interval (the guest's TSC was moved), restarts the pacing from now instead of
    /// bursting to catch up. Ends after `laps` laps, or never with `laps == 0` (the VMM
    /// pauses and stops it).
    Dirty {
        /// First byte; 4 KiB aligned.
        gpa: u64,
        /// Bytes; a non-zero multiple of 4 KiB.
        len: u64,
        /// TSC ticks between two pages (the rate is the TSC frequency divided by this).
        ticks_per_page: u64,
        /// Pages written back to back between two waits; at least 1.
        burst: u64,
        /// Laps before the op ends; 0 for never.
        laps: u64,
    },
    /// `OUT` of `value` (32 bits) to `port`: the VMM records `(port, value)`.
    Signal {
        /// I/O port; not one the runtime reserves.
        port: u16,
        /// Value written.
        value: u32,
    },
}

impl GuestOp {
    /// Whether the op never ends (a `Dirty` loop without a lap limit).
    pub fn is_endless(&self) -> bool {
        matches!(self, GuestOp::Dirty { laps: 0, .. })
    }

    /// Whether this operation records one value in the results array.
    pub fn records_result(&self) -> bool {
        matches!(
            self,
            GuestOp::Load { .. } | GuestOp::TimedLoads { .. } | GuestOp::Dirty { .. }
        )
    }
}

/// A guest program: mappings, the vCPU's cache-control state, and the operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// Identity mappings besides the system area.
    pub mappings: Vec<GuestMapping>,
    /// `IA32_PAT` for the vCPU (set by the VMM with `KVM_SET_MSRS`).
    pub guest_pat: u64,
    /// `IA32_MTRR_DEF_TYPE` for the vCPU.
    pub mtrr_def_type: u64,
    /// Whether the program runs with CR0.CD=1 (no-fill cache mode, NW=0).
    pub cr0_cd: bool,
    /// The operations, in order.
    pub ops: Vec<GuestOp>,
}

impl Default for Program {
    /// No mappings, no operations, the PAT's reset value, MTRRs enabled with WB default,
    /// caches on.
    fn default() -> Program {
        Program {
            mappings: Vec::new(),
            guest_pat: PAT_RESET_VALUE,
            mtrr_def_type: MTRR_DEF_TYPE_WB,
            cr0_cd: false,
            ops: Vec::new(),
        }
    }
}

/// Why a program cannot be run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// `guest_pat` holds a reserved encoding (WRMSR would raise #GP).
    #[error("guest PAT {value:#018x}: {source}")]
    GuestPat {
        /// The value given.
        value: u64,
        /// Which entry is bad.
        source: PatError,
    },
    /// A mapping's address or length is not a non-zero multiple of 4 KiB.
    #[error("mapping {index} ({gpa:#x}+{len:#x}) is not a non-empty run of whole 4 KiB pages")]
    MappingNotPageAligned {
        /// Index in `mappings`.
        index: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// A mapping's `pat_index` is above 7.
    #[error("mapping {index} has PAT index {pat_index}; there are eight entries, 0..=7")]
    PatIndex {
        /// Index in `mappings`.
        index: usize,
        /// The index given.
        pat_index: u8,
    },
    /// A mapping overlaps the system area or lies beyond what 4-level paging maps.
    #[error(
        "mapping {index} ({gpa:#x}+{len:#x}) must lie in [{SYSTEM_END:#x}, {:#x})",
        MAX_GPA
    )]
    MappingOutOfRange {
        /// Index in `mappings`.
        index: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// Two mappings overlap.
    #[error("mappings {first} and {second} overlap")]
    MappingsOverlap {
        /// The earlier one.
        first: usize,
        /// The later one.
        second: usize,
    },
    /// A `Store` or `Load` width is not 1, 2, 4 or 8.
    #[error("op {index}: access width {len} is not 1, 2, 4 or 8")]
    AccessWidth {
        /// Index in `ops`.
        index: usize,
        /// The width given.
        len: u8,
    },
    /// A `Fill` length is zero or not a multiple of 8.
    #[error("op {index}: fill length {len:#x} is not a non-zero multiple of 8")]
    FillLength {
        /// Index in `ops`.
        index: usize,
        /// The length given.
        len: u64,
    },
    /// A `TimedLoads` count is zero.
    #[error("op {index}: timed loads need a non-zero count")]
    TimedLoadsCount {
        /// Index in `ops`.
        index: usize,
    },
    /// A `Dirty` range is not a non-empty run of whole 4 KiB pages.
    #[error(
        "op {index}: dirty range {gpa:#x}+{len:#x} is not a non-empty run of whole 4 KiB pages"
    )]
    DirtyRange {
        /// Index in `ops`.
        index: usize,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// A `Dirty` op's burst is 0.
    #[error("op {index}: a dirty loop writes at least one page between two waits (burst 0)")]
    DirtyBurst {
        /// Index in `ops`.
        index: usize,
    },
    /// An operation follows a `Dirty` that never ends.
    #[error("op {index} follows op {dirty}, a dirty loop with no lap limit, and would never run")]
    AfterEndlessDirty {
        /// Index of the unreachable op.
        index: usize,
        /// Index of the endless `Dirty`.
        dirty: usize,
    },
    /// A `Signal` uses a port the runtime reserves.
    #[error("op {index}: port {port:#x} is reserved by the runtime")]
    ReservedPort {
        /// Index in `ops`.
        index: usize,
        /// The port given.
        port: u16,
    },
    /// The program records more results than the results area holds.
    #[error("the program records {slots} results; at most {capacity} fit")]
    TooManyResults {
        /// Results recorded.
        slots: usize,
        /// Results that fit.
        capacity: usize,
    },
    /// The compiled code is larger than the code area.
    #[error("the compiled program is {len} bytes; at most {capacity} fit")]
    CodeTooLarge {
        /// Bytes compiled.
        len: usize,
        /// Bytes that fit.
        capacity: u64,
    },
    /// The mappings need more page-table pages than the pool holds.
    #[error("the mappings need more than {pages} page-table pages")]
    PageTablesFull {
        /// Pages in the pool.
        pages: u64,
    },
    /// The assembler rejected the program (a bug in the code generator, not in the program).
    #[error("the assembler failed on op {index:?}")]
    Assemble {
        /// The operation being assembled, or `None` for the prologue/epilogue.
        index: Option<usize>,
    },
}

/// End (exclusive) of what 4-level identity paging maps: the canonical lower half.
pub const MAX_GPA: u64 = 1 << 47;

impl Program {
    /// Checks everything the code generator and the page-table builder rely on. Operation
    /// addresses are deliberately not checked against the mappings: touching an unmapped
    /// address is a legitimate program (it faults, and the run reports the fault).
    pub fn validate(&self) -> Result<(), ProgramError> {
        Pat::new(self.guest_pat).map_err(|source| ProgramError::GuestPat {
            value: self.guest_pat,
            source,
        })?;
        for (index, m) in self.mappings.iter().enumerate() {
            validate_mapping(index, m)?;
        }
        let mut by_gpa: Vec<(usize, &GuestMapping)> = self.mappings.iter().enumerate().collect();
        by_gpa.sort_by_key(|(_, m)| m.gpa);
        for pair in by_gpa.windows(2) {
            let ((i, a), (j, b)) = (pair[0], pair[1]);
            if a.gpa + a.len > b.gpa {
                return Err(ProgramError::MappingsOverlap {
                    first: i.min(j),
                    second: i.max(j),
                });
            }
        }
        for (index, op) in self.ops.iter().enumerate() {
            validate_op(index, op)?;
        }
        if let Some(dirty) = self.ops.iter().position(GuestOp::is_endless)
            && dirty + 1 < self.ops.len()
        {
            return Err(ProgramError::AfterEndlessDirty {
                index: dirty + 1,
                dirty,
            });
        }
        Ok(())
    }

    /// How many results the program records (one per `Load`, `TimedLoads` and `Dirty`).
    pub fn result_slots(&self) -> usize {
        self.ops.iter().filter(|op| op.records_result()).count()
    }
}

fn validate_mapping(index: usize, m: &GuestMapping) -> Result<(), ProgramError> {
    if m.len == 0 || !m.gpa.is_multiple_of(PAGE_SIZE) || !m.len.is_multiple_of(PAGE_SIZE) {
        return Err(ProgramError::MappingNotPageAligned {
            index,
            gpa: m.gpa,
            len: m.len,
        });
    }
    if m.pat_index > 7 {
        return Err(ProgramError::PatIndex {
            index,
            pat_index: m.pat_index,
        });
    }
    if m.gpa < SYSTEM_END || m.gpa.checked_add(m.len).is_none_or(|end| end > MAX_GPA) {
        return Err(ProgramError::MappingOutOfRange {
            index,
            gpa: m.gpa,
            len: m.len,
        });
    }
    Ok(())
}

fn validate_op(index: usize, op: &GuestOp) -> Result<(), ProgramError> {
    match *op {
        GuestOp::Store { len, .. } | GuestOp::Load { len, .. } if !matches!(len, 1 | 2 | 4 | 8) => {
            Err(ProgramError::AccessWidth { index, len })
        }
        GuestOp::Fill { len, .. } if len == 0 || !len.is_multiple_of(8) => {
            Err(ProgramError::FillLength { index, len })
        }
        GuestOp::TimedLoads { count: 0, .. } => Err(ProgramError::TimedLoadsCount { index }),
        GuestOp::Dirty { gpa, len, .. }
            if len == 0 || !gpa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) =>
        {
            Err(ProgramError::DirtyRange { index, gpa, len })
        }
        GuestOp::Dirty { burst: 0, .. } => Err(ProgramError::DirtyBurst { index }),
        GuestOp::Signal { port, .. } if [DONE_PORT, FAULT_PORT, IDLE_PORT].contains(&port) => {
            Err(ProgramError::ReservedPort { index, port })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(gpa: u64, len: u64, pat_index: u8) -> GuestMapping {
        GuestMapping {
            gpa,
            len,
            pat_index,
        }
    }

    fn with_mappings(mappings: Vec<GuestMapping>) -> Program {
        Program {
            mappings,
            ..Program::default()
        }
    }

    #[test]
    fn accepts_adjacent_mappings_and_valid_ops() {
        let mut p = with_mappings(vec![
            mapping(SYSTEM_END, 0x1000, 0),
            mapping(SYSTEM_END + 0x1000, 0x20_0000, 7),
        ]);
        p.ops = vec![
            GuestOp::Store {
                gpa: SYSTEM_END,
                value: 1,
                len: 2,
            },
            GuestOp::Load {
                gpa: 0x1234_5678,
                len: 8,
            },
            GuestOp::TimedLoads {
                gpa: SYSTEM_END,
                count: 1,
                stride: 0,
            },
        ];
        assert_eq!(p.validate(), Ok(()));
        assert_eq!(p.result_slots(), 2);
    }

    #[test]
    fn rejects_bad_mappings() {
        let cases = [
            // Below the system area's end.
            (
                mapping(0x1000, 0x1000, 0),
                ProgramError::MappingOutOfRange {
                    index: 0,
                    gpa: 0x1000,
                    len: 0x1000,
                },
            ),
            // Past the canonical lower half.
            (
                mapping(MAX_GPA - 0x1000, 0x2000, 0),
                ProgramError::MappingOutOfRange {
                    index: 0,
                    gpa: MAX_GPA - 0x1000,
                    len: 0x2000,
                },
            ),
            // Not page aligned.
            (
                mapping(SYSTEM_END + 8, 0x1000, 0),
                ProgramError::MappingNotPageAligned {
                    index: 0,
                    gpa: SYSTEM_END + 8,
                    len: 0x1000,
                },
            ),
            // Empty.
            (
                mapping(SYSTEM_END, 0, 0),
                ProgramError::MappingNotPageAligned {
                    index: 0,
                    gpa: SYSTEM_END,
                    len: 0,
                },
            ),
            // No ninth PAT entry.
            (
                mapping(SYSTEM_END, 0x1000, 8),
                ProgramError::PatIndex {
                    index: 0,
                    pat_index: 8,
                },
            ),
        ];
        for (m, err) in cases {
            assert_eq!(with_mappings(vec![m]).validate(), Err(err), "{m:?}");
        }
        let overlapping = with_mappings(vec![
            mapping(SYSTEM_END + 0x1000, 0x1000, 0),
            mapping(SYSTEM_END, 0x2000, 1),
        ]);
        assert_eq!(
            overlapping.validate(),
            Err(ProgramError::MappingsOverlap {
                first: 0,
                second: 1
            })
        );
    }

    #[test]
    fn rejects_bad_ops_and_pat() {
        let cases = [
            (
                GuestOp::Load { gpa: 0, len: 3 },
                ProgramError::AccessWidth { index: 0, len: 3 },
            ),
            (
                GuestOp::Store {
                    gpa: 0,
                    value: 0,
                    len: 16,
                },
                ProgramError::AccessWidth { index: 0, len: 16 },
            ),
            (
                GuestOp::Fill {
                    gpa: 0,
                    len: 12,
                    value: 0,
                },
                ProgramError::FillLength { index: 0, len: 12 },
            ),
            (
                GuestOp::TimedLoads {
                    gpa: 0,
                    count: 0,
                    stride: 8,
                },
                ProgramError::TimedLoadsCount { index: 0 },
            ),
            (
                GuestOp::Signal {
                    port: DONE_PORT,
                    value: 0,
                },
                ProgramError::ReservedPort {
                    index: 0,
                    port: DONE_PORT,
                },
            ),
            (
                GuestOp::Signal {
                    port: IDLE_PORT,
                    value: 0,
                },
                ProgramError::ReservedPort {
                    index: 0,
                    port: IDLE_PORT,
                },
            ),
            (
                GuestOp::Dirty {
                    gpa: SYSTEM_END,
                    len: 0x1000,
                    ticks_per_page: 100,
                    burst: 0,
                    laps: 1,
                },
                ProgramError::DirtyBurst { index: 0 },
            ),
        ];
        for (op, err) in cases {
            let p = Program {
                ops: vec![op],
                ..Program::default()
            };
            assert_eq!(p.validate(), Err(err), "{op:?}");
        }
        let endless = GuestOp::Dirty {
            gpa: SYSTEM_END,
            len: 0x1000,
            ticks_per_page: 0,
            burst: 1,
            laps: 0,
        };
        let p = Program {
            ops: vec![endless, GuestOp::Sfence],
            ..Program::default()
        };
        assert_eq!(
            p.validate(),
            Err(ProgramError::AfterEndlessDirty { index: 1, dirty: 0 })
        );
        let unaligned = GuestOp::Dirty {
            gpa: SYSTEM_END + 8,
            len: 0x1000,
            ticks_per_page: 0,
            burst: 1,
            laps: 1,
        };
        let p = Program {
            ops: vec![unaligned, endless],
            ..Program::default()
        };
        assert_eq!(
            p.validate(),
            Err(ProgramError::DirtyRange {
                index: 0,
                gpa: SYSTEM_END + 8,
                len: 0x1000
            })
        );
        let bad_pat = Program {
            guest_pat: 0x0200,
            ..Program::default()
        };
        assert!(matches!(
            bad_pat.validate(),
            Err(ProgramError::GuestPat { value: 0x0200, .. })
        ));
    }
}
