//! `ncdma bench stream`: the migration stream alone, with no VM, against the plain socket
//! copy of the same memory, in the same run.
//!
//! `ncdma bench migrate` holds a live migration's coherent throughput to the loopback
//! ceiling, and the migration's side pays for more than its stream: the running guest's
//! dirty-logging faults, a look at the dirty log per run, and a host whose two CPUs the
//! source, the destination and the guest share. This benchmark takes the guest away, so
//! that what is left is the stream's own cost. Seeded memory (1 GiB by default, the
//! benchmark guest's RAM) is sent as the live stream sends RAM in place: 1 MiB `Pages`
//! runs of the current version (records first, an XXH3 trailer, one gathering write per
//! run, each page checked for zero), through the source's 64 KiB `BufWriter`, to a reader
//! that checks every run's checksum and reads its pages into populated memory through the
//! destination's 64 KiB `BufReader` over a [`BulkReader`]. The ceiling is
//! [`loopback_copy`] of the same memory, 1 MiB writes, into the same landing memory. The
//! two take turns going first, each after one unmeasured run; the ratio is the median of
//! the repetitions' own ratios.

use std::fmt;
use std::io::{self, BufReader, BufWriter};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use migration::destination::RegionMemory;
use migration::error::{EncodeError, StreamError};
use migration::format::{
    MAX_PAGES_PER_CHUNK, PAGE_SIZE, PageRecord, RunHeader, SourceFacts, StreamHeader, StreamKind,
    Vendor, is_zero_page,
};
use migration::stream::{PageSink, StreamReader, StreamWriter};
use migration::transport::BulkReader;
use serde_json::{Value, json};

use super::loopback::{
    DEFAULT_IO_TIMEOUT, Landing, LoopbackCeiling, LoopbackError, LoopbackOptions, connected_pair,
    loopback_copy,
};
use super::stats::{SplitMix64, median};

/// Bytes sent per repetition by default: the RAM of `ncdma bench migrate`'s guest.
pub const DEFAULT_BYTES: usize = 1 << 30;
/// Seed of the memory's contents.
const SEED: u64 = 0x6e63_646d_615f_7374;
/// The ceiling's write size: a `Pages` run's.
const WRITE_SIZE: usize = 1 << 20;

/// Why the benchmark failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamBenchError {
    /// The size is not a whole, non-zero number of runs.
    #[error("{bytes} bytes is not a whole, non-zero number of 1 MiB runs")]
    Size {
        /// The size asked for.
        bytes: usize,
    },
    /// The memory could not be mapped.
    #[error("mapping {bytes} bytes: {source}")]
    Memory {
        /// Its size.
        bytes: usize,
        /// Why.
        source: io::Error,
    },
    /// A socket step failed.
    #[error("stream copy: {step}: {source}")]
    Socket {
        /// Which step.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The sender failed to encode or write.
    #[error("stream copy: sending: {0}")]
    Send(#[from] EncodeError),
    /// The reader refused the stream (a checksum, a record, a length).
    #[error("stream copy: receiving: {0}")]
    Receive(#[from] StreamError),
    /// The receiving thread panicked.
    #[error("stream copy: the receiver thread panicked")]
    ReceiverPanicked,
    /// The plain copy failed.
    #[error(transparent)]
    Ceiling(#[from] LoopbackError),
}

/// One repetition: the stream and the plain copy of the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct StreamRep {
    /// Whether the stream went first in this repetition.
    pub stream_first: bool,
    /// The stream, from `connect` to its last run verified.
    pub stream: Duration,
    /// The plain copy.
    pub ceiling: LoopbackCeiling,
}

impl StreamRep {
    /// The stream's throughput over the plain copy's. Both moved the same memory, so the
    /// ratio of throughputs is that of times; the stream's pages-only count is used for both
    /// (its framing, 0.2 %, goes uncounted, which only ever lowers its figure).
    pub fn ratio(&self) -> f64 {
        let stream = self.ceiling.bytes as f64 / self.stream.as_secs_f64().max(1e-9);
        stream / self.ceiling.throughput()
    }
}

/// The repetitions of one run.
#[derive(Debug, Clone)]
pub struct StreamBench {
    /// Bytes per copy.
    pub bytes: usize,
    /// In order.
    pub reps: Vec<StreamRep>,
}

impl StreamBench {
    /// The median of the repetitions' stream / plain-copy ratios.
    pub fn ratio(&self) -> f64 {
        median(self.reps.iter().map(StreamRep::ratio).collect())
    }

    /// The result as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "benchmark": "stream",
            "bytes": self.bytes,
            "repetitions": self.reps.iter().map(|r| json!({
                "stream_first": r.stream_first,
                "stream_mib_s": mib_s(self.bytes, r.stream),
                "loopback_mib_s": r.ceiling.throughput() / MIB,
                "ratio": r.ratio(),
            })).collect::<Vec<_>>(),
            "stream_over_loopback": self.ratio(),
        })
    }
}

const MIB: f64 = (1 << 20) as f64;

fn mib_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / MIB
}

impl fmt::Display for StreamBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "stream: {} MiB of seeded memory sent as 1 MiB in-place Pages runs (XXH3, records \
             first) to a verifying reader, against a plain 1 MiB-write socket copy of the same \
             memory into the same populated memory, over TCP loopback, no VM; {} repetitions \
             in turns, after one unmeasured run of each",
            self.bytes >> 20,
            self.reps.len(),
        )?;
        writeln!(f, "rep  first   stream MiB/s  wire MiB/s  stream/wire")?;
        for (i, r) in self.reps.iter().enumerate() {
            writeln!(
                f,
                "{:<4} {:<7} {:>12.0} {:>11.0} {:>12.3}",
                i + 1,
                if r.stream_first { "stream" } else { "wire" },
                mib_s(self.bytes, r.stream),
                r.ceiling.throughput() / MIB,
                r.ratio(),
            )?;
        }
        writeln!(
            f,
            "stream / loopback:       {:.3}  (the median of the repetitions' ratios; compare \
             `ncdma bench migrate`'s coherent / loopback, which adds the running guest)",
            self.ratio()
        )
    }
}

/// Runs `reps` repetitions (at least one) of `bytes` (a whole number of 1 MiB runs).
pub fn run(bytes: usize, reps: usize) -> Result<StreamBench, StreamBenchError> {
    if bytes == 0 || !bytes.is_multiple_of(WRITE_SIZE) {
        return Err(StreamBenchError::Size { bytes });
    }
    let mapped = |bytes| {
        RegionMemory::populated(bytes).map_err(|source| StreamBenchError::Memory { bytes, source })
    };
    let mut memory = mapped(bytes)?;
    SplitMix64::new(SEED).fill(&mut memory);
    let mut landing = mapped(bytes)?;
    let options = LoopbackOptions {
        write_size: WRITE_SIZE,
        ..LoopbackOptions::new(bytes as u64)
    };
    let ceiling =
        |landing: &mut [u8]| loopback_copy(&options, &[&memory[..]], Landing::Memory(landing));
    // The unmeasured runs: the first connection, the first faults of the socket buffers.
    stream_copy(&memory, &mut landing)?;
    ceiling(&mut landing)?;
    let mut out = Vec::with_capacity(reps.max(1));
    for rep in 0..reps.max(1) {
        let stream_first = rep % 2 == 0;
        let (stream, wire) = if stream_first {
            let stream = stream_copy(&memory, &mut landing)?;
            (stream, ceiling(&mut landing)?)
        } else {
            let wire = ceiling(&mut landing)?;
            (stream_copy(&memory, &mut landing)?, wire)
        };
        out.push(StreamRep {
            stream_first,
            stream,
            ceiling: wire,
        });
    }
    Ok(StreamBench { bytes, reps: out })
}

/// Sends `memory` as a stream of in-place runs over a fresh loopback connection to a reader
/// that verifies each run into `landing` (as long as `memory`); the time from `connect` to
/// the last run verified.
pub fn stream_copy(memory: &[u8], landing: &mut [u8]) -> Result<Duration, StreamBenchError> {
    let socket = |step| move |source| StreamBenchError::Socket { step, source };
    let (sender, receiver, start) = connected_pair(DEFAULT_IO_TIMEOUT, socket)?;
    let runs = memory.len().div_ceil(MAX_PAGES_PER_CHUNK * PAGE_SIZE);
    let (sent, received) = thread::scope(|scope| {
        let receiving = scope.spawn(move || receive(&receiver, runs, landing));
        let sent = send(&sender, memory);
        // The reader sees EOF if the sender stopped early, instead of waiting out a timeout.
        drop(sender);
        (sent, receiving.join())
    });
    let received = received.map_err(|_| StreamBenchError::ReceiverPanicked)?;
    sent?;
    Ok(received?.saturating_duration_since(start))
}

/// Writes `memory` as runs of up to 256 pages, each page checked for zero as the source
/// checks a page it sends in place.
fn send(stream: &TcpStream, memory: &[u8]) -> Result<(), StreamBenchError> {
    let facts = SourceFacts {
        kernel_profile: "host".into(),
        host: "bench stream".into(),
        vendor: Vendor::Amd,
    };
    let out = BufWriter::with_capacity(1 << 16, stream);
    let mut writer = StreamWriter::new(out, &StreamHeader::new(StreamKind::Live, facts))?;
    let pages = (memory.len() / PAGE_SIZE) as u32;
    let mut records = Vec::with_capacity(MAX_PAGES_PER_CHUNK);
    for first in (0..pages).step_by(MAX_PAGES_PER_CHUNK) {
        records.clear();
        records.extend(
            (first..pages.min(first + MAX_PAGES_PER_CHUNK as u32)).map(|index| {
                let at = index as usize * PAGE_SIZE;
                PageRecord {
                    index,
                    data: !is_zero_page(&memory[at..at + PAGE_SIZE]),
                }
            }),
        );
        let header = RunHeader {
            region: 0,
            round: 0,
            count: records.len() as u32,
        };
        writer.write_pages_in_place(header, &records, memory)?;
    }
    writer.flush()?;
    Ok(())
}

/// Reads `runs` runs into `landing`; when the last one verified.
fn receive(
    stream: &TcpStream,
    runs: usize,
    landing: &mut [u8],
) -> Result<Instant, StreamBenchError> {
    let buffered = BufReader::with_capacity(64 << 10, BulkReader::new(stream));
    let mut reader = StreamReader::open(buffered)?;
    let mut sink = Landed { memory: landing };
    for _ in 0..runs {
        if let Some(chunk) = reader.next_chunk_into(&mut sink)? {
            return Err(StreamBenchError::Receive(StreamError::OutOfOrder {
                found: chunk.kind(),
                expected: "a Pages run",
            }));
        }
    }
    Ok(Instant::now())
}

/// Lands each run's pages at their index, as a destination's staging memory does.
struct Landed<'a> {
    memory: &'a mut [u8],
}

impl PageSink for Landed<'_> {
    fn begin_run(&mut self, header: RunHeader, records: &[PageRecord]) -> Result<(), StreamError> {
        let pages = (self.memory.len() / PAGE_SIZE) as u32;
        match records.iter().find(|r| r.index >= pages) {
            Some(r) => Err(StreamError::PageOutOfRange {
                region: header.region,
                index: r.index,
                pages,
            }),
            None => Ok(()),
        }
    }

    fn pages_mut(&mut self, first: u32, count: usize) -> Result<&mut [u8], StreamError> {
        let pages = (self.memory.len() / PAGE_SIZE) as u32;
        let at = first as usize * PAGE_SIZE;
        self.memory
            .get_mut(at..at + count * PAGE_SIZE)
            .ok_or(StreamError::PageOutOfRange {
                region: 0,
                index: first,
                pages,
            })
    }

    fn end_run(&mut self, records: &[PageRecord]) {
        // A zero page came as a marker: its place is zeroed, as a destination's is.
        for record in records.iter().filter(|r| !r.data) {
            let at = record.index as usize * PAGE_SIZE;
            self.memory[at..at + PAGE_SIZE].fill(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_lands_every_byte_where_it_was() {
        let mut rng = SplitMix64::new(1);
        let mut memory = vec![0u8; 3 << 20];
        // A zero page in the middle goes as a marker; the landing must still read zero.
        for (i, page) in memory.chunks_mut(PAGE_SIZE).enumerate() {
            if i != 300 {
                page.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
            }
        }
        let mut landing = vec![0xa5u8; memory.len()];
        let elapsed = stream_copy(&memory, &mut landing).unwrap();
        assert!(elapsed > Duration::ZERO);
        assert!(landing == memory, "every page at its index");
    }

    #[test]
    fn a_short_run_reports_one_ratio_per_repetition_in_turns() {
        let bench = run(4 << 20, 3).unwrap();
        assert_eq!(bench.reps.len(), 3);
        let firsts: Vec<bool> = bench.reps.iter().map(|r| r.stream_first).collect();
        assert_eq!(firsts, [true, false, true]);
        for rep in &bench.reps {
            assert_eq!(rep.ceiling.bytes, 4 << 20);
            assert!(rep.ratio() > 0.0 && rep.ratio().is_finite());
        }
        let doc = bench.to_json();
        assert_eq!(doc["repetitions"].as_array().unwrap().len(), 3);
        assert!(bench.to_string().contains("stream / loopback:"));
    }

    #[test]
    fn a_size_that_is_not_whole_runs_is_refused() {
        for bytes in [0, (1 << 20) + 4096] {
            assert!(matches!(
                run(bytes, 1),
                Err(StreamBenchError::Size { bytes: b }) if b == bytes
            ));
        }
    }
}
