//! Live migration over one TCP connection: [`send`] runs the pre-copy engine against a
//! listening destination, [`receive`] accepts one migration and returns the verified image
//! only after the source committed. Both ends set read and write timeouts, so a silent
//! peer is an error, never a hang; the source waits longer for READY, in proportion to the
//! memory the destination populates first ([`SendOptions::ready_timeout`]).

mod bulk;
mod replies;

use std::io::{self, BufReader, BufWriter, Read};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub use self::bulk::BulkReader;
use self::replies::FirstReply;
use crate::cache::CacheMaintenance;
use crate::destination::{self, Limits, VmImage};
use crate::error::{EncodeError, StreamError};
use crate::format::{READY_SINCE, Status};
use crate::precopy::{MigrationError, PrecopyOptions, Progress, Summary, migrate, sendable_config};
use crate::source::MigrationSource;
use crate::stream::StreamReader;

/// How much a refusing destination reads and discards after its NAK, so that the source's
/// pending writes do not turn into a connection reset that would destroy the NAK in flight.
const DRAIN_LIMIT: u64 = 8 << 20;

/// Options of the sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendOptions {
    /// When to stop pre-copying.
    pub precopy: PrecopyOptions,
    /// How long to try to connect.
    pub connect_timeout: Duration,
    /// The longest a single read or write may block (a silent destination fails the
    /// migration after this).
    pub io_timeout: Duration,
    /// How much longer than `io_timeout` the wait for READY may last, per GiB of memory the
    /// destination populates before it says READY.
    pub ready_allowance_per_gib: Duration,
}

impl Default for SendOptions {
    /// Default pre-copy, 5 s to connect, 30 s per read or write, and 5 s more per GiB for
    /// READY (a first touch of cold memory took up to 3 s per GiB on this project's
    /// nested hosts: a 16 GiB guest's destination can take longer than 30 s to populate).
    fn default() -> Self {
        SendOptions {
            precopy: PrecopyOptions::default(),
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            ready_allowance_per_gib: Duration::from_secs(5),
        }
    }
}

impl SendOptions {
    /// The longest the source waits for READY from a destination that populates `bytes`
    /// of memory first.
    pub fn ready_timeout(&self, bytes: u64) -> Duration {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        let allowance =
            Duration::try_from_secs_f64(self.ready_allowance_per_gib.as_secs_f64() * gib)
                .unwrap_or(Duration::MAX);
        self.io_timeout.saturating_add(allowance)
    }
}

/// Options of the receiving side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// What the destination accepts.
    pub limits: Limits,
    /// The longest a single read or write may block.
    pub io_timeout: Duration,
}

impl Default for ReceiveOptions {
    /// Default limits, 30 s per read or write.
    fn default() -> Self {
        ReceiveOptions {
            limits: Limits::default(),
            io_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a destination produced no image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// No connection could be accepted or configured.
    #[error("accepting the migration connection: {kind}")]
    Accept {
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
    /// The stream was refused (the source was told why).
    #[error("refused the migration stream: {0}")]
    Stream(StreamError),
    /// The ACK could not be sent; the source will resume its guest.
    #[error("sending the ACK: {0}")]
    Ack(EncodeError),
    /// The source did not commit after the ACK; it may be running the guest.
    #[error("the source did not commit: {0}")]
    NoCommit(StreamError),
    /// The source answered the ACK with something other than COMMIT.
    #[error("the source answered the ACK with {0:?} instead of COMMIT")]
    NotCommit(Status),
}

/// Migrates `source` to the destination listening at `addr`. A `refuse` region fails the
/// migration before connecting; any later failure resumes the guest (see
/// [`crate::precopy`]). On success the guest is left paused.
pub fn send(
    addr: impl ToSocketAddrs,
    source: &mut dyn MigrationSource,
    cache: &dyn CacheMaintenance,
    options: &SendOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Summary, MigrationError> {
    let config = sendable_config(source)?;
    // The first read is the wait for READY, while the destination populates its memory.
    let stream = connect(addr, options, options.ready_timeout(config.staged_bytes()))?;
    let replies = FirstReply::new(&stream, options.io_timeout);
    // A destination on this host (a loopback peer) needs a CPU of its own too.
    let local = stream.peer_addr().is_ok_and(|peer| peer.ip().is_loopback());
    let precopy = PrecopyOptions {
        writer: options.precopy.writer.resolve(local),
        ..options.precopy
    };
    migrate(
        BufWriter::with_capacity(1 << 16, &stream),
        BufReader::new(replies),
        source,
        cache,
        &precopy,
        progress,
    )
}

/// Connects to the first address that answers and sets the timeouts: `first_read` for
/// reads until [`FirstReply`] puts the usual one back.
fn connect(
    addr: impl ToSocketAddrs,
    options: &SendOptions,
    first_read: Duration,
) -> Result<TcpStream, MigrationError> {
    let failed = |addr: String| {
        move |e: io::Error| MigrationError::Connect {
            addr,
            kind: e.kind(),
        }
    };
    let addrs = addr
        .to_socket_addrs()
        .map_err(failed("(unresolved)".into()))?;
    let mut last = MigrationError::Connect {
        addr: "(no address)".into(),
        kind: io::ErrorKind::NotFound,
    };
    for a in addrs {
        match TcpStream::connect_timeout(&a, options.connect_timeout) {
            Ok(stream) => {
                stream
                    .set_write_timeout(Some(options.io_timeout))
                    .and_then(|()| stream.set_read_timeout(Some(first_read)))
                    .and_then(|()| stream.set_nodelay(true))
                    .map_err(failed(a.to_string()))?;
                return Ok(stream);
            }
            Err(e) => last = failed(a.to_string())(e),
        }
    }
    Err(last)
}

/// Accepts one migration on `listener` and returns its image once it verified and the
/// source committed. On any failure the source is told why (when the connection still
/// works) and nothing is returned.
pub fn receive(listener: &TcpListener, options: &ReceiveOptions) -> Result<VmImage, ReceiveError> {
    let accept = |e: io::Error| ReceiveError::Accept { kind: e.kind() };
    let (stream, _) = listener.accept().map_err(accept)?;
    stream
        .set_read_timeout(Some(options.io_timeout))
        .and_then(|()| stream.set_write_timeout(Some(options.io_timeout)))
        .map_err(accept)?;
    serve(&stream, options.limits)
}

/// Receives one migration on an accepted connection (whose timeouts the caller set), as
/// [`receive`] does.
pub fn serve(stream: &TcpStream, limits: Limits) -> Result<VmImage, ReceiveError> {
    // Smaller than a `Pages` payload (1 MiB), so that most of one bypasses the buffer and
    // is read from the socket straight into staging memory, in one wake-up (`bulk`).
    let buffered = BufReader::with_capacity(64 << 10, BulkReader::new(stream));
    let outcome = StreamReader::open(buffered).and_then(|mut reader| {
        let handshake = reader.header().version >= READY_SINCE;
        let image = destination::receive_announcing(&mut reader, limits, || {
            if !handshake {
                return Ok(());
            }
            Status::Ready
                .write_to(&mut &*stream)
                .map_err(|e| StreamError::Reply {
                    what: "READY",
                    kind: match e {
                        EncodeError::Io { kind } => kind,
                        _ => io::ErrorKind::InvalidData,
                    },
                })
        })?;
        Ok((image, reader))
    });
    let (image, reader) = match outcome {
        Ok(done) => done,
        Err(error) => {
            refuse(stream, &error);
            return Err(ReceiveError::Stream(error));
        }
    };
    Status::Ack
        .write_to(&mut &*stream)
        .map_err(ReceiveError::Ack)?;
    // The buffered reader may hold bytes past `End`; the COMMIT is read through it.
    match Status::read_from(&mut reader.into_inner()) {
        Ok(Status::Commit) => Ok(image),
        Ok(other) => Err(ReceiveError::NotCommit(other)),
        Err(error) => Err(ReceiveError::NoCommit(error)),
    }
}

/// Tells the source why (best effort: the connection may be gone), then reads what it
/// still sends for a bounded while, so that the NAK arrives before any reset.
fn refuse(stream: &TcpStream, error: &StreamError) {
    // Errors are ignored here: the refusal stands whether or not the source hears it.
    let _ = Status::nak(&error.to_string()).write_to(&mut &*stream);
    let _ = stream.shutdown(Shutdown::Write);
    let _ = io::copy(&mut stream.take(DRAIN_LIMIT), &mut io::sink());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (the connecting end, the accepted end).
    pub(super) fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connecting = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (connecting, accepted)
    }

    #[test]
    fn the_wait_for_ready_grows_with_the_memory_to_populate_and_saturates() {
        let options = SendOptions::default();
        assert_eq!(options.ready_timeout(0), options.io_timeout);
        assert_eq!(
            options.ready_timeout(5 << 28),
            options.io_timeout + Duration::from_millis(6250),
            "1.25 GiB at 5 s per GiB"
        );
        let unbounded = SendOptions {
            ready_allowance_per_gib: Duration::MAX,
            ..options
        };
        assert_eq!(unbounded.ready_timeout(u64::MAX), Duration::MAX);
    }
}
