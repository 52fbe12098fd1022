//! A scenario's program as the real VM runs it: the steps split into guest segments (runs of
//! consecutive guest steps, each compiled into one [`Program`]) and the VMM's own steps
//! between them (device DMA and host accesses, performed through the VMM's mapping of the
//! region), and the regions placed in the real VM's guest-physical space.
//!
//! Each scenario region sits [`RELOCATION`] above its scenario address: the runtime owns the
//! first 2 MiB (descriptor tables, page tables, code, results), where scenarios put RAM.
//! A segment maps exactly the pages its steps touch, each with the PAT entry its accesses
//! use (a cache-line flush alone maps its page with entry 0); identity mappings allow one
//! entry per page, so a segment that reaches a page through two entries is refused. Accesses
//! of any width become the 8-, 4-, 2- and 1-byte operations the runtime has; a load's pieces
//! are put together again from the results.

use std::collections::BTreeMap;
use std::ops::Range as Steps;

use memtype::mtrr::MTRR_DEF_TYPE_E;
use vmm::guest::{GuestMapping, GuestOp, Program};

use super::error::RealError;
use crate::scenario::Scenario;
use crate::step::{Fence, GuestAccess, Op, Range, Step, repeated_byte};

/// How far above its scenario address each region sits in the real VM (4 GiB: a multiple of
/// 1 GiB, so huge-page alignment is kept).
pub const RELOCATION: u64 = 1 << 32;

const PAGE: u64 = 0x1000;

/// A piece of the program: guest steps run as one program, or one VMM step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Consecutive guest steps (indexes into the scenario's steps), compiled.
    Guest {
        /// The steps.
        steps: Steps<usize>,
        /// Their program.
        segment: Segment,
    },
    /// A device or host step.
    Vmm(usize),
}

/// Splits the steps into guest segments and VMM steps, in order, and compiles each segment.
pub(crate) fn plan(scenario: &Scenario) -> Result<Vec<Part>, RealError> {
    let mut split: Vec<Result<Steps<usize>, usize>> = Vec::new();
    for (i, step) in scenario.steps.iter().enumerate() {
        let guest = !matches!(step.op, Op::Dma { .. } | Op::Host { .. });
        match split.last_mut() {
            Some(Ok(range)) if guest => range.end = i + 1,
            _ if guest => split.push(Ok(i..i + 1)),
            _ => split.push(Err(i)),
        }
    }
    split
        .into_iter()
        .map(|part| match part {
            Ok(steps) => Ok(Part::Guest {
                segment: segment(scenario, steps.clone())?,
                steps,
            }),
            Err(i) => Ok(Part::Vmm(i)),
        })
        .collect()
}

/// One guest segment, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) program: Program,
    /// For each load step of the segment, in order: its index, what it reads, and the
    /// widths of the loads it became (their results follow one another).
    pub(crate) loads: Vec<(usize, Range, Vec<u8>)>,
}

impl Segment {
    /// The bytes each load step read, from the run's results (one per piece, in order).
    pub(crate) fn loaded(&self, results: &[u64]) -> Vec<(usize, Range, Vec<u8>)> {
        let mut results = results.iter();
        self.loads
            .iter()
            .map(|(step, range, widths)| {
                let bytes = widths
                    .iter()
                    .zip(results.by_ref())
                    .flat_map(|(w, v)| v.to_le_bytes().into_iter().take(usize::from(*w)))
                    .collect();
                (*step, *range, bytes)
            })
            .collect()
    }
}

/// The real guest-physical address of `range`'s first byte.
pub(crate) fn gpa(scenario: &Scenario, range: Range) -> u64 {
    scenario.regions[range.region].gpa + RELOCATION + range.offset
}

/// `(position, width)` of the 8-, 4-, 2- and 1-byte accesses covering `len` bytes.
fn pieces(len: u64) -> Vec<(u64, u8)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let width = [8u8, 4, 2, 1]
            .into_iter()
            .find(|w| u64::from(*w) <= len - pos)
            .unwrap_or(1);
        out.push((pos, width));
        pos += u64::from(width);
    }
    out
}

/// The `width` bytes at `pos` of data repeating `value`, as a little-endian word.
fn word_at(value: u64, pos: u64, width: u8) -> u64 {
    (0..u64::from(width)).fold(0, |word, i| {
        word | u64::from(repeated_byte(value, pos + i)) << (8 * i)
    })
}

/// Stores of `len` bytes of data repeating `value` from `gpa`: beyond one word, a fill loop
/// over the whole words; then single stores for the rest.
fn stores(ops: &mut Vec<GuestOp>, gpa: u64, len: u64, value: u64) {
    let from = if len > 8 { len & !7 } else { 0 };
    if from > 0 {
        ops.push(GuestOp::Fill {
            gpa,
            len: from,
            value,
        });
    }
    for (pos, width) in pieces(len - from) {
        let pos = from + pos;
        ops.push(GuestOp::Store {
            gpa: gpa + pos,
            value: word_at(value, pos, width),
            len: width,
        });
    }
}

/// Compiles the guest steps `steps` of `scenario`.
fn segment(scenario: &Scenario, steps: Steps<usize>) -> Result<Segment, RealError> {
    let mut ops = Vec::new();
    let mut loads = Vec::new();
    let mut pages = Pages::default();
    for i in steps.clone() {
        let step = &scenario.steps[i];
        let unsupported = |why| RealError::Unsupported {
            step: i + 1,
            line: step.line,
            kind: step.kind,
            why,
        };
        match step.op {
            Op::Guest {
                access,
                range,
                pat_index,
                value,
            } => {
                pages.map(step, i, scenario, range, pat_index)?;
                let gpa = gpa(scenario, range);
                match access {
                    GuestAccess::Store | GuestAccess::Fill => {
                        stores(&mut ops, gpa, range.len, value)
                    }
                    GuestAccess::NtStore if range.len == 8 => {
                        ops.push(GuestOp::NtStore { gpa, value });
                    }
                    GuestAccess::NtStore => {
                        return Err(unsupported(
                            "the runtime's non-temporal store (MOVNTI) writes 8 bytes",
                        ));
                    }
                    GuestAccess::Load => {
                        let widths = pieces(range.len)
                            .into_iter()
                            .map(|(pos, len)| {
                                ops.push(GuestOp::Load {
                                    gpa: gpa + pos,
                                    len,
                                });
                                len
                            })
                            .collect();
                        loads.push((i, range, widths));
                    }
                }
            }
            Op::GuestFlush { opt, range } => {
                pages.touch(gpa(scenario, range));
                let gpa = gpa(scenario, range);
                ops.push(if opt {
                    GuestOp::Clflushopt { gpa }
                } else {
                    GuestOp::Clflush { gpa }
                });
            }
            Op::GuestFence(Fence::Sfence) => ops.push(GuestOp::Sfence),
            Op::GuestFence(Fence::Mfence) => ops.push(GuestOp::Mfence),
            Op::GuestFence(Fence::Wbinvd) => {
                return Err(unsupported(
                    "WBINVD is a CPL0 instruction, and the runtime runs the guest at CPL3",
                ));
            }
            Op::Dma { .. } | Op::Host { .. } => unreachable!("plan() keeps VMM steps out"),
        }
    }
    // Validation admitted MTRR types only, which all have an encoding.
    let mtrr = u64::from(scenario.vm.guest_mtrr.mtrr_encoding().unwrap_or(0)) | MTRR_DEF_TYPE_E;
    Ok(Segment {
        program: Program {
            mappings: pages.mappings(),
            guest_pat: scenario.vm.guest_pat.value(),
            mtrr_def_type: mtrr,
            cr0_cd: false,
            ops,
        },
        loads,
    })
}

/// The PAT entry of every page a segment touches.
#[derive(Debug, Default)]
struct Pages {
    /// Page address → (PAT entry, the step that chose it).
    entries: BTreeMap<u64, (u8, Option<usize>)>,
}

impl Pages {
    /// Maps the pages of `range` with `pat_index`, for step number `i`.
    fn map(
        &mut self,
        step: &Step,
        i: usize,
        scenario: &Scenario,
        range: Range,
        pat_index: u8,
    ) -> Result<(), RealError> {
        let start = gpa(scenario, range);
        let first = start / PAGE * PAGE;
        for page in (first..start + range.len).step_by(PAGE as usize) {
            match self.entries.get(&page) {
                Some(&(entry, Some(by))) if entry != pat_index => {
                    return Err(RealError::PatConflict {
                        step: i + 1,
                        line: step.line,
                        region: scenario.regions[range.region].name.clone(),
                        offset: page - (start - range.offset),
                        first: by + 1,
                        entries: (entry, pat_index),
                    });
                }
                _ => {
                    self.entries.insert(page, (pat_index, Some(i)));
                }
            }
        }
        Ok(())
    }

    /// Maps the page holding `gpa` with entry 0 unless an access maps it.
    fn touch(&mut self, gpa: u64) {
        self.entries.entry(gpa / PAGE * PAGE).or_insert((0, None));
    }

    /// The pages as mappings, adjacent pages with the same entry merged.
    fn mappings(&self) -> Vec<GuestMapping> {
        let mut out: Vec<GuestMapping> = Vec::new();
        for (&page, &(pat_index, _)) in &self.entries {
            match out.last_mut() {
                Some(m) if m.gpa + m.len == page && m.pat_index == pat_index => m.len += PAGE,
                _ => out.push(GuestMapping {
                    gpa: page,
                    len: PAGE,
                    pat_index,
                }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin;

    fn scenario(name: &str) -> Scenario {
        builtin(name).unwrap().unwrap()
    }

    #[test]
    fn guest_steps_run_together_between_vmm_steps() {
        let gpu = scenario("virtio-gpu-wc-bar");
        let plan = plan(&gpu).unwrap();
        let shape: Vec<String> = plan
            .iter()
            .map(|p| match p {
                Part::Guest { steps, .. } => format!("guest {}..{}", steps.start, steps.end),
                Part::Vmm(i) => format!("vmm {i}"),
            })
            .collect();
        assert_eq!(shape, ["guest 0..3", "vmm 3", "guest 4..5"]);
        let Part::Guest { segment, .. } = &plan[0] else {
            panic!("a guest segment first")
        };
        let bar = gpu.regions[1].gpa + RELOCATION;
        // The RAM page WB (entry 0), the frame's page WC (entry 1), nothing else mapped.
        assert_eq!(
            segment.program.mappings,
            [
                GuestMapping {
                    gpa: RELOCATION + 0x1000,
                    len: PAGE,
                    pat_index: 0
                },
                GuestMapping {
                    gpa: bar,
                    len: PAGE,
                    pat_index: 1
                }
            ]
        );
        assert_eq!(segment.program.guest_pat, gpu.vm.guest_pat.value());
        assert_eq!(
            segment.program.ops[1],
            GuestOp::Fill {
                gpa: bar,
                len: 4096,
                value: 0xf0f0_0000_00ff_00ff
            }
        );
        assert!(segment.program.validate().is_ok());
    }

    #[test]
    fn odd_widths_become_runtime_widths() {
        assert_eq!(pieces(7), [(0, 4), (4, 2), (6, 1)]);
        assert_eq!(pieces(8), [(0, 8)]);
        let mut ops = Vec::new();
        stores(&mut ops, 0x1000, 19, 0x0807_0605_0403_0201);
        assert_eq!(
            ops,
            [
                GuestOp::Fill {
                    gpa: 0x1000,
                    len: 16,
                    value: 0x0807_0605_0403_0201
                },
                GuestOp::Store {
                    gpa: 0x1010,
                    value: 0x0201,
                    len: 2
                },
                GuestOp::Store {
                    gpa: 0x1012,
                    value: 0x03,
                    len: 1
                },
            ]
        );
        let segment = Segment {
            program: Program::default(),
            loads: vec![(
                4,
                Range {
                    region: 0,
                    offset: 0,
                    len: 3,
                },
                vec![2, 1],
            )],
        };
        assert_eq!(segment.loaded(&[0xbbaa, 0xcc])[0].2, [0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn what_the_runtime_cannot_do_is_refused_by_step() {
        let mut s = scenario("virtio-gpu-wc-bar");
        s.steps[2].op = Op::GuestFence(Fence::Wbinvd);
        s.steps[2].kind = crate::StepKind::GuestWbinvd;
        let err = plan(&s).unwrap_err();
        assert!(err.is_bad_input());
        assert!(
            err.to_string().starts_with("step 3 (line ") && err.to_string().contains("CPL3"),
            "{err}"
        );
        // The RAM page through a second PAT entry in the same guest run.
        let mut s = scenario("virtio-gpu-wc-bar");
        s.steps[1].op = Op::Guest {
            access: GuestAccess::Store,
            range: Range {
                region: 0,
                offset: 0x1000,
                len: 8,
            },
            pat_index: 1,
            value: 2,
        };
        let err = plan(&s).unwrap_err();
        assert!(matches!(
            err,
            RealError::PatConflict {
                step: 2,
                first: 1,
                entries: (0, 1),
                ..
            }
        ));
    }
}
