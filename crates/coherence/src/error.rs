//! Why an action or a configuration was refused. The simulator's verdicts
//! are not errors: an action that exposes a hazard succeeds and records one.

use thiserror::Error;

use crate::ids::{AgentId, DevId};

/// An action or configuration the state cannot take.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// The CPU id does not belong to this state's arena.
    #[error("unknown CPU agent {0}")]
    UnknownAgent(AgentId),
    /// The device id does not belong to this state's arena.
    #[error("unknown DMA agent {0}")]
    UnknownDevice(DevId),
    /// A CPU access must be 1..=8 bytes, a DMA access at least 1.
    #[error("bad access length {len} (allowed {min}..={max})")]
    BadLength {
        /// The length given.
        len: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The access runs past the end of the 64-bit physical address space.
    #[error("access of {len} bytes at {addr:#x} overflows the address space")]
    AddressOverflow {
        /// Start address.
        addr: u64,
        /// Length in bytes.
        len: usize,
    },
    /// Alias bookkeeping keeps one bit per CPU.
    #[error("at most {max} CPU agents")]
    TooManyCpus {
        /// The limit.
        max: usize,
    },
    /// Device ids share a 15-bit field with CPU ids in write stamps.
    #[error("at most {max} DMA agents")]
    TooManyDevices {
        /// The limit.
        max: usize,
    },
}
