//! [`StreamReader`]: checks the stream header, then reads chunks one at a time: header and
//! its CRC, the declared length against the kind's cap (before allocating), the payload, the
//! trailer checksum (the version's, [`crate::checksum`]), then the payload's fields. A
//! records-first `Pages` run is the exception: its header and records are read and checked
//! (their own CRC, the count's cap, the length they imply against the declared one), then
//! its pages are read straight into a [`PageSink`], and the trailer checksum is checked
//! before the sink is told the run is complete (or, if it fails, asked whether the run may
//! yet be withdrawn: see [`PageSink::unverified_run`]).

use std::io::Read;

use super::Chunk;
use super::sink::{Collect, PageSink, deliver, stretches};
use crate::checksum::{ChecksumReader, ChunkChecksum};
use crate::error::{Malformation, StreamError};
use crate::format::wire::read_full;
use crate::format::{
    CHUNK_HEADER_LEN, ChunkHeader, ChunkKind, HEADER_LEN, Layout, PAGE_SIZE, PageRecord,
    RECORD_LEN, RECORDS_CHECKSUM_LEN, RUN_HEADER_LEN, RunHeader, StreamHeader, TORN_SINCE,
    decode_records,
};

/// Reads a stream.
#[derive(Debug)]
pub struct StreamReader<R: Read> {
    inner: R,
    header: StreamHeader,
    position: u64,
    layout: Layout,
    checksum: ChunkChecksum,
    /// A chunk's payload, or a streamed run's header and records.
    payload: Vec<u8>,
    /// A streamed run's records.
    records: Vec<PageRecord>,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the stream header (magic, version, CRC, fields).
    pub fn open(mut inner: R) -> Result<Self, StreamError> {
        let header = StreamHeader::read_from(&mut inner)?;
        Ok(StreamReader {
            inner,
            position: HEADER_LEN as u64,
            layout: Layout::of(header.version),
            checksum: ChunkChecksum::of(header.version),
            payload: Vec::new(),
            records: Vec::new(),
            header,
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
        let mut collect = Collect::default();
        Ok(self
            .next_chunk_into(&mut collect)?
            .unwrap_or(Chunk::Pages(collect.run)))
    }

    /// Reads the next chunk, a `Pages` run into `sink` (then `None`): in a
    /// [`Layout::RecordsFirst`] stream the run's pages are read from the stream straight
    /// into the sink's memory, checked by the chunk's checksum afterwards (see [`PageSink`]).
    pub fn next_chunk_into(
        &mut self,
        sink: &mut dyn PageSink,
    ) -> Result<Option<Chunk>, StreamError> {
        let offset = self.position;
        let mut framed = ChecksumReader::new(&mut self.inner, self.checksum);
        let mut raw = [0u8; CHUNK_HEADER_LEN];
        read_full(&mut framed, &mut raw, offset, "a chunk header")?;
        let header = ChunkHeader::decode(&raw, offset)?;
        if header.kind == ChunkKind::Torn && self.header.version < TORN_SINCE {
            // The kind did not exist in the stream's version.
            return Err(StreamError::UnknownChunkKind {
                offset,
                value: ChunkKind::Torn as u16,
            });
        }
        let payload_at = offset + CHUNK_HEADER_LEN as u64;
        let streamed = header.kind == ChunkKind::Pages && self.layout == Layout::RecordsFirst;
        if streamed {
            let mut run = RunReader {
                framed: &mut framed,
                offset,
                length: header.length,
                scratch: &mut self.payload,
                records: &mut self.records,
            };
            run.read(sink)?;
        } else {
            // `length` is at most the kind's cap here (checked by decode), so this
            // allocation is bounded whatever the stream says; the buffer is reused.
            self.payload.clear();
            self.payload.resize(header.length as usize, 0);
            read_full(
                &mut framed,
                &mut self.payload,
                payload_at,
                payload_what(header.kind),
            )?;
        }
        // Take the computed checksum before reading the stored one: the trailer is read from
        // the inner reader and must not be fed into the checksum it is compared with.
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
        let verified = stored == computed;
        let mismatch = StreamError::ChunkChecksum {
            kind: header.kind,
            offset,
            stored,
            computed,
        };
        if streamed {
            if verified {
                sink.end_run(&self.records);
            } else {
                // The sink decides: a run may be withdrawn by the `Torn` chunk after it.
                sink.unverified_run(&self.records, mismatch)?;
            }
            self.position = trailer_at + 8;
            return Ok(None);
        }
        if !verified {
            return Err(mismatch);
        }
        self.position = trailer_at + 8;
        let malformed = |error| StreamError::Malformed {
            kind: header.kind,
            offset,
            error,
        };
        match Chunk::decode(header.kind, &self.payload).map_err(malformed)? {
            Chunk::Pages(run) => deliver(&run, sink).map(|()| None),
            chunk => Ok(Some(chunk)),
        }
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

/// Reads one [`Layout::RecordsFirst`] run into a sink; the caller checks the chunk's
/// checksum.
struct RunReader<'a, R> {
    framed: &'a mut ChecksumReader<R>,
    /// Offset of the chunk.
    offset: u64,
    /// The payload length the chunk header declared (within the kind's cap).
    length: u32,
    scratch: &'a mut Vec<u8>,
    records: &'a mut Vec<PageRecord>,
}

impl<R: Read> RunReader<'_, R> {
    fn read(&mut self, sink: &mut dyn PageSink) -> Result<(), StreamError> {
        let payload_at = self.offset + CHUNK_HEADER_LEN as u64;
        let length = self.length as usize;
        // Every length below is checked against `length` before it is read, so a short
        // payload is refused as malformed, not read into the next chunk.
        self.need(RUN_HEADER_LEN, "page run header")?;
        self.scratch.clear();
        self.scratch.resize(RUN_HEADER_LEN, 0);
        read_full(self.framed, self.scratch, payload_at, "a Pages run header")?;
        let header = RunHeader::decode(self.scratch).map_err(|e| self.malformed(e))?;
        let data_at = RUN_HEADER_LEN + header.count as usize * RECORD_LEN + RECORDS_CHECKSUM_LEN;
        self.need(data_at, "page records")?;
        self.scratch.resize(data_at, 0);
        read_full(
            self.framed,
            &mut self.scratch[RUN_HEADER_LEN..],
            payload_at + RUN_HEADER_LEN as u64,
            "Pages run records",
        )?;
        decode_records(header, self.scratch, self.records).map_err(|e| self.malformed(e))?;
        let data_pages = self.records.iter().filter(|r| r.data).count();
        let expected = data_at + data_pages * PAGE_SIZE;
        if length != expected {
            return Err(self.malformed(if length < expected {
                Malformation::Short { field: "page data" }
            } else {
                Malformation::Trailing {
                    bytes: (length - expected) as u64,
                }
            }));
        }
        sink.begin_run(header, self.records)?;
        let mut at = payload_at + data_at as u64;
        for (first, count) in stretches(self.records) {
            let memory = sink.pages_mut(first, count)?;
            read_full(self.framed, memory, at, "Pages run data")?;
            at += memory.len() as u64;
        }
        Ok(())
    }

    /// Refuses a payload shorter than `bytes`.
    fn need(&self, bytes: usize, field: &'static str) -> Result<(), StreamError> {
        if (self.length as usize) < bytes {
            return Err(self.malformed(Malformation::Short { field }));
        }
        Ok(())
    }

    fn malformed(&self, error: Malformation) -> StreamError {
        StreamError::Malformed {
            kind: ChunkKind::Pages,
            offset: self.offset,
            error,
        }
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
        ChunkKind::Torn => "a Torn chunk payload",
    }
}
