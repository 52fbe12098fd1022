//! Who wrote what, and when: the per-line write stamps kept beside memory and
//! beside each cached line, from which verdicts name the other side of a
//! hazard (the write that a stale read missed, the write a write-back lost).

use core::fmt;

use crate::ids::{Actor, AgentId, DevId};

/// A committed write: the operation index at which it was issued and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteRef {
    /// Index of the operation (see [`crate::StepOutcome::op_index`]).
    pub op_index: u64,
    /// The CPU or device that wrote.
    pub writer: Actor,
}

impl fmt::Display for WriteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op #{} by {}", self.op_index, self.writer)
    }
}

/// A [`WriteRef`] packed in one word, or "none" for a line's initial
/// contents: the actor in the top 16 bits (bit 15 set for devices), the
/// operation index plus one below. Operation indices are therefore limited
/// to 2^48 - 1 (over 150 days at 20 M operations a second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Stamp(u64);

const OP_BITS: u32 = 48;
const DMA_BIT: u64 = 0x8000;

impl Stamp {
    /// Initial contents: nobody wrote since the page appeared.
    pub(crate) const NONE: Stamp = Stamp(0);

    pub(crate) fn new(op_index: u64, writer: Actor) -> Stamp {
        let who = match writer {
            Actor::Cpu(a) => u64::from(a.0),
            Actor::Dma(d) => DMA_BIT | u64::from(d.0),
        };
        let op = (op_index + 1) & ((1 << OP_BITS) - 1);
        Stamp((who << OP_BITS) | op)
    }

    pub(crate) fn get(self) -> Option<WriteRef> {
        let op = self.0 & ((1 << OP_BITS) - 1);
        if op == 0 {
            return None;
        }
        let who = self.0 >> OP_BITS;
        // Masked to 15 bits, so the narrowing is exact.
        let index = (who & (DMA_BIT - 1)) as u16;
        let writer = if who & DMA_BIT != 0 {
            Actor::Dma(DevId(index))
        } else {
            Actor::Cpu(AgentId(index))
        };
        Some(WriteRef {
            op_index: op - 1,
            writer,
        })
    }

    pub(crate) fn raw(self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_both_kinds_of_writer() {
        for writer in [Actor::Cpu(AgentId(3)), Actor::Dma(DevId(0x7fff))] {
            let s = Stamp::new(41, writer);
            assert_eq!(
                s.get(),
                Some(WriteRef {
                    op_index: 41,
                    writer
                })
            );
        }
        assert_eq!(Stamp::NONE.get(), None);
        assert_eq!(
            Stamp::new(0, Actor::Cpu(AgentId(0)))
                .get()
                .map(|w| w.op_index),
            Some(0)
        );
    }
}
