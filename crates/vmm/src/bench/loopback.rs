//! The loopback ceiling of `ncdma bench migrate`: a plain socket copy of a given number of
//! bytes over TCP on 127.0.0.1, timed in the same run as the migration it bounds
//! (`benchmarks.md`). No migration over loopback can beat it, so "coherent throughput ≥ 0.8 ×
//! the ceiling" says how much of the wire our stream leaves unused.
//!
//! The copy is shaped like our migration transport (`migration::transport`), so the ceiling
//! measures the same socket traffic with the encoding taken out:
//!
//! - the sender writes [`DEFAULT_WRITE_SIZE`] = 64 KiB per `write`: the migration encodes
//!   4 KiB pages into a 64 KiB `BufWriter`, so what reaches the socket is one 64 KiB write per
//!   full buffer; `TCP_NODELAY` is set as there;
//! - the receiver reads [`DEFAULT_READ_SIZE`] = 1 MiB at a time, the size of a `Pages`
//!   payload, which the destination reads past its small `BufReader` straight into its
//!   staging memory, and reads it as the destination does, woken once per read when its
//!   bytes are queued ([`BulkReader`]): with plain reads, woken once per segment, the
//!   copy ran slower than the migration it should bound in some repetitions;
//! - the bytes are read from memory as the migration reads guest memory: the benchmark
//!   hands [`loopback_copy`] the migrated guest's own RAM and BAR, so the ceiling pays the
//!   same trip to DRAM for every byte (a small buffer sent over and over would be served
//!   from cache, a copy no migration of a 1 GiB guest can make); [`loopback_ceiling`] sends
//!   a buffer of seeded pseudo-random bytes, not zeros, as guest pages are;
//! - and they land where a destination must put them ([`Landing::Memory`]): in order, in
//!   memory of the stream's size, populated before the clock starts as the destination's
//!   staging memory is before it says READY. Read over and over into one 1 MiB buffer
//!   ([`Landing::Discard`]) they would stay in cache, the same copy no migration can make
//!   on the sending side; the benchmark reports that figure too, for context.
//!
//! The clock starts before `connect` and stops when the receiver has read the last byte.
//! Both sockets carry read/write timeouts, so a stuck copy ends with an error by itself.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use migration::transport::BulkReader;

use super::stats::SplitMix64;

/// Bytes per `write` on the sending socket: what a full 64 KiB `BufWriter` hands the kernel.
pub const DEFAULT_WRITE_SIZE: usize = 1 << 16;
/// Bytes per `read` on the receiving socket: a `Pages` payload.
pub const DEFAULT_READ_SIZE: usize = 1 << 20;
/// How long either side may block on one read or write before the copy is abandoned.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Seed of the buffer's contents, so every run sends the same bytes.
const SEED: u64 = 0x6e63_646d_615f_6c62;

/// What to copy and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackOptions {
    /// Bytes to send.
    pub bytes: u64,
    /// Bytes per `write` (at least 1).
    pub write_size: usize,
    /// Bytes per `read` (at least 1).
    pub read_size: usize,
    /// Timeout of each socket operation.
    pub io_timeout: Duration,
}

impl LoopbackOptions {
    /// `bytes` with the migration's buffer sizes and the default timeout.
    pub fn new(bytes: u64) -> LoopbackOptions {
        LoopbackOptions {
            bytes,
            write_size: DEFAULT_WRITE_SIZE,
            read_size: DEFAULT_READ_SIZE,
            io_timeout: DEFAULT_IO_TIMEOUT,
        }
    }
}

/// One measured copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopbackCeiling {
    /// Bytes the receiver read (always the bytes asked for: anything else is an error).
    pub bytes: u64,
    /// From before `connect` to the receiver reading the last byte.
    pub elapsed: Duration,
}

impl LoopbackCeiling {
    /// Bytes per second; zero when nothing was timed.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.bytes as f64 / secs
        } else {
            0.0
        }
    }
}

/// Why the copy failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    /// A write or read size of zero.
    #[error("the write and read sizes must be at least 1 byte (got {write_size} and {read_size})")]
    ZeroSize {
        /// The write size asked for.
        write_size: usize,
        /// The read size asked for.
        read_size: usize,
    },
    /// A socket operation failed.
    #[error("{step}: {source}")]
    Socket {
        /// What was being done: "bind", "connect", "accept", "configure", "send", "receive".
        step: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The sender closed the connection before the receiver had every byte.
    #[error("the receiver got {received} of {expected} bytes before the connection closed")]
    Short {
        /// Bytes sent.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// More bytes arrived than were sent (cannot happen on a private loopback socket).
    #[error("the receiver got {received} bytes, more than the {expected} sent")]
    Excess {
        /// Bytes sent.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The receiver thread panicked.
    #[error("the receiver thread panicked")]
    ReceiverPanicked,
}

fn socket(step: &'static str) -> impl FnOnce(io::Error) -> LoopbackError {
    move |source| LoopbackError::Socket { step, source }
}

/// Where the receiver puts the bytes it reads.
#[derive(Debug)]
pub enum Landing<'a> {
    /// Into one `read_size` buffer, over and over: the bytes stay in cache.
    Discard,
    /// Into this memory, in order, from its start again if the copy is longer (an empty
    /// slice is [`Landing::Discard`]).
    Memory(&'a mut [u8]),
}

/// Copies `options.bytes` bytes over a fresh loopback connection, discarding them, and
/// times it.
///
/// # Example
///
/// ```
/// use vmm::bench::loopback::{LoopbackOptions, loopback_ceiling};
///
/// let ceiling = loopback_ceiling(&LoopbackOptions::new(1 << 20))?;
/// assert_eq!(ceiling.bytes, 1 << 20);
/// println!("loopback: {:.0} MiB/s", ceiling.throughput() / (1 << 20) as f64);
/// # Ok::<(), vmm::bench::loopback::LoopbackError>(())
/// ```
pub fn loopback_ceiling(options: &LoopbackOptions) -> Result<LoopbackCeiling, LoopbackError> {
    loopback_copy(
        options,
        &[&pseudo_random(options.write_size)],
        Landing::Discard,
    )
}

/// The copy of [`loopback_ceiling`], its bytes taken from `memory` and put where `landing`
/// says. The sender writes each buffer in turn, `write_size` bytes per write (a write never
/// spans two buffers), from the first again when all were sent. Empty buffers are passed
/// over; with no bytes at all to send from, the seeded buffer is used.
///
/// ```
/// use vmm::bench::loopback::{Landing, LoopbackOptions, loopback_copy};
///
/// let source = vec![7u8; 3 << 20];
/// let mut destination = vec![0u8; 3 << 20];
/// let options = LoopbackOptions::new(source.len() as u64);
/// loopback_copy(&options, &[&source], Landing::Memory(&mut destination))?;
/// assert_eq!(destination, source);
/// # Ok::<(), vmm::bench::loopback::LoopbackError>(())
/// ```
pub fn loopback_copy(
    options: &LoopbackOptions,
    memory: &[&[u8]],
    landing: Landing<'_>,
) -> Result<LoopbackCeiling, LoopbackError> {
    if options.write_size == 0 || options.read_size == 0 {
        return Err(LoopbackError::ZeroSize {
            write_size: options.write_size,
            read_size: options.read_size,
        });
    }
    let seeded;
    let mut memory: Vec<&[u8]> = memory.iter().copied().filter(|m| !m.is_empty()).collect();
    if memory.is_empty() {
        seeded = pseudo_random(options.write_size);
        memory.push(&seeded);
    }
    let (sender, receiver, start) = connected_pair(options.io_timeout, socket)?;
    let (expected, read_size) = (options.bytes, options.read_size);
    let (sent, received) = thread::scope(|scope| {
        let receiving = scope.spawn(move || receive(receiver, expected, read_size, landing));
        let sent = send(&sender, &memory, options.write_size, options.bytes);
        // Closing our half lets the receiver see EOF whether or not the send succeeded, so
        // the join below cannot wait for a timeout.
        drop(sender);
        let received = receiving.join();
        (sent, received)
    });
    let received = received.map_err(|_| LoopbackError::ReceiverPanicked)?;
    sent?;
    let last_byte = received?;
    Ok(LoopbackCeiling {
        bytes: options.bytes,
        elapsed: last_byte.saturating_duration_since(start),
    })
}

/// A fresh loopback connection as (sender, receiver, the instant before `connect`), both
/// ends with `io_timeout` on reads and writes and `TCP_NODELAY` (as the migration's source
/// sets it), so that a stuck copy ends with an error by itself. `error` names the step
/// that failed ("bind", "connect", "accept", "configure").
pub(crate) fn connected_pair<E, F: FnOnce(io::Error) -> E>(
    io_timeout: Duration,
    error: impl Fn(&'static str) -> F,
) -> Result<(TcpStream, TcpStream, Instant), E> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(error("bind"))?;
    let addr = listener.local_addr().map_err(error("bind"))?;
    let start = Instant::now();
    let sender = TcpStream::connect(addr).map_err(error("connect"))?;
    // The connection is already queued on the listener, so this accept returns at once;
    // accepting here rather than in the receiver thread means no thread can be left waiting
    // for a connection that never comes.
    let (receiver, _) = listener.accept().map_err(error("accept"))?;
    for stream in [&sender, &receiver] {
        stream
            .set_read_timeout(Some(io_timeout))
            .and_then(|()| stream.set_write_timeout(Some(io_timeout)))
            .and_then(|()| stream.set_nodelay(true))
            .map_err(error("configure"))?;
    }
    Ok((sender, receiver, start))
}

/// Writes `bytes` bytes taken from `memory` (non-empty buffers, cycled), `write_size` at a
/// time.
fn send(
    mut stream: &TcpStream,
    memory: &[&[u8]],
    write_size: usize,
    bytes: u64,
) -> Result<(), LoopbackError> {
    let mut left = bytes;
    let writes = memory.iter().cycle().flat_map(|m| m.chunks(write_size));
    for write in writes {
        if left == 0 {
            break;
        }
        let n = write.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        stream.write_all(&write[..n]).map_err(socket("send"))?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write).map_err(socket("send"))
}

/// Reads until EOF, at most `read_size` bytes per read, into `landing`, and returns when
/// the last expected byte arrived after checking that exactly `expected` bytes came.
fn receive(
    stream: TcpStream,
    expected: u64,
    read_size: usize,
    landing: Landing<'_>,
) -> Result<Instant, LoopbackError> {
    let mut scratch = Vec::new();
    let into = match landing {
        Landing::Memory(memory) if !memory.is_empty() => memory,
        _ => {
            scratch.resize(read_size, 0);
            &mut scratch[..]
        }
    };
    let mut reader = BulkReader::new(&stream);
    let mut at = 0;
    let mut received = 0u64;
    let mut last_byte = Instant::now();
    loop {
        if at == into.len() {
            at = 0;
        }
        // No read asks for more than is still expected (a bulk read would wait for bytes
        // that never come, until EOF), and every read asks for at least one, so that a
        // byte too many is seen.
        let left = usize::try_from(expected.saturating_sub(received)).unwrap_or(usize::MAX);
        let end = into.len().min(at + read_size.min(left.max(1)));
        let n = match reader.read(&mut into[at..end]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(socket("receive")(e)),
        };
        received += n as u64;
        at += n;
        if received == expected {
            // Stop the clock here, not at EOF: the FIN that follows is not payload.
            last_byte = Instant::now();
        }
    }
    match received.cmp(&expected) {
        std::cmp::Ordering::Less => Err(LoopbackError::Short { expected, received }),
        std::cmp::Ordering::Greater => Err(LoopbackError::Excess { expected, received }),
        std::cmp::Ordering::Equal => Ok(last_byte),
    }
}

/// `len` seeded pseudo-random bytes.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    SplitMix64::new(SEED).fill(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_byte_and_reports_consistent_numbers() {
        let bytes = 8 << 20;
        let ceiling = loopback_ceiling(&LoopbackOptions::new(bytes)).unwrap();
        assert_eq!(ceiling.bytes, bytes);
        assert!(ceiling.elapsed > Duration::ZERO);
        let expected = bytes as f64 / ceiling.elapsed.as_secs_f64();
        assert!((ceiling.throughput() - expected).abs() <= expected * 1e-9);
    }

    #[test]
    fn a_size_that_is_not_a_multiple_of_the_write_size_arrives_whole() {
        let options = LoopbackOptions {
            write_size: 4096,
            read_size: 1000,
            ..LoopbackOptions::new(3 * 4096 + 17)
        };
        assert_eq!(loopback_ceiling(&options).unwrap().bytes, 3 * 4096 + 17);
    }

    #[test]
    fn a_copy_from_memory_cycles_through_the_buffers() {
        let (a, b) = (vec![1u8; 5000], vec![2u8; 3000]);
        let options = LoopbackOptions {
            write_size: 4096,
            ..LoopbackOptions::new(20_000)
        };
        let mut landed = vec![0u8; 20_000];
        let copy = loopback_copy(&options, &[&a, &[], &b], Landing::Memory(&mut landed));
        assert_eq!(copy.unwrap().bytes, 20_000);
        // a, b, a, b, then the first 4000 bytes of a again.
        let cycle = [&a[..], &b[..]].concat();
        let want = [&cycle[..], &cycle[..], &a[..4000]].concat();
        assert_eq!(landed, want);
        let copy = loopback_copy(&options, &[], Landing::Discard);
        assert_eq!(copy.unwrap().bytes, 20_000);
    }

    #[test]
    fn memory_shorter_than_the_copy_is_filled_from_its_start_again() {
        let source: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let options = LoopbackOptions {
            read_size: 3000,
            ..LoopbackOptions::new(10_000)
        };
        let mut landed = vec![0u8; 4096];
        loopback_copy(&options, &[&source], Landing::Memory(&mut landed)).unwrap();
        // The last lap wrote bytes 8192.. over the start; the rest holds 4096..8192.
        assert_eq!(landed[..10_000 - 8192], source[8192..]);
        assert_eq!(landed[10_000 - 8192..], source[4096 + 10_000 - 8192..8192]);
    }

    #[test]
    fn zero_bytes_is_an_empty_copy() {
        assert_eq!(loopback_ceiling(&LoopbackOptions::new(0)).unwrap().bytes, 0);
    }

    #[test]
    fn a_zero_write_size_is_refused() {
        let options = LoopbackOptions {
            write_size: 0,
            ..LoopbackOptions::new(1)
        };
        assert!(matches!(
            loopback_ceiling(&options),
            Err(LoopbackError::ZeroSize { write_size: 0, .. })
        ));
    }

    #[test]
    fn the_receiver_counts_short_and_excess_streams() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, expected) in [(10u64, 20u64), (30, 20)] {
            let mut tx = TcpStream::connect(addr).unwrap();
            let (rx, _) = listener.accept().unwrap();
            tx.write_all(&vec![1u8; sent as usize]).unwrap();
            drop(tx);
            let got = receive(rx, expected, 7, Landing::Discard);
            match got {
                Err(LoopbackError::Short { received, .. }) => {
                    assert_eq!((received, sent), (10, 10))
                }
                Err(LoopbackError::Excess { received, .. }) => {
                    assert_eq!((received, sent), (30, 30))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_payload_is_not_zero() {
        let payload = pseudo_random(DEFAULT_WRITE_SIZE);
        assert_eq!(payload.len(), DEFAULT_WRITE_SIZE);
        assert!(payload.iter().filter(|&&b| b == 0).count() < DEFAULT_WRITE_SIZE / 64);
    }
}
