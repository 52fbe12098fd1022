//! `ncdma bench memslots`: the memslot paths of the reference kernel against the real one.
//!
//! Two measurements, both in one run:
//!
//! - **lookup**: gfn → slot on the model (`__gfn_to_memslot`) with 1, 509 and 32764 slots,
//!   for random gfns (the gfn tree, O(log n)) and for one repeated gfn (KVM's
//!   `last_used_slot` fast path). The real kernel does this lookup inside its fault path,
//!   where userspace cannot time it, so this row has no KVM column.
//! - **operations**, after `memslot_perf_test`'s shapes: set up N slots, move one slot back
//!   and forth, delete all N, at N = 509 and 32764, on the model and on `/dev/kvm`
//!   through the same [`Backend`] calls. As in `memslot_perf_test`, 512 MiB of guest memory
//!   are split evenly across the slots; the host backing is one `MAP_NORESERVE` mapping that
//!   no one touches (no vCPU runs), so only the ioctls are timed.

use std::time::Duration;

use kvm_model::KernelProfile;
use serde_json::{Value, json};
use uapi::memslot::kvm_userspace_memory_region;

use super::stats::{SplitMix64, human, median, ns_per, time};
use crate::backend::{Backend, BackendError, ModelKvm, RealKvm};
use crate::mmap::AnonMapping;

/// Guest memory split across the slots, as `memslot_perf_test` does (`MEM_SIZE`).
const GUEST_MEMORY: u64 = 512 << 20;
/// First guest-physical address used (above the 32-bit hole, as the selftest's 4 GiB).
const BASE_GPA: u64 = 1 << 32;
/// Slot counts of the lookup rows: one slot, `memslot_perf_test`'s 509 (a QEMU-sized VM's
/// limit once) and x86's maximum, `KVM_USER_MEM_SLOTS`.
pub const LOOKUP_SLOTS: [u32; 3] = [1, 509, uapi::memslot::KVM_USER_MEM_SLOTS_X86];
/// Slot counts of the operation rows.
pub const OPERATION_SLOTS: [u32; 2] = [509, uapi::memslot::KVM_USER_MEM_SLOTS_X86];
/// Lookups timed per lookup row.
const LOOKUPS: u64 = 200_000;
/// Moves timed per repetition (there and back counts two).
const MOVES: usize = 32;

/// The gfns a lookup row asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Uniformly random gfns over all slots: every lookup walks the gfn tree.
    Random,
    /// The same gfn every time: `last_used_slot` answers.
    Repeated,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::Random => "random",
            Pattern::Repeated => "repeated",
        }
    }
}

/// One lookup row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LookupRow {
    /// Slots in the address space.
    pub slots: u32,
    /// Which gfns.
    pub pattern: Pattern,
    /// Median nanoseconds per lookup.
    pub ns_per_lookup: f64,
}

/// A `memslot_perf_test` shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Create N slots (the time for all of them).
    Setup,
    /// Move one slot to a free range or back (the time for one move).
    Move,
    /// Delete all N slots (the time for all of them).
    DeleteAll,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::Setup => "setup (all slots)",
            Operation::Move => "move one slot",
            Operation::DeleteAll => "delete all slots",
        }
    }
}

/// One operation row: the model and the real kernel, same calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationRow {
    /// Slots in the VM.
    pub slots: u32,
    /// Which shape.
    pub operation: Operation,
    /// Median time on the model.
    pub model: Duration,
    /// Median time on `/dev/kvm`, when it could be opened.
    pub kvm: Option<Duration>,
}

impl OperationRow {
    /// How many times slower the real kernel was (> 1: the model is faster).
    pub fn kvm_over_model(&self) -> Option<f64> {
        self.kvm
            .map(|k| k.as_secs_f64() / self.model.as_secs_f64().max(1e-12))
    }
}

/// A memslot benchmark operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemslotBenchError {
    /// Mapping the host backing failed.
    #[error("mapping {GUEST_MEMORY:#x} bytes of host memory: {0}")]
    MapBacking(uapi::Errno),
    /// The model's gfn lookup missed gfns that lie in its slots.
    #[error("model: {missed} of {LOOKUPS} gfn lookups missed with {slots} slots")]
    LookupMissed {
        /// Slots in the address space.
        slots: u32,
        /// Lookups that found no slot.
        missed: u64,
    },
    /// Creating a VM failed.
    #[error("{backend}: {source}")]
    CreateVm {
        /// `model` or `kvm`.
        backend: &'static str,
        /// The failure.
        source: BackendError,
    },
    /// A region ioctl failed on slot `slot` of backend `backend`.
    #[error("{backend}: slot {slot}: {source}")]
    Region {
        /// `model` or `kvm`.
        backend: &'static str,
        /// The slot.
        slot: u32,
        /// The failure.
        source: BackendError,
    },
}

/// Everything `ncdma bench memslots` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct MemslotsReport {
    /// Repetitions behind each median.
    pub repetitions: usize,
    /// The lookup rows.
    pub lookups: Vec<LookupRow>,
    /// The operation rows.
    pub operations: Vec<OperationRow>,
    /// Why there is no KVM column, if there is none.
    pub kvm_missing: Option<String>,
}

/// The slots of one measurement: N equal slots from [`BASE_GPA`], backed in order by one
/// host mapping.
struct Layout {
    slots: u32,
    slot_size: u64,
}

impl Layout {
    fn new(slots: u32) -> Layout {
        let page = uapi::PAGE_SIZE;
        Layout {
            slots,
            slot_size: (GUEST_MEMORY / u64::from(slots) / page).max(1) * page,
        }
    }

    fn gpa(&self, slot: u32) -> u64 {
        BASE_GPA + u64::from(slot) * self.slot_size
    }

    /// Slot `slot` at `gpa` with `size` bytes (0 deletes), backed by its share of `backing`.
    fn region(&self, backing: &AnonMapping, slot: u32, gpa: u64, size: u64) -> Region {
        Region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: backing.addr() + u64::from(slot) * self.slot_size,
        }
    }

    /// The host mapping every slot of this layout (and of any smaller one) fits in.
    fn backing() -> Result<AnonMapping, MemslotBenchError> {
        AnonMapping::new(GUEST_MEMORY as usize).map_err(MemslotBenchError::MapBacking)
    }
}

type Region = kvm_userspace_memory_region;

/// A kernel to measure: its name in the table and how to make a fresh VM.
struct Contender {
    name: &'static str,
    make_vm: fn() -> Result<Box<dyn Backend>, BackendError>,
}

const MODEL: Contender = Contender {
    name: "model",
    make_vm: || Ok(Box::new(ModelKvm::new(KernelProfile::this_host()))),
};

const KVM: Contender = Contender {
    name: "kvm",
    make_vm: || RealKvm::open().map(|vm| Box::new(vm) as Box<dyn Backend>),
};

impl Contender {
    fn error(&self, slot: u32) -> impl Fn(BackendError) -> MemslotBenchError {
        let backend = self.name;
        move |source| MemslotBenchError::Region {
            backend,
            slot,
            source,
        }
    }

    /// One repetition of setup, moves and delete-all on a fresh VM: (setup, median move,
    /// delete-all).
    fn operations_once(
        &self,
        layout: &Layout,
        backing: &AnonMapping,
    ) -> Result<[Duration; 3], MemslotBenchError> {
        let mut vm = (self.make_vm)().map_err(|source| MemslotBenchError::CreateVm {
            backend: self.name,
            source,
        })?;
        let vm = vm.as_mut();
        let mut set = |r: &Region| {
            // SAFETY: `backing` holds every slot's host range and outlives `vm`, which is
            // dropped at the end of this function.
            unsafe { vm.set_user_memory_region(r) }.map_err(self.error(r.slot))
        };
        let (setup, created) = time(|| {
            (0..layout.slots).try_for_each(|slot| {
                set(&layout.region(backing, slot, layout.gpa(slot), layout.slot_size))
            })
        });
        created?;
        // The last slot moves past the end and back, so every move lands on a free range.
        let moved = layout.slots - 1;
        let mut moves = Vec::with_capacity(MOVES);
        for i in 0..MOVES {
            let gpa = layout.gpa(if i % 2 == 0 { layout.slots + 1 } else { moved });
            let r = layout.region(backing, moved, gpa, layout.slot_size);
            let (d, r) = time(|| set(&r));
            r?;
            moves.push(d);
        }
        let (delete, deleted) = time(|| {
            (0..layout.slots)
                .try_for_each(|slot| set(&layout.region(backing, slot, layout.gpa(slot), 0)))
        });
        deleted?;
        Ok([setup, median(moves), delete])
    }
}

/// `__gfn_to_memslot` on the model, nanoseconds per lookup (median over `reps`).
fn lookups(slots: u32, pattern: Pattern, reps: usize) -> Result<f64, MemslotBenchError> {
    let layout = Layout::new(slots);
    let backing = Layout::backing()?;
    let mut vm = kvm_model::Kvm::new(KernelProfile::this_host());
    for slot in 0..slots {
        let r = layout.region(&backing, slot, layout.gpa(slot), layout.slot_size);
        vm.set_user_memory_region(&r)
            .map_err(|e| MODEL.error(slot)(BackendError::SetUserMemoryRegion(e)))?;
    }
    let first_gfn = BASE_GPA >> uapi::PAGE_SHIFT;
    let total_pages = u64::from(slots) * (layout.slot_size >> uapi::PAGE_SHIFT);
    let mut rng = SplitMix64::new(u64::from(slots));
    let gfns: Vec<u64> = (0..LOOKUPS)
        .map(|_| match pattern {
            Pattern::Random => first_gfn + rng.below(total_pages),
            Pattern::Repeated => first_gfn + total_pages / 2,
        })
        .collect();
    let mut samples = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (d, found) = time(|| {
            gfns.iter()
                .filter(|&&gfn| vm.gfn_to_memslot(0, std::hint::black_box(gfn)).is_some())
                .count() as u64
        });
        // Every gfn lies in a slot: a miss is a wrong answer, not a fast one.
        if found != LOOKUPS {
            return Err(MemslotBenchError::LookupMissed {
                slots,
                missed: LOOKUPS - found,
            });
        }
        samples.push(d);
    }
    Ok(ns_per(median(samples), LOOKUPS))
}

/// Runs every row, the model and the real kernel interleaved repetition by repetition so
/// both see the same machine noise.
pub fn run(reps: usize) -> Result<MemslotsReport, MemslotBenchError> {
    let reps = reps.max(1);
    let mut lookup_rows = Vec::new();
    for slots in LOOKUP_SLOTS {
        for pattern in [Pattern::Random, Pattern::Repeated] {
            lookup_rows.push(LookupRow {
                slots,
                pattern,
                ns_per_lookup: lookups(slots, pattern, reps)?,
            });
        }
    }
    let kvm_missing = (KVM.make_vm)().err().map(|e| e.to_string());
    let contenders: Vec<&Contender> = match kvm_missing {
        None => vec![&MODEL, &KVM],
        Some(_) => vec![&MODEL],
    };
    let backing = Layout::backing()?;
    let mut operations = Vec::new();
    for slots in OPERATION_SLOTS {
        let layout = Layout::new(slots);
        // samples[contender][operation]
        let mut samples = vec![<[Vec<Duration>; 3]>::default(); contenders.len()];
        for _ in 0..reps {
            for (c, s) in contenders.iter().zip(samples.iter_mut()) {
                for (v, d) in s.iter_mut().zip(c.operations_once(&layout, &backing)?) {
                    v.push(d);
                }
            }
        }
        let mut medians = samples.into_iter().map(|s| s.map(median));
        let model = medians.next().unwrap_or_default();
        let kvm = medians.next();
        for (i, operation) in [Operation::Setup, Operation::Move, Operation::DeleteAll]
            .into_iter()
            .enumerate()
        {
            operations.push(OperationRow {
                slots,
                operation,
                model: model[i],
                kvm: kvm.map(|k| k[i]),
            });
        }
    }
    Ok(MemslotsReport {
        repetitions: reps,
        lookups: lookup_rows,
        operations,
        kvm_missing,
    })
}

impl MemslotsReport {
    /// The rows where the model is not faster than the real kernel (it should be on all).
    pub fn model_slower(&self) -> impl Iterator<Item = &OperationRow> {
        self.operations
            .iter()
            .filter(|r| r.kvm_over_model().is_some_and(|x| x <= 1.0))
    }

    /// The report as one JSON document (durations in nanoseconds).
    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "memslots",
            "repetitions": self.repetitions,
            "guest_memory_bytes": GUEST_MEMORY,
            "lookups": self.lookups.iter().map(|r| json!({
                "slots": r.slots,
                "pattern": r.pattern.name(),
                "ns_per_lookup": r.ns_per_lookup,
            })).collect::<Vec<_>>(),
            "operations": self.operations.iter().map(|r| json!({
                "slots": r.slots,
                "operation": r.operation.name(),
                "model_ns": r.model.as_nanos() as u64,
                "kvm_ns": r.kvm.map(|k| k.as_nanos() as u64),
                "kvm_over_model": r.kvm_over_model(),
            })).collect::<Vec<_>>(),
            "kvm_missing": self.kvm_missing,
        })
    }
}

impl std::fmt::Display for MemslotsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "memslots: medians of {} repetition(s), {} MiB of guest memory split across the slots",
            self.repetitions,
            GUEST_MEMORY >> 20
        )?;
        writeln!(f)?;
        writeln!(f, "gfn -> slot lookup on the model (__gfn_to_memslot)")?;
        writeln!(f, "{:>7}  {:<9} {:>12}", "slots", "gfns", "ns/lookup")?;
        for r in &self.lookups {
            writeln!(
                f,
                "{:>7}  {:<9} {:>12.1}",
                r.slots,
                r.pattern.name(),
                r.ns_per_lookup
            )?;
        }
        writeln!(f)?;
        writeln!(f, "memslot_perf_test shapes, same calls on both kernels")?;
        writeln!(
            f,
            "{:>7}  {:<18} {:>12} {:>12} {:>11}",
            "slots", "operation", "model", "kvm", "kvm/model"
        )?;
        for r in &self.operations {
            let kvm = r.kvm.map_or("n/a".to_string(), human);
            let ratio = r
                .kvm_over_model()
                .map_or("n/a".to_string(), |x| format!("{x:.1}x"));
            writeln!(
                f,
                "{:>7}  {:<18} {:>12} {:>12} {:>11}",
                r.slots,
                r.operation.name(),
                human(r.model),
                kvm,
                ratio
            )?;
        }
        if let Some(why) = &self.kvm_missing {
            writeln!(f, "\nno kvm column: {why}")?;
        }
        for r in self.model_slower() {
            writeln!(
                f,
                "WARNING: the model is not faster than the real kernel at {} slots, {}",
                r.slots,
                r.operation.name()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KVM_USER_MEM_SLOTS: u32 = uapi::memslot::KVM_USER_MEM_SLOTS_X86;

    #[test]
    fn guest_memory_is_split_in_whole_pages() {
        // memslot_perf_test's sizes: 512 MiB over 32764 slots is 4 pages each.
        assert_eq!(
            Layout::new(KVM_USER_MEM_SLOTS).slot_size,
            4 * uapi::PAGE_SIZE
        );
        assert_eq!(Layout::new(509).slot_size, 257 * uapi::PAGE_SIZE);
        assert_eq!(Layout::new(1).slot_size, GUEST_MEMORY);
    }

    #[test]
    fn operations_run_on_the_model_and_name_a_refused_slot() {
        let backing = Layout::backing().unwrap();
        assert!(MODEL.operations_once(&Layout::new(8), &backing).is_ok());
        // Zero-sized slots: the very first "create" is a delete of nothing.
        let empty = Layout {
            slots: 2,
            slot_size: 0,
        };
        assert_eq!(
            MODEL.operations_once(&empty, &backing),
            Err(MemslotBenchError::Region {
                backend: "model",
                slot: 0,
                source: BackendError::SetUserMemoryRegion(uapi::Errno::EINVAL),
            })
        );
    }

    #[test]
    fn lookups_find_every_gfn() {
        for pattern in [Pattern::Random, Pattern::Repeated] {
            assert!(lookups(509, pattern, 1).is_ok(), "{pattern:?}");
        }
    }
}
