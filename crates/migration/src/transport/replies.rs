//! [`FirstReply`]: the source's reader of the destination's replies, which waits longer for
//! the first one.
//!
//! The first reply is READY (or a NAK), which a destination sends only once it has mapped
//! and populated its staging memory; at a first touch of cold memory that takes seconds per
//! GiB, so a large guest's READY can come later than the usual I/O timeout. Every later
//! reply (the verdict) comes within it. So the socket's read timeout is the READY timeout
//! until the first byte arrives, and the usual one from then on.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::Duration;

/// Reads replies from `stream`: the first byte within the read timeout the stream has (the
/// READY timeout, set when it connected), every later read within `then`.
#[derive(Debug)]
pub(crate) struct FirstReply<'a> {
    stream: &'a TcpStream,
    /// The timeout to set once the first byte arrived; `None` once set.
    then: Option<Duration>,
}

impl<'a> FirstReply<'a> {
    /// Replies from `stream`, whose read timeout becomes `then` after the first byte.
    pub(crate) fn new(stream: &'a TcpStream, then: Duration) -> Self {
        FirstReply {
            stream,
            then: Some(then),
        }
    }
}

impl Read for FirstReply<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&mut &*self.stream).read(buf)?;
        if n > 0
            && let Some(then) = self.then.take()
        {
            self.stream.set_read_timeout(Some(then))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::thread;
    use std::time::Instant;

    use super::super::tests::pair;
    use super::*;

    #[test]
    fn the_first_reply_may_come_late_and_later_ones_may_not() {
        let (source, mut destination) = pair();
        let late = Duration::from_millis(400);
        let peer = thread::spawn(move || {
            thread::sleep(late);
            destination.write_all(b"R").unwrap();
            // Then silent, but connected, until the source gave up.
            let mut rest = [0u8; 1];
            let _ = destination.read(&mut rest);
        });
        let short = Duration::from_millis(100);
        source
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut replies = FirstReply::new(&source, short);
        let mut byte = [0u8; 1];
        // Later than `short`: a plain reader with the usual timeout would have failed.
        replies.read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"R");
        assert_eq!(source.read_timeout().unwrap(), Some(short));
        let waited = Instant::now();
        let err = replies.read(&mut byte).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        // The short timeout, not the long one, ended the second wait.
        assert!(waited.elapsed() < Duration::from_secs(10));
        drop(source);
        peer.join().unwrap();
    }
}
