//! Hostile input: random bytes, random but correctly framed chunks, and valid streams with
//! random payload bytes re-sealed under fresh CRCs (so decoding reaches every semantic
//! check). The destination must never panic, and no allocation it makes may exceed what the
//! caps allow, whatever lengths and counts the input claims. A counting allocator measures
//! the largest single allocation made while decoding. (Staging memory is mapped, not
//! allocated, and is bounded by `Limits::max_memory` before it is mapped: the
//! `MemoryLimit` cases of `failure_modes.rs`.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::FakeVm;
use migration::StreamError;
use migration::checksum::ChunkChecksum;
use migration::crc::crc64;
use migration::destination::{Limits, RegionContents, VmImage, receive};
use migration::format::*;
use migration::stream::{Chunk, StreamReader, StreamWriter};
use proptest::prelude::*;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records the size of every allocation made by a thread that is tracking.
fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = TRACKING.try_with(|tracking| {
        if tracking.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

/// The system allocator, plus [`note`].
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; `note` only reads and writes thread-local cells, which
// neither allocate nor unwind.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which `System.alloc` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: `ptr` came from `System` through this allocator, with this layout; the
        // caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The destination's limits in these tests: 256 KiB of guest memory, 8 vCPUs.
const LIMITS: Limits = Limits {
    max_memory: 256 << 10,
    max_vcpus: 8,
    prefault: true,
};

/// The most any single allocation may be: a reused payload buffer that grew by doubling
/// stays under twice the largest chunk cap (the memory limit is smaller).
fn allocation_bound() -> usize {
    2 * ChunkKind::Pages.max_payload() as usize
}

/// Decodes `bytes` and returns the outcome with the largest allocation made meanwhile.
fn decode(bytes: &[u8]) -> (Result<VmImage, StreamError>, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let result = StreamReader::open(bytes).and_then(|mut r| receive(&mut r, LIMITS));
    TRACKING.with(|t| t.set(false));
    (result, LARGEST.with(Cell::get))
}

/// An image that decoded must be whole.
fn assert_whole(image: &VmImage) {
    assert_eq!(image.vcpus.len() as u32, image.vcpu_count);
    for (id, v) in image.vcpus.iter().enumerate() {
        assert_eq!(v.id as usize, id);
    }
    for r in &image.regions {
        if let RegionContents::Memory(bytes) = &r.contents {
            assert_eq!(bytes.len() as u64, r.config.size);
        }
    }
}

fn header() -> StreamHeader {
    StreamHeader::new(
        StreamKind::Live,
        SourceFacts {
            kernel_profile: "6.16+memslot-flag".into(),
            host: "fake".into(),
            vendor: Vendor::Intel,
        },
    )
}

/// A valid stream of a small VM, with its chunk layout: `(offset, payload length)`. Its
/// "ram" run of round 0 is withdrawn (`Torn`) and sent again in round 1, so that mutations
/// reach a withdrawal and the pages it leaves unverified too.
fn valid_stream() -> (Vec<u8>, Vec<(usize, usize)>) {
    let vm = FakeVm::new(31, 4, 2, Policy::Flush);
    let mut w = StreamWriter::new(Vec::new(), &header()).unwrap();
    let mut layout = Vec::new();
    let mut put = |w: &mut StreamWriter<Vec<u8>>, chunk: &Chunk| {
        let at = w.position() as usize;
        let size = w.write(chunk).unwrap() as usize;
        layout.push((at, size - CHUNK_HEADER_LEN - CHUNK_TRAILER_LEN));
    };
    put(&mut w, &Chunk::VmConfig(vm.config.clone()));
    put(&mut w, &Chunk::RegionSkipped { region: 7 });
    let mut regions = Vec::new();
    for (position, id) in [(0usize, 0u32), (1, 1)] {
        let mut run = PageRun::new(id, 0);
        let (mut data, mut zero) = (0, 0);
        for (index, page) in vm.memory[position].chunks(PAGE_SIZE).enumerate() {
            if run.push(index as u32, page).unwrap() {
                zero += 1;
            } else {
                data += 1;
            }
        }
        put(&mut w, &Chunk::Pages(run));
        if id == 0 {
            put(
                &mut w,
                &Chunk::Torn {
                    region: 0,
                    round: 0,
                },
            );
        }
        regions.push(RegionTotals {
            id,
            data_pages: data,
            zero_pages: zero,
        });
    }
    let mut again = PageRun::new(0, 1);
    for (index, page) in vm.memory[0].chunks(PAGE_SIZE).enumerate() {
        again.push(index as u32, page).unwrap();
    }
    regions[0].data_pages *= 2;
    regions[0].zero_pages *= 2;
    put(&mut w, &Chunk::Pages(again));
    for v in &vm.vcpus {
        put(&mut w, &Chunk::Vcpu(Box::new(v.clone())));
    }
    put(&mut w, &Chunk::Device(vm.devices[0].clone()));
    let totals = Totals {
        rounds: 2,
        vcpus: 2,
        devices: 1,
        skipped: 1,
        pages: 10,
        stream_bytes: w.position(),
        regions,
    };
    put(&mut w, &Chunk::End(totals));
    (w.into_inner(), layout)
}

/// Recomputes the header's and every chunk's checksums after `bytes` were edited.
fn reseal(bytes: &mut [u8], layout: &[(usize, usize)]) {
    let crc = crc64(&bytes[..HEADER_LEN - 8]);
    bytes[HEADER_LEN - 8..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    for &(at, len) in layout {
        let head = crc64(&bytes[at..at + 8]);
        bytes[at + 8..at + 16].copy_from_slice(&head.to_le_bytes());
        let end = at + CHUNK_HEADER_LEN + len;
        let crc = ChunkChecksum::of(VERSION).of_bytes(&bytes[at..end]);
        bytes[end..end + 8].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A correctly framed chunk of any kind, flags and payload.
fn raw_chunk(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let head = crc64(&out);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = ChunkChecksum::of(VERSION).of_bytes(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn the_unmutated_stream_decodes() {
    let (bytes, _) = valid_stream();
    let (result, largest) = decode(&bytes);
    assert_whole(&result.expect("the control stream decodes"));
    assert!(largest <= allocation_bound());
}

#[test]
fn claimed_sizes_allocate_nothing_before_they_are_checked() {
    // A Pages chunk claiming 4 GiB, a configuration claiming a terabyte of memory or 255
    // vCPUs, a Vcpu claiming u32::MAX MSRs: each is refused with only small allocations.
    let mut oversized = header().encode().unwrap().to_vec();
    let mut head = raw_chunk(ChunkKind::Pages as u16, 0, &[]);
    head[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let crc = crc64(&head[..8]);
    head[8..16].copy_from_slice(&crc.to_le_bytes());
    oversized.extend_from_slice(&head[..16]);

    let config = |vcpu_count, size| {
        let mut w = StreamWriter::new(Vec::new(), &header()).unwrap();
        let regions = vec![RegionConfig::coherent(0, "ram", RegionKind::Ram, 0, size)];
        w.write(&Chunk::VmConfig(VmConfig {
            vcpu_count,
            regions,
        }))
        .unwrap();
        w.into_inner()
    };

    let mut msrs = header().encode().unwrap().to_vec();
    let mut payload = vec![0u8; 16];
    payload[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    msrs.extend(raw_chunk(ChunkKind::Vcpu as u16, 0, &payload));

    let cases = [
        ("oversized", oversized),
        ("memory", config(2, 1 << 40)),
        ("vcpus", config(255, 4096)),
        ("msrs", msrs),
    ];
    for (name, bytes) in cases {
        let (result, largest) = decode(&bytes);
        assert!(result.is_err(), "{name}");
        assert!(largest < 64 * 1024, "{name}: allocated {largest} bytes");
    }
}

#[test]
fn a_huge_skipped_region_allocates_nothing_for_its_pages() {
    // Found by `resealed_mutations_never_panic_or_overallocate`: a `skip` region's size
    // grown by a byte of the size field (17 << 32 bytes) once cost a 2 MiB page bitmap.
    let (mut bytes, layout) = valid_stream();
    bytes[284] = 17;
    reseal(&mut bytes, &layout);
    let (_, largest) = decode(&bytes);
    assert!(largest <= allocation_bound(), "allocated {largest} bytes");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_decode(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (result, largest) = decode(&bytes);
        prop_assert!(result.is_err());
        prop_assert!(largest <= allocation_bound());
    }

    #[test]
    fn random_framed_chunks_never_panic(
        chunks in proptest::collection::vec(
            (0u16..9, prop_oneof![Just(0u16), any::<u16>()],
             proptest::collection::vec(any::<u8>(), 0..600)),
            0..12,
        ),
    ) {
        let mut bytes = header().encode().unwrap().to_vec();
        for (kind, flags, payload) in &chunks {
            bytes.extend(raw_chunk(*kind, *flags, payload));
        }
        let (result, largest) = decode(&bytes);
        prop_assert!(largest <= allocation_bound());
        if let Ok(image) = result {
            assert_whole(&image);
        }
    }

    #[test]
    fn resealed_mutations_never_panic_or_overallocate(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        whole_payloads in any::<bool>(),
    ) {
        let (mut bytes, layout) = valid_stream();
        // Editable bytes: the header after magic and version, and each chunk's payload
        // (never its length, which would break the framing this test keeps valid). Half of
        // the cases aim at structure — each chunk's kind and the first 512 bytes of its
        // payload, which hold every count, id and name — rather than at page data.
        let mut editable: Vec<usize> = (12..HEADER_LEN - 8).collect();
        for &(at, len) in &layout {
            let payload = at + CHUNK_HEADER_LEN;
            if whole_payloads {
                editable.extend(payload..payload + len);
            } else {
                editable.extend(at..at + 2);
                editable.extend(payload..payload + len.min(512));
            }
        }
        for (index, value) in &edits {
            let at = editable[index.index(editable.len())];
            bytes[at] = *value;
        }
        reseal(&mut bytes, &layout);
        let (result, largest) = decode(&bytes);
        prop_assert!(largest <= allocation_bound());
        if let Ok(image) = result {
            assert_whole(&image);
        }
    }
}
