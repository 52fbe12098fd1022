//! [`StreamWriter`]: writes the stream header, then chunks framed with their header and
//! checksum trailer, and counts the bytes (the `End` chunk reports them).

use std::io::{self, IoSlice, Write};

use super::Chunk;
use crate::checksum::ChunkChecksum;
use crate::error::EncodeError;
use crate::format::{
    CHUNK_HEADER_LEN, CHUNK_TRAILER_LEN, ChunkHeader, ChunkKind, HEADER_LEN, Layout, PAGE_SIZE,
    PageRecord, PageRun, RunHeader, StreamHeader, encode_head, page_stretches,
};

/// Writes a stream.
///
/// ```
/// use migration::format::*;
/// use migration::stream::{Chunk, StreamReader, StreamWriter};
///
/// let facts = SourceFacts { kernel_profile: "6.16+memslot-flag".into(), host: "model".into(),
///                           vendor: Vendor::Intel };
/// let mut writer = StreamWriter::new(Vec::new(), &StreamHeader::new(StreamKind::Snapshot, facts))?;
/// writer.write(&Chunk::RegionSkipped { region: 1 })?;
/// let bytes = writer.into_inner();
///
/// let mut reader = StreamReader::open(&bytes[..])?;
/// assert_eq!(reader.next_chunk()?, Chunk::RegionSkipped { region: 1 });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StreamWriter<W: Write> {
    inner: W,
    position: u64,
    /// The layout and chunk checksum of the header's version: a writer given an older
    /// version writes a stream an older reader reads.
    layout: Layout,
    checksum: ChunkChecksum,
    payload: Vec<u8>,
    /// The trailer of a run sent in place, counted as written, to go out with the next
    /// chunk (or at [`flush`](Self::flush)): on its own it would be a system call and a
    /// TCP segment of 8 bytes per run.
    pending: Option<[u8; CHUNK_TRAILER_LEN]>,
}

impl<W: Write> StreamWriter<W> {
    /// Writes `header` and returns a writer for the chunks.
    pub fn new(mut inner: W, header: &StreamHeader) -> Result<Self, EncodeError> {
        header.write_to(&mut inner)?;
        Ok(StreamWriter {
            inner,
            position: HEADER_LEN as u64,
            layout: Layout::of(header.version),
            checksum: ChunkChecksum::of(header.version),
            payload: Vec::new(),
            pending: None,
        })
    }

    /// Writes one chunk; returns its size in bytes, framing included.
    pub fn write(&mut self, chunk: &Chunk) -> Result<u64, EncodeError> {
        let layout = self.layout;
        self.frame_encoded(chunk.kind(), |buf| chunk.encode_payload(layout, buf))
    }

    /// Writes a `Pages` chunk without moving the run into a [`Chunk`], so the sender can
    /// reuse the run; in a records-first stream, straight from the run's buffers.
    pub fn write_pages(&mut self, run: &mut PageRun) -> Result<u64, EncodeError> {
        match self.layout {
            Layout::RecordsFirst => self.frame(
                ChunkKind::Pages,
                &run.records_first(),
                Checksum::BeforeWrite,
            ),
            Layout::Interleaved => self.frame_encoded(ChunkKind::Pages, |buf| {
                run.encode(Layout::Interleaved, buf);
                Ok(())
            }),
        }
    }

    /// Writes a `Pages` run of the pages `records` names, whose contents are read from
    /// `memory` (a region's bytes in place: page `index` at `index * PAGE_SIZE`) rather
    /// than from a copy. In a records-first stream they are handed to the kernel first
    /// and checksummed after, from the cache the kernel's copy left them in; if the memory
    /// changed meanwhile, the trailer disagrees with the bytes sent, and the caller, which
    /// can tell, withdraws the run (`Torn`). The trailer goes out with the next chunk, or
    /// at [`flush`](Self::flush). Returns the chunk's size.
    pub fn write_pages_in_place(
        &mut self,
        header: RunHeader,
        records: &[PageRecord],
        memory: &[u8],
    ) -> Result<u64, EncodeError> {
        let pages = (memory.len() / PAGE_SIZE) as u64;
        if let Some(r) = records.iter().find(|r| u64::from(r.index) >= pages) {
            return Err(EncodeError::PageOutsideMemory {
                index: r.index,
                pages,
            });
        }
        let page = |index: u32| {
            let at = index as usize * PAGE_SIZE;
            &memory[at..at + PAGE_SIZE]
        };
        let mut head = std::mem::take(&mut self.payload);
        head.clear();
        let written = match self.layout {
            Layout::RecordsFirst => {
                encode_head(header, records, &mut head);
                let stretches = page_stretches(records.iter().map(|r| r.data.then_some(r.index)));
                let parts: Vec<&[u8]> = std::iter::once(&head[..])
                    .chain(stretches.map(|(first, count)| {
                        let at = first as usize * PAGE_SIZE;
                        &memory[at..at + count * PAGE_SIZE]
                    }))
                    .collect();
                self.frame(ChunkKind::Pages, &parts, Checksum::AfterWrite)
            }
            Layout::Interleaved => {
                // The pages are copied into the payload, and checksummed as copied.
                let mut run = PageRun::new(header.region, header.round);
                let pushed = records
                    .iter()
                    .try_for_each(|r| run.push_record(*r, page(r.index)));
                pushed.and_then(|()| {
                    run.encode(Layout::Interleaved, &mut head);
                    self.frame(ChunkKind::Pages, &[&head], Checksum::BeforeWrite)
                })
            }
        };
        self.payload = head;
        written
    }

    /// Frames the payload `encode` appends to the writer's reused buffer.
    fn frame_encoded(
        &mut self,
        kind: ChunkKind,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<u64, EncodeError> {
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        let framed = encode(&mut payload)
            .and_then(|()| self.frame(kind, &[&payload], Checksum::BeforeWrite));
        self.payload = payload;
        framed
    }

    /// Frames the concatenation of `parts` as the payload of a chunk of `kind`, checksummed
    /// as `when` says.
    fn frame(
        &mut self,
        kind: ChunkKind,
        parts: &[&[u8]],
        when: Checksum,
    ) -> Result<u64, EncodeError> {
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        // Each encoder checks its own counts against the caps, so this holds; checked
        // anyway because a reader would refuse the chunk.
        if len > kind.max_payload() as usize {
            return Err(EncodeError::TooMany {
                field: "payload bytes",
                count: len as u64,
                cap: kind.max_payload().into(),
            });
        }
        let header = ChunkHeader {
            kind,
            flags: 0,
            length: len as u32,
        }
        .encode();
        // A copied run's pages are checksummed here, before the write, from the run (1 MiB,
        // still in the cache from the copy into it) rather than page by page as they are
        // copied in: measured here, XXH3 over the whole run costs less than fused into the
        // copy loop. A run sent in place is checksummed after the write, for the same cache.
        let checksum = self.checksum;
        let trailer = || {
            let mut digest = checksum.start();
            digest.update(&header);
            for part in parts {
                digest.update(part);
            }
            digest.finish().to_le_bytes()
        };
        // One gathering write for the whole chunk, after the trailer of the run before if
        // that was sent in place: a run is then one system call, not a small write of its
        // header and records (on its own segment, under TCP_NODELAY, waking the destination
        // for it) followed by its data.
        let before = match when {
            Checksum::BeforeWrite => Some(trailer()),
            Checksum::AfterWrite => None,
        };
        let pending = self.pending.take();
        let mut slices: Vec<IoSlice<'_>> = (pending.iter().map(|p| &p[..]))
            .chain([&header[..]])
            .chain(parts.iter().copied())
            .chain(before.iter().map(|t| &t[..]))
            .map(IoSlice::new)
            .collect();
        write_all_vectored(&mut self.inner, &mut slices)?;
        if before.is_none() {
            self.pending = Some(trailer());
        }
        let size = (CHUNK_HEADER_LEN + len + CHUNK_TRAILER_LEN) as u64;
        self.position += size;
        Ok(size)
    }

    /// Bytes written so far, the stream header included.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Writes a trailer still pending (see [`write_pages_in_place`](Self::write_pages_in_place)),
    /// then flushes the underlying writer.
    pub fn flush(&mut self) -> Result<(), EncodeError> {
        if let Some(trailer) = self.pending.take() {
            self.inner.write_all(&trailer)?;
        }
        self.inner.flush()?;
        Ok(())
    }

    /// The underlying writer, for what follows the stream (the live COMMIT message), once
    /// [`flush`](Self::flush)ed.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The underlying writer, once [`flush`](Self::flush)ed.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// When a chunk's checksum is taken.
#[derive(Debug, Clone, Copy)]
enum Checksum {
    /// Before its bytes are written: they are the writer's own and cannot change.
    BeforeWrite,
    /// After: the bytes are read where they lie, once by the kernel's copy into the
    /// socket (from memory) and once by the checksum (from the cache that copy filled), not
    /// twice from memory.
    AfterWrite,
}

/// Writes every byte of `slices`, in order, in as few `write_vectored` calls as `out` takes.
fn write_all_vectored(out: &mut impl Write, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    // Empty slices first skipped, so that an empty remainder ends the loop.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match out.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{PAGE_SIZE, SourceFacts, StreamKind, VERSION, Vendor, Version};

    fn writer_of(version: Version) -> StreamWriter<Vec<u8>> {
        let facts = SourceFacts {
            kernel_profile: "host".into(),
            host: "test".into(),
            vendor: Vendor::Amd,
        };
        let header = StreamHeader {
            version,
            ..StreamHeader::new(StreamKind::Snapshot, facts)
        };
        StreamWriter::new(Vec::new(), &header).unwrap()
    }

    /// Takes at most 5 bytes per call, vectored or not, to exercise short writes.
    struct Dribble(Vec<u8>);

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(5);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            self.write(first)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_vectored_writes_still_write_every_byte_in_order() {
        let parts: [&[u8]; 5] = [b"", b"chunk ", b"", b"header and a longer body", b"!"];
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut out = Dribble(Vec::new());
        write_all_vectored(&mut out, &mut slices).unwrap();
        assert_eq!(out.0, b"chunk header and a longer body!");
    }

    #[test]
    fn a_run_sent_from_memory_in_place_is_the_run_copied_in_every_version() {
        // Pages 3, 4, 5 and 9 of a 12-page region, page 4 zero: the in-place writer reads
        // the data pages where they lie, in two stretches, and checksums them after the
        // write; unchanged memory makes the very bytes of the copied run.
        let memory: Vec<u8> = (0..12 * PAGE_SIZE)
            .map(|i| {
                if i / PAGE_SIZE == 4 {
                    0
                } else {
                    (i % 251) as u8
                }
            })
            .collect();
        let page = |i: usize| &memory[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
        let mut run = PageRun::new(1, 2);
        for i in [3, 4, 5, 9] {
            run.push(i as u32, page(i)).unwrap();
        }
        for version in [Version::new(1, 0), Version::new(1, 2), VERSION] {
            let mut copied = writer_of(version);
            let size = copied.write_pages(&mut run).unwrap();
            let mut in_place = writer_of(version);
            let written = in_place.write_pages_in_place(run.header(), run.records(), &memory);
            assert_eq!(written.unwrap(), size, "{version}");
            assert_eq!(in_place.position(), copied.position());
            // Then a chunk more: in place, the run's trailer goes out with it.
            let next = Chunk::RegionSkipped { region: 3 };
            assert_eq!(in_place.write(&next), copied.write(&next));
            assert_eq!(in_place.into_inner(), copied.into_inner(), "{version}");
        }
        // At the end of a stream, the flush writes the trailer still pending.
        let mut in_place = writer_of(VERSION);
        let mut copied = writer_of(VERSION);
        in_place
            .write_pages_in_place(run.header(), run.records(), &memory)
            .unwrap();
        copied.write_pages(&mut run).unwrap();
        let short = in_place.get_mut().len();
        assert_eq!(short + CHUNK_TRAILER_LEN, copied.get_mut().len());
        in_place.flush().unwrap();
        assert_eq!(in_place.into_inner(), copied.into_inner());
        {}
        let beyond = [PageRecord {
            index: 12,
            data: true,
        }];
        assert_eq!(
            writer_of(VERSION).write_pages_in_place(run.header(), &beyond, &memory),
            Err(EncodeError::PageOutsideMemory {
                index: 12,
                pages: 12
            })
        );
    }

    #[test]
    fn a_run_framed_from_its_buffers_is_the_run_framed_whole_in_every_version() {
        // `write_pages` frames a run from its own buffers in one gathering write; `write`
        // encodes it into one. Whatever the layout and checksum, the bytes are the same.
        let mut run = PageRun::new(2, 5);
        for index in 0..40u32 {
            let fill = if index % 7 == 3 {
                0
            } else {
                index as u8 | 0x80
            };
            run.push(index * 3, &[fill; PAGE_SIZE]).unwrap();
        }
        for version in [Version::new(1, 1), Version::new(1, 2), VERSION] {
            let mut gathered = writer_of(version);
            let size = gathered.write_pages(&mut run).unwrap();
            let mut whole = writer_of(version);
            assert_eq!(whole.write(&Chunk::Pages(run.clone())).unwrap(), size);
            assert_eq!(gathered.into_inner(), whole.into_inner(), "{version}");
        }
    }
}
