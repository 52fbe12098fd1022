//! Throughput workloads for `cargo bench` and `ncdma bench`: each builds its
//! machine, warms it up untimed, then times the loop it names and returns
//! counts with the elapsed time. Verdict tracking stays on, as in every
//! other run; the workloads are hazard-free, so `verdicts` should be 0.

use core::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

use memtype::MemType;

use crate::action::Action;
use crate::cache::Capacity;
use crate::error::Error;
use crate::ids::AgentId;
use crate::state::{Config, State};
use crate::value::Value;

/// The WB-hit loop's working set: 512 lines, an L1-sized buffer.
pub const WB_WORKING_SET: u64 = 32 * 1024;
/// Bytes per DMA transfer in [`dma_sweep`].
pub const DMA_CHUNK: usize = 4096;

/// What a workload did and how long the timed part took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchResult {
    /// Workload name.
    pub name: &'static str,
    /// Simulated operations timed.
    pub accesses: u64,
    /// Bytes those operations moved.
    pub bytes: u64,
    /// Wall time of the timed loop.
    pub elapsed: Duration,
    /// Verdicts raised (0 for a hazard-free workload).
    pub verdicts: u64,
}

impl BenchResult {
    /// Simulated operations per second.
    pub fn accesses_per_sec(&self) -> f64 {
        self.accesses as f64 / self.elapsed.as_secs_f64()
    }

    /// Simulated bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64()
    }
}

impl fmt::Display for BenchResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ops, {:.2} MiB in {:.1} ms = {:.2} M ops/s, {:.0} MiB/s, {} verdicts",
            self.name,
            self.accesses,
            self.bytes as f64 / (1 << 20) as f64,
            self.elapsed.as_secs_f64() * 1e3,
            self.accesses_per_sec() / 1e6,
            self.bytes_per_sec() / (1 << 20) as f64,
            self.verdicts,
        )
    }
}

fn machine() -> Result<(State, AgentId), Error> {
    let mut s = State::new(Config::default());
    let cpu = s.add_cpu("cpu", Capacity::Unbounded)?;
    Ok((s, cpu))
}

fn word(addr: u64) -> Value {
    Value::new(&addr.to_le_bytes()).unwrap_or(Value::zeroed(8))
}

fn result(
    name: &'static str,
    s: &State,
    accesses: u64,
    bytes: u64,
    elapsed: Duration,
) -> BenchResult {
    BenchResult {
        name,
        accesses,
        bytes,
        elapsed,
        verdicts: crate::property::Property::ALL
            .iter()
            .map(|&p| s.verdict_count(p))
            .sum(),
    }
}

/// `accesses` 8-byte WB accesses (three loads to one store) cycling over a
/// warm [`WB_WORKING_SET`]: every one a cache hit.
pub fn wb_hits(accesses: u64) -> Result<BenchResult, Error> {
    let (mut s, cpu) = machine()?;
    for addr in (0..WB_WORKING_SET).step_by(8) {
        s.store(cpu, addr, word(addr), MemType::Wb)?;
    }
    let start = Instant::now();
    let mut addr = 0;
    for i in 0..accesses {
        if i % 4 == 0 {
            s.store(cpu, addr, word(i), MemType::Wb)?;
        } else {
            black_box(s.load(cpu, addr, 8, MemType::Wb)?);
        }
        addr = (addr + 8) % WB_WORKING_SET;
    }
    let elapsed = start.elapsed();
    Ok(result("wb_hits", &s, accesses, accesses * 8, elapsed))
}

/// Streams 8-byte WC stores over `bytes` (rounded down to 8) from address
/// 0, then SFENCE: a guest filling a WC-mapped buffer.
pub fn wc_sweep(bytes: u64) -> Result<BenchResult, Error> {
    let (mut s, cpu) = machine()?;
    let start = Instant::now();
    let stores = fill_wc(&mut s, cpu, bytes)?;
    let elapsed = start.elapsed();
    Ok(result("wc_sweep", &s, stores + 1, stores * 8, elapsed))
}

fn fill_wc(s: &mut State, cpu: AgentId, bytes: u64) -> Result<u64, Error> {
    let stores = bytes / 8;
    for i in 0..stores {
        s.store(cpu, i * 8, word(i), MemType::Wc)?;
    }
    s.step(&Action::Sfence { agent: cpu })?;
    Ok(stores)
}

/// DMA reads of [`DMA_CHUNK`] bytes over `bytes` (rounded down to a chunk)
/// that a CPU filled through WC first (untimed), by a snooping or a
/// non-snooping device.
pub fn dma_sweep(bytes: u64, snooping: bool) -> Result<BenchResult, Error> {
    let (mut s, cpu) = machine()?;
    let dev = s.add_dma("dev", snooping)?;
    let transfers = bytes / DMA_CHUNK as u64;
    fill_wc(&mut s, cpu, transfers * DMA_CHUNK as u64)?;
    let mut buf = vec![0u8; DMA_CHUNK];
    let start = Instant::now();
    for t in 0..transfers {
        s.dma_read_into(dev, t * DMA_CHUNK as u64, &mut buf)?;
        black_box(&buf);
    }
    let elapsed = start.elapsed();
    let name = if snooping {
        "dma_sweep_snooping"
    } else {
        "dma_sweep"
    };
    Ok(result(
        name,
        &s,
        transfers,
        transfers * DMA_CHUNK as u64,
        elapsed,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_count_what_they_did_and_raise_no_verdicts() {
        let r = wb_hits(1000).expect("runs");
        assert_eq!((r.accesses, r.bytes, r.verdicts), (1000, 8000, 0));
        let r = wc_sweep(64 * 1024).expect("runs");
        assert_eq!((r.accesses, r.bytes, r.verdicts), (8193, 64 * 1024, 0));
        for (snooping, name) in [(false, "dma_sweep"), (true, "dma_sweep_snooping")] {
            let r = dma_sweep(64 * 1024 + 100, snooping).expect("runs");
            assert_eq!((r.accesses, r.bytes, r.verdicts), (16, 64 * 1024, 0));
            let text = r.to_string();
            assert!(
                text.starts_with(&format!("{name}: 16 ops, 0.06 MiB in ")),
                "{text}"
            );
        }
    }
}
