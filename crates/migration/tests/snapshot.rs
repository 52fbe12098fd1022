//! Snapshots through files: the round trip of a whole VM (zero and random pages, two vCPUs
//! with PAT and MTRR MSRs, a device blob, a `flush`, a `skip` and a plain region), the
//! atomic file handling, and installing the image with the `flush` policy.

mod common;

use std::path::PathBuf;

use common::{FakeVm, RecordingCache, SourceFault};
use migration::StreamError;
use migration::destination::{Limits, RegionContents};
use migration::format::{PAGE_SIZE, Policy, msr};
use migration::precopy::MigrationError;
use migration::snapshot::{self, SnapshotError, SnapshotOptions};

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("migration-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create the test directory");
    d
}

#[test]
fn snapshot_round_trips_every_byte_and_register() {
    let d = dir("roundtrip");
    let path = d.join("vm.snap");
    let mut vm = FakeVm::new(1, 64, 16, Policy::Flush);
    let cache = RecordingCache::default();
    let summary = snapshot::write_to_path(&path, &mut vm, &cache, &SnapshotOptions::default())
        .expect("snapshot");

    // The guest was paused for the copy and runs again; no temporary file is left.
    assert_eq!((vm.pauses, vm.resumes, vm.running), (1, 1, true));
    assert_eq!(
        std::fs::read_dir(&d).unwrap().count(),
        1,
        "only the snapshot remains"
    );

    let image = snapshot::read_from_path(&path, Limits::default()).expect("restore");
    assert_eq!(image.config(), vm.config);
    assert_eq!(image.header.facts.kernel_profile, "6.16+memslot-flag");
    for region in &image.regions {
        match &region.contents {
            RegionContents::Memory(bytes) => {
                assert_eq!(&bytes[..], vm.region_memory(region.config.id));
            }
            RegionContents::Recreate => assert_eq!(region.config.policy, Policy::Skip),
        }
    }
    assert_eq!(image.vcpus, vm.vcpus);
    assert_eq!(
        image.vcpus[1].msr(msr::IA32_PAT),
        Some(0x0007_0406_0007_0106)
    );
    assert_eq!(image.vcpus[0].msr(msr::MTRR_DEF_TYPE), Some(0xc06));
    assert_eq!(image.devices, vm.devices);

    // The summary: one round, every page of the two copied regions, zero pages elided,
    // every `flush` page flushed once before it was read, and bytes by policy.
    let zero_pages = |id| {
        vm.region_memory(id)
            .chunks(PAGE_SIZE)
            .filter(|p| p.iter().all(|&b| b == 0))
            .count() as u64
    };
    assert_eq!((summary.rounds, summary.converged), (1, true));
    assert_eq!(summary.pages_sent, 64 + 16);
    assert_eq!(summary.pages_elided, zero_pages(0) + zero_pages(1));
    assert!(summary.pages_elided > 0);
    let bar = &summary.regions[1];
    assert_eq!((bar.policy, bar.flushed_pages), (Policy::Flush, 16));
    assert_eq!(summary.regions[0].flushed_pages, 0);
    let bar_base = vm.page_addr(1, 0);
    let counts = cache.counts();
    assert_eq!(counts.len(), 16);
    assert!((0..16).all(|i| counts.get(&(bar_base + i * PAGE_SIZE)) == Some(&1)));
    assert_eq!(
        summary.bytes_by_policy(Policy::Skip),
        32,
        "one RegionSkipped chunk"
    );
    assert!(summary.bytes_by_policy(Policy::Copy) > summary.bytes_by_policy(Policy::Flush));
    assert_eq!(
        summary.stream_bytes,
        std::fs::metadata(&path).unwrap().len(),
        "the summary counts every byte of the file"
    );
    assert_eq!((summary.vcpus, summary.devices), (2, 1));
}

#[test]
fn handing_memory_on_flushes_each_flush_page_once_and_nothing_else() {
    let d = dir("install");
    let path = d.join("vm.snap");
    let mut vm = FakeVm::new(2, 8, 4, Policy::Flush);
    snapshot::write_to_path(
        &path,
        &mut vm,
        &RecordingCache::default(),
        &SnapshotOptions::default(),
    )
    .unwrap();
    let image = snapshot::read_from_path(&path, Limits::default()).unwrap();
    let region = |name: &str| image.region(name).unwrap().clone();
    let cache = RecordingCache::default();

    let ram = region("ram").into_memory(&cache).expect("RAM is copied");
    assert_eq!(&ram[..], vm.region_memory(0));
    assert!(
        cache.flushed.borrow().is_empty(),
        "a copy region is not flushed"
    );

    let bar = region("gpu-bar")
        .into_memory(&cache)
        .expect("the BAR is copied");
    assert_eq!(&bar[..], vm.region_memory(1));
    let flushed: Vec<usize> = cache.flushed.borrow().iter().map(|f| f.0).collect();
    let expect: Vec<usize> = (0..4)
        .map(|i| bar.as_ptr() as usize + i * PAGE_SIZE)
        .collect();
    assert_eq!(
        flushed, expect,
        "each page of the memory handed on, in order, once"
    );

    assert!(
        region("scanout").into_memory(&cache).is_none(),
        "skip: re-created"
    );
    assert_eq!(cache.flushed.borrow().len(), 4);
}

#[test]
fn a_refuse_region_fails_the_snapshot_before_any_file_exists() {
    let d = dir("refuse");
    let path = d.join("vm.snap");
    let mut vm = FakeVm::new(3, 8, 4, Policy::Refuse);
    let err = snapshot::write_to_path(
        &path,
        &mut vm,
        &RecordingCache::default(),
        &SnapshotOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, SnapshotError::Source(MigrationError::Refused { region }) if region == "gpu-bar"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    assert_eq!(vm.pauses, 0);
}

#[test]
fn a_failing_source_leaves_no_file_and_a_running_guest() {
    let d = dir("failing-source");
    let path = d.join("vm.snap");
    std::fs::write(&path, b"the previous snapshot").unwrap();
    for op in ["page", "vcpu_states", "device_states"] {
        let mut vm = FakeVm::new(4, 8, 4, Policy::Flush);
        vm.faults = vec![SourceFault { op, nth: 1 }];
        let err = snapshot::write_to_path(
            &path,
            &mut vm,
            &RecordingCache::default(),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, SnapshotError::Source(MigrationError::Source { .. })),
            "{op}: {err}"
        );
        assert_eq!((vm.pauses, vm.resumes, vm.running), (1, 1, true), "{op}");
        // The old file is untouched and no temporary file is left behind.
        assert_eq!(std::fs::read(&path).unwrap(), b"the previous snapshot");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "{op}");
    }

    // A guest that cannot be paused is not snapshotted, and nothing is left behind.
    let mut vm = FakeVm::new(4, 8, 4, Policy::Flush);
    vm.faults = vec![SourceFault {
        op: "pause",
        nth: 1,
    }];
    let err = snapshot::write_to_path(
        &path,
        &mut vm,
        &RecordingCache::default(),
        &SnapshotOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Source(MigrationError::Source {
                step: "pausing the guest",
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    assert!(vm.running);
}

#[test]
fn a_guest_that_cannot_resume_is_reported_with_the_failure_before_it() {
    let d = dir("resume");
    let resume = SourceFault {
        op: "resume",
        nth: 1,
    };
    let vcpus = SourceFault {
        op: "vcpu_states",
        nth: 1,
    };
    // (name, faults, whether the snapshot itself failed)
    let cases = [("a", vec![resume], false), ("b", vec![vcpus, resume], true)];
    for (name, faults, snapshot_failed) in cases {
        let path = d.join(name);
        let mut vm = FakeVm::new(7, 8, 4, Policy::Flush);
        vm.faults = faults;
        let err = snapshot::write_to_path(
            &path,
            &mut vm,
            &RecordingCache::default(),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        match &err {
            SnapshotError::Resume { failed, .. } => {
                assert_eq!(failed.is_some(), snapshot_failed, "{err}");
            }
            other => panic!("{name}: {other}"),
        }
        assert!(err.to_string().contains("injected failure of resume"));
        assert!(!vm.running);
        // Without an earlier failure the snapshot is complete; with one there is no file.
        assert_eq!(path.exists(), !snapshot_failed, "{name}");
    }
}

#[test]
fn leave_paused_keeps_the_guest_paused_and_errors_name_their_step() {
    let d = dir("steps");
    let mut vm = FakeVm::new(5, 4, 4, Policy::Skip);
    let options = SnapshotOptions { leave_paused: true };
    snapshot::write_to_path(
        &d.join("vm.snap"),
        &mut vm,
        &RecordingCache::default(),
        &options,
    )
    .unwrap();
    assert_eq!((vm.pauses, vm.resumes, vm.running), (1, 0, false));

    let mut vm = FakeVm::new(5, 4, 4, Policy::Skip);
    let missing = d.join("no-such-dir").join("vm.snap");
    let err = snapshot::write_to_path(
        &missing,
        &mut vm,
        &RecordingCache::default(),
        &SnapshotOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, SnapshotError::Io { step: "open", .. }),
        "{err}"
    );
    assert_eq!(vm.pauses, 0, "nothing is paused before the file opens");

    // Renaming over a directory fails after everything was written and synced.
    let target = d.join("a-directory");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"x").unwrap();
    let err = snapshot::write_to_path(
        &target,
        &mut vm,
        &RecordingCache::default(),
        &SnapshotOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, SnapshotError::Io { step: "rename", .. }),
        "{err}"
    );
    assert!(vm.running);
    assert!(!d.join(".a-directory.tmp").exists());

    let err = snapshot::read_from_path(&d.join("absent.snap"), Limits::default()).unwrap_err();
    assert!(
        matches!(err, SnapshotError::Io { step: "open", .. }),
        "{err}"
    );
}

#[test]
fn a_snapshot_file_with_bytes_after_end_is_refused() {
    let d = dir("trailing");
    let path = d.join("vm.snap");
    let mut vm = FakeVm::new(6, 4, 4, Policy::Flush);
    snapshot::write_to_path(
        &path,
        &mut vm,
        &RecordingCache::default(),
        &SnapshotOptions::default(),
    )
    .unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len() as u64;
    bytes.push(0);
    std::fs::write(&path, &bytes).unwrap();
    let err = snapshot::read_from_path(&path, Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotError::Read {
                error: StreamError::TrailingBytes { offset, bytes: 1 },
                ..
            } if offset == len
        ),
        "{err}"
    );
}
