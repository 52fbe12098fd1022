//! Whether guest memory types take effect on this host, measured by a guest
//! (`ncdma probe --empirical`).
//!
//! A guest times loads from four equal buffers that differ only in the PAT entry their page
//! tables select (WB, UC, WC, UC-). The same program then runs twice more, once with
//! CR0.CD=1 and once with `MTRRdefType` = UC, and the WB buffer's loads are timed under each.
//! A UC load that is honored goes to memory every time (hundreds of cycles); a WB load from
//! a buffer that fits in the cache costs a cycle or less. So the ratio UC/WB tells whether
//! the host lets the guest's memory types reach the hardware, with no knowledge of the
//! host's internals.
//!
//! Each sample is [`LOADS`] consecutive 8-byte loads (the four buffers together fit in L2);
//! samples of the four buffers are interleaved, and each figure is the median of
//! [`REPETITIONS`] samples, in TSC ticks per load. The three runs execute the same program,
//! so the cache pressure behind each figure is the same.

use std::time::{Duration, Instant};

use memtype::MemType;
use memtype::mtrr::MTRR_DEF_TYPE_E;

use super::error::GuestError;
use super::layout::SYSTEM_END;
use super::program::{GuestMapping, GuestOp, MTRR_DEF_TYPE_WB, Program};
use super::vm::GuestVm;

/// Loads per sample.
pub const LOADS: u64 = 4096;
/// Samples per type (the median is reported).
pub const REPETITIONS: usize = 7;
/// Bytes between loads: consecutive words.
pub const STRIDE: u64 = 8;
/// Bytes per buffer.
pub const BUFFER: u64 = LOADS * STRIDE;
/// UC/WB ratio from which guest memory types count as honored (an honored UC load costs
/// hundreds of times a cached one).
pub const HONORED_RATIO: f64 = 20.0;
/// Ratio to WB under which a type counts as timing like WB (run-to-run noise on a shared
/// host stays well below it).
pub const NOISE_RATIO: f64 = 3.0;

/// The guest PAT used: the reset value with PA4 = WC, so the four types measured select
/// entries 0 (no bits), 3 (PCD|PWT), 4 (the PAT bit) and 2 (PCD).
pub const GUEST_PAT: u64 = 0x0007_0501_0007_0406;
/// The memory types measured, with the PAT entry each buffer selects in [`GUEST_PAT`].
pub const TYPES: [(MemType, u8); 4] = [
    (MemType::Wb, 0),
    (MemType::Uc, 3),
    (MemType::Wc, 4),
    (MemType::UcMinus, 2),
];

/// `IA32_MTRR_DEF_TYPE` with MTRRs enabled and UC (0) as the default type.
pub const MTRR_DEF_TYPE_UC: u64 = MTRR_DEF_TYPE_E;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One condition's median cost of a load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// What was measured: a memory type by PAT (`"WB"`, `"UC"`, `"WC"`, `"UC-"`), or a WB
    /// buffer under `"CR0.CD=1"` or `"MTRRdefType=UC"`.
    pub condition: &'static str,
    /// The PAT entry the buffer's page tables select.
    pub pat_index: u8,
    /// Median TSC ticks per load.
    pub cycles_per_load: f64,
    /// `cycles_per_load` divided by WB's.
    pub ratio_to_wb: f64,
}

/// What the measurement concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// UC loads cost at least [`HONORED_RATIO`] times WB loads: guest memory types reach
    /// the hardware.
    Honored,
    /// Every condition timed within [`NOISE_RATIO`] of WB: the guest's memory types do not
    /// take effect.
    NotHonored,
    /// Neither: some condition is slower than WB, but UC is not clearly uncached.
    Inconclusive,
}

impl Verdict {
    /// `"honored"`, `"not honored"` or `"inconclusive"`.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Honored => "honored",
            Verdict::NotHonored => "not honored",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// The measurement's numbers and verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct EmpiricalReport {
    /// The guest PAT of every run.
    pub guest_pat: u64,
    /// WB, UC, WC, UC- by PAT entry, then CR0.CD=1 and MTRRdefType=UC on a WB buffer.
    pub timings: Vec<Timing>,
    /// From the timings.
    pub verdict: Verdict,
    /// Wall time of the whole measurement, VM creation included.
    pub elapsed: Duration,
}

impl EmpiricalReport {
    /// The timing of `condition`, if measured.
    pub fn timing(&self, condition: &str) -> Option<&Timing> {
        self.timings.iter().find(|t| t.condition == condition)
    }
}

/// Measures, in one VM and three guest runs, whether guest memory types take effect.
pub fn measure_memory_types() -> Result<EmpiricalReport, GuestError> {
    let start = Instant::now();
    let mut vm = GuestVm::new(SYSTEM_END + TYPES.len() as u64 * BUFFER)?;

    let buffers: Vec<GuestMapping> = TYPES
        .iter()
        .zip(0..)
        .map(|(&(_, pat_index), i)| GuestMapping {
            gpa: SYSTEM_END + i * BUFFER,
            len: BUFFER,
            pat_index,
        })
        .collect();
    let program = timing_program(&buffers);
    let by_pat = vm.run(&program, TIMEOUT)?;
    let mut cycles: Vec<(&'static str, u8, f64)> = TYPES
        .iter()
        .enumerate()
        .map(|(i, &(t, pat_index))| (t.name(), pat_index, buffer_median(&by_pat.results, i)))
        .collect();

    let cd = Program {
        cr0_cd: true,
        ..program.clone()
    };
    let cd = vm.run(&cd, TIMEOUT)?;
    cycles.push(("CR0.CD=1", TYPES[0].1, buffer_median(&cd.results, 0)));
    let mtrr_uc = Program {
        mtrr_def_type: MTRR_DEF_TYPE_UC,
        ..program
    };
    let mtrr_uc = vm.run(&mtrr_uc, TIMEOUT)?;
    cycles.push((
        "MTRRdefType=UC",
        TYPES[0].1,
        buffer_median(&mtrr_uc.results, 0),
    ));

    let wb_cycles = cycles[0].2;
    let timings: Vec<Timing> = cycles
        .into_iter()
        .map(|(condition, pat_index, c)| Timing {
            condition,
            pat_index,
            cycles_per_load: c,
            ratio_to_wb: c / wb_cycles,
        })
        .collect();
    Ok(EmpiricalReport {
        guest_pat: GUEST_PAT,
        verdict: verdict(&timings),
        timings,
        elapsed: start.elapsed(),
    })
}

/// Fills each buffer (which also makes the host map every page before timing starts), then
/// times [`REPETITIONS`] rounds of loads over the buffers in turn; caches on, MTRRs WB.
fn timing_program(buffers: &[GuestMapping]) -> Program {
    let fills = buffers.iter().map(|b| GuestOp::Fill {
        gpa: b.gpa,
        len: b.len,
        value: b.gpa,
    });
    let rounds = (0..REPETITIONS).flat_map(|_| {
        buffers.iter().map(|b| GuestOp::TimedLoads {
            gpa: b.gpa,
            count: LOADS,
            stride: STRIDE,
        })
    });
    Program {
        mappings: buffers.to_vec(),
        guest_pat: GUEST_PAT,
        mtrr_def_type: MTRR_DEF_TYPE_WB,
        cr0_cd: false,
        ops: fills.chain(rounds).collect(),
    }
}

/// The median per load of buffer `i`'s samples in a run of [`timing_program`].
fn buffer_median(results: &[u64], i: usize) -> f64 {
    median_per_load(results.iter().skip(i).step_by(TYPES.len()))
}

/// The median of the samples, per load.
fn median_per_load<'a>(samples: impl Iterator<Item = &'a u64>) -> f64 {
    let mut s: Vec<u64> = samples.copied().collect();
    s.sort_unstable();
    s.get(s.len() / 2)
        .map_or(f64::NAN, |&m| m as f64 / LOADS as f64)
}

/// Honored if UC is at least [`HONORED_RATIO`] × WB; not honored if everything is within
/// [`NOISE_RATIO`] of WB; inconclusive otherwise.
pub fn verdict(timings: &[Timing]) -> Verdict {
    let uc = timings.iter().find(|t| t.condition == "UC");
    if uc.is_some_and(|t| t.ratio_to_wb >= HONORED_RATIO) {
        Verdict::Honored
    } else if timings.iter().all(|t| t.ratio_to_wb < NOISE_RATIO) {
        Verdict::NotHonored
    } else {
        Verdict::Inconclusive
    }
}

#[cfg(test)]
mod tests {
    use memtype::pat::Pat;

    use super::*;

    fn timings(ratios: &[(&'static str, f64)]) -> Vec<Timing> {
        ratios
            .iter()
            .map(|&(condition, r)| Timing {
                condition,
                pat_index: 0,
                cycles_per_load: 0.5 * r,
                ratio_to_wb: r,
            })
            .collect()
    }

    #[test]
    fn the_guest_pat_selects_the_types_measured() {
        let pat = Pat::new(GUEST_PAT).unwrap();
        for (t, index) in TYPES {
            assert_eq!(pat.entry(index), t);
        }
    }

    #[test]
    fn verdicts_follow_the_thresholds() {
        let honored = timings(&[("WB", 1.0), ("UC", 900.0), ("CR0.CD=1", 1.0)]);
        assert_eq!(verdict(&honored), Verdict::Honored);
        let flat = timings(&[("WB", 1.0), ("UC", 1.1), ("WC", 0.9), ("CR0.CD=1", 1.2)]);
        assert_eq!(verdict(&flat), Verdict::NotHonored);
        let cd_only = timings(&[("WB", 1.0), ("UC", 1.0), ("CR0.CD=1", 500.0)]);
        assert_eq!(verdict(&cd_only), Verdict::Inconclusive);
        let unmeasured = timings(&[("WB", f64::NAN), ("UC", f64::NAN)]);
        assert_eq!(verdict(&unmeasured), Verdict::Inconclusive);
    }

    #[test]
    fn the_median_is_per_load() {
        let samples = [9 * LOADS, LOADS, 2 * LOADS];
        assert_eq!(median_per_load(samples.iter()), 2.0);
        assert!(median_per_load([].iter()).is_nan());
    }
}
