//! Simulator throughput: WB hits, a WC streaming sweep and DMA sweeps, timed
//! by `coherence::bench` (its timed loops exclude setup) and reported by
//! criterion as simulated accesses per second.

use std::time::Duration;

use coherence::Error;
use coherence::bench::{self, BenchResult, DMA_CHUNK};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const WB_ACCESSES: u64 = 1 << 20;
const SWEEP_BYTES: u64 = 16 << 20;

/// Runs `work` `iters` times and sums the timed parts.
fn timed(iters: u64, work: impl Fn() -> Result<BenchResult, Error>) -> Duration {
    (0..iters)
        .map(|_| work().map_or(Duration::MAX, |r| r.elapsed))
        .sum()
}

fn coherence(c: &mut Criterion) {
    let mut g = c.benchmark_group("coherence");
    g.sample_size(10);

    g.throughput(Throughput::Elements(WB_ACCESSES));
    g.bench_function("wb_hits", |b| {
        b.iter_custom(|iters| timed(iters, || bench::wb_hits(WB_ACCESSES)))
    });

    g.throughput(Throughput::Elements(SWEEP_BYTES / 8));
    g.bench_function("wc_sweep_16MiB", |b| {
        b.iter_custom(|iters| timed(iters, || bench::wc_sweep(SWEEP_BYTES)))
    });

    g.throughput(Throughput::Elements(SWEEP_BYTES / DMA_CHUNK as u64));
    for snooping in [false, true] {
        let name = if snooping {
            "dma_sweep_snooping_16MiB"
        } else {
            "dma_sweep_16MiB"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| timed(iters, || bench::dma_sweep(SWEEP_BYTES, snooping)))
        });
    }
    g.finish();

    // The 256 MiB BAR sweep the design must keep interactive, run once.
    for r in [
        bench::wc_sweep(256 << 20),
        bench::dma_sweep(256 << 20, false),
    ] {
        match r {
            Ok(r) => println!("{r}"),
            Err(e) => println!("256 MiB sweep failed: {e}"),
        }
    }
}

criterion_group!(benches, coherence);
criterion_main!(benches);
