//! One test per way a stream can be wrong: each builds a stream that is valid except for
//! that one thing and checks the destination's exact error (and so that it produced no
//! image).

mod common;

use common::{FakeVm, Rng};
use migration::checksum::ChunkChecksum;
use migration::crc::crc64;
use migration::destination::{Destination, Limits, VmImage, receive};
use migration::format::*;
use migration::stream::{Chunk, StreamReader, StreamWriter};
use migration::{ConfigError, Malformation, StreamError};

fn facts() -> SourceFacts {
    SourceFacts {
        kernel_profile: "6.16+memslot-flag".into(),
        host: "fake".into(),
        vendor: Vendor::Amd,
    }
}

fn header() -> StreamHeader {
    StreamHeader::new(StreamKind::Live, facts())
}

/// A valid body (no `End`): config, the skipped region, every page of "ram" (4) and
/// "gpu-bar" (2) in round 0, two vCPUs and one device.
fn body() -> Vec<Chunk> {
    let vm = FakeVm::new(11, 4, 2, Policy::Flush);
    let mut chunks = vec![
        Chunk::VmConfig(vm.config.clone()),
        Chunk::RegionSkipped { region: 7 },
    ];
    for (position, id) in [(0, 0), (1, 1)] {
        let mut run = PageRun::new(id, 0);
        for (index, page) in vm.memory[position].chunks(PAGE_SIZE).enumerate() {
            run.push(index as u32, page).unwrap();
        }
        chunks.push(Chunk::Pages(run));
    }
    for v in &vm.vcpus {
        chunks.push(Chunk::Vcpu(Box::new(v.clone())));
    }
    chunks.push(Chunk::Device(vm.devices[0].clone()));
    chunks
}

/// The totals a correct source would send for `body`, written at stream offset `at`.
fn totals(body: &[Chunk], at: u64) -> Totals {
    let mut t = Totals {
        stream_bytes: at,
        ..Totals::default()
    };
    let mut newest = None;
    for chunk in body {
        match chunk {
            Chunk::VmConfig(c) => {
                t.regions = (c.regions.iter().filter(|r| r.carries_pages()))
                    .map(|r| RegionTotals {
                        id: r.id,
                        ..RegionTotals::default()
                    })
                    .collect();
            }
            Chunk::Pages(run) => {
                newest = newest.max(Some(run.round));
                t.pages += run.len() as u64;
                if let Some(r) = t.regions.iter_mut().find(|r| r.id == run.region) {
                    for (_, slot) in run.pages() {
                        match slot {
                            PageSlot::Zero => r.zero_pages += 1,
                            PageSlot::Data(_) => r.data_pages += 1,
                        }
                    }
                }
            }
            Chunk::Vcpu(_) => t.vcpus += 1,
            Chunk::Device(_) => t.devices += 1,
            Chunk::RegionSkipped { .. } => t.skipped += 1,
            Chunk::End(_) | Chunk::Torn { .. } => {}
        }
    }
    t.rounds = newest.map_or(1, |r| r + 1);
    t
}

/// Header, `body`, and an `End` with correct totals edited by `edit`.
fn seal_with(header: &StreamHeader, body: &[Chunk], edit: impl FnOnce(&mut Totals)) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), header).unwrap();
    for chunk in body {
        w.write(chunk).unwrap();
    }
    let mut t = totals(body, w.position());
    edit(&mut t);
    w.write(&Chunk::End(t)).unwrap();
    w.into_inner()
}

fn seal(body: &[Chunk]) -> Vec<u8> {
    seal_with(&header(), body, |_| {})
}

/// What the destination makes of `bytes`.
fn read(bytes: &[u8]) -> Result<VmImage, StreamError> {
    let limits = Limits {
        max_memory: 1 << 20,
        max_vcpus: 8,
        prefault: true,
    };
    receive(&mut StreamReader::open(bytes)?, limits)
}

/// `(offset, kind, payload length)` of every chunk, from the framing alone.
fn layout(bytes: &[u8]) -> Vec<(usize, u16, usize)> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < bytes.len() {
        let kind = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((at, kind, len));
        at += CHUNK_HEADER_LEN + len + CHUNK_TRAILER_LEN;
    }
    out
}

/// A chunk with any kind, flags, declared length and payload, correctly checksummed.
fn raw_chunk(kind: u16, flags: u16, length: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&length.to_le_bytes());
    let head = crc64(&out);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = ChunkChecksum::of(VERSION).of_bytes(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn config_of(body: &[Chunk]) -> VmConfig {
    match &body[0] {
        Chunk::VmConfig(c) => c.clone(),
        other => panic!("body starts with {other:?}"),
    }
}

/// `body` with its configuration edited.
fn with_config(edit: impl FnOnce(&mut VmConfig)) -> Vec<Chunk> {
    let mut b = body();
    let mut c = config_of(&b);
    edit(&mut c);
    b[0] = Chunk::VmConfig(c);
    b
}

#[test]
fn the_valid_stream_is_accepted() {
    let image = read(&seal(&body())).expect("the control case decodes");
    assert_eq!(image.vcpus.len(), 2);
    assert_eq!(image.regions.len(), 3);
}

#[test]
fn bad_magic() {
    let mut bytes = seal(&body());
    bytes[..8].copy_from_slice(b"QEMU\0\0\0\x03");
    assert!(matches!(read(&bytes), Err(StreamError::BadMagic { found }) if &found[..4] == b"QEMU"));
}

#[test]
fn version_too_new() {
    for version in [Version::new(1, 5), Version::new(2, 0)] {
        let h = StreamHeader {
            version,
            ..header()
        };
        assert_eq!(
            read(&seal_with(&h, &body(), |_| {})).unwrap_err(),
            StreamError::VersionTooNew {
                found: version,
                newest: VERSION
            }
        );
    }
}

#[test]
fn streams_of_every_readable_version_still_read() {
    // 1.1 changed the live handshake, 1.2 the layout of a run, 1.3 the chunk checksum, 1.4
    // added `Torn`: a writer given an older version writes that version's stream, and this
    // build reads each back to the same image.
    assert!(OLDEST_READABLE < RECORDS_FIRST_SINCE && RECORDS_FIRST_SINCE <= VERSION);
    let current = read(&seal(&body())).unwrap();
    for version in [
        OLDEST_READABLE,
        Version::new(1, 1),
        Version::new(1, 2),
        Version::new(1, 3),
        VERSION,
    ] {
        let h = StreamHeader {
            version,
            ..header()
        };
        let bytes = seal_with(&h, &body(), |_| {});
        let image = read(&bytes).unwrap_or_else(|e| panic!("{version}: {e}"));
        assert_eq!(image.regions, current.regions, "{version}");
        // The layouts differ by the records' CRC, 8 bytes per run.
        let runs = body()
            .iter()
            .filter(|c| matches!(c, Chunk::Pages(_)))
            .count();
        let newest = seal(&body()).len();
        let extra = if Layout::of(version) == Layout::RecordsFirst {
            0
        } else {
            8 * runs
        };
        assert_eq!(bytes.len() + extra, newest, "{version}");
    }
}

#[test]
fn version_too_old() {
    let version = Version::new(0, 9);
    let h = StreamHeader {
        version,
        ..header()
    };
    assert_eq!(
        read(&seal_with(&h, &body(), |_| {})).unwrap_err(),
        StreamError::VersionTooOld {
            found: version,
            oldest: OLDEST_READABLE
        }
    );
}

#[test]
fn corrupted_header_byte() {
    let mut bytes = seal(&body());
    bytes[40] ^= 0x01; // inside the kernel profile
    assert!(matches!(
        read(&bytes),
        Err(StreamError::HeaderChecksum { .. })
    ));
}

#[test]
fn corrupted_byte_in_each_chunk_kind_names_the_chunk() {
    let bytes = seal(&body());
    let chunks = layout(&bytes);
    let mut seen = std::collections::HashSet::new();
    for &(at, kind, len) in &chunks {
        let kind = ChunkKind::try_from(kind).unwrap();
        seen.insert(kind);
        // (byte to flip, error expected): the payload and the trailer fail the chunk's
        // CRC, the header fails its own.
        let cases = [
            (at + CHUNK_HEADER_LEN + len / 2, true),
            (at + CHUNK_HEADER_LEN + len + 3, true),
            (at + 5, false),
        ];
        for (byte, in_payload) in cases {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x40;
            let err = read(&bad).unwrap_err();
            if in_payload {
                assert!(
                    matches!(err, StreamError::ChunkChecksum { kind: k, offset, .. }
                        if k == kind && offset == at as u64),
                    "{kind} byte {byte}: {err}"
                );
                assert!(
                    err.to_string()
                        .starts_with(&format!("{kind} chunk at byte {at}"))
                );
            } else {
                assert_eq!(err, StreamError::ChunkHeaderChecksum { offset: at as u64 });
            }
        }
    }
    assert_eq!(seen.len(), 6, "every chunk kind was corrupted: {seen:?}");
}

#[test]
fn truncated_at_every_chunk_boundary_and_inside_every_chunk() {
    let bytes = seal(&body());
    for (at, _, len) in layout(&bytes) {
        // (cut, what was being read)
        let cuts = [
            (at, "a chunk header"),
            (at + 7, "a chunk header"),
            (at + CHUNK_HEADER_LEN + len / 2, ""),
            (at + CHUNK_HEADER_LEN + len + 1, "a chunk checksum"),
        ];
        for (cut, what) in cuts {
            match read(&bytes[..cut]) {
                Err(StreamError::Truncated { offset, what: w }) => {
                    assert_eq!(offset, cut as u64);
                    assert!(what.is_empty() || w == what, "{w} at {cut}");
                    assert!(!w.is_empty());
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }
    // Inside the stream header, and right after it.
    for cut in [0, 50, HEADER_LEN] {
        assert!(matches!(
            read(&bytes[..cut]),
            Err(StreamError::Truncated { offset, .. }) if offset == cut as u64
        ));
    }
}

#[test]
fn unknown_chunk_kind() {
    let mut bytes = header().encode().unwrap().to_vec();
    bytes.extend(raw_chunk(42, 0, 0, &[]));
    assert_eq!(
        read(&bytes).unwrap_err(),
        StreamError::UnknownChunkKind {
            offset: HEADER_LEN as u64,
            value: 42
        }
    );
    let mut zero = header().encode().unwrap().to_vec();
    zero.extend(raw_chunk(0, 0, 0, &[]));
    assert_eq!(
        read(&zero).unwrap_err(),
        StreamError::InvalidChunkKind {
            offset: HEADER_LEN as u64
        }
    );
}

#[test]
fn unknown_chunk_flags() {
    let mut bytes = header().encode().unwrap().to_vec();
    bytes.extend(raw_chunk(5, 0x8000, 8, &[7, 0, 0, 0, 0, 0, 0, 0]));
    assert!(matches!(
        read(&bytes),
        Err(StreamError::UnknownChunkFlags { flags: 0x8000, .. })
    ));
}

#[test]
fn oversized_length_is_refused_before_allocating_or_reading() {
    // Nothing follows the header: had the reader believed the length, it would have
    // reported a truncated payload, not the cap.
    for (kind, length) in [
        (ChunkKind::Pages, u32::MAX),
        (ChunkKind::Device, ChunkKind::Device.max_payload() + 1),
        (ChunkKind::VmConfig, 1 << 30),
    ] {
        let mut bytes = header().encode().unwrap().to_vec();
        bytes.extend(raw_chunk(kind as u16, 0, length, &[]));
        bytes.truncate(HEADER_LEN + CHUNK_HEADER_LEN);
        assert_eq!(
            read(&bytes).unwrap_err(),
            StreamError::Oversized {
                kind,
                offset: HEADER_LEN as u64,
                length,
                cap: kind.max_payload()
            }
        );
    }
}

#[test]
fn oversized_counts_inside_a_payload_are_refused() {
    // A Pages payload declaring 100 000 pages in 16 bytes.
    let mut payload = Vec::new();
    for v in [0u32, 0, 100_000, 0] {
        payload.extend_from_slice(&v.to_le_bytes());
    }
    let mut bytes = header().encode().unwrap().to_vec();
    bytes.extend(raw_chunk(ChunkKind::Pages as u16, 0, 16, &payload));
    assert_eq!(
        read(&bytes).unwrap_err(),
        StreamError::Malformed {
            kind: ChunkKind::Pages,
            offset: HEADER_LEN as u64,
            error: Malformation::TooMany {
                field: "page count",
                count: 100_000,
                cap: MAX_PAGES_PER_CHUNK as u64
            }
        }
    );
}

/// The header and records of a records-first run of region 0, round 0, with their CRC.
fn run_head(records: &[(u32, bool)]) -> Vec<u8> {
    let mut head = Vec::new();
    for v in [0u32, 0, records.len() as u32, 0] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    for &(index, data) in records {
        head.extend_from_slice(&index.to_le_bytes());
        head.extend_from_slice(&[if data { 1 } else { 2 }, 0, 0, 0]);
    }
    let crc = crc64(&head);
    head.extend_from_slice(&crc.to_le_bytes());
    head
}

/// The stream header and the configuration of `body`, for a hand-made chunk to follow.
fn configured() -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new(), &header()).unwrap();
    w.write(&body()[0]).unwrap();
    w.into_inner()
}

#[test]
fn a_run_s_records_are_checked_before_its_pages_are_read() {
    let at = configured().len();
    let pages = |bytes: Vec<u8>| {
        let mut stream = configured();
        stream.extend(bytes);
        read(&stream).unwrap_err()
    };
    let malformed = |error| StreamError::Malformed {
        kind: ChunkKind::Pages,
        offset: at as u64,
        error,
    };

    // A corrupt record fails the records' own CRC: no index it names is believed, and the
    // chunk's CRC (which would only fail after the pages were read) is never reached.
    let mut bytes = seal(&body());
    let first_run = layout(&bytes)[2].0;
    bytes[first_run + CHUNK_HEADER_LEN + 16 + 4] ^= 0x40;
    assert!(matches!(
        read(&bytes).unwrap_err(),
        StreamError::Malformed {
            kind: ChunkKind::Pages,
            error: Malformation::RecordsChecksum { .. },
            offset,
        } if offset == first_run as u64
    ));

    // A page out of range is refused from the records alone: the stream ends right after
    // them, and the error is the range, not the truncation.
    let head = run_head(&[(999, true)]);
    let declared = (head.len() + PAGE_SIZE) as u32;
    assert_eq!(
        pages(raw_chunk(ChunkKind::Pages as u16, 0, declared, &head)),
        StreamError::PageOutOfRange {
            region: 0,
            index: 999,
            pages: 4
        }
    );

    // The declared length must be the records' data, to the byte.
    let head = run_head(&[(0, true), (1, false)]);
    assert_eq!(
        pages(raw_chunk(
            ChunkKind::Pages as u16,
            0,
            head.len() as u32,
            &head
        )),
        malformed(Malformation::Short { field: "page data" })
    );
    let mut long = head.clone();
    long.resize(head.len() + 2 * PAGE_SIZE, 7);
    assert_eq!(
        pages(raw_chunk(
            ChunkKind::Pages as u16,
            0,
            long.len() as u32,
            &long
        )),
        malformed(Malformation::Trailing {
            bytes: PAGE_SIZE as u64
        })
    );
    assert_eq!(
        pages(raw_chunk(ChunkKind::Pages as u16, 0, 20, &head[..20])),
        malformed(Malformation::Short {
            field: "page records"
        })
    );
}

#[test]
fn a_corrupt_page_read_into_staging_memory_still_fails_its_chunk() {
    // Pages 0..4 of "ram" with a flipped data byte: the pages were read into staging memory
    // before the chunk's CRC could fail, and the stream is refused all the same.
    let mut bytes = seal(&body());
    let (first_run, _, len) = layout(&bytes)[2];
    bytes[first_run + CHUNK_HEADER_LEN + len - 1] ^= 0x01;
    assert!(matches!(
        read(&bytes).unwrap_err(),
        StreamError::ChunkChecksum {
            kind: ChunkKind::Pages,
            offset,
            ..
        } if offset == first_run as u64
    ));
}

/// The valid body with the "ram" run of round 0 withdrawn by a `Torn` right after it, and,
/// after the round-0 runs, a run of round 1 sending again the "ram" pages `resent` (from the
/// same memory). Returns the body and the position of the withdrawn run in it.
fn withdrawn_body(resent: &[u32]) -> (Vec<Chunk>, usize) {
    let vm = FakeVm::new(11, 4, 2, Policy::Flush);
    let mut chunks = body();
    let ram = chunks
        .iter()
        .position(|c| matches!(c, Chunk::Pages(run) if run.region == 0))
        .unwrap();
    chunks.insert(
        ram + 1,
        Chunk::Torn {
            region: 0,
            round: 0,
        },
    );
    let mut again = PageRun::new(0, 1);
    for &index in resent {
        let at = index as usize * PAGE_SIZE;
        again
            .push(index, &vm.memory[0][at..at + PAGE_SIZE])
            .unwrap();
    }
    let after_runs = chunks
        .iter()
        .rposition(|c| matches!(c, Chunk::Pages(_)))
        .unwrap();
    chunks.insert(after_runs + 1, Chunk::Pages(again));
    (chunks, ram)
}

/// The byte offset of chunk `position` of `body` once sealed.
fn offset_of(bytes: &[u8], position: usize) -> usize {
    layout(bytes)[position].0
}

#[test]
fn a_withdrawn_run_may_fail_its_checksum_if_every_page_is_sent_again() {
    // A source sending a running guest's memory in place withdraws a run the guest wrote to
    // meanwhile: its checksum may fail, and its pages come again in a later round.
    let (chunks, ram) = withdrawn_body(&[0, 1, 2, 3]);
    let mut bytes = seal(&chunks);
    let (at, _, len) = layout(&bytes)[ram];
    bytes[at + CHUNK_HEADER_LEN + len - 100] ^= 0x20;
    let image = read(&bytes).expect("the torn run's pages were all sent again");
    assert_eq!(image.regions, read(&seal(&body())).unwrap().regions);
    // The same run, intact and withdrawn, is as good.
    assert!(read(&seal(&chunks)).is_ok());
}

#[test]
fn a_withdrawn_run_s_pages_must_all_be_sent_again() {
    // Page 2 is not sent again: the withdrawn copy is all the destination has of it, and
    // nothing vouches for it, whether its bytes arrived intact or not.
    let (chunks, ram) = withdrawn_body(&[0, 1, 3]);
    let intact = seal(&chunks);
    let mut corrupt = intact.clone();
    let (at, _, len) = layout(&corrupt)[ram];
    corrupt[at + CHUNK_HEADER_LEN + len - 100] ^= 0x20;
    for bytes in [intact, corrupt] {
        assert_eq!(
            read(&bytes).unwrap_err(),
            StreamError::TornPageNotResent {
                region: "ram".into(),
                index: 2
            }
        );
    }
}

#[test]
fn a_run_that_fails_its_checksum_is_refused_unless_the_next_chunk_withdraws_it() {
    // The failed run is followed by the BAR's run, not by `Torn`; the failure is reported
    // as the run's own, at its own offset.
    let (chunks, ram) = withdrawn_body(&[0, 1, 2, 3]);
    let mut without = chunks.clone();
    without.remove(ram + 1);
    let mut bytes = seal(&without);
    let at = offset_of(&bytes, ram);
    let len = layout(&bytes)[ram].2;
    bytes[at + CHUNK_HEADER_LEN + len - 100] ^= 0x20;
    assert!(matches!(
        read(&bytes).unwrap_err(),
        StreamError::ChunkChecksum { kind: ChunkKind::Pages, offset, .. } if offset == at as u64
    ));
}

#[test]
fn torn_must_name_the_run_just_before_it() {
    let (chunks, ram) = withdrawn_body(&[0, 1, 2, 3]);
    // After a chunk that is no run; naming another round or region; twice in a row.
    let cases: [(usize, Chunk); 4] = [
        (
            0,
            Chunk::Torn {
                region: 0,
                round: 0,
            },
        ),
        (
            ram + 1,
            Chunk::Torn {
                region: 0,
                round: 1,
            },
        ),
        (
            ram + 1,
            Chunk::Torn {
                region: 1,
                round: 0,
            },
        ),
        (
            ram + 2,
            Chunk::Torn {
                region: 0,
                round: 0,
            },
        ),
    ];
    for (at, torn) in cases {
        let mut bad = chunks.clone();
        bad.insert(at + 1, torn.clone());
        let Chunk::Torn { region, round } = torn else {
            unreachable!()
        };
        assert_eq!(
            read(&seal(&bad)).unwrap_err(),
            StreamError::TornNamesNoRun { region, round },
            "Torn inserted after chunk {at}"
        );
    }
}

#[test]
fn only_a_live_stream_of_1_4_on_may_withdraw_a_run() {
    let (chunks, _) = withdrawn_body(&[0, 1, 2, 3]);
    // A snapshot's guest was paused: nothing it sends can have torn.
    let snapshot = StreamHeader::new(StreamKind::Snapshot, facts());
    assert_eq!(
        read(&seal_with(&snapshot, &chunks, |_| {})).unwrap_err(),
        StreamError::TornOutsideLive {
            region: 0,
            round: 0
        }
    );
    // Before 1.4 there is no such chunk.
    let older = StreamHeader {
        version: Version::new(1, 3),
        ..header()
    };
    let bytes = seal_with(&older, &chunks, |_| {});
    assert!(TORN_SINCE > Version::new(1, 3));
    assert!(matches!(
        read(&bytes).unwrap_err(),
        StreamError::UnknownChunkKind { value: 7, .. }
    ));
}

/// `body` with one more chunk before `End`.
fn plus(chunk: Chunk) -> Vec<Chunk> {
    let mut b = body();
    b.push(chunk);
    b
}

fn page_run(region: u32, round: u32, index: u32) -> Chunk {
    let mut run = PageRun::new(region, round);
    run.push(index, &[0x33; PAGE_SIZE]).unwrap();
    Chunk::Pages(run)
}

#[test]
fn pages_outside_the_declared_regions() {
    assert_eq!(
        read(&seal(&plus(page_run(99, 0, 0)))).unwrap_err(),
        StreamError::UnknownRegion {
            kind: ChunkKind::Pages,
            region: 99
        }
    );
    assert_eq!(
        read(&seal(&plus(page_run(1, 0, 2)))).unwrap_err(),
        StreamError::PageOutOfRange {
            region: 1,
            index: 2,
            pages: 2
        }
    );
    assert!(matches!(
        read(&seal(&plus(page_run(0, 0, u32::MAX)))),
        Err(StreamError::PageOutOfRange { .. })
    ));
}

#[test]
fn overlapping_regions() {
    let b = with_config(|c| c.regions[1].gpa = c.regions[0].gpa + PAGE_SIZE as u64);
    assert_eq!(
        read(&seal(&b)).unwrap_err(),
        StreamError::Config(ConfigError::Overlap {
            first: "ram".into(),
            second: "gpu-bar".into()
        })
    );
}

#[test]
fn duplicate_vcpu() {
    let b = body();
    let first = b
        .iter()
        .find(|c| matches!(c, Chunk::Vcpu(_)))
        .unwrap()
        .clone();
    assert_eq!(
        read(&seal(&plus(first))).unwrap_err(),
        StreamError::DuplicateVcpu { id: 0 }
    );
}

#[test]
fn more_vcpus_than_declared() {
    let mut extra = FakeVm::new(12, 1, 1, Policy::Flush).vcpus[0].clone();
    extra.id = 2;
    assert_eq!(
        read(&seal(&plus(Chunk::Vcpu(Box::new(extra))))).unwrap_err(),
        StreamError::VcpuOutOfRange { id: 2, count: 2 }
    );
}

#[test]
fn missing_vcpu_at_end() {
    let mut b = body();
    b.retain(|c| !matches!(c, Chunk::Vcpu(v) if v.id == 1));
    assert_eq!(
        read(&seal(&b)).unwrap_err(),
        StreamError::MissingVcpu { id: 1 }
    );
}

#[test]
fn vcpu_without_its_memory_type_msrs() {
    for (drop, dup) in [
        (msr::IA32_PAT, false),
        (msr::MTRR_DEF_TYPE, false),
        (0, true),
    ] {
        let mut b = body();
        for c in &mut b {
            if let Chunk::Vcpu(v) = c
                && v.id == 1
            {
                if dup {
                    let first = v.msrs[0];
                    v.msrs.push(first);
                } else {
                    v.msrs.retain(|m| m.index != drop);
                }
            }
        }
        let want = if dup {
            StreamError::DuplicateMsr {
                vcpu: 1,
                msr: msr::IA32_PAT,
            }
        } else {
            StreamError::MissingMsr { vcpu: 1, msr: drop }
        };
        assert_eq!(read(&seal(&b)).unwrap_err(), want);
    }
}

#[test]
fn totals_mismatch() {
    type Edit = fn(&mut Totals);
    // (edit, which total is reported)
    let cases: [(Edit, &str); 8] = [
        (|t| t.pages += 1, "pages"),
        (|t| t.stream_bytes -= 1, "stream bytes"),
        (|t| t.vcpus = 3, "vcpus"),
        (|t| t.devices = 0, "devices"),
        (|t| t.skipped = 0, "skipped regions"),
        (|t| t.regions[1].data_pages += 1, "data pages"),
        (|t| t.regions[0].zero_pages += 1, "zero pages"),
        (|t| t.regions.pop().map_or((), drop), "region totals"),
    ];
    for (edit, what) in cases {
        let err = read(&seal_with(&header(), &body(), edit)).unwrap_err();
        assert!(
            matches!(err, StreamError::TotalsMismatch { what: w, .. } if w == what),
            "{what}: {err}"
        );
    }
    let err = read(&seal_with(&header(), &plus(page_run(0, 3, 0)), |t| {
        t.rounds = 2
    }));
    assert_eq!(
        err.unwrap_err(),
        StreamError::TotalsMismatch {
            what: "rounds",
            declared: 2,
            received: 4
        }
    );
}

#[test]
fn pages_for_a_skip_region() {
    assert_eq!(
        read(&seal(&plus(page_run(7, 0, 0)))).unwrap_err(),
        StreamError::PagesForSkippedRegion {
            region: "scanout".into()
        }
    );
}

#[test]
fn a_refuse_region_is_refused_so_its_pages_never_land() {
    let b = with_config(|c| c.regions[1].policy = Policy::Refuse);
    assert_eq!(
        read(&seal(&b)).unwrap_err(),
        StreamError::RefusedRegion {
            region: "gpu-bar".into()
        }
    );
}

#[test]
fn skip_announcements_must_match_the_policies() {
    let mut b = body();
    b.retain(|c| !matches!(c, Chunk::RegionSkipped { .. }));
    assert_eq!(
        read(&seal(&b)).unwrap_err(),
        StreamError::SkipNotAnnounced {
            region: "scanout".into()
        }
    );
    assert_eq!(
        read(&seal(&plus(Chunk::RegionSkipped { region: 7 }))).unwrap_err(),
        StreamError::DuplicateSkip {
            region: "scanout".into()
        }
    );
    assert_eq!(
        read(&seal(&plus(Chunk::RegionSkipped { region: 1 }))).unwrap_err(),
        StreamError::SkipForCopiedRegion {
            region: "gpu-bar".into(),
            policy: Policy::Flush
        }
    );
}

#[test]
fn a_page_that_never_arrived() {
    let mut b = body();
    for c in &mut b {
        if let Chunk::Pages(run) = c
            && run.region == 0
        {
            let mut shorter = PageRun::new(0, 0);
            for (index, slot) in run.pages().filter(|(i, _)| *i != 2) {
                let page = match slot {
                    PageSlot::Data(p) => p.to_vec(),
                    PageSlot::Zero => vec![0; PAGE_SIZE],
                };
                shorter.push(index, &page).unwrap();
            }
            *run = shorter;
        }
    }
    assert_eq!(
        read(&seal(&b)).unwrap_err(),
        StreamError::MissingPage {
            region: "ram".into(),
            index: 2
        }
    );
}

#[test]
fn chunks_out_of_order() {
    let b = body();
    assert_eq!(
        read(&seal(&b[1..])).unwrap_err(),
        StreamError::OutOfOrder {
            found: ChunkKind::RegionSkipped,
            expected: "VmConfig"
        }
    );
    assert!(matches!(
        read(&seal(&plus(b[0].clone()))),
        Err(StreamError::OutOfOrder {
            found: ChunkKind::VmConfig,
            ..
        })
    ));
    // A destination is closed after End and after an error.
    let mut d = Destination::new(header(), Limits::default());
    assert!(d.accept(page_run(0, 0, 0), 0).is_err());
    assert!(d.accept(b[0].clone(), 0).is_err(), "an error closes it");
}

#[test]
fn rounds_never_go_back() {
    let b = plus(page_run(0, 2, 1));
    let mut b2 = b.clone();
    b2.push(page_run(0, 1, 1));
    assert_eq!(
        read(&seal(&b2)).unwrap_err(),
        StreamError::RoundWentBack {
            round: 1,
            previous: 2
        }
    );
}

#[test]
fn limits_are_checked_before_staging_memory() {
    let huge = with_config(|c| {
        c.regions[1].gpa = 1 << 44;
        c.regions[1].size = 1 << 40;
    });
    assert_eq!(
        read(&seal(&huge)).unwrap_err(),
        StreamError::MemoryLimit {
            needed: (1 << 40) + 4 * PAGE_SIZE as u64,
            limit: 1 << 20
        }
    );
    let many = with_config(|c| c.vcpu_count = 9);
    assert_eq!(
        read(&seal(&many)).unwrap_err(),
        StreamError::VcpuLimit {
            declared: 9,
            limit: 8
        }
    );
}

#[test]
fn devices_are_unique_and_bounded() {
    let b = body();
    let device = b.last().unwrap().clone();
    assert_eq!(
        read(&seal(&plus(device))).unwrap_err(),
        StreamError::DuplicateDevice {
            name: "virtio-gpu".into()
        }
    );
    let mut many = body();
    for i in 0..MAX_DEVICES {
        many.push(Chunk::Device(DeviceState {
            name: format!("dev{i}"),
            state: Vec::new(),
        }));
    }
    assert_eq!(
        read(&seal(&many)).unwrap_err(),
        StreamError::TooManyDevices { cap: MAX_DEVICES }
    );
}

#[test]
fn random_single_byte_corruption_is_always_caught() {
    // Every byte of the stream is covered by a CRC; a flip anywhere is refused.
    let bytes = seal(&body());
    let mut rng = Rng::new(0x5eed);
    for _ in 0..300 {
        let mut bad = bytes.clone();
        let at = rng.below(bad.len() as u64) as usize;
        bad[at] ^= 1 << rng.below(8);
        assert!(read(&bad).is_err(), "flip at {at} went unnoticed");
    }
}
