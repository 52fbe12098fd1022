//! The crate's two boundaries' errors: a scenario file that cannot be used
//! ([`ScenarioError`], [`LoadError`]), and a run the modeled kernel or the simulator refused
//! ([`RunError`]). A kernel refusing a registration mechanism is neither: it is part of the
//! report.

use kvm_model::VcpuError;
use uapi::Errno;

/// A scenario file with an error, located: `origin:line:column: [table] #n, \`key\`: what`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}:{line}:{column}: {message}")]
pub struct ScenarioError {
    /// The file's path, or `builtin:NAME`.
    pub origin: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, naming the table and key.
    pub message: String,
}

/// Why `ncdma run NAME|FILE` has no scenario to run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Neither a built-in name nor an existing file.
    #[error("no built-in scenario or file named \"{name}\" (built-in: {builtins})")]
    NotFound {
        /// What was asked for.
        name: String,
        /// The built-in names, comma separated.
        builtins: String,
    },
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file has an error.
    #[error(transparent)]
    Parse(#[from] ScenarioError),
}

/// A run that could not complete: the scenario asks for something the modeled kernel or the
/// simulator refuses outright (not a registration mechanism: those are reported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// `KVM_SET_USER_MEMORY_REGION` refused the region even without the proposal's flag.
    #[error("{profile}: KVM_SET_USER_MEMORY_REGION for region \"{region}\" → {errno}")]
    SetUserMemoryRegion {
        /// The kernel.
        profile: String,
        /// The region.
        region: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `KVM_CREATE_VCPU` or `KVM_SET_MSRS` failed.
    #[error("{profile}: {ioctl} → {errno}")]
    Vcpu {
        /// The kernel.
        profile: String,
        /// Which ioctl.
        ioctl: &'static str,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The guest's MSR write raised #GP.
    #[error("{profile}: the guest's WRMSR {msr:#x} ← {value:#x} raises #GP")]
    GuestMsr {
        /// The kernel.
        profile: String,
        /// The MSR.
        msr: u32,
        /// The value refused.
        value: u64,
    },
    /// A vCPU-side operation (CR0 write, guest access) failed.
    #[error("{profile}: step {step}: {source}")]
    Guest {
        /// The kernel.
        profile: String,
        /// The step (0 while setting the guest up).
        step: usize,
        /// What failed.
        source: VcpuError,
    },
    /// The coherence simulator refused an action.
    #[error("{profile}: step {step}: {source}")]
    Simulator {
        /// The kernel.
        profile: String,
        /// The step.
        step: usize,
        /// What it refused.
        source: coherence::Error,
    },
}
