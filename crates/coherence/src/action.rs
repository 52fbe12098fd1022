//! The operations the simulator performs, as data: one [`Action`] per CPU
//! instruction or DMA transfer, plus the host-side helpers that expand into
//! sequences of them.

use memtype::MemType;

use crate::addr::{Line, chunks};
use crate::ids::{AgentId, DevId};
use crate::value::Value;

/// One operation. Every CPU access carries the **effective** memory type of
/// the mapping it goes through (computed by the caller from the paging,
/// EPT/NPT and MTRR state with the `memtype` crate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// A load of 1..=8 bytes.
    Load {
        /// Who loads.
        agent: AgentId,
        /// Physical address (may straddle a line: two accesses, in order).
        addr: u64,
        /// Bytes, 1..=8.
        len: usize,
        /// Effective memory type.
        mem_type: MemType,
    },
    /// A store of 1..=8 bytes.
    Store {
        /// Who stores.
        agent: AgentId,
        /// Physical address.
        addr: u64,
        /// The bytes.
        value: Value,
        /// Effective memory type.
        mem_type: MemType,
    },
    /// A non-temporal store (MOVNTI and friends): the WC protocol, except
    /// to UC, UC-, CD and WP memory where it is an ordinary store.
    NtStore {
        /// Who stores.
        agent: AgentId,
        /// Physical address.
        addr: u64,
        /// The bytes.
        value: Value,
        /// Effective memory type.
        mem_type: MemType,
    },
    /// CLFLUSH: write back if dirty and invalidate the line in every cache.
    Clflush {
        /// Who flushes.
        agent: AgentId,
        /// Any address in the line.
        addr: u64,
    },
    /// CLFLUSHOPT: as CLFLUSH, but queued until the agent's next fence.
    Clflushopt {
        /// Who flushes.
        agent: AgentId,
        /// Any address in the line.
        addr: u64,
    },
    /// CLWB: write back if dirty, keeping clean copies; queued until the
    /// agent's next fence.
    Clwb {
        /// Who writes back.
        agent: AgentId,
        /// Any address in the line.
        addr: u64,
    },
    /// SFENCE: drains the agent's WC buffers and completes its queued
    /// CLFLUSHOPT/CLWB.
    Sfence {
        /// Who fences.
        agent: AgentId,
    },
    /// MFENCE: the same effects as SFENCE here (loads are not reordered in
    /// this model).
    Mfence {
        /// Who fences.
        agent: AgentId,
    },
    /// WBINVD: a fence, then write back and invalidate every line of the
    /// agent's own cache (other CPUs' caches are untouched, which is why
    /// Linux runs it on every CPU).
    Wbinvd {
        /// Who runs it.
        agent: AgentId,
    },
    /// A device read.
    DmaRead {
        /// Which device.
        dev: DevId,
        /// Physical address.
        addr: u64,
        /// Bytes, at least 1.
        len: usize,
    },
    /// A device write.
    DmaWrite {
        /// Which device.
        dev: DevId,
        /// Physical address.
        addr: u64,
        /// The bytes, at least 1.
        bytes: Vec<u8>,
    },
    /// A line leaves a CPU's cache at a moment of the caller's choosing
    /// (written back first if dirty): an eviction the hardware may do at any
    /// time. No effect if the line is not cached there.
    Evict {
        /// Whose cache.
        agent: AgentId,
        /// The line.
        line: Line,
    },
}

/// Host-side compositions of actions.
pub mod host {
    use super::*;

    /// Stores zeros over `len` bytes at `addr` through a mapping of type
    /// `mem_type`, 8 bytes at a time (as `clear_page` does through the
    /// kernel's WB direct map when `mem_type` is WB).
    pub fn zero_range(agent: AgentId, addr: u64, len: usize, mem_type: MemType) -> Vec<Action> {
        let mut v = Vec::with_capacity(len.div_ceil(8));
        let mut at = 0;
        while at < len {
            let n = (len - at).min(8);
            let value = Value::new(&[0; 8][..n]).expect("1..=8 bytes");
            v.push(Action::Store {
                agent,
                addr: addr + at as u64,
                value,
                mem_type,
            });
            at += n;
        }
        v
    }

    /// Flushes every line overlapping `len` bytes at `addr` out of every
    /// cache: CLFLUSHOPT each line, then SFENCE (what Linux's
    /// `clflush_cache_range` does).
    pub fn flush_range(agent: AgentId, addr: u64, len: usize) -> Vec<Action> {
        let mut v: Vec<Action> = chunks(addr, len)
            .map(|c| Action::Clflushopt {
                agent,
                addr: c.line.base(),
            })
            .collect();
        v.push(Action::Sfence { agent });
        v
    }
}
