//! Live migration over TCP loopback with a fake guest that keeps writing: convergence within
//! the downtime budget, a dirty rate too high to converge (round cap, then stop-and-copy),
//! and the ways a migration fails before or after it started (the guest always runs again).

mod common;

use std::io::{self, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{FakeVm, RecordingCache, SourceFault};
use migration::StreamError;
use migration::destination::{Limits, RegionContents, VmImage};
use migration::format::{PAGE_SIZE, Policy, msr};
use migration::precopy::{
    self, MigrationError, Phase, PrecopyOptions, Progress, Summary, WriterThread,
};
use migration::transport::{self, ReceiveError, ReceiveOptions, SendOptions};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A writer that lets through at most `rate` bytes per second, so that the throughput the
/// engine measures, and with it convergence, does not depend on the machine.
struct Throttle<W> {
    inner: W,
    rate: f64,
    started: Instant,
    written: u64,
}

impl<W: Write> Write for Throttle<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        let due = Duration::from_secs_f64(self.written as f64 / self.rate);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            thread::sleep(wait);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// One migration of `vm` over loopback at `rate` bytes per second.
fn migrate(
    vm: &mut FakeVm,
    options: &PrecopyOptions,
    rate: f64,
    limits: Limits,
) -> (
    Result<Summary, MigrationError>,
    Result<VmImage, ReceiveError>,
    Vec<Progress>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let destination = thread::spawn(move || {
        transport::receive(
            &listener,
            &ReceiveOptions {
                limits,
                io_timeout: TIMEOUT,
            },
        )
    });
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let out = Throttle {
        inner: BufWriter::new(&stream),
        rate,
        started: Instant::now(),
        written: 0,
    };
    let mut reports = Vec::new();
    let cache = RecordingCache::default();
    let result = precopy::migrate(
        out,
        BufReader::new(&stream),
        vm,
        &cache,
        options,
        &mut |p| reports.push(*p),
    );
    drop(stream);
    (result, destination.join().unwrap(), reports)
}

/// The destination holds exactly the paused guest's memory.
fn assert_image_matches(image: &VmImage, vm: &FakeVm) {
    for region in &image.regions {
        match &region.contents {
            RegionContents::Memory(bytes) => assert!(
                &bytes[..] == vm.region_memory(region.config.id),
                "region {} differs",
                region.config.name
            ),
            RegionContents::Recreate => assert_eq!(region.config.policy, Policy::Skip),
        }
    }
    assert_eq!(image.vcpus, vm.vcpus);
    assert_eq!(image.devices, vm.devices);
}

/// Summary invariants that hold for every successful migration.
fn assert_summary_consistent(s: &Summary, vm: &FakeVm) {
    let sent: u64 = s.regions.iter().map(|r| r.data_pages + r.zero_pages).sum();
    assert_eq!(s.pages_sent, sent);
    assert_eq!(
        s.pages_elided,
        s.regions.iter().map(|r| r.zero_pages).sum::<u64>()
    );
    let bar = &s.regions[1];
    assert_eq!(
        bar.flushed_pages,
        bar.data_pages + bar.zero_pages,
        "every bar page flushed"
    );
    assert_eq!(
        s.regions[0].flushed_pages, 0,
        "coherent pages are not flushed"
    );
    assert_eq!(s.bytes_by_policy(Policy::Skip), 32);
    assert_eq!(s.regions[2].data_pages + s.regions[2].zero_pages, 0);
    assert!(s.downtime <= s.total_time);
    assert_eq!((s.vcpus, s.devices), (2, 1));
    assert!(s.pages_sent >= u64::from(vm.config.regions[0].pages() + vm.config.regions[1].pages()));
}

#[test]
fn runs_sent_in_place_are_withdrawn_when_written_and_their_pages_sent_again() {
    // Sent straight from the guest's memory, the first run of "ram" and its second are each
    // reported written (at a data page: a zero page is sent as a marker, which cannot tear)
    // while they were sent: each is withdrawn, and all of its pages (a run's worth, zero
    // pages included) go again in the next round, which the destination requires before
    // it accepts them.
    let mut vm = FakeVm::new(31, 600, 16, Policy::Flush);
    vm.in_place = true;
    let data_page_from = |first: u32| {
        (first..).find(|&i| {
            let at = i as usize * PAGE_SIZE;
            vm.memory[0][at..at + PAGE_SIZE].iter().any(|&b| b != 0)
        })
    };
    let tears = [data_page_from(70).unwrap(), data_page_from(300).unwrap()];
    assert!(tears[0] < 256 && (256..512).contains(&tears[1]));
    vm.tears = tears.map(|index| (0, index)).to_vec().into();
    let options = PrecopyOptions {
        writer: WriterThread::Inline,
        ..PrecopyOptions::default()
    };
    let (sent, received, _) = migrate(&mut vm, &options, 1e9, Limits::default());
    let summary = sent.expect("the migration succeeds");
    let image = received.expect("the destination accepts the stream");
    assert_image_matches(&image, &vm);
    assert_summary_consistent(&summary, &vm);
    let ram = &summary.regions[0];
    assert_eq!(ram.torn_runs, 2);
    // Round 0 sent all 600 pages; the two withdrawn runs (pages 0..256 and 256..512) were
    // sent again, whole.
    assert_eq!(ram.data_pages + ram.zero_pages, 600 + 512);
    assert!(vm.tears.lock().unwrap().is_empty());
    assert_eq!(summary.regions[1].torn_runs, 0, "the BAR was copied");
}

#[test]
fn a_destination_that_does_not_prefault_receives_the_same_guest() {
    let mut vm = FakeVm::new(23, 64, 16, Policy::Flush);
    vm.dirty_per_read = 0.1;
    let limits = Limits {
        prefault: false,
        ..Limits::default()
    };
    let (result, image, _) = migrate(&mut vm, &PrecopyOptions::default(), 1e9, limits);
    let summary = result.expect("migration");
    assert_image_matches(&image.expect("destination image"), &vm);
    assert_summary_consistent(&summary, &vm);
}

#[test]
fn converges_within_the_downtime_budget() {
    let mut vm = FakeVm::new(21, 256, 64, Policy::Flush);
    vm.dirty_per_read = 0.25;
    let options = PrecopyOptions {
        downtime_budget: Duration::from_millis(10),
        max_rounds: 30,
        writer: WriterThread::Own,
    };
    let (result, image, reports) = migrate(&mut vm, &options, 20e6, Limits::default());
    let summary = result.expect("migration");
    let image = image.expect("destination image");

    assert!(summary.converged);
    assert!(summary.rounds >= 3, "at least one dirty round: {summary:?}");
    assert!(summary.rounds < 32);
    // Every pre-copy round but the last was over budget; the last one fitted it.
    let (last, precopy) = reports.split_last().unwrap();
    assert_eq!(last.phase, Phase::StopAndCopy);
    assert_eq!(precopy.len() as u32 + 1, summary.rounds);
    let (fitted, over) = precopy.split_last().unwrap();
    assert!(fitted.eta <= options.downtime_budget, "{fitted:?}");
    assert!(
        over.iter().all(|p| p.eta > options.downtime_budget),
        "{over:?}"
    );
    assert!(precopy.windows(2).all(|w| w[1].round == w[0].round + 1));
    assert!(precopy[0].throughput > 1e6 && precopy[0].throughput < 25e6);
    assert!(precopy[0].dirty_pages > 0 && precopy[0].dirty_rate > 0.0);

    // The source stays paused: it was migrated.
    assert_eq!(
        (vm.pauses, vm.resumes, vm.running, vm.logging),
        (1, 0, false, false)
    );
    assert!(vm.guest_writes > 0);
    assert!(summary.pages_sent > 320, "dirty pages were sent again");
    assert_image_matches(&image, &vm);
    assert_summary_consistent(&summary, &vm);
}

#[test]
fn a_dirty_rate_above_the_link_hits_the_round_cap_then_stops_and_copies() {
    let mut vm = FakeVm::new(22, 256, 64, Policy::Flush);
    vm.dirty_per_read = 2.0;
    let options = PrecopyOptions {
        downtime_budget: Duration::from_millis(10),
        max_rounds: 4,
        // The gathering thread writes the runs itself here; the test above has a writer
        // thread.
        writer: WriterThread::Inline,
    };
    let (result, image, reports) = migrate(&mut vm, &options, 20e6, Limits::default());
    let summary = result.expect("migration");
    let image = image.expect("destination image");

    assert!(!summary.converged);
    assert_eq!(
        summary.rounds, 6,
        "round 0, four dirty rounds, stop-and-copy"
    );
    let phases: Vec<(u32, Phase)> = reports.iter().map(|p| (p.round, p.phase)).collect();
    let mut expected: Vec<(u32, Phase)> = (0..5).map(|r| (r, Phase::Precopy)).collect();
    expected.push((5, Phase::StopAndCopy));
    assert_eq!(phases, expected);
    assert!(reports[..5].iter().all(|p| p.eta > options.downtime_budget));
    // Stop-and-copy sent what was still dirty: far more than the budget allowed.
    assert!(reports[5].pages_sent as usize * PAGE_SIZE > 200_000);
    assert_eq!(reports[5].dirty_pages, 0);

    assert_eq!((vm.pauses, vm.resumes, vm.running), (1, 0, false));
    assert_image_matches(&image, &vm);
    assert_summary_consistent(&summary, &vm);
    assert!(summary.pages_sent > 5 * 200);
}

#[test]
fn send_and_receive_over_the_transport() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let destination =
        thread::spawn(move || transport::receive(&listener, &ReceiveOptions::default()));
    let mut vm = FakeVm::new(23, 64, 16, Policy::Skip);
    vm.dirty_per_read = 0.5;
    let cache = RecordingCache::default();
    let summary = transport::send(addr, &mut vm, &cache, &SendOptions::default(), &mut |_| {})
        .expect("migration");
    let image = destination.join().unwrap().expect("image");
    assert_image_matches(&image, &vm);
    assert!(
        cache.flushed.borrow().is_empty(),
        "nothing is flushed under skip"
    );
    assert_eq!(
        summary.bytes_by_policy(Policy::Skip),
        64,
        "two skipped regions"
    );
    assert!(matches!(
        image.region("gpu-bar").unwrap().contents,
        RegionContents::Recreate
    ));
}

#[test]
fn a_refuse_region_fails_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut vm = FakeVm::new(24, 16, 4, Policy::Refuse);
    let err = transport::send(
        addr,
        &mut vm,
        &RecordingCache::default(),
        &SendOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&err, MigrationError::Refused { region } if region == "gpu-bar"),
        "{err}"
    );
    assert!(err.to_string().contains("gpu-bar"));
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "no connection was made"
    );
    assert_eq!(
        (vm.pauses, vm.calls("start_dirty_log"), vm.calls("page")),
        (0, 0, 0)
    );
}

#[test]
fn a_refusing_destination_is_reported_and_the_guest_resumes() {
    let mut vm = FakeVm::new(25, 64, 16, Policy::Flush);
    vm.dirty_per_read = 0.5;
    let limits = Limits {
        max_memory: 4096,
        ..Limits::default()
    };
    let (result, image, _) = migrate(&mut vm, &PrecopyOptions::default(), 1e9, limits);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, MigrationError::DestinationRefused(reason) if reason.contains("over the limit")),
        "{err}"
    );
    assert!(matches!(
        image,
        Err(ReceiveError::Stream(StreamError::MemoryLimit { .. }))
    ));
    assert!(vm.running && vm.pauses == vm.resumes && !vm.logging);
    assert!(vm.all_dirty_bits_returned());
}

#[test]
fn a_failing_source_aborts_and_returns_every_dirty_bit() {
    // (operation, call that fails, whether the guest was paused by then)
    let cases = [
        ("dirty_pages", 3, false),
        ("page", 150, false),
        ("pause", 1, false),
        ("vcpu_states", 1, true),
        ("device_states", 1, true),
    ];
    let writers = [WriterThread::Own, WriterThread::Inline];
    for ((op, nth, paused), writer) in cases.into_iter().flat_map(|c| writers.map(|w| (c, w))) {
        let mut vm = FakeVm::new(26, 64, 16, Policy::Flush);
        vm.dirty_per_read = 3.0;
        vm.faults = vec![SourceFault { op, nth }];
        let options = PrecopyOptions {
            downtime_budget: Duration::ZERO,
            max_rounds: 3,
            writer,
        };
        let (result, image, _) = migrate(&mut vm, &options, 1e9, Limits::default());
        let err = result.unwrap_err();
        assert!(matches!(err, MigrationError::Source { .. }), "{op}: {err}");
        assert!(image.is_err(), "{op}: the destination has no image");
        assert_eq!(vm.pauses, u32::from(paused), "{op}");
        assert!(vm.running && vm.pauses == vm.resumes && !vm.logging, "{op}");
        assert!(vm.all_dirty_bits_returned(), "{op}");
    }
}

#[test]
fn a_guest_that_cannot_resume_is_reported() {
    let mut vm = FakeVm::new(27, 16, 4, Policy::Flush);
    vm.faults = vec![SourceFault {
        op: "resume",
        nth: 1,
    }];
    // A vCPU without its PAT: the destination refuses it, after the guest was paused.
    vm.vcpus[0].msrs.retain(|m| m.index != msr::IA32_PAT);
    let (result, _, _) = migrate(&mut vm, &PrecopyOptions::default(), 1e9, Limits::default());
    let err = result.unwrap_err();
    assert!(
        matches!(&err, MigrationError::ResumeFailed { error, .. }
            if matches!(**error, MigrationError::DestinationRefused(_))),
        "{err}"
    );
    assert!(!vm.running);
}

#[test]
fn a_refused_configuration_costs_no_page_and_no_pause() {
    let mut vm = FakeVm::new(28, 16, 4, Policy::Flush);
    let limits = Limits {
        max_memory: 4096,
        ..Limits::default()
    };
    let (result, received, _) = migrate(&mut vm, &PrecopyOptions::default(), 1e9, limits);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, MigrationError::DestinationRefused(reason) if reason.contains("limit")),
        "{err}"
    );
    assert!(received.is_err());
    assert_eq!(
        vm.calls("page"),
        0,
        "pages were read before the destination was ready"
    );
    assert_eq!(vm.pauses, 0);
    assert!(vm.running && vm.all_dirty_bits_returned());
}
