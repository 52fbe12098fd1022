//! [`LiveError`]: why a live VM could not be booted or restored.

use super::gpu::GpuStateError;
use super::state::LoadError;
use crate::guest::GuestError;
use crate::region::RegionError;

/// A failed step of booting or restoring a [`LiveVm`](super::LiveVm). A restore that fails
/// leaves nothing running: the half-built VM is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LiveError {
    /// The VM, its vCPU or its program could not be set up.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The BAR could not be registered (the strategy chain's reasons included).
    #[error(transparent)]
    Region(#[from] RegionError),
    /// The sizes asked for do not make a VM.
    #[error("{0}")]
    Config(String),
    /// A device-model thread could not be started.
    #[error("starting the {thread} thread: {kind}")]
    Spawn {
        /// Which thread.
        thread: &'static str,
        /// The I/O error's kind.
        kind: std::io::ErrorKind,
    },
    /// The image is not of a VM this VMM builds (an image from another VMM, or edited).
    #[error("the image is not an ncdma live VM: {0}")]
    Shape(String),
    /// The vCPU state could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The GPU's device state is invalid.
    #[error(transparent)]
    GpuState(#[from] GpuStateError),
}
