//! [`RealError`]: why a scenario could not run on the real `/dev/kvm`: the scenario asks for
//! something the guest runtime cannot do (bad input for this backend), or a step of making
//! or running the VM failed (named after the step, with its source).

use uapi::Errno;
use vmm::guest::GuestError;
use vmm::region::RegionError;

use crate::error::RunError;
use crate::step::StepKind;

/// A scenario that could not run on `/dev/kvm`, or whose model side could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RealError {
    /// `/dev/kvm` could not be opened.
    #[error("--backend kvm: /dev/kvm cannot be opened ({0})")]
    OpenKvm(Errno),
    /// A step the guest runtime has no operation for.
    #[error("step {step} (line {line}, {kind}) cannot run on /dev/kvm: {why}")]
    Unsupported {
        /// The step (1-based).
        step: usize,
        /// Its line in the file.
        line: usize,
        /// Its kind.
        kind: StepKind,
        /// Why.
        why: &'static str,
    },
    /// One guest segment reaches a page through two PAT entries; its identity page tables
    /// map each page once.
    #[error(
        "step {step} (line {line}) maps {region}+{offset:#x} with PAT entry {}, but step \
         {first} of the same guest run maps it with entry {}: the real guest's identity \
         mapping has one entry per page",
        .entries.1, .entries.0
    )]
    PatConflict {
        /// The later step (1-based).
        step: usize,
        /// Its line in the file.
        line: usize,
        /// The region.
        region: String,
        /// The page's offset in the region.
        offset: u64,
        /// The earlier step (1-based).
        first: usize,
        /// The earlier step's entry, and the later one's.
        entries: (u8, u8),
    },
    /// Measuring whether guest memory types take effect failed.
    #[error("measuring guest memory types: {0}")]
    Measure(GuestError),
    /// Making the guest VM failed.
    #[error("making the guest VM: {0}")]
    Vm(GuestError),
    /// Adding a region to the VM failed (mapping, the memslot, the strategy chain).
    #[error("{0}")]
    Region(RegionError),
    /// A guest run failed.
    #[error("guest steps {first}-{last}: {source}")]
    Guest {
        /// Its first step (1-based).
        first: usize,
        /// Its last step (1-based).
        last: usize,
        /// What failed.
        source: GuestError,
    },
    /// The model side of the comparison could not run.
    #[error(transparent)]
    Model(#[from] RunError),
}

impl RealError {
    /// Whether the scenario is at fault (it asks for what this backend or the model cannot
    /// do), rather than the host: exit code 2, not 1.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            RealError::Unsupported { .. } | RealError::PatConflict { .. } | RealError::Model(_)
        )
    }
}
