//! Why a migration (or the sending side of a snapshot) failed. The source VM has been
//! resumed when one of these is returned, unless the error says resuming failed too.

use std::io;

use crate::error::{ConfigError, EncodeError, StreamError};
use crate::source::SourceError;

/// Why a migration failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// A region has the `refuse` policy; nothing was sent.
    #[error("region {region:?} has the refuse policy: nothing was sent")]
    Refused {
        /// The region's name.
        region: String,
    },
    /// The source's configuration is inconsistent; nothing was sent.
    #[error("the VM configuration is invalid: {0}")]
    Config(#[from] ConfigError),
    /// An operation of the source VM failed.
    #[error("{step}: {source}")]
    Source {
        /// What the engine was doing.
        step: &'static str,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// The source returned a page of the wrong size.
    #[error("the source returned {len} bytes for page {index} of region {region}")]
    BadPage {
        /// The region's id.
        region: u32,
        /// The page index.
        index: u32,
        /// Bytes returned.
        len: usize,
    },
    /// The source returned a dirty log that does not cover the region.
    #[error("the dirty log of region {region} covers {found} pages, the region has {expected}")]
    BadDirtyLog {
        /// The region's id.
        region: u32,
        /// The region's page count.
        expected: u32,
        /// The log's page count.
        found: u32,
    },
    /// Writing the stream failed (connection dropped, timeout, disk error).
    #[error("sending the stream: {0}")]
    Send(#[from] EncodeError),
    /// The connection could not be opened.
    #[error("connecting to {addr}: {kind}")]
    Connect {
        /// The address tried last.
        addr: String,
        /// The I/O error's kind.
        kind: io::ErrorKind,
    },
    /// The destination refused the stream.
    #[error("the destination refused the migration: {0}")]
    DestinationRefused(String),
    /// The destination did not say READY after the configuration (dropped connection,
    /// timeout, corrupt reply); no page was sent.
    #[error("the destination did not accept the configuration: {0}")]
    NotReady(StreamError),
    /// No valid verdict came back (dropped connection, timeout, corrupt reply).
    #[error("no verdict from the destination: {0}")]
    NoVerdict(StreamError),
    /// The migration failed and resuming the guest failed as well: the guest is paused.
    #[error("{error}; resuming the guest failed too: {resume}")]
    ResumeFailed {
        /// The first failure.
        error: Box<MigrationError>,
        /// Why resuming failed.
        resume: SourceError,
    },
}

/// Maps a source error to the step that failed.
pub(crate) fn step(step: &'static str) -> impl FnOnce(SourceError) -> MigrationError {
    move |source| MigrationError::Source { step, source }
}
