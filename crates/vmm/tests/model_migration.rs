//! Live migration of a [`ModelVm`] over real TCP loopback: the coherence simulator judges
//! every host read, so these tests show that the `flush` policy delivers exactly what the
//! guest and its non-snooping GPU wrote, and that a copy without the flush (the naive
//! migration of a noncoherent BAR) delivers stale bytes the host had cached.

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use migration::destination::{RegionContents, VmImage};
use migration::format::Policy;
use migration::precopy::{MigrationError, PrecopyOptions, Summary};
use migration::transport::{self, ReceiveOptions, SendOptions};
use migration::{CacheMaintenance, MigrationSource};
use vmm::model_vm::{ModelVm, ModelVmConfig};
use vmm::strategy::Mechanism;

const DIRTY_ROUNDS: u32 = 4;

/// A copy that never flushes: what a VMM unaware of noncoherent DMA does.
struct NoFlush;

impl CacheMaintenance for NoFlush {
    fn flush_range(&self, _: &[u8]) {}
}

fn migrate(
    vm: &mut ModelVm,
    cache: &dyn CacheMaintenance,
) -> (Result<Summary, MigrationError>, Option<VmImage>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let destination =
        thread::spawn(move || transport::receive(&listener, &ReceiveOptions::default()));
    // No downtime budget: every one of the dirty rounds runs while the guest and the GPU
    // keep writing, then stop-and-copy.
    let options = SendOptions {
        precopy: PrecopyOptions {
            downtime_budget: Duration::ZERO,
            max_rounds: DIRTY_ROUNDS,
            ..PrecopyOptions::default()
        },
        ..SendOptions::default()
    };
    let sent = transport::send(addr, vm, cache, &options, &mut |_| {});
    (sent, destination.join().unwrap().ok())
}

fn memory(image: &VmImage, name: &str) -> Vec<u8> {
    match &image.region(name).unwrap().contents {
        RegionContents::Memory(bytes) => bytes.to_vec(),
        RegionContents::Recreate => panic!("{name} was skipped"),
    }
}

/// Pages whose bytes differ.
fn differing_pages(a: &[u8], b: &[u8]) -> usize {
    a.chunks(4096)
        .zip(b.chunks(4096))
        .filter(|(x, y)| x != y)
        .count()
}

fn busy_vm(bar_policy: Policy) -> ModelVm {
    ModelVm::new(ModelVmConfig {
        bar_policy,
        writes_per_read: 4,
        ..ModelVmConfig::default()
    })
    .unwrap()
}

#[test]
fn the_bar_is_registered_by_the_strategy_chain_and_recorded_in_the_stream() {
    let vm = busy_vm(Policy::Flush);
    assert_eq!(vm.registration().mechanism, Mechanism::MemslotFlag);
    let config = vm.config();
    assert_eq!(
        config.regions[1].registration,
        migration::format::Registration::MemslotFlag
    );
    assert_eq!(config.regions[1].policy, Policy::Flush);
}

#[test]
fn flush_delivers_every_byte_the_guest_and_the_gpu_wrote() {
    let mut vm = busy_vm(Policy::Flush);
    let cache = vm.cache();
    let (sent, image) = migrate(&mut vm, &cache);
    let summary = sent.unwrap();
    let image = image.expect("the destination verified the stream");
    // Round 0, the dirty rounds, stop-and-copy; pages written meanwhile were sent again.
    assert_eq!(summary.rounds, DIRTY_ROUNDS + 2, "{summary:?}");
    assert!(summary.pages_sent > 256 + 128, "{summary:?}");
    assert!(vm.gpu_writes() > 100, "{}", vm.gpu_writes());
    assert_eq!(memory(&image, "ram"), vm.truth(0));
    assert_eq!(memory(&image, "gpu-bar"), vm.truth(1));
    assert_eq!(vm.stale_reads(), 0, "{:?}", vm.first_stale_read());
    assert_eq!(vm.stray_flushes(), 0);
    let bar = summary
        .regions
        .iter()
        .find(|r| r.name == "gpu-bar")
        .unwrap();
    assert_eq!(bar.flushed_pages, bar.data_pages + bar.zero_pages);
}

#[test]
fn a_copy_without_the_flush_delivers_stale_bar_pages() {
    let mut vm = busy_vm(Policy::Flush);
    let (sent, image) = migrate(&mut vm, &NoFlush);
    // Nothing in the stream can tell: it verifies, and the destination accepts it.
    sent.unwrap();
    let image = image.expect("the destination verified the stream");
    // RAM is coherent: the host's reads snoop the guest's cache.
    assert_eq!(memory(&image, "ram"), vm.truth(0));
    // The BAR is not: lines the host cached in an earlier round, since rewritten in memory
    // by the GPU, were copied instead of what the GPU wrote.
    let stale = differing_pages(&memory(&image, "gpu-bar"), &vm.truth(1));
    assert!(stale > 0, "no stale page");
    assert!(vm.stale_reads() > 0);
    let why = vm.first_stale_read().unwrap();
    assert!(why.contains("gpu"), "{why}");
}

#[test]
fn skip_sends_no_bar_page_and_refuse_sends_nothing() {
    let mut skip = busy_vm(Policy::Skip);
    let cache = skip.cache();
    let (sent, image) = migrate(&mut skip, &cache);
    sent.unwrap();
    let image = image.unwrap();
    assert_eq!(
        image.region("gpu-bar").unwrap().contents,
        RegionContents::Recreate
    );
    assert_eq!(memory(&image, "ram"), skip.truth(0));

    let mut refuse = busy_vm(Policy::Refuse);
    let cache = refuse.cache();
    let err = transport::send(
        "127.0.0.1:9",
        &mut refuse,
        &cache,
        &SendOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, MigrationError::Refused { .. }), "{err}");
}
