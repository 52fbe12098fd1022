//! `ncdma bench migrate`: a running guest with 1 GiB of RAM and a 256 MiB noncoherent BAR
//! (the guest dirtying RAM, the GPU model rendering the BAR) migrated over TCP loopback to
//! a destination in the same process, with, in the same run:
//!
//! - the throughput of coherent pages (RAM, plain copy) against that of flushed
//!   noncoherent pages (BAR, CLFLUSHOPT + SFENCE before each read), each region's bytes
//!   over the time spent sending it (target: flushed ≥ 0.9 × coherent);
//! - the coherent throughput against the loopback ceiling, a plain socket copy of the same
//!   number of bytes ([`super::loopback`]; target ≥ 0.8 ×);
//! - QEMU as the peer ([`super::qemu`]), when it can run here: a guest with the same RAM,
//!   filled with non-zero bytes, migrated between two local QEMUs (goal: our total time ≤
//!   QEMU's). When it cannot, the report says why.

use std::fmt;
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use migration::format::Policy as WirePolicy;
use migration::precopy::Summary;
use migration::transport::{self, ReceiveOptions, SendOptions};
use serde_json::{Value, json};

use super::loopback::{LoopbackCeiling, LoopbackError, LoopbackOptions, loopback_ceiling};
use super::qemu::{Install, QemuMigration, QemuOptions, ensure_qemu, run_qemu_migration};
use crate::cache::HostCache;
use crate::live::{LiveError, LiveVm, LiveVmConfig};
use crate::strategy::Policy;

/// What to migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateBenchConfig {
    /// Guest RAM.
    pub ram_size: u64,
    /// The noncoherent BAR.
    pub bar_size: u64,
    /// Pages per second the guest dirties.
    pub dirty_rate: u64,
    /// BAR pages per second the GPU renders.
    pub gpu_rate: u64,
    /// Run QEMU as the peer (installing it with apt if it is missing).
    pub qemu: bool,
}

impl Default for MigrateBenchConfig {
    /// Issue 6's sizes: 1 GiB RAM, a 256 MiB BAR; 20 000 dirty pages/s over a 64 MiB
    /// working set, 5000 GPU pages/s.
    fn default() -> Self {
        MigrateBenchConfig {
            ram_size: 1 << 30,
            bar_size: 256 << 20,
            dirty_rate: 20_000,
            gpu_rate: 5000,
            qemu: true,
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrateBenchError {
    /// The guest could not boot.
    #[error("booting the guest: {0}")]
    Boot(#[from] LiveError),
    /// The migration failed.
    #[error("the migration failed: {0}")]
    Migration(#[from] migration::precopy::MigrationError),
    /// The destination failed.
    #[error("the destination failed: {0}")]
    Destination(#[from] migration::transport::ReceiveError),
    /// The loopback ceiling could not be measured.
    #[error("the loopback ceiling: {0}")]
    Loopback(#[from] LoopbackError),
    /// A socket for the run could not be opened.
    #[error("loopback socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// One run's figures.
#[derive(Debug)]
pub struct MigrateBench {
    /// What was migrated.
    pub config: MigrateBenchConfig,
    /// Our migration.
    pub summary: Summary,
    /// Coherent (RAM) bytes per second while sending RAM.
    pub coherent: f64,
    /// Flushed noncoherent (BAR) bytes per second while sending the BAR.
    pub flushed: f64,
    /// The loopback ceiling for the stream's bytes.
    pub ceiling: LoopbackCeiling,
    /// QEMU's migration of the same RAM, or why it did not run.
    pub qemu: Result<QemuMigration, String>,
}

/// Runs the benchmark.
pub fn run(config: &MigrateBenchConfig) -> Result<MigrateBench, MigrateBenchError> {
    let vm_config = LiveVmConfig {
        ram_size: config.ram_size,
        bar_size: config.bar_size,
        bar_policy: WirePolicy::Flush,
        // This host has no safe mechanism; the benchmark measures the copy, not the types.
        strategy: Policy {
            allow_unsafe: true,
            ..Policy::default()
        },
        working_set: (64 << 20).min(config.ram_size / 2),
        dirty_rate: config.dirty_rate,
        gpu_rate: config.gpu_rate,
        ..LiveVmConfig::default()
    };
    let mut vm = LiveVm::boot(&vm_config)?;
    thread::sleep(Duration::from_millis(200));
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let destination =
        thread::spawn(move || transport::receive(&listener, &ReceiveOptions::default()));
    let summary = transport::send(
        addr,
        &mut vm,
        &HostCache,
        &SendOptions::default(),
        &mut |_| {},
    )?;
    let image = destination
        .join()
        .expect("the destination thread does not panic")?;
    drop(image);
    drop(vm);
    let per_second = |name: &str| {
        summary
            .regions
            .iter()
            .find(|r| r.name == name)
            .map_or(0.0, |r| r.bytes as f64 / r.busy.as_secs_f64().max(1e-9))
    };
    let coherent = per_second(crate::live::RAM_REGION);
    let flushed = per_second(crate::live::BAR_REGION);
    let ceiling = loopback_ceiling(&LoopbackOptions::new(summary.stream_bytes))?;
    let qemu = if config.qemu {
        ensure_qemu(Install::IfMissing)
            .and_then(|binary| run_qemu_migration(&QemuOptions::new(binary, config.ram_size)))
            .map_err(|e| e.to_string())
    } else {
        Err("not asked for (--no-qemu)".into())
    };
    Ok(MigrateBench {
        config: *config,
        summary,
        coherent,
        flushed,
        ceiling,
        qemu,
    })
}

const MIB: f64 = (1 << 20) as f64;

impl MigrateBench {
    /// flushed / coherent throughput.
    pub fn flush_ratio(&self) -> f64 {
        self.flushed / self.coherent
    }

    /// coherent throughput / loopback ceiling.
    pub fn ceiling_ratio(&self) -> f64 {
        self.coherent / self.ceiling.throughput()
    }

    /// The figures as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "ram_bytes": self.config.ram_size,
            "bar_bytes": self.config.bar_size,
            "total_ms": self.summary.total_time.as_secs_f64() * 1e3,
            "downtime_ms": self.summary.downtime.as_secs_f64() * 1e3,
            "rounds": self.summary.rounds,
            "stream_bytes": self.summary.stream_bytes,
            "coherent_mib_s": self.coherent / MIB,
            "flushed_mib_s": self.flushed / MIB,
            "flushed_over_coherent": self.flush_ratio(),
            "loopback_mib_s": self.ceiling.throughput() / MIB,
            "coherent_over_loopback": self.ceiling_ratio(),
            "qemu": match &self.qemu {
                Ok(q) => json!({
                    "version": q.version,
                    "total_ms": q.total_time().as_secs_f64() * 1e3,
                    "downtime_ms": q.downtime().as_secs_f64() * 1e3,
                    "transferred_bytes": q.transferred(),
                    "mib_s": q.throughput() / MIB,
                    "source_paused": q.source_paused,
                    "differing_pages": q.differing_pages,
                    "ours_over_qemu_total": self.summary.total_time.as_secs_f64()
                        / q.total_time().as_secs_f64(),
                }),
                Err(why) => json!({ "not_run": why }),
            },
        })
    }
}

impl fmt::Display for MigrateBench {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        writeln!(
            f,
            "migrate: a running guest, {} MiB RAM + {} MiB noncoherent BAR (flush), over TCP \
             loopback, one run",
            self.config.ram_size >> 20,
            self.config.bar_size >> 20
        )?;
        writeln!(
            f,
            "ours: total {:.0} ms, downtime {:.1} ms, {} rounds, {:.1} MiB sent",
            s.total_time.as_secs_f64() * 1e3,
            s.downtime.as_secs_f64() * 1e3,
            s.rounds,
            s.stream_bytes as f64 / MIB
        )?;
        writeln!(f, "{:<40} {:>10}", "stream", "MiB/s")?;
        writeln!(
            f,
            "{:<40} {:>10.0}",
            "coherent pages (RAM, copy)",
            self.coherent / MIB
        )?;
        writeln!(
            f,
            "{:<40} {:>10.0}",
            "noncoherent pages (BAR, flush)",
            self.flushed / MIB
        )?;
        writeln!(
            f,
            "{:<40} {:>10.0}",
            "loopback ceiling (plain socket copy)",
            self.ceiling.throughput() / MIB
        )?;
        writeln!(
            f,
            "flushed / coherent:      {:.3}  (target >= 0.9)",
            self.flush_ratio()
        )?;
        writeln!(
            f,
            "coherent / loopback:     {:.3}  (target >= 0.8)",
            self.ceiling_ratio()
        )?;
        match &self.qemu {
            Ok(q) => writeln!(
                f,
                "qemu peer ({}, same RAM of seeded bytes): total {:.0} ms, downtime {:.1} ms, \
                 {:.1} MiB sent, {:.0} MiB/s, pages differing afterwards: {}\n\
                 ours / qemu total time:  {:.3}  (goal <= 1)",
                q.version,
                q.total_time().as_secs_f64() * 1e3,
                q.downtime().as_secs_f64() * 1e3,
                q.transferred() as f64 / MIB,
                q.throughput() / MIB,
                q.differing_pages
                    .map_or_else(|| "not checked".to_string(), |n| n.to_string()),
                s.total_time.as_secs_f64() / q.total_time().as_secs_f64()
            ),
            Err(why) => writeln!(f, "qemu peer: not run: {why}"),
        }
    }
}
