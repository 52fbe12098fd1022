//! Arena ids for the simulator's agents, and [`Actor`], the either-kind name
//! that verdicts use for a reader or a writer.

use core::fmt;

/// A CPU agent (a guest vCPU, or the host's own mapping): an index into the
/// [`crate::State`]'s CPU arena, handed out by [`crate::State::add_cpu`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentId(pub(crate) u16);

impl AgentId {
    /// Position in the arena (0 for the first CPU added).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cpu{}", self.0)
    }
}

/// A DMA agent (a device): an index into the [`crate::State`]'s device arena,
/// handed out by [`crate::State::add_dma`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevId(pub(crate) u16);

impl DevId {
    /// Position in the arena (0 for the first device added).
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev{}", self.0)
    }
}

/// Whoever performed a read or a write: a CPU or a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Actor {
    /// A CPU agent.
    Cpu(AgentId),
    /// A DMA agent.
    Dma(DevId),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Cpu(a) => a.fmt(f),
            Actor::Dma(d) => d.fmt(f),
        }
    }
}
