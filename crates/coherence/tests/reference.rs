//! Differential tests: the simulator against the brute-force model in
//! `brute/`, on small random programs (two CPUs, a non-snooping and a
//! snooping device, a handful of lines over two pages, every operation and
//! memory type, split accesses included).
//!
//! Deterministic runs must agree operation by operation (the value read and
//! the kinds of verdict raised); explored runs must agree on every read's
//! set of possible values and on which properties some schedule violates.

mod brute;

use core::num::NonZeroUsize;

use coherence::{
    Action, AgentId, Capacity, Config, DevId, ExploreConfig, Line, MemType, Property, State,
    Untouched, Value, explore,
};
use proptest::prelude::*;

/// Lines the programs use: mostly one line in each of two pages (so that
/// accesses collide), sometimes a second line of page 0, and the lines a
/// split access at offset 60 spills into.
const OFFSETS: [u64; 3] = [0, 8, 60];

/// An operation with agents as indices, before ids exist.
#[derive(Debug, Clone)]
enum Op {
    Load(usize, u64, usize, MemType),
    Store(usize, u64, Vec<u8>, MemType),
    NtStore(usize, u64, Vec<u8>, MemType),
    Clflush(usize, u64),
    Clflushopt(usize, u64),
    Clwb(usize, u64),
    Sfence(usize),
    Mfence(usize),
    Wbinvd(usize),
    DmaRead(usize, u64, usize),
    DmaWrite(usize, u64, Vec<u8>),
    Evict(usize, u64),
}

/// Every type, weighted towards the WB/WC pair whose aliasing is the
/// hazard.
fn mem_type() -> impl Strategy<Value = MemType> {
    prop_oneof![
        4 => Just(MemType::Wb),
        3 => Just(MemType::Wc),
        1 => prop::sample::select(MemType::ALL.to_vec()),
    ]
}

/// Spread: a few lines over two pages. Focused: the first bytes of one
/// line, where every access collides (stale clean copies, lost writes).
fn addr(focused: bool) -> BoxedStrategy<u64> {
    if focused {
        return prop::sample::select(vec![0u64, 8]).boxed();
    }
    let base = prop_oneof![3 => Just(0x0u64), 2 => Just(0x1000u64), 1 => Just(0x40u64)];
    (base, prop::sample::select(OFFSETS.to_vec()))
        .prop_map(|(b, o)| b + o)
        .boxed()
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    // Few distinct values, so that equal values written by different
    // operations (which the truth cannot tell apart) happen too; rarely 0,
    // which untouched memory already holds.
    let byte = prop_oneof![3 => Just(1u8), 2 => Just(2u8), 2 => Just(0xffu8), 1 => Just(0u8)];
    prop::collection::vec(byte, 1..=max)
}

/// Operations, weighted towards stores and device reads (the operations
/// that create and expose hazards) over the many that clean caches.
fn op(focused: bool) -> impl Strategy<Value = Op> {
    let addr = || addr(focused);
    let cpu = 0..2usize;
    // The non-snooping device, which the hazards are about, three times in four.
    let dev = prop_oneof![3 => Just(0usize), 1 => Just(1usize)];
    prop_oneof![
        3 => (cpu.clone(), addr(), 1..=8usize, mem_type()).prop_map(|(c, a, l, t)| Op::Load(c, a, l, t)),
        8 => (cpu.clone(), addr(), bytes(8), mem_type()).prop_map(|(c, a, b, t)| Op::Store(c, a, b, t)),
        1 => (cpu.clone(), addr(), bytes(8), mem_type()).prop_map(|(c, a, b, t)| Op::NtStore(c, a, b, t)),
        1 => (cpu.clone(), addr()).prop_map(|(c, a)| Op::Clflush(c, a)),
        1 => (cpu.clone(), addr()).prop_map(|(c, a)| Op::Clflushopt(c, a)),
        1 => (cpu.clone(), addr()).prop_map(|(c, a)| Op::Clwb(c, a)),
        2 => cpu.clone().prop_map(Op::Sfence),
        1 => cpu.clone().prop_map(Op::Mfence),
        1 => cpu.clone().prop_map(Op::Wbinvd),
        6 => (dev.clone(), addr(), 1..=16usize).prop_map(|(d, a, l)| Op::DmaRead(d, a, l)),
        2 => (dev, addr(), bytes(16)).prop_map(|(d, a, b)| Op::DmaWrite(d, a, b)),
        1 => (cpu, addr()).prop_map(|(c, a)| Op::Evict(c, a)),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    untouched: Untouched,
    capacity: Option<usize>,
    wc_slots: usize,
    ops: Vec<Op>,
}

fn case(max_ops: usize, focused: bool) -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(Untouched::Zero),
            Just(Untouched::PreviousOwner { seed: 99 })
        ],
        prop_oneof![Just(None), Just(Some(2usize))],
        1..=2usize,
        prop::collection::vec(op(focused), max_ops / 2..=max_ops),
    )
        .prop_map(|(untouched, capacity, wc_slots, ops)| Case {
            untouched,
            capacity,
            wc_slots,
            ops,
        })
}

/// The simulator and the reference set up alike, and the program as actions.
fn build(c: &Case) -> (State, brute::Setup, Vec<Action>) {
    let mut s = State::new(Config {
        untouched: c.untouched,
        wc_buffers: NonZeroUsize::new(c.wc_slots).expect("1 or 2"),
        verdict_limit: 1000,
    });
    let capacity = match c.capacity {
        None => Capacity::Unbounded,
        Some(n) => Capacity::Lines(NonZeroUsize::new(n).expect("2")),
    };
    let cpus: Vec<AgentId> = (0..2)
        .map(|i| s.add_cpu(format!("cpu{i}"), capacity).expect("cpu"))
        .collect();
    let snooping = vec![false, true];
    let devs: Vec<DevId> = snooping
        .iter()
        .map(|&sn| s.add_dma("dev", sn).expect("dev"))
        .collect();
    let value = |b: &[u8]| Value::new(b).expect("1..=8 bytes");
    let actions = c
        .ops
        .iter()
        .map(|op| match op {
            Op::Load(a, addr, len, t) => Action::Load {
                agent: cpus[*a],
                addr: *addr,
                len: *len,
                mem_type: *t,
            },
            Op::Store(a, addr, b, t) => Action::Store {
                agent: cpus[*a],
                addr: *addr,
                value: value(b),
                mem_type: *t,
            },
            Op::NtStore(a, addr, b, t) => Action::NtStore {
                agent: cpus[*a],
                addr: *addr,
                value: value(b),
                mem_type: *t,
            },
            Op::Clflush(a, addr) => Action::Clflush {
                agent: cpus[*a],
                addr: *addr,
            },
            Op::Clflushopt(a, addr) => Action::Clflushopt {
                agent: cpus[*a],
                addr: *addr,
            },
            Op::Clwb(a, addr) => Action::Clwb {
                agent: cpus[*a],
                addr: *addr,
            },
            Op::Sfence(a) => Action::Sfence { agent: cpus[*a] },
            Op::Mfence(a) => Action::Mfence { agent: cpus[*a] },
            Op::Wbinvd(a) => Action::Wbinvd { agent: cpus[*a] },
            Op::DmaRead(d, addr, len) => Action::DmaRead {
                dev: devs[*d],
                addr: *addr,
                len: *len,
            },
            Op::DmaWrite(d, addr, b) => Action::DmaWrite {
                dev: devs[*d],
                addr: *addr,
                bytes: b.clone(),
            },
            Op::Evict(a, addr) => Action::Evict {
                agent: cpus[*a],
                line: Line::containing(*addr),
            },
        })
        .collect();
    let setup = brute::Setup {
        untouched: c.untouched,
        cpus: 2,
        capacity: c.capacity,
        wc_slots: c.wc_slots,
        snooping,
    };
    (s, setup, actions)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn deterministic_runs_agree_step_by_step(c in prop_oneof![case(16, false), case(16, true)]) {
        let (mut s, setup, program) = build(&c);
        let expected = brute::run(&setup, &program);
        let mut alias = false;
        for (i, (action, (want_read, want))) in program.iter().zip(expected).enumerate() {
            let out = s.step(action).expect("valid action");
            let read = out.read.map(|r| r.as_slice().to_vec());
            prop_assert_eq!(&read, &want_read, "value read by op {}: {:?}", i, action);
            let raised = |p: Property| s.verdicts().iter().any(|v| v.property() == p && v.op_index() == i as u64);
            prop_assert_eq!(raised(Property::NoStaleRead), want.stale, "stale at op {}: {:?}", i, s.verdicts());
            prop_assert_eq!(raised(Property::NoLostWrite), want.lost, "lost write at op {}: {:?}", i, s.verdicts());
            prop_assert_eq!(raised(Property::NoInfoLeak), want.leak, "leak at op {}: {:?}", i, s.verdicts());
            alias |= want.alias;
        }
        prop_assert_eq!(s.check(Property::NoConflictingAlias).is_err(), alias);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn explored_outcomes_agree_with_every_schedule(
        c in prop_oneof![case(8, false), case(8, true)],
        clean in any::<bool>(), wc in any::<bool>()) {
        let (s, setup, program) = build(&c);
        let want = brute::enumerate(&setup, &program, clean, wc);
        let cfg = ExploreConfig { clean_evictions: clean, wc_drains: wc, ..ExploreConfig::default() };
        let got = explore(&s, &program, &cfg).expect("valid program");
        prop_assert!(got.complete, "{} states", got.states);
        let got_reads: std::collections::BTreeMap<u64, std::collections::BTreeSet<Vec<u8>>> = got
            .reads
            .iter()
            .map(|r| (r.op_index, r.outcomes.iter().cloned().collect()))
            .collect();
        prop_assert_eq!(&got_reads, &want.reads);
        prop_assert_eq!(got.possible(Property::NoStaleRead), want.stale);
        prop_assert_eq!(got.possible(Property::NoLostWrite), want.lost);
        prop_assert_eq!(got.possible(Property::NoInfoLeak), want.leak);
        prop_assert_eq!(got.possible(Property::NoConflictingAlias), want.alias);
    }
}

/// Programs whose outcome hinges on one kind of spontaneous event each,
/// compared with the reference under every combination of event kinds: a
/// stale clean copy (clean evictions), an unfenced WC store (early drains),
/// a dirty line read by a device (write-backs), and a dirty alias of a WC
/// write (lost write or not).
#[test]
fn each_kind_of_spontaneous_event_changes_outcomes_as_in_the_reference() {
    use Op::*;
    let programs = [
        vec![
            Load(0, 0, 8, MemType::Wb),
            DmaWrite(0, 0, vec![1; 8]),
            Load(0, 0, 8, MemType::Wb),
        ],
        vec![
            Store(0, 0, vec![2; 8], MemType::Wc),
            DmaRead(0, 0, 8),
            Sfence(0),
            DmaRead(0, 0, 8),
        ],
        vec![Store(0, 8, vec![0xff; 8], MemType::Wb), DmaRead(0, 0, 16)],
        vec![
            Store(1, 8, vec![1; 8], MemType::Wb),
            Store(0, 0, vec![2; 8], MemType::Wc),
            Sfence(0),
            DmaRead(0, 0, 16),
        ],
    ];
    for ops in programs {
        for (clean, wc) in [(false, false), (true, false), (false, true), (true, true)] {
            let c = Case {
                untouched: Untouched::Zero,
                capacity: None,
                wc_slots: 2,
                ops: ops.clone(),
            };
            let (s, setup, program) = build(&c);
            let want = brute::enumerate(&setup, &program, clean, wc);
            let cfg = ExploreConfig {
                clean_evictions: clean,
                wc_drains: wc,
                ..ExploreConfig::default()
            };
            let got = explore(&s, &program, &cfg).expect("valid program");
            let got_reads: std::collections::BTreeMap<u64, std::collections::BTreeSet<Vec<u8>>> =
                got.reads
                    .iter()
                    .map(|r| (r.op_index, r.outcomes.iter().cloned().collect()))
                    .collect();
            assert_eq!(got_reads, want.reads, "{ops:?} clean={clean} wc={wc}");
            assert_eq!(got.possible(Property::NoLostWrite), want.lost, "{ops:?}");
            assert_eq!(got.possible(Property::NoStaleRead), want.stale, "{ops:?}");
            // Every program here has a timing-dependent read under some
            // event kind; which one is the point of the program.
            if clean && wc {
                assert!(got.timing_dependent().next().is_some(), "{ops:?}");
            }
        }
    }
}
