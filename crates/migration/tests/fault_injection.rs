//! Seeded random fault injection over real TCP loopback: a proxy between source and
//! destination drops the connection after N bytes, flips a byte at offset N, truncates the
//! stream after N bytes, or swallows the destination's verdict. At every injection point the
//! destination must return an error and no image, and the source must report an error and
//! leave its guest running with every dirty bit back in its log; nothing may panic.
//!
//! The fake guest dirties pages in proportion to the pages read and the downtime budget is
//! zero with a round cap, so a seed fixes the stream byte for byte, and with it what every
//! injection point hits. `MIGRATION_FAULT_SEED` and `MIGRATION_FAULT_POINTS` (per fault kind)
//! override the defaults.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::{FakeVm, RecordingCache, Rng};
use migration::StreamError;
use migration::destination::Limits;
use migration::format::{Policy, Status};
use migration::precopy::{MigrationError, PrecopyOptions, Summary, WriterThread};
use migration::transport::{self, ReceiveError, ReceiveOptions, SendOptions};

/// What the proxy does to the connection.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Forward everything.
    None,
    /// Forward `after` bytes of the stream, then close both connections.
    Drop { after: u64 },
    /// XOR the stream byte at `at` with `mask`.
    Flip { at: u64, mask: u8 },
    /// Forward `after` bytes, then end the stream (the source keeps sending into the void).
    Truncate { after: u64 },
    /// Forward the whole stream and the destination's READY, then close both connections
    /// instead of passing on its verdict.
    DropVerdict,
}

/// Reads from `from` until it ends or fails.
fn drain(mut from: &TcpStream) {
    let _ = io::copy(&mut from, &mut io::sink());
}

/// Forwards one connection from the source (accepted on `listener`) to `destination`,
/// applying `fault` to the source's stream. Returns the bytes of stream it read.
fn proxy(listener: TcpListener, destination: SocketAddr, fault: Fault) -> u64 {
    let (src, _) = listener.accept().unwrap();
    let dst = TcpStream::connect(destination).unwrap();
    for s in [&src, &dst] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let (mut src_back, mut dst_back) = (src.try_clone().unwrap(), dst.try_clone().unwrap());
    let replies = thread::spawn(move || {
        if let Fault::DropVerdict = fault {
            let mut ready = Vec::new();
            Status::Ready.write_to(&mut ready).unwrap();
            if dst_back.read_exact(&mut ready).is_ok() {
                let _ = src_back.write_all(&ready);
            }
            let mut first = [0u8; 1];
            let _ = dst_back.read(&mut first);
            let _ = dst_back.shutdown(Shutdown::Both);
            let _ = src_back.shutdown(Shutdown::Both);
        } else {
            let _ = io::copy(&mut dst_back, &mut src_back);
            let _ = src_back.shutdown(Shutdown::Write);
        }
    });
    let (mut src_r, mut dst_w) = (&src, &dst);
    let mut buf = [0u8; 16 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match src_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &mut buf[..n];
        let end = offset + n as u64;
        let cut = match fault {
            Fault::Flip { at, mask } if (offset..end).contains(&at) => {
                chunk[(at - offset) as usize] ^= mask;
                None
            }
            Fault::Drop { after } | Fault::Truncate { after } if end > after => {
                Some((after - offset) as usize)
            }
            _ => None,
        };
        let keep = cut.unwrap_or(n);
        if dst_w.write_all(&chunk[..keep]).is_err() {
            // The destination gave up; keep the source's writes flowing until it stops.
            drain(&src);
            break;
        }
        offset += keep as u64;
        if cut.is_some() {
            match fault {
                Fault::Drop { .. } => {
                    let _ = src.shutdown(Shutdown::Both);
                    let _ = dst.shutdown(Shutdown::Both);
                }
                _ => {
                    let _ = dst.shutdown(Shutdown::Write);
                    drain(&src);
                }
            }
            break;
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
    replies.join().unwrap();
    offset
}

/// The source VM of every run: small, a `flush` BAR, a guest that writes.
fn source_vm(seed: u64) -> FakeVm {
    let mut vm = FakeVm::new(seed, 48, 16, Policy::Flush);
    vm.dirty_per_read = 1.5;
    vm
}

/// One migration through the proxy.
fn run(
    seed: u64,
    fault: Fault,
) -> (
    Result<Summary, MigrationError>,
    Result<(), ReceiveError>,
    FakeVm,
    u64,
) {
    let dest_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest_addr = dest_listener.local_addr().unwrap();
    let proxy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap();
    let destination = thread::spawn(move || {
        let options = ReceiveOptions {
            limits: Limits::default(),
            io_timeout: Duration::from_secs(10),
        };
        transport::receive(&dest_listener, &options).map(|_image| ())
    });
    let forwarded = thread::spawn(move || proxy(proxy_listener, dest_addr, fault));
    let mut vm = source_vm(seed);
    let options = SendOptions {
        precopy: PrecopyOptions {
            // Zero budget and a round cap: the number of rounds, and so the stream, depend
            // on the seed only.
            downtime_budget: Duration::ZERO,
            max_rounds: 2,
            // Both ways of writing runs meet every fault.
            writer: if seed.is_multiple_of(2) {
                WriterThread::Own
            } else {
                WriterThread::Inline
            },
        },
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
        ..SendOptions::default()
    };
    let sent = transport::send(
        proxy_addr,
        &mut vm,
        &RecordingCache::default(),
        &options,
        &mut |_| {},
    );
    let received = destination.join().expect("the destination does not panic");
    let forwarded = forwarded.join().expect("the proxy does not panic");
    (sent, received, vm, forwarded)
}

/// The seed of this run and the number of points per fault kind.
fn settings() -> (u64, u64) {
    let env = |name, default| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        env("MIGRATION_FAULT_SEED", 0x6e63_646d_6120_6d69),
        env("MIGRATION_FAULT_POINTS", 70),
    )
}

/// Bytes of the source's COMMIT message, which follows the stream on the connection.
fn commit_len() -> u64 {
    let mut bytes = Vec::new();
    Status::Commit.write_to(&mut bytes).unwrap();
    bytes.len() as u64
}

/// The stream length for `seed`, from a clean run through the proxy (which must succeed).
fn clean_length(seed: u64) -> u64 {
    let (sent, received, vm, forwarded) = run(seed, Fault::None);
    let summary = sent.expect("the clean migration succeeds");
    received.expect("the clean migration is received");
    assert_eq!(summary.stream_bytes + commit_len(), forwarded);
    assert_eq!((vm.pauses, vm.resumes), (1, 0));
    summary.stream_bytes
}

/// A stream offset: a third anywhere (mostly pages), a third in the first 512 bytes
/// (header, configuration, skipped region), a third in the last 16 KiB (the stop-and-copy
/// pages, vCPUs, device, End: the guest is paused there).
fn offset(rng: &mut Rng, length: u64) -> u64 {
    match rng.below(3) {
        0 => rng.below(length),
        1 => rng.below(512),
        _ => length - 1 - rng.below(16 * 1024),
    }
}

/// What the destination reported.
fn stream_error(received: &Result<(), ReceiveError>) -> Option<&StreamError> {
    match received {
        Err(ReceiveError::Stream(e)) => Some(e),
        _ => None,
    }
}

/// Injects `points` faults made by `make` and checks every outcome, including the
/// kind-specific `expect`.
fn inject(
    kind: &str,
    salt: u64,
    make: impl Fn(&mut Rng, u64) -> Fault,
    expect: impl Fn(&Result<Summary, MigrationError>, &Result<(), ReceiveError>) -> bool,
) {
    let (seed, points) = settings();
    let length = clean_length(seed);
    assert_eq!(clean_length(seed), length, "a seed fixes the stream");
    let mut rng = Rng::new(seed ^ salt);
    for point in 0..points {
        let fault = make(&mut rng, length);
        let (sent, received, vm, _) = run(seed, fault);
        let context = format!("{kind} point {point} ({fault:?}, seed {seed:#x})");
        assert!(
            received.is_err(),
            "{context}: the destination produced an image"
        );
        assert!(sent.is_err(), "{context}: the source believes it migrated");
        assert!(vm.running, "{context}: the guest was left paused");
        assert_eq!(vm.pauses, vm.resumes, "{context}");
        assert!(!vm.logging, "{context}: the dirty log is still on");
        assert!(
            vm.all_dirty_bits_returned(),
            "{context}: dirty bits were lost"
        );
        assert!(
            expect(&sent, &received),
            "{context}: {sent:?} / {received:?}"
        );
    }
}

#[test]
fn dropped_connection_at_random_points() {
    inject(
        "drop",
        1,
        |rng, length| Fault::Drop {
            after: offset(rng, length),
        },
        |_, received| {
            matches!(
                stream_error(received),
                Some(StreamError::Truncated { .. } | StreamError::Io { .. })
            )
        },
    );
}

#[test]
fn flipped_byte_at_random_points() {
    // The destination names the corruption and the source hears it (the destination reads
    // on after its NAK, so the NAK is not lost to a reset).
    inject(
        "flip",
        2,
        |rng, length| Fault::Flip {
            at: offset(rng, length),
            mask: 1 << rng.below(8),
        },
        |sent, received| {
            let refused = matches!(sent, Err(MigrationError::DestinationRefused(_)));
            refused && stream_error(received).is_some()
        },
    );
}

#[test]
fn truncated_stream_at_random_points() {
    inject(
        "truncate",
        3,
        |rng, length| Fault::Truncate {
            after: offset(rng, length),
        },
        |sent, received| {
            matches!(sent, Err(MigrationError::DestinationRefused(r)) if r.contains("truncated"))
                && matches!(stream_error(received), Some(StreamError::Truncated { .. }))
        },
    );
}

#[test]
fn a_lost_verdict_never_runs_the_guest_twice() {
    // The ACK never reaches the source: it resumes; the destination, never seeing COMMIT,
    // runs nothing. The guest runs exactly once.
    let (seed, _) = settings();
    for i in 0..4 {
        let (sent, received, vm, _) = run(seed + i, Fault::DropVerdict);
        assert!(
            matches!(sent, Err(MigrationError::NoVerdict(_))),
            "{sent:?}"
        );
        assert!(
            matches!(received, Err(ReceiveError::NoCommit(_))),
            "{received:?}"
        );
        assert!(vm.running && vm.pauses == 1 && vm.resumes == 1);
        assert!(vm.all_dirty_bits_returned());
    }
}

#[test]
fn a_lost_commit_leaves_the_guest_paused_at_the_source_and_running_nowhere() {
    // The one window no protocol closes (the two generals): the source sent COMMIT and
    // believes it migrated, but the COMMIT is lost. The destination runs nothing; the source
    // keeps the guest paused and intact, so it is stopped, never split in two.
    let (seed, _) = settings();
    let length = clean_length(seed);
    let (sent, received, vm, _) = run(seed, Fault::Drop { after: length });
    assert!(sent.is_ok(), "{sent:?}");
    assert!(
        matches!(received, Err(ReceiveError::NoCommit(_))),
        "{received:?}"
    );
    assert!(!vm.running && vm.pauses == 1 && vm.resumes == 0);
}
