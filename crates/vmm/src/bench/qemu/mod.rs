//! QEMU as the peer of `ncdma bench migrate` (`benchmarks.md`): Debian's `qemu-system-x86`
//! migrating a guest with the same amount of RAM as ours over TCP loopback, in the same run.
//!
//! - [`ensure_qemu`] finds `qemu-system-x86_64`, or installs it with apt when the caller
//!   allows (the benchmark does, CI does not).
//! - [`run_qemu_migration`] fills a RAM file with seeded pseudo-random bytes (an all-zero
//!   guest would go as "duplicate" pages in milliseconds: no fair peer), starts a destination
//!   QEMU with `-incoming tcp:127.0.0.1:PORT` and a source QEMU whose RAM is that file
//!   (`memory-backend-file,share=on`), migrates with the bandwidth cap lifted, polls
//!   `query-migrate` over QMP until both sides complete, and returns QEMU's figures with our
//!   own wall time and a page-by-page comparison of the two RAM files.
//!
//! The guests have no disk and no OS. The source's vCPU runs SeaBIOS, which finds nothing to
//! boot and idles, so QEMU's guest dirties almost nothing while ours runs a dirtying loop: the
//! comparison favours QEMU, and `dirty-sync-count` / `dirty-pages-rate` in
//! [`MigrateInfo`] show by how much.
//!
//! On this project's hosts (`kvm_pvm`, shadow paging) QEMU 7.2 runs with `-cpu qemu64` (the
//! default here) or `host,-arch-capabilities`; `-cpu host` and `-cpu max` abort at start
//! because KVM refuses to set MSR 0x10a (`IA32_ARCH_CAPABILITIES`).

mod command;
mod error;
mod info;
mod install;
mod process;
mod qmp;
mod ramfile;
mod run;

pub use error::{QemuError, Role};
pub use info::{MigrateInfo, MigrateStatus, RamInfo};
pub use install::{Install, QEMU_BINARY, QEMU_PACKAGE, check_kvm, ensure_qemu, find_qemu};
pub use run::{QemuMigration, QemuOptions, run_qemu_migration};
