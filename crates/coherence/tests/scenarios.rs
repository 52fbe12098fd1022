//! The hazards of the KVM threads, each shown on raw actions with the fix
//! beside it: (1) the seeds' failure, (2) the fix, (3) migration reads
//! through an alias, (4) the info leak, (5) the lost write, (6) snooping
//! paths that stay correct.

use coherence::{
    Action, AgentId, Capacity, Config, DevId, ExploreConfig, Holder, MemType, Property, ReadData,
    State, StepOutcome, Untouched, Value, Verdict, WritebackCause, explore, host,
};

const BUF: u64 = 0x10_0000;
const SECRET: Untouched = Untouched::PreviousOwner { seed: 0x5ec2e7 };

struct Machine {
    s: State,
    guest: AgentId,
    host: AgentId,
    gpu: DevId,
    snooper: DevId,
}

fn machine(untouched: Untouched) -> Machine {
    let mut s = State::new(Config {
        untouched,
        ..Config::default()
    });
    let guest = s.add_cpu("vcpu0", Capacity::Unbounded).expect("cpu");
    let host = s.add_cpu("host", Capacity::Unbounded).expect("cpu");
    let gpu = s.add_dma("gpu (no snoop)", false).expect("dev");
    let snooper = s.add_dma("nic (snoops)", true).expect("dev");
    Machine {
        s,
        guest,
        host,
        gpu,
        snooper,
    }
}

/// One frame of `len` bytes, 8 at a time, with distinct non-zero values.
fn frame(agent: AgentId, addr: u64, len: u64, mem_type: MemType) -> Vec<Action> {
    (0..len / 8)
        .map(|i| Action::Store {
            agent,
            addr: addr + i * 8,
            value: Value::from_u64(0xf0f0_0000_0000_0000 | (i + 1), 8).expect("8 bytes"),
            mem_type,
        })
        .collect()
}

fn frame_bytes(len: u64) -> Vec<u8> {
    (0..len / 8)
        .flat_map(|i| (0xf0f0_0000_0000_0000u64 | (i + 1)).to_le_bytes())
        .collect()
}

impl Machine {
    fn run(&mut self, actions: &[Action]) -> Vec<StepOutcome> {
        self.s.run(actions).expect("valid actions")
    }

    fn one(&mut self, action: Action) -> StepOutcome {
        self.s.step(&action).expect("valid action")
    }

    fn dma_read(&mut self, dev: DevId, addr: u64, len: usize) -> Vec<u8> {
        match self.one(Action::DmaRead { dev, addr, len }).read {
            Some(ReadData::Dma(b)) => b,
            other => panic!("a DMA read returns DMA data, got {other:?}"),
        }
    }

    fn load(&mut self, agent: AgentId, addr: u64, mem_type: MemType) -> Vec<u8> {
        let out = self.one(Action::Load {
            agent,
            addr,
            len: 8,
            mem_type,
        });
        out.read.expect("a load returns data").as_slice().to_vec()
    }

    fn violations(&self) -> Vec<Property> {
        Property::ALL
            .into_iter()
            .filter(|&p| self.s.check(p).is_err())
            .collect()
    }
}

#[test]
fn s1_forced_wb_leaves_the_frame_in_the_cache_and_the_device_reads_stale_memory() {
    let mut m = machine(Untouched::Zero);
    // KVM's default EPT entry (WB, IPAT=1) turns the guest's WC into WB.
    let stores = frame(m.guest, BUF, 64, MemType::Wb);
    m.run(&stores);
    let got = m.dma_read(m.gpu, BUF, 64);
    assert_eq!(got, vec![0; 64], "memory never saw the frame");

    let Err(Verdict::StaleRead(v)) = m.s.check(Property::NoStaleRead) else {
        panic!("expected a stale read, got {:?}", m.s.verdicts());
    };
    assert_eq!(v.op_index, 8, "the DMA read is the ninth operation");
    assert_eq!(v.reader, coherence::Actor::Dma(m.gpu));
    assert_eq!(v.addr, BUF);
    assert_eq!(v.expected, frame_bytes(64));
    assert_eq!(v.got, vec![0; 64]);
    let w = v.newer_write.expect("written in the run");
    assert_eq!((w.op_index, w.writer), (7, coherence::Actor::Cpu(m.guest)));
    assert_eq!(v.newer_value_held_by, Holder::DirtyCache(m.guest));
    let text = m.s.explain(&m.s.verdicts()[0]);
    assert!(
        text.contains("gpu (no snoop) read 0x100000") && text.contains("dirty in vcpu0's cache"),
        "{text}"
    );
    assert_eq!(m.violations(), vec![Property::NoStaleRead]);
}

#[test]
fn s2_honoured_wc_with_a_fence_or_a_uc_doorbell_reaches_the_device() {
    for doorbell in [false, true] {
        let mut m = machine(Untouched::Zero);
        let mut program = frame(m.guest, BUF, 64, MemType::Wc);
        program.pop(); // leave the line partly written, so only the publish drains it
        program.push(if doorbell {
            Action::Store {
                agent: m.guest,
                addr: 0xfe00_0000, // a device register, UC
                value: Value::from_u64(1, 4).expect("4 bytes"),
                mem_type: MemType::Uc,
            }
        } else {
            Action::Sfence { agent: m.guest }
        });
        m.run(&program);
        assert_eq!(
            m.dma_read(m.gpu, BUF, 56),
            frame_bytes(56),
            "doorbell: {doorbell}"
        );
        assert!(m.violations().is_empty(), "{:?}", m.s.verdicts());
    }
}

#[test]
fn s2_without_a_fence_the_wc_data_has_not_been_published() {
    let mut m = machine(Untouched::Zero);
    m.run(&frame(m.guest, BUF, 16, MemType::Wc));
    // The device sees old memory, and that is no verdict: the guest has not
    // made its stores globally visible yet.
    assert_eq!(m.dma_read(m.gpu, BUF, 16), vec![0; 16]);
    assert!(m.violations().is_empty());
    m.one(Action::Sfence { agent: m.guest });
    assert_eq!(m.dma_read(m.gpu, BUF, 16), frame_bytes(16));
}

#[test]
fn s3_migration_read_through_a_stale_wb_copy_is_stale_unless_flushed_first() {
    for flush_first in [false, true] {
        let mut m = machine(Untouched::Zero);
        // Previous pre-copy round: the host read the page through its WB map.
        m.load(m.host, BUF, MemType::Wb);
        // The guest renders through its (honoured) WC mapping and fences.
        let mut program = frame(m.guest, BUF, 64, MemType::Wc);
        program.push(Action::Sfence { agent: m.guest });
        m.run(&program);
        if flush_first {
            m.run(&host::flush_range(m.host, BUF, 4096));
        }
        let got = m.load(m.host, BUF, MemType::Wb);

        let alias = m.s.check(Property::NoConflictingAlias);
        let Err(Verdict::ConflictingAlias(a)) = alias else {
            panic!("the guest's WC store met the host's cached copy: {alias:?}");
        };
        assert_eq!(
            (a.uncached_by, a.uncached_as, a.snooped),
            (m.guest, MemType::Wc, false)
        );
        assert_eq!(
            (a.cached_by, a.cached_as, a.page),
            (m.host, MemType::Wb, BUF)
        );

        if flush_first {
            assert_eq!(got, frame_bytes(8));
            assert!(m.s.check(Property::NoStaleRead).is_ok());
        } else {
            assert_eq!(got, vec![0; 8]);
            let Err(Verdict::StaleRead(v)) = m.s.check(Property::NoStaleRead) else {
                panic!("stale read expected");
            };
            assert_eq!(v.reader, coherence::Actor::Cpu(m.host));
            assert_eq!(v.newer_value_held_by, Holder::Memory);
        }
    }
}

#[test]
fn s3_whether_a_migration_read_is_stale_depends_on_eviction_timing() {
    let mut m = machine(Untouched::Zero);
    let program = vec![
        Action::Load {
            agent: m.host,
            addr: BUF,
            len: 8,
            mem_type: MemType::Wb,
        },
        Action::Store {
            agent: m.guest,
            addr: BUF,
            value: Value::from_u64(0xabcd, 8).expect("8"),
            mem_type: MemType::Wc,
        },
        Action::Sfence { agent: m.guest },
        Action::Load {
            agent: m.host,
            addr: BUF,
            len: 8,
            mem_type: MemType::Wb,
        },
    ];
    let r = explore(&m.s, &program, &ExploreConfig::default()).expect("valid");
    assert!(r.complete);
    let dependent: Vec<_> = r.timing_dependent().collect();
    assert_eq!(dependent.len(), 1);
    assert_eq!(dependent[0].op_index, 3);
    assert_eq!(
        dependent[0].outcomes,
        vec![vec![0; 8], 0xabcdu64.to_le_bytes().to_vec()],
        "stale if the host's copy survived, fresh if it was evicted"
    );
    assert!(r.possible(Property::NoStaleRead));

    // With the flush the migration code adds, the read has one outcome.
    let mut fixed = program.clone();
    let last = fixed.pop().expect("the read");
    fixed.extend(host::flush_range(m.host, BUF, 64));
    fixed.push(last);
    let r = explore(&m.s, &fixed, &ExploreConfig::default()).expect("valid");
    assert!(r.complete && r.timing_dependent().next().is_none());
    assert!(!r.possible(Property::NoStaleRead));
    // The state handed in is untouched.
    assert_eq!(m.s.ops(), 0);
    m.one(Action::Sfence { agent: m.host });
}

#[test]
fn s4_a_page_zeroed_through_the_cache_leaks_its_previous_owner_unless_flushed_on_give() {
    for flush_on_give in [false, true] {
        let mut m = machine(SECRET);
        let mut give = host::zero_range(m.host, BUF, 4096, MemType::Wb);
        if flush_on_give {
            give.extend(host::flush_range(m.host, BUF, 4096));
        }
        m.run(&give);
        let got = m.dma_read(m.gpu, BUF, 4096);
        if flush_on_give {
            assert_eq!(got, vec![0; 4096]);
            assert!(m.violations().is_empty(), "{:?}", m.s.verdicts());
        } else {
            let secret: Vec<u8> = (0..4096).map(|i| SECRET.byte_at(BUF + i)).collect();
            assert_eq!(got, secret);
            let Err(Verdict::InfoLeak(v)) = m.s.check(Property::NoInfoLeak) else {
                panic!("info leak expected: {:?}", m.s.verdicts());
            };
            assert_eq!(v.reader, coherence::Actor::Dma(m.gpu));
            assert_eq!((v.addr, v.leaked.as_slice()), (BUF, &secret[..64]));
            assert_eq!(v.expected, vec![0; 64]);
            let erase = v.erased_by.expect("the host erased it");
            assert_eq!(erase.writer, coherence::Actor::Cpu(m.host));
            // One verdict per line, and it is an info leak, not a stale read.
            assert_eq!(m.s.verdict_count(Property::NoInfoLeak), 64);
            assert_eq!(m.violations(), vec![Property::NoInfoLeak]);
        }
    }
}

#[test]
fn s4_a_page_taken_back_must_be_invalidated_not_just_written_back() {
    // CLWB on give keeps a clean copy in the host's cache; the device then
    // writes the page, and the host reading it back sees its own stale
    // zeros. CLFLUSHOPT on give leaves nothing to go stale.
    for invalidate in [false, true] {
        let mut m = machine(SECRET);
        let mut give = host::zero_range(m.host, BUF, 64, MemType::Wb);
        if invalidate {
            give.extend(host::flush_range(m.host, BUF, 64));
        } else {
            give.push(Action::Clwb {
                agent: m.host,
                addr: BUF,
            });
            give.push(Action::Sfence { agent: m.host });
        }
        m.run(&give);
        m.one(Action::DmaWrite {
            dev: m.gpu,
            addr: BUF,
            bytes: vec![0x77; 64],
        });
        let got = m.load(m.host, BUF, MemType::Wb);
        if invalidate {
            assert_eq!(got, vec![0x77; 8]);
            assert!(m.violations().is_empty());
        } else {
            assert_eq!(got, vec![0; 8]);
            let Err(Verdict::StaleRead(v)) = m.s.check(Property::NoStaleRead) else {
                panic!("stale read expected");
            };
            assert_eq!(
                v.newer_write.map(|w| w.writer),
                Some(coherence::Actor::Dma(m.gpu))
            );
        }
    }
}

#[test]
fn s5_a_dirty_alias_written_back_after_a_wc_write_loses_it() {
    let mut m = machine(Untouched::Zero);
    // The host dirtied the line through its WB mapping.
    m.one(Action::Store {
        agent: m.host,
        addr: BUF + 8,
        value: Value::from_u64(0x1111, 8).expect("8"),
        mem_type: MemType::Wb,
    });
    // The guest writes the same line through WC and fences: memory is newest.
    m.one(Action::Store {
        agent: m.guest,
        addr: BUF,
        value: Value::from_u64(0x2222, 8).expect("8"),
        mem_type: MemType::Wc,
    });
    m.one(Action::Sfence { agent: m.guest });
    assert!(m.s.check(Property::NoLostWrite).is_ok());
    // Later the host's cache evicts its older copy of the whole line.
    m.one(Action::Evict {
        agent: m.host,
        line: coherence::Line::containing(BUF),
    });
    let Err(Verdict::LostWrite(v)) = m.s.check(Property::NoLostWrite) else {
        panic!("lost write expected: {:?}", m.s.verdicts());
    };
    assert_eq!(v.addr, BUF);
    assert_eq!(v.lost, 0x2222u64.to_le_bytes()[..2].to_vec());
    assert_eq!(v.overwritten_with, vec![0, 0]);
    assert_eq!(
        (v.overwritten_by, v.cause, v.op_index),
        (m.host, WritebackCause::Evict, 3)
    );
    let w = v.writer.expect("the guest's store");
    assert_eq!((w.writer, w.op_index), (coherence::Actor::Cpu(m.guest), 1));
    // The device now reads what nobody holds any more.
    m.dma_read(m.gpu, BUF, 8);
    let Err(Verdict::StaleRead(s)) = m.s.check(Property::NoStaleRead) else {
        panic!("stale read expected");
    };
    assert_eq!(s.newer_value_held_by, Holder::Nowhere);
}

#[test]
fn s6_uc_from_the_pat_snoops_and_stays_correct() {
    let mut m = machine(Untouched::Zero);
    m.run(&frame(m.host, BUF, 16, MemType::Wb));
    // The guest reads through UC: the host's dirty line is written back first.
    assert_eq!(m.load(m.guest, BUF, MemType::Uc), frame_bytes(8));
    // ... and writes through UC-: the host's copy is invalidated.
    m.one(Action::Store {
        agent: m.guest,
        addr: BUF + 8,
        value: Value::from_u64(5, 8).expect("8"),
        mem_type: MemType::UcMinus,
    });
    assert_eq!(
        m.load(m.host, BUF + 8, MemType::Wb),
        5u64.to_le_bytes().to_vec()
    );
    assert_eq!(m.dma_read(m.gpu, BUF + 8, 8), 5u64.to_le_bytes().to_vec());
    // The alias is still reported (the SDM does not support it), as snooped.
    let Err(Verdict::ConflictingAlias(a)) = m.s.check(Property::NoConflictingAlias) else {
        panic!("alias expected");
    };
    assert!(a.snooped);
    assert_eq!(m.violations(), vec![Property::NoConflictingAlias]);
}

#[test]
fn s6_a_snooping_device_is_always_correct() {
    let mut m = machine(SECRET);
    m.run(&host::zero_range(m.host, BUF, 64, MemType::Wb));
    m.run(&frame(m.guest, BUF, 32, MemType::Wb));
    assert_eq!(&m.dma_read(m.snooper, BUF, 64)[..32], &frame_bytes(32)[..]);
    m.one(Action::DmaWrite {
        dev: m.snooper,
        addr: BUF + 4,
        bytes: vec![9; 8],
    });
    let mut want = frame_bytes(8);
    want[4..].copy_from_slice(&[9; 4]);
    assert_eq!(m.load(m.guest, BUF, MemType::Wb), want);
    assert_eq!(m.load(m.host, BUF + 8, MemType::Wb)[..4], [9; 4]);
    assert!(m.violations().is_empty(), "{:?}", m.s.verdicts());
}
