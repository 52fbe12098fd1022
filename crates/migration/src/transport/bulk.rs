//! [`BulkReader`]: reads a TCP stream so that a long read is woken once, when its bytes
//! have arrived, rather than once per segment.
//!
//! A destination reads each run's pages (up to 1 MiB) from the socket straight into
//! staging memory. A plain blocking read wakes as soon as any byte is queued and returns
//! what is there, so 1 MiB arrives as a dozen wake-ups of the receiving thread, each one an
//! inter-processor interrupt where sender and receiver share a host. On a nested host (this
//! project's) each such wake-up costs tens of microseconds, and they were a fifth of the
//! stream's time: the CPUs sat idle between them.
//!
//! So a read of at least [`BULK_READ`] bytes first sets `SO_RCVLOWAT` to its length and
//! polls: `tcp_poll` reports the socket readable only once that many bytes are queued (or
//! the receive window is nearly closed, or the peer hung up or failed), so the thread
//! sleeps through the whole run. The low-water mark is put back to 1 before the read
//! itself, which then takes everything queued without waiting again.
//!
//! Why poll rather than a blocking read with the mark set: `tcp_recvmsg` waits for
//! `min(mark, len)` bytes, but once it has copied part of them it is woken only when a
//! full mark's worth of *new* bytes is queued. At the end of a stream those never come,
//! and the read sleeps until its timeout. Polling first copies nothing before every byte
//! the read asked for is there, so an honest peer always completes it. A short or silent
//! peer ends it at the socket's read timeout, as a plain read would.

use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::setsockopt;

// nix wraps the common options, not this one; its own macro defines it (the macro's
// expansion names `libc` and its helper macro unqualified, hence the imports).
use nix::{libc, setsockopt_impl, sockopt_impl};
sockopt_impl!(
    /// `SO_RCVLOWAT`: how many bytes must be queued before a read or poll is woken.
    RcvLowat,
    SetOnly,
    libc::SOL_SOCKET,
    libc::SO_RCVLOWAT,
    usize
);

/// Reads at least this long wait for their bytes in one wake-up: above a 64 KiB buffered
/// reader's fills (which must return whatever is queued: the protocol's small messages
/// are answered before more arrives), below a run's pages.
pub(crate) const BULK_READ: usize = 128 << 10;

/// The largest low-water mark asked for; Linux caps it at half the largest receive buffer
/// anyway (`tcp_rmem[2] / 2`).
const MAX_MARK: usize = 1 << 20;

/// A reader of `stream` that waits for a long read's bytes before it wakes (see the
/// module documentation). Public so that a benchmark's plain socket copy can read as the
/// destination does.
///
/// ```no_run
/// use std::io::Read;
/// use std::net::TcpStream;
/// use migration::transport::BulkReader;
///
/// let stream = TcpStream::connect("127.0.0.1:7777")?;
/// let mut page_run = vec![0u8; 1 << 20];
/// // One wake-up when the whole MiB is queued (or the peer hung up), not one per segment.
/// let n = BulkReader::new(&stream).read(&mut page_run)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct BulkReader<'a> {
    stream: &'a TcpStream,
    /// Cleared if the socket refuses the low-water mark: reads are then plain.
    marks: bool,
}

impl<'a> BulkReader<'a> {
    /// Reads `stream`, whose read timeout bounds each wait.
    pub fn new(stream: &'a TcpStream) -> Self {
        BulkReader {
            stream,
            marks: true,
        }
    }

    /// Waits until `len` bytes are queued (or the socket is readable for another reason:
    /// end of stream, an error, a nearly closed window), for at most the read timeout.
    fn wait_for(&mut self, len: usize) -> io::Result<()> {
        let mark = len.min(MAX_MARK);
        if setsockopt(&self.stream, RcvLowat, &mark).is_err() {
            self.marks = false;
            return Ok(());
        }
        let waited = self.poll_readable();
        // Put back before anything else, success or not: the next read must not wait for a
        // mark meant for this one.
        let reset = setsockopt(&self.stream, RcvLowat, &1);
        waited?;
        reset.map_err(io::Error::from)
    }

    fn poll_readable(&self) -> io::Result<()> {
        let timeout = match self.stream.read_timeout()? {
            None => PollTimeout::NONE,
            Some(limit) => PollTimeout::try_from(limit.max(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX),
        };
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        loop {
            return match poll(&mut fds, timeout) {
                // Timed out: what a read past its timeout reports.
                Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
                Ok(_) => Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => Err(e.into()),
            };
        }
    }
}

impl Read for BulkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.marks && buf.len() >= BULK_READ {
            self.wait_for(buf.len())?;
        }
        (&mut &*self.stream).read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Write};
    use std::thread;

    use super::super::tests::pair;
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    #[test]
    fn a_long_read_at_the_end_of_what_was_sent_completes_without_waiting_out_the_timeout() {
        // The shape that stalls a blocking read with the mark set: the last bytes the peer
        // sends before it waits for an answer, arriving in pieces.
        let (mut sender, receiver) = pair();
        sender
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        receiver
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = pattern(900 << 10);
        let sent = body.clone();
        let peer = thread::spawn(move || {
            sender.write_all(b"header..").unwrap();
            for piece in sent.chunks(300 << 10) {
                sender.write_all(piece).unwrap();
                thread::sleep(Duration::from_millis(20));
            }
            let mut answer = [0u8; 1];
            (&sender).read_exact(&mut answer).map(|()| answer[0])
        });
        let mut reader = BufReader::with_capacity(64 << 10, BulkReader::new(&receiver));
        let mut header = [0u8; 8];
        reader.read_exact(&mut header).unwrap();
        let mut got = vec![0u8; body.len()];
        reader.read_exact(&mut got).unwrap();
        assert!(got == body, "every byte, in order");
        (&receiver).write_all(b"!").unwrap();
        // Had the read waited for a mark's worth of new bytes, the peer's answer would have
        // timed out first.
        assert_eq!(peer.join().unwrap().unwrap(), b'!');
    }

    #[test]
    fn a_peer_that_falls_silent_short_of_a_long_read_times_out() {
        let (mut sender, receiver) = pair();
        receiver
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Few enough bytes that the receive window stays open: a nearly closed one makes
        // the socket readable early (so that a mark can never outlast the window), which
        // is not what this test is about.
        sender.write_all(&pattern(16 << 10)).unwrap();
        let mut reader = BulkReader::new(&receiver);
        let mut buf = vec![0u8; 512 << 10];
        let err = reader.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // The mark was put back: a short read now returns what is queued at once.
        let mut small = [0u8; 4096];
        assert_eq!(reader.read(&mut small).unwrap(), 4096);
        drop(sender);
    }

    #[test]
    fn a_long_read_returns_what_a_peer_sent_before_it_closed() {
        let (mut sender, receiver) = pair();
        receiver
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let body = pattern(300 << 10);
        sender.write_all(&body).unwrap();
        drop(sender);
        let mut reader = BulkReader::new(&receiver);
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match reader.read(&mut buf).unwrap() {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        assert!(got == body);
    }
}
