//! [`StreamReader`]: checks the stream header, then reads chunks one at a time: header and
//! its CRC, the declared length against the kind's cap (before allocating), the payload, the
//! trailer CRC, then the payload's fields.

use std::io::Read;

use super::Chunk;
use crate::crc::CrcReader;
use crate::error::StreamError;
use crate::format::wire::read_full;
use crate::format::{CHUNK_HEADER_LEN, ChunkHeader, ChunkKind, HEADER_LEN, StreamHeader};

/// Reads a stream.
#[derive(Debug)]
pub struct StreamReader<R: Read> {
    inner: R,
    header: StreamHeader,
    position: u64,
    payload: Vec<u8>,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the stream header (magic, version, CRC, fields).
    pub fn open(mut inner: R) -> Result<Self, StreamError> {
        let header = StreamHeader::read_from(&mut inner)?;
        Ok(StreamReader {
            inner,
            header,
            position: HEADER_LEN as u64,
            payload: Vec::new(),
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &StreamHeader {
        &self.header
    }

    /// Bytes consumed so far: the offset of the next chunk.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads the next chunk. After an error the stream is not resynchronized: the caller
    /// refuses the whole stream.
    pub fn next_chunk(&mut self) -> Result<Chunk, StreamError> {
        let offset = self.position;
        let mut framed = CrcReader::new(&mut self.inner);
        let mut raw = [0u8; CHUNK_HEADER_LEN];
        read_full(&mut framed, &mut raw, offset, "a chunk header")?;
        let header = ChunkHeader::decode(&raw, offset)?;
        // `length` is at most the kind's cap here (checked by decode), so this allocation is
        // bounded whatever the stream says. The buffer is reused across chunks, except that
        // a `Pages` run takes it over (and the allocator hands the memory back next time).
        self.payload.clear();
        self.payload.resize(header.length as usize, 0);
        let payload_at = offset + CHUNK_HEADER_LEN as u64;
        read_full(
            &mut framed,
            &mut self.payload,
            payload_at,
            payload_what(header.kind),
        )?;
        // Take the computed CRC before reading the stored one: the trailer is read from the
        // inner reader and must not be fed into the checksum it is compared with.
        let computed = framed.checksum();
        let mut trailer = [0u8; 8];
        let trailer_at = payload_at + u64::from(header.length);
        read_full(
            &mut self.inner,
            &mut trailer,
            trailer_at,
            "a chunk checksum",
        )?;
        let stored = u64::from_le_bytes(trailer);
        if stored != computed {
            return Err(StreamError::ChunkChecksum {
                kind: header.kind,
                offset,
                stored,
                computed,
            });
        }
        self.position = trailer_at + 8;
        Chunk::decode(header.kind, &mut self.payload).map_err(|error| StreamError::Malformed {
            kind: header.kind,
            offset,
            error,
        })
    }

    /// Fails if any byte follows (a snapshot file ends with its `End` chunk).
    pub fn expect_end_of_stream(&mut self) -> Result<(), StreamError> {
        let mut probe = [0u8; 64];
        loop {
            return match self.inner.read(&mut probe) {
                Ok(0) => Ok(()),
                Ok(n) => Err(StreamError::TrailingBytes {
                    offset: self.position,
                    bytes: n as u64,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(StreamError::Io {
                    offset: self.position,
                    what: "the end of the stream",
                    kind: e.kind(),
                }),
            };
        }
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

/// What a payload read is called in a truncation error.
fn payload_what(kind: ChunkKind) -> &'static str {
    match kind {
        ChunkKind::Invalid => "an Invalid chunk payload",
        ChunkKind::VmConfig => "a VmConfig chunk payload",
        ChunkKind::Pages => "a Pages chunk payload",
        ChunkKind::Vcpu => "a Vcpu chunk payload",
        ChunkKind::Device => "a Device chunk payload",
        ChunkKind::RegionSkipped => "a RegionSkipped chunk payload",
        ChunkKind::End => "an End chunk payload",
    }
}
