//! `ncdma bench spte|memslots|coherence|migrate|stream`: the benchmarks of `vmm::bench` and
//! `coherence::bench`, printed as a table (or JSON) with the ratios that matter.

use clap::{Args, ValueEnum};
use coherence::bench::{BenchResult, dma_sweep, wb_hits, wc_sweep};
use migration::precopy::WriterThread;
use serde_json::json;
use vmm::bench::{memslots, migrate, spte, stream};

use crate::Output;
use crate::error::CliError;

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchName {
    /// make_spte() on a flagged vs an unflagged slot (6.16+memslot-flag, Intel), on the model.
    Spte,
    /// gfn -> slot lookup on the model; memslot setup, move and delete at 509 and 32764
    /// slots on the model and on /dev/kvm.
    Memslots,
    /// The coherence simulator's throughput, single core: WB hits, a WC stream over a
    /// 256 MiB BAR, DMA reads of it (snooping and not).
    Coherence,
    /// A running guest with 1 GiB RAM and a 256 MiB noncoherent BAR migrated over TCP
    /// loopback on /dev/kvm: coherent vs flushed throughput, the loopback ceiling, and QEMU
    /// migrating the same RAM (installed with apt if missing; --no-qemu skips it).
    Migrate,
    /// The migration stream alone (1 GiB of in-place Pages runs to a verifying reader, no
    /// VM) against a plain socket copy of the same memory over TCP loopback.
    Stream,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The benchmark to run.
    #[arg(value_enum)]
    pub name: BenchName,
    /// Repetitions behind each median [default: 31 for spte, 5 for memslots, 5 for
    /// coherence, 5 for migrate, 9 for stream].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub reps: Option<u64>,
    /// `migrate`: do not run (or install) QEMU as the peer.
    #[arg(long)]
    pub no_qemu: bool,
    /// `migrate`: which thread writes our page runs (auto, own, inline; see `ncdma migrate
    /// send --help`).
    #[arg(long, value_name = "WHICH", default_value = "auto", value_parser = super::migrate::writer_thread)]
    pub writer_thread: WriterThread,
    /// `migrate`: pages per second the guest dirties (0: as fast as it can) [default: 2000,
    /// the default guest of `ncdma migrate send`].
    #[arg(long, value_name = "PAGES")]
    pub dirty_rate: Option<u64>,
    /// `migrate`: BAR pages per second the GPU model renders (0: idle) [default: 5000].
    #[arg(long, value_name = "PAGES")]
    pub gpu_rate: Option<u64>,
}

pub(crate) fn run(args: &BenchArgs, json: bool) -> Output {
    let failed = |e: &dyn std::fmt::Display| CliError::Failed(format!("bench: {e}"));
    // At most 10 000, so the conversion is exact on every target.
    let reps = |default: usize| args.reps.map_or(default, |n| n as usize);
    let (text, doc) = match args.name {
        BenchName::Spte => {
            let r = spte::run(reps(31)).map_err(|e| failed(&e))?;
            (r.to_string(), r.to_json())
        }
        BenchName::Memslots => {
            let r = memslots::run(reps(5)).map_err(|e| failed(&e))?;
            (r.to_string(), r.to_json())
        }
        BenchName::Coherence => coherence_bench(reps(5)).map_err(|e| failed(&e))?,
        BenchName::Migrate => {
            let defaults = migrate::MigrateBenchConfig::default();
            let config = migrate::MigrateBenchConfig {
                qemu: !args.no_qemu,
                reps: reps(defaults.reps),
                writer: args.writer_thread,
                dirty_rate: args.dirty_rate.unwrap_or(defaults.dirty_rate),
                gpu_rate: args.gpu_rate.unwrap_or(defaults.gpu_rate),
                ..defaults
            };
            let r = migrate::run(&config).map_err(|e| failed(&e))?;
            (r.to_string(), r.to_json())
        }
        BenchName::Stream => {
            let r = stream::run(stream::DEFAULT_BYTES, reps(9)).map_err(|e| failed(&e))?;
            (r.to_string(), r.to_json())
        }
    };
    Ok(if json { format!("{doc}\n") } else { text })
}

/// WB hits the simulator must sustain so that sweeping a whole 256 MiB BAR stays
/// interactive (issue 4's target).
const WB_HITS_TARGET_PER_SEC: f64 = 20e6;
/// The BAR size a virtio-GPU host-visible region typically has.
const BAR_BYTES: u64 = 256 << 20;

/// The median (by elapsed time) of `reps` runs of one workload.
fn median_of(
    reps: usize,
    mut run: impl FnMut() -> Result<BenchResult, coherence::Error>,
) -> Result<BenchResult, coherence::Error> {
    let mut results = (0..reps.max(1))
        .map(|_| run())
        .collect::<Result<Vec<_>, _>>()?;
    results.sort_by_key(|r| r.elapsed);
    Ok(results[results.len() / 2])
}

fn coherence_bench(reps: usize) -> Result<(String, serde_json::Value), coherence::Error> {
    let rows = [
        median_of(reps, || wb_hits(20_000_000))?,
        median_of(reps, || wc_sweep(BAR_BYTES))?,
        median_of(reps, || dma_sweep(BAR_BYTES, false))?,
        median_of(reps, || dma_sweep(BAR_BYTES, true))?,
    ];
    let wb_rate = rows[0].accesses_per_sec();
    let mut text = format!(
        "coherence: simulated operations per second, single core, median of {reps} run(s)\n\
         {:<28} {:>12} {:>10} {:>12} {:>10}\n",
        "workload", "ops", "ms", "M ops/s", "MiB/s"
    );
    for r in &rows {
        text += &format!(
            "{:<28} {:>12} {:>10.1} {:>12.2} {:>10.0}\n",
            r.name,
            r.accesses,
            r.elapsed.as_secs_f64() * 1e3,
            r.accesses_per_sec() / 1e6,
            r.bytes_per_sec() / f64::from(1 << 20),
        );
    }
    text += &format!(
        "WB hits: {:.1} M/s = {:.2} x the 20 M/s target\n",
        wb_rate / 1e6,
        wb_rate / WB_HITS_TARGET_PER_SEC
    );
    let doc = json!({
        "bench": "coherence",
        "reps": reps,
        "rows": rows.iter().map(|r| json!({
            "workload": r.name,
            "ops": r.accesses,
            "bytes": r.bytes,
            "elapsed_ms": r.elapsed.as_secs_f64() * 1e3,
            "ops_per_sec": r.accesses_per_sec(),
            "verdicts": r.verdicts,
        })).collect::<Vec<_>>(),
        "wb_hits_per_sec": wb_rate,
        "wb_hits_target_per_sec": WB_HITS_TARGET_PER_SEC,
        "wb_hits_vs_target": wb_rate / WB_HITS_TARGET_PER_SEC,
    });
    Ok((text, doc))
}
