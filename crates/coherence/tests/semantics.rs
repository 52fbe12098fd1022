//! One test per operation rule the scenarios do not pin down on their own:
//! refusals, bounded caches, non-temporal stores, WT/WP, queued flushes,
//! WBINVD's scope, split accesses, the verdict log and the explorer's bound.

use core::num::NonZeroUsize;

use coherence::{
    Action, AgentId, Capacity, Config, DevId, Error, ExploreConfig, Line, LineState, MemType,
    Property, State, Value, Verdict, WritebackCause, explore,
};

fn two_cpus(capacity: Capacity) -> (State, AgentId, AgentId, DevId) {
    let mut s = State::new(Config::default());
    let a = s.add_cpu("a", capacity).expect("cpu");
    let b = s.add_cpu("b", capacity).expect("cpu");
    let d = s.add_dma("dma", false).expect("dev");
    (s, a, b, d)
}

fn store(agent: AgentId, addr: u64, v: u8, mem_type: MemType) -> Action {
    Action::Store {
        agent,
        addr,
        value: Value::new(&[v]).expect("1 byte"),
        mem_type,
    }
}

fn load(s: &mut State, agent: AgentId, addr: u64, mem_type: MemType) -> u8 {
    s.load(agent, addr, 1, mem_type).expect("valid").as_slice()[0]
}

#[test]
fn bad_actions_are_refused_without_consuming_an_operation() {
    let (mut s, a, _, d) = two_cpus(Capacity::Unbounded);
    let mut other = State::new(Config::default());
    for _ in 0..3 {
        other.add_cpu("x", Capacity::Unbounded).expect("cpu");
    }
    let stranger = other.add_cpu("x", Capacity::Unbounded).expect("cpu");
    let ghost = other
        .add_dma("x", true)
        .and_then(|_| other.add_dma("y", true))
        .expect("dev");
    assert_eq!(
        s.load(stranger, 0, 1, MemType::Wb),
        Err(Error::UnknownAgent(stranger))
    );
    assert_eq!(
        s.load(a, 0, 9, MemType::Wb),
        Err(Error::BadLength {
            len: 9,
            min: 1,
            max: 8
        })
    );
    assert!(matches!(
        s.load(a, 0, 0, MemType::Wb),
        Err(Error::BadLength { len: 0, .. })
    ));
    assert_eq!(
        s.step(&Action::DmaRead {
            dev: ghost,
            addr: 0,
            len: 1
        }),
        Err(Error::UnknownDevice(ghost))
    );
    assert!(matches!(
        s.step(&Action::DmaRead {
            dev: d,
            addr: 0,
            len: 0
        }),
        Err(Error::BadLength { len: 0, .. })
    ));
    assert_eq!(
        s.load(a, u64::MAX - 2, 4, MemType::Wb),
        Err(Error::AddressOverflow {
            addr: u64::MAX - 2,
            len: 4
        })
    );
    assert_eq!(s.ops(), 0);
    assert_eq!(
        s.load(a, u64::MAX - 3, 4, MemType::Wb).map(|v| v.len()),
        Ok(4)
    );
    assert_eq!(s.ops(), 1);
}

#[test]
fn agent_arenas_are_bounded_and_named() {
    let mut s = State::new(Config::default());
    let ids: Vec<AgentId> = (0..coherence::MAX_CPUS)
        .map(|i| {
            s.add_cpu(format!("c{i}"), Capacity::Unbounded)
                .expect("under the limit")
        })
        .collect();
    assert_eq!(
        s.add_cpu("one too many", Capacity::Unbounded),
        Err(Error::TooManyCpus {
            max: coherence::MAX_CPUS
        })
    );
    assert_eq!(s.name(coherence::Actor::Cpu(ids[5])), "c5");
    assert_eq!(ids[5].to_string(), "cpu5");
}

#[test]
fn a_full_cache_writes_back_its_oldest_line_in_fill_order() {
    let two = Capacity::Lines(NonZeroUsize::new(2).expect("2"));
    let (mut s, a, _, d) = two_cpus(two);
    s.run(&[
        store(a, 0x000, 1, MemType::Wb),
        store(a, 0x040, 2, MemType::Wb),
    ])
    .expect("ok");
    load(&mut s, a, 0x000, MemType::Wb); // a hit does not make line 0 younger
    s.step(&store(a, 0x080, 3, MemType::Wb)).expect("ok");
    assert_eq!(s.line_state(a, Line(0)), LineState::Invalid);
    assert_eq!(s.line_state(a, Line(1)), LineState::Dirty);
    assert_eq!(s.memory(0, 1), vec![1], "the victim was written back");
    assert_eq!(s.memory(0x40, 1), vec![0]);
    s.step(&Action::DmaRead {
        dev: d,
        addr: 0,
        len: 1,
    })
    .expect("ok");
    assert!(s.check(Property::NoStaleRead).is_ok());
}

#[test]
fn cpu_caches_stay_coherent_among_themselves() {
    let (mut s, a, b, _) = two_cpus(Capacity::Unbounded);
    s.step(&store(a, 0, 7, MemType::Wb)).expect("ok");
    // b's read miss snoops a's dirty copy; both end up clean.
    assert_eq!(load(&mut s, b, 0, MemType::Wb), 7);
    assert_eq!(
        (s.line_state(a, Line(0)), s.line_state(b, Line(0))),
        (LineState::Clean, LineState::Clean)
    );
    // b's store invalidates a's copy; a's next read sees it.
    s.step(&store(b, 0, 8, MemType::Wb)).expect("ok");
    assert_eq!(s.line_state(a, Line(0)), LineState::Invalid);
    assert_eq!(load(&mut s, a, 0, MemType::Wb), 8);
    assert!(s.verdicts().is_empty());
}

#[test]
fn a_non_temporal_store_to_wb_memory_evicts_the_line_and_combines() {
    let (mut s, a, b, d) = two_cpus(Capacity::Unbounded);
    s.step(&store(b, 0, 1, MemType::Wb)).expect("ok");
    s.step(&Action::NtStore {
        agent: a,
        addr: 1,
        value: Value::new(&[2]).expect("1"),
        mem_type: MemType::Wb,
    })
    .expect("ok");
    assert_eq!(s.line_state(b, Line(0)), LineState::Invalid);
    assert_eq!(
        s.memory(0, 2),
        vec![1, 0],
        "b's line went out, the NT byte waits in a's buffer"
    );
    s.step(&Action::Sfence { agent: a }).expect("ok");
    assert_eq!(s.memory(0, 2), vec![1, 2]);
    // Not an alias: the mapping is WB.
    assert!(s.check(Property::NoConflictingAlias).is_ok());
    // To UC it is an ordinary uncached store, at once.
    s.step(&Action::NtStore {
        agent: a,
        addr: 2,
        value: Value::new(&[3]).expect("1"),
        mem_type: MemType::Uc,
    })
    .expect("ok");
    assert_eq!(
        s.step(&Action::DmaRead {
            dev: d,
            addr: 0,
            len: 3
        })
        .expect("ok")
        .read
        .expect("data")
        .as_slice(),
        &[1, 2, 3]
    );
}

#[test]
fn write_through_and_write_protect_keep_memory_current() {
    let (mut s, a, b, d) = two_cpus(Capacity::Unbounded);
    load(&mut s, a, 0, MemType::Wt);
    load(&mut s, b, 0, MemType::Wt);
    s.step(&store(a, 0, 5, MemType::Wt)).expect("ok");
    assert_eq!(
        s.line_state(a, Line(0)),
        LineState::Clean,
        "updated in place, not dirty"
    );
    assert_eq!(s.line_state(b, Line(0)), LineState::Invalid);
    s.step(&store(a, 1, 6, MemType::Wp)).expect("ok");
    assert_eq!(
        s.line_state(a, Line(0)),
        LineState::Invalid,
        "WP writes invalidate"
    );
    let got = s
        .step(&Action::DmaRead {
            dev: d,
            addr: 0,
            len: 2,
        })
        .expect("ok");
    assert_eq!(got.read.expect("data").as_slice(), &[5, 6]);
    assert!(s.verdicts().is_empty());
}

#[test]
fn clflushopt_waits_for_the_fence_and_clwb_keeps_a_clean_copy() {
    let (mut s, a, _, d) = two_cpus(Capacity::Unbounded);
    s.run(&[
        store(a, 0, 1, MemType::Wb),
        store(a, 0x40, 2, MemType::Wb),
        Action::Clflushopt { agent: a, addr: 0 },
        Action::Clwb {
            agent: a,
            addr: 0x40,
        },
    ])
    .expect("ok");
    assert_eq!(
        s.line_state(a, Line(0)),
        LineState::Dirty,
        "queued, not done"
    );
    s.step(&Action::DmaRead {
        dev: d,
        addr: 0,
        len: 1,
    })
    .expect("ok");
    assert!(
        s.check(Property::NoStaleRead).is_err(),
        "a missing fence shows"
    );
    s.step(&Action::Mfence { agent: a }).expect("ok");
    assert_eq!(s.line_state(a, Line(0)), LineState::Invalid);
    assert_eq!(s.line_state(a, Line(1)), LineState::Clean);
    assert_eq!((s.memory(0, 1), s.memory(0x40, 1)), (vec![1], vec![2]));
}

#[test]
fn wbinvd_empties_only_the_executing_cpu() {
    let (mut s, a, b, _) = two_cpus(Capacity::Unbounded);
    s.run(&[
        store(a, 0, 1, MemType::Wb),
        store(b, 0x40, 2, MemType::Wb),
        store(a, 0x80, 3, MemType::Wc),
    ])
    .expect("ok");
    s.step(&Action::Wbinvd { agent: a }).expect("ok");
    assert_eq!(s.line_state(a, Line(0)), LineState::Invalid);
    assert_eq!(s.line_state(b, Line(1)), LineState::Dirty);
    assert_eq!(
        (s.memory(0, 1), s.memory(0x80, 1)),
        (vec![1], vec![3]),
        "also a serializing drain"
    );
}

#[test]
fn an_access_across_a_line_boundary_touches_both_lines() {
    let (mut s, a, _, d) = two_cpus(Capacity::Unbounded);
    let v = Value::from_u64(0x0807_0605_0403_0201, 8).expect("8");
    s.store(a, 0x3c, v, MemType::Wb).expect("ok");
    assert_eq!(
        (s.line_state(a, Line(0)), s.line_state(a, Line(1))),
        (LineState::Dirty, LineState::Dirty)
    );
    assert_eq!(s.load(a, 0x3c, 8, MemType::Wb).expect("ok"), v);
    assert_eq!(s.truth(0x3c, 8), v.as_slice());
    s.step(&Action::DmaRead {
        dev: d,
        addr: 0x30,
        len: 32,
    })
    .expect("ok");
    // One stale-read verdict per line the read touched.
    assert_eq!(s.verdict_count(Property::NoStaleRead), 2);
}

#[test]
fn the_verdict_log_keeps_evidence_for_every_property_past_its_limit() {
    let mut s = State::new(Config {
        verdict_limit: 2,
        ..Config::default()
    });
    let a = s.add_cpu("a", Capacity::Unbounded).expect("cpu");
    let b = s.add_cpu("b", Capacity::Unbounded).expect("cpu");
    let d = s.add_dma("d", false).expect("dev");
    for i in 0..8 {
        s.step(&store(a, i * 64, 1, MemType::Wb)).expect("ok");
        s.step(&Action::DmaRead {
            dev: d,
            addr: i * 64,
            len: 1,
        })
        .expect("ok");
    }
    s.run(&[
        store(b, 0x1000, 1, MemType::Wb),
        store(a, 0x1000, 2, MemType::Wc),
        Action::Sfence { agent: a },
    ])
    .expect("ok");
    let out = s
        .step(&Action::Evict {
            agent: b,
            line: Line::containing(0x1000),
        })
        .expect("ok");
    assert_eq!(out.new_verdicts, 1);
    assert_eq!(s.verdict_count(Property::NoStaleRead), 8);
    assert_eq!(
        s.verdicts().len(),
        4,
        "two kept, then the first alias and the first lost write"
    );
    let Err(Verdict::LostWrite(v)) = s.check(Property::NoLostWrite) else {
        panic!("lost write kept");
    };
    assert_eq!(v.cause, WritebackCause::Evict);
    assert!(s.check(Property::NoConflictingAlias).is_err());
}

#[test]
fn the_explorer_reports_when_its_bound_cuts_the_search() {
    let (s, a, _, d) = two_cpus(Capacity::Unbounded);
    let program: Vec<Action> = (0..6)
        .flat_map(|i| {
            [
                store(a, i * 64, 1, MemType::Wb),
                Action::DmaRead {
                    dev: d,
                    addr: i * 64,
                    len: 1,
                },
            ]
        })
        .collect();
    let full = explore(&s, &program, &ExploreConfig::default()).expect("ok");
    assert!(full.complete);
    let cut = explore(
        &s,
        &program,
        &ExploreConfig {
            max_states: full.states / 4,
            ..ExploreConfig::default()
        },
    )
    .expect("ok");
    assert!(!cut.complete);
    assert_eq!(cut.states, full.states / 4);
    // Every read returns the stale 0 or (once written back) the 1.
    assert!(
        full.reads
            .iter()
            .all(|r| r.outcomes == vec![vec![0], vec![1]])
    );
    assert_eq!(full.timing_dependent().count(), 6);
    assert_eq!(full.outcomes(1), Some(&[vec![0], vec![1]][..]));
    assert_eq!(full.outcomes(0), None, "a store reads nothing");
}
