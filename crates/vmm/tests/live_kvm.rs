//! Snapshots and live migrations of a real, running KVM guest ([`vmm::live::LiveVm`]): the
//! guest keeps dirtying RAM and the GPU model keeps rendering the BAR while the pages are
//! copied; the destination must receive exactly what the paused source holds, and the
//! restored guest must go on running from there. A failed migration must leave the source
//! guest running. One `SKIP` line when `/dev/kvm` cannot be opened.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use migration::MigrationSource;
use migration::destination::{Limits, RegionContents, VmImage};
use migration::format::Policy as WirePolicy;
use migration::precopy::{MigrationError, PrecopyOptions, Summary, WriterThread};
use migration::snapshot::{self, SnapshotOptions};
use migration::transport::{self, ReceiveOptions, SendOptions};
use vmm::cache::HostCache;
use vmm::guest::GuestError;
use vmm::live::{LiveVm, LiveVmConfig};
use vmm::strategy::{Mechanism, Policy};

/// A small VM on this host, where no mechanism is safe: the BAR runs marked unsafe.
fn config(bar_policy: WirePolicy) -> LiveVmConfig {
    LiveVmConfig {
        ram_size: 16 << 20,
        bar_size: 2 << 20,
        bar_policy,
        strategy: Policy {
            allow_unsafe: true,
            ..Policy::default()
        },
        working_set: 4 << 20,
        dirty_rate: 20_000,
        gpu_rate: 2000,
        ..LiveVmConfig::default()
    }
}

/// Boots a VM, or prints the `SKIP` line.
fn boot(what: &str, config: &LiveVmConfig) -> Option<LiveVm> {
    match LiveVm::boot(config) {
        Err(vmm::live::LiveError::Guest(e @ GuestError::OpenKvm(_))) => {
            println!("SKIP: {e}: real-KVM {what} not run");
            None
        }
        other => Some(other.expect("the live VM boots")),
    }
}

/// Waits until the guest has written `more` pages beyond what it had written.
fn wait_for_progress(vm: &LiveVm, more: u64) -> u64 {
    let start = vm.guest_pages_written();
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.guest_pages_written() < start + more {
        assert!(vm.failure().is_none(), "guest failed: {:?}", vm.failure());
        assert!(Instant::now() < deadline, "the guest made no progress");
        thread::sleep(Duration::from_millis(2));
    }
    vm.guest_pages_written()
}

/// Asserts that `image` holds exactly the paused source's memory.
fn assert_image_is(image: &VmImage, source: &LiveVm, bar_policy: WirePolicy) {
    match &image.regions[0].contents {
        RegionContents::Memory(ram) => assert!(ram[..] == source.ram()[..], "RAM differs"),
        RegionContents::Recreate => panic!("RAM is never skipped"),
    }
    match (&image.regions[1].contents, bar_policy) {
        (RegionContents::Memory(bar), WirePolicy::Flush) => {
            assert!(bar[..] == source.bar()[..], "BAR differs")
        }
        (RegionContents::Recreate, WirePolicy::Skip) => {}
        (other, policy) => panic!("BAR under {policy:?} arrived as {other:?}"),
    }
}

fn options() -> SendOptions {
    SendOptions {
        precopy: PrecopyOptions {
            downtime_budget: Duration::from_millis(50),
            max_rounds: 8,
            ..PrecopyOptions::default()
        },
        ..SendOptions::default()
    }
}

#[test]
fn the_guest_runs_and_its_bar_is_registered_by_the_chain() {
    let Some(vm) = boot("live VM", &config(WirePolicy::Flush)) else {
        return;
    };
    wait_for_progress(&vm, 5000);
    let registration = vm.bar_registration().unwrap();
    // This host refuses the flag and the device and has no quirk to disable: unsafe.
    assert_eq!(
        registration.mechanism,
        Mechanism::Unsafe,
        "{registration:?}"
    );
    let frame = vm.gpu_state().unwrap().frame;
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.gpu_state().unwrap().frame == frame {
        assert!(Instant::now() < deadline, "the GPU rendered no frame");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_guest_dirtying_two_pages_a_second_sleeps_between_them() {
    // Half a second between pages: the loop must sleep it in idle exits, not spin it. A
    // spinning vCPU uses about a whole CPU (it did, before the loop asked again after each
    // capped sleep); a sleeping one, 100 exits a second.
    let config = LiveVmConfig {
        dirty_rate: 2,
        gpu_rate: 0,
        ..config(WirePolicy::Flush)
    };
    let Some(vm) = boot("idle-guest pacing", &config) else {
        return;
    };
    wait_for_progress(&vm, 1);
    let (cpu, wall) = (vm.vcpu_cpu_time().unwrap(), Instant::now());
    let written = wait_for_progress(&vm, 2);
    let (cpu, wall) = (vm.vcpu_cpu_time().unwrap() - cpu, wall.elapsed());
    assert!(
        cpu < wall / 4,
        "the vCPU used {cpu:?} of CPU in {wall:?} while the guest wrote 2 pages ({written} in all)"
    );
}

#[test]
fn a_strict_policy_refuses_the_bar_on_a_host_with_no_safe_mechanism() {
    let mut strict = config(WirePolicy::Flush);
    strict.strategy = Policy::default();
    match LiveVm::boot(&strict) {
        Err(vmm::live::LiveError::Guest(e @ GuestError::OpenKvm(_))) => {
            println!("SKIP: {e}: real-KVM strict policy not run");
        }
        Err(vmm::live::LiveError::Region(e)) => {
            assert!(e.to_string().contains("gpu-bar"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Migrates `source` with `options` to a destination on loopback, both expected to succeed.
fn migrate_to_loopback(source: &mut LiveVm, options: &SendOptions) -> (Summary, VmImage) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let destination =
        thread::spawn(move || transport::receive(&listener, &ReceiveOptions::default()));
    let summary = transport::send(addr, source, &HostCache, options, &mut |_| {})
        .expect("the migration succeeds");
    let image = destination
        .join()
        .unwrap()
        .expect("the destination verifies");
    (summary, image)
}

fn migrate_over_tcp(bar_policy: WirePolicy) {
    let Some(mut source) = boot("live migration", &config(bar_policy)) else {
        return;
    };
    wait_for_progress(&source, 2000);
    let (summary, image) = migrate_to_loopback(&mut source, &options());
    // The source stays paused after success: what it holds is what was sent.
    assert_image_is(&image, &source, bar_policy);
    assert!(summary.rounds >= 2, "{summary:?}");
    let at_pause = source.guest_pages_written();
    thread::sleep(Duration::from_millis(20));
    assert_eq!(
        source.guest_pages_written(),
        at_pause,
        "the source stays paused"
    );

    let frame = image_gpu_frame(&image);
    // The restored guest runs on the memory the stream was received into: no copy.
    let received_at = |i: usize| image.regions[i].contents.bytes().map(<[u8]>::as_ptr);
    let (ram_at, bar_at) = (received_at(0), received_at(1));
    let restored = LiveVm::restore(image, config(bar_policy).strategy).expect("restore");
    assert_eq!(Some(restored.ram().as_ptr()), ram_at);
    if bar_policy == WirePolicy::Flush {
        assert_eq!(Some(restored.bar().as_ptr()), bar_at);
    }
    // The guest continues from its migrated count, not from zero.
    assert!(restored.guest_pages_written() >= at_pause);
    wait_for_progress(&restored, 2000);
    assert!(restored.gpu_state().unwrap().frame >= frame);
}

fn image_gpu_frame(image: &VmImage) -> u64 {
    let device = &image.devices[0];
    vmm::live::GpuState::from_device_state(&device.state, image.regions[1].config.pages())
        .unwrap()
        .frame
}

#[test]
fn a_running_guest_migrates_with_its_flushed_bar_and_runs_on() {
    migrate_over_tcp(WirePolicy::Flush);
}

#[test]
fn a_skipped_bar_is_recreated_by_the_gpu_on_the_destination() {
    migrate_over_tcp(WirePolicy::Skip);
}

#[test]
fn a_guest_writing_as_fast_as_it_can_is_sent_in_place_its_torn_runs_again() {
    // RAM and BAR are sent straight from guest memory (stream 1.4, the gathering thread
    // writing). The guest rewrites its 4 MiB working set every few microseconds, natively
    // at CPL3, so runs over it are written while the kernel copies them: each is
    // withdrawn and sent again, and the destination still ends with exactly the paused
    // source's memory. A run tears only if the vCPU thread is on a CPU while the run is
    // sent (three busy threads share two CPUs here), so up to three guests are migrated
    // until one tears; every one of them must arrive exact.
    let flat_out = LiveVmConfig {
        dirty_rate: 0,
        ..config(WirePolicy::Flush)
    };
    let mut inline = options();
    inline.precopy.writer = WriterThread::Inline;
    for _ in 0..3 {
        let Some(mut source) = boot("in-place migration", &flat_out) else {
            return;
        };
        wait_for_progress(&source, 2000);
        let (summary, image) = migrate_to_loopback(&mut source, &inline);
        assert_image_is(&image, &source, WirePolicy::Flush);
        let (ram, bar) = (&summary.regions[0], &summary.regions[1]);
        assert!(ram.in_place && bar.in_place, "{summary:?}");
        if ram.torn_runs > 0 {
            return;
        }
    }
    panic!("no RAM run tore in three migrations of a guest writing flat out");
}

#[test]
fn a_look_at_the_dirty_log_sees_each_write_once_and_loses_none() {
    // What the in-place sender relies on: a look reports the writes since the last look
    // (so a run's window is its own), and the bits it takes out of KVM's log, and the
    // GPU's, are still handed out by the next `dirty_pages` (so a page written is sent
    // again). Paused, the guest writes nothing more, so what each call sees is exact.
    let Some(mut vm) = boot("dirty log looks", &config(WirePolicy::Flush)) else {
        return;
    };
    vm.start_dirty_log().unwrap();
    wait_for_progress(&vm, 2000);
    let deadline = Instant::now() + Duration::from_secs(10);
    while vm.gpu_state().unwrap().frame == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    vm.pause().unwrap();
    for region in [0, 1] {
        let pages = vm.config().regions[region as usize].pages();
        let all: Vec<u32> = (0..pages).collect();
        let look = |vm: &LiveVm| vm.written_since_last_check(region, &all).unwrap().unwrap();
        assert!(look(&vm), "region {region}: the guest and the GPU wrote");
        assert!(!look(&vm), "region {region}: nothing since the last look");
        let dirty = vm.dirty_pages(region).unwrap();
        assert!(
            !dirty.is_empty(),
            "region {region}: the looks' bits are handed out"
        );
        assert!(
            vm.dirty_pages(region).unwrap().is_empty(),
            "region {region}: once"
        );
    }
    vm.stop_dirty_log();
    vm.resume().unwrap();
}

#[test]
fn a_refusing_destination_leaves_the_source_guest_running() {
    let Some(mut source) = boot("refused migration", &config(WirePolicy::Flush)) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A destination that accepts only 1 MiB of guest memory refuses this VM.
    let destination = thread::spawn(move || {
        let options = ReceiveOptions {
            limits: Limits {
                max_memory: 1 << 20,
                ..Limits::default()
            },
            ..ReceiveOptions::default()
        };
        transport::receive(&listener, &options)
    });
    let error = transport::send(addr, &mut source, &HostCache, &options(), &mut |_| {})
        .expect_err("the destination refuses");
    assert!(
        matches!(error, MigrationError::DestinationRefused(_)),
        "{error}"
    );
    assert!(destination.join().unwrap().is_err());
    wait_for_progress(&source, 2000);
}

#[test]
fn a_snapshot_restores_into_a_running_guest() {
    let Some(mut source) = boot("snapshot", &config(WirePolicy::Flush)) else {
        return;
    };
    wait_for_progress(&source, 1000);
    let dir = std::env::temp_dir().join(format!("ncdma-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vm.snap");
    let leave_paused = SnapshotOptions { leave_paused: true };
    snapshot::write_to_path(&path, &mut source, &HostCache, &leave_paused).expect("snapshot");
    let image = snapshot::read_from_path(&path, Limits::default()).expect("read back");
    assert_image_is(&image, &source, WirePolicy::Flush);
    drop(source);
    let restored = LiveVm::restore(image, config(WirePolicy::Flush).strategy).expect("restore");
    wait_for_progress(&restored, 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restore_that_cannot_register_the_bar_runs_nothing() {
    let Some(mut source) = boot("refused restore", &config(WirePolicy::Flush)) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ncdma-live-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("vm.snap");
    snapshot::write_to_path(&path, &mut source, &HostCache, &SnapshotOptions::default())
        .expect("snapshot");
    let image = snapshot::read_from_path(&path, Limits::default()).unwrap();
    // The destination's own chain decides; a strict policy here has no safe mechanism.
    let error = LiveVm::restore(image, Policy::default()).expect_err("refused");
    assert!(error.to_string().contains("gpu-bar"), "{error}");
    // The source resumed after its snapshot and still runs.
    wait_for_progress(&source, 1000);
    std::fs::remove_dir_all(&dir).unwrap();
}
