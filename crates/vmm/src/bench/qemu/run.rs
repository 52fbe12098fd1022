//! [`run_qemu_migration`]: one QEMU-to-QEMU migration over loopback, timed by QEMU and by us.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use super::command::{Launch, qemu_args};
use super::error::{QemuError, Role};
use super::info::{MigrateInfo, MigrateStatus};
use super::install::check_kvm;
use super::process::{QemuProcess, WorkDir};
use super::qmp::Qmp;
use super::ramfile::{create_empty, differing_pages, fill_random};

/// How often `query-migrate` is asked; also the resolution of [`QemuMigration::wall`].
const POLL: Duration = Duration::from_millis(5);
/// `max-bandwidth` for the migration: 1 TiB/s, i.e. unlimited. QEMU's default cap
/// (128 MiB/s in 7.2) would measure the cap, not QEMU.
const UNLIMITED_BANDWIDTH: u64 = 1 << 40;

/// How to run the QEMU peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuOptions {
    /// `qemu-system-x86_64` (from [`ensure_qemu`](super::ensure_qemu)).
    pub binary: PathBuf,
    /// Guest RAM in bytes: a positive multiple of 1 MiB.
    pub ram_bytes: u64,
    /// Seed of the RAM contents.
    pub seed: u64,
    /// `-cpu` model. [`QemuOptions::new`] picks `qemu64`, QEMU's own default under KVM; on
    /// `kvm_pvm` hosts `host` and `max` abort at start (KVM refuses MSR 0x10a,
    /// `IA32_ARCH_CAPABILITIES`), and `host,-arch-capabilities` works.
    pub cpu: String,
    /// `-machine` type (`pc` or `q35`; both migrate here).
    pub machine: String,
    /// Start the source with its vCPU stopped (`-S`). Unpaused, the vCPU runs SeaBIOS, finds
    /// no boot device and idles, dirtying next to nothing; paused, QEMU treats the whole
    /// stream as downtime because the guest is not running.
    pub source_paused: bool,
    /// QEMU's `downtime-limit` (its default is 300 ms).
    pub downtime_limit: Duration,
    /// Parent of the scratch directory holding both RAM files (2 × `ram_bytes`).
    /// [`QemuOptions::new`] picks `/dev/shm` where it exists: tmpfs pages, like our guest's
    /// anonymous memory. On a disk file the destination pays for block allocation of every
    /// page it receives (1 GiB took 12 s from `/tmp` on ext4 against 6 s from `/dev/shm`).
    pub work_dir: PathBuf,
    /// How long each QEMU may take to open its QMP socket.
    pub startup_timeout: Duration,
    /// How long the migration may take, from `migrate` to both sides completed.
    pub migration_timeout: Duration,
    /// Compare the destination's RAM file with the source's afterwards.
    pub verify: bool,
}

impl QemuOptions {
    /// `ram_bytes` of RAM with the defaults above: `-cpu qemu64 -machine pc`, source running,
    /// 300 ms downtime limit, `/dev/shm` (else the temp directory), 20 s to start, 300 s to
    /// migrate, verified.
    pub fn new(binary: PathBuf, ram_bytes: u64) -> QemuOptions {
        QemuOptions {
            binary,
            ram_bytes,
            seed: 0x6e63_646d_615f_716d,
            cpu: "qemu64".into(),
            machine: "pc".into(),
            source_paused: false,
            downtime_limit: Duration::from_millis(300),
            work_dir: default_work_dir(),
            startup_timeout: Duration::from_secs(20),
            migration_timeout: Duration::from_secs(300),
            verify: true,
        }
    }
}

/// `/dev/shm` if it is a directory, else the system temp directory.
fn default_work_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// One completed QEMU migration.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuMigration {
    /// QEMU's version, from the QMP greeting.
    pub version: String,
    /// The guest RAM asked for, bytes.
    pub ram_bytes: u64,
    /// The source's command line (after the binary), for the report.
    pub source_args: Vec<String>,
    /// Whether the source's vCPU was paused.
    pub source_paused: bool,
    /// The source's final `query-migrate`: QEMU's total time, downtime, setup time, bytes,
    /// pages, dirty-sync rounds and dirty rate (how much the guest dirtied).
    pub info: MigrateInfo,
    /// Our clock, from sending `migrate` until both QEMUs reported `completed` (to within
    /// the 5 ms poll) — the span our own migration's total time covers.
    pub wall: Duration,
    /// 4 KiB pages whose contents differ between the two RAM files afterwards (`None` when
    /// not verified). Zero means QEMU moved every byte. With the source paused it is zero; with
    /// SeaBIOS running on a `kvm_pvm` host one page differs on every run (GPA 0xe8000, two
    /// bytes of SeaBIOS's shadowed BIOS area): a write the dirty log did not report, or one
    /// after the last sync. That is QEMU's (or this KVM's) loss, and the report should show it.
    pub differing_pages: Option<u64>,
}

impl QemuMigration {
    /// QEMU's `total-time`.
    pub fn total_time(&self) -> Duration {
        self.info.total_time().unwrap_or_default()
    }

    /// QEMU's `downtime`.
    pub fn downtime(&self) -> Duration {
        self.info.downtime().unwrap_or_default()
    }

    /// Bytes QEMU sent.
    pub fn transferred(&self) -> u64 {
        self.info.ram().transferred
    }

    /// Bytes sent per second of QEMU's `total-time`.
    pub fn throughput(&self) -> f64 {
        self.info.throughput().unwrap_or_default()
    }
}

/// Migrates a QEMU guest with `options.ram_bytes` of pseudo-random RAM to a second QEMU over
/// `tcp:127.0.0.1:PORT`, waits until both sides report `completed`, and compares the RAM
/// files. Both QEMUs are killed and the files removed whatever happens.
///
/// Fails with the reason when QEMU cannot run here: `/dev/kvm` closed ([`QemuError::Kvm`]),
/// a QEMU that exits ([`QemuError::Exited`], with its stderr), a migration that fails
/// ([`QemuError::MigrationFailed`]) or does not finish in time ([`QemuError::Timeout`]).
///
/// # Example
///
/// ```no_run
/// use vmm::bench::qemu::{Install, QemuOptions, ensure_qemu, run_qemu_migration};
///
/// let binary = ensure_qemu(Install::IfMissing)?;
/// let run = run_qemu_migration(&QemuOptions::new(binary, 1 << 30))?;
/// println!(
///     "QEMU {}: {:?} total, {:?} downtime, {} bytes",
///     run.version, run.total_time(), run.downtime(), run.transferred()
/// );
/// # Ok::<(), vmm::bench::qemu::QemuError>(())
/// ```
pub fn run_qemu_migration(options: &QemuOptions) -> Result<QemuMigration, QemuError> {
    let ram_mib = ram_mib(options.ram_bytes)?;
    check_kvm()?;
    let dir = WorkDir::create(&options.work_dir)?;
    let file = |name: &str| dir.path().join(name);
    let (source_ram, destination_ram) = (file("source.ram"), file("destination.ram"));
    fill_random(&source_ram, options.ram_bytes, options.seed)?;
    create_empty(&destination_ram, options.ram_bytes)?;
    let port = free_port()?;

    let launch = |role, ram_file: &Path, qmp_socket: &Path| {
        qemu_args(&Launch {
            role,
            ram_mib,
            ram_file,
            qmp_socket,
            cpu: &options.cpu,
            machine: &options.machine,
            source_paused: options.source_paused,
            port,
        })
    };
    let destination_args = launch(
        Role::Destination,
        &destination_ram,
        &file("destination.qmp"),
    );
    let source_args = launch(Role::Source, &source_ram, &file("source.qmp"));
    // The QEMUs are dropped (killed) when this returns, before the files are compared, so
    // the comparison does not share the two cores with them.
    let (version, info, wall) = {
        let mut destination = QemuProcess::spawn(
            Role::Destination,
            &options.binary,
            &destination_args,
            dir.path(),
        )?;
        let mut destination_qmp = connect(&mut destination, &file("destination.qmp"), options)?;
        let mut source =
            QemuProcess::spawn(Role::Source, &options.binary, &source_args, dir.path())?;
        let mut source_qmp = connect(&mut source, &file("source.qmp"), options)?;
        let version = source_qmp.version().to_string();
        let (info, wall) = migrate(
            (&mut source, &mut source_qmp),
            (&mut destination, &mut destination_qmp),
            port,
            options,
        )?;
        (version, info, wall)
    };
    let differing_pages = if options.verify {
        Some(differing_pages(&source_ram, &destination_ram)?)
    } else {
        None
    };
    Ok(QemuMigration {
        version,
        ram_bytes: options.ram_bytes,
        source_args: source_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        source_paused: options.source_paused,
        info,
        wall,
        differing_pages,
    })
}

/// `bytes` in MiB, which is how `-m` and the backend's `size` are given.
fn ram_mib(bytes: u64) -> Result<u64, QemuError> {
    if bytes == 0 || !bytes.is_multiple_of(1 << 20) {
        return Err(QemuError::RamSize { bytes });
    }
    Ok(bytes >> 20)
}

/// A loopback port nobody was listening on a moment ago. QEMU binds it itself; another
/// process taking it in between makes the destination exit with "Address already in use".
fn free_port() -> Result<u16, QemuError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(QemuError::Port)
}

fn connect(qemu: &mut QemuProcess, socket: &Path, options: &QemuOptions) -> Result<Qmp, QemuError> {
    Qmp::connect(qemu, socket, options.startup_timeout).map_err(|e| qemu.explain(e))
}

/// Sets the parameters, sends `migrate`, and polls both sides until they are done.
fn migrate(
    (source, source_qmp): (&mut QemuProcess, &mut Qmp),
    (destination, destination_qmp): (&mut QemuProcess, &mut Qmp),
    port: u16,
    options: &QemuOptions,
) -> Result<(MigrateInfo, Duration), QemuError> {
    let downtime_ms = u64::try_from(options.downtime_limit.as_millis()).unwrap_or(u64::MAX);
    source_qmp
        .execute(
            "migrate-set-parameters",
            json!({ "max-bandwidth": UNLIMITED_BANDWIDTH, "downtime-limit": downtime_ms }),
        )
        .map_err(|e| source.explain(e))?;
    let start = Instant::now();
    let deadline = start + options.migration_timeout;
    source_qmp
        .execute("migrate", json!({ "uri": format!("tcp:127.0.0.1:{port}") }))
        .map_err(|e| source.explain(e))?;
    let info = poll(source, source_qmp, deadline, options, true)?;
    poll(destination, destination_qmp, deadline, options, false)?;
    Ok((info, start.elapsed()))
}

/// Asks `query-migrate` until the migration is over on this side; `completed` is success,
/// with `timed` once it also reports a nonzero `total-time` (QEMU can answer `completed`
/// a moment before it has stored the times: one such reply, counted as 0 ms, once made a
/// median).
fn poll(
    qemu: &mut QemuProcess,
    qmp: &mut Qmp,
    deadline: Instant,
    options: &QemuOptions,
    timed: bool,
) -> Result<MigrateInfo, QemuError> {
    loop {
        let reply = qmp
            .execute("query-migrate", json!({}))
            .map_err(|e| qemu.explain(e))?;
        let info = MigrateInfo::from_value(reply.clone()).map_err(|e| QemuError::QmpProtocol {
            role: qemu.role(),
            message: format!("{e}: {reply}"),
        })?;
        let untimed = timed && info.total_time.is_none_or(|ms| ms == 0);
        match info.status {
            MigrateStatus::Completed if !untimed => return Ok(info),
            // Completed, times not stored yet: ask again (below, until the deadline).
            MigrateStatus::Completed => {}
            status if status.is_final() => {
                return Err(QemuError::MigrationFailed {
                    role: qemu.role(),
                    status: format!("{status:?}"),
                    error_desc: info.error_desc,
                });
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(QemuError::Timeout {
                what: "the QEMU migration completing",
                after: options.migration_timeout,
            });
        }
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::qemu::find_qemu;

    #[test]
    fn ram_sizes_are_whole_mebibytes() {
        assert_eq!(ram_mib(1 << 30).unwrap(), 1024);
        for bytes in [0, (1 << 20) + 4096] {
            assert!(matches!(ram_mib(bytes), Err(QemuError::RamSize { .. })));
        }
    }

    #[test]
    fn a_free_port_is_not_zero() {
        assert_ne!(free_port().unwrap(), 0);
    }

    #[test]
    fn a_missing_binary_is_reported_as_a_spawn_failure() {
        if check_kvm().is_err() {
            println!("SKIP: /dev/kvm does not open");
            return;
        }
        let options = QemuOptions {
            verify: false,
            ..QemuOptions::new("/nonexistent/qemu-system-x86_64".into(), 1 << 20)
        };
        let err = run_qemu_migration(&options).unwrap_err();
        assert!(
            matches!(
                err,
                QemuError::Spawn {
                    role: Role::Destination,
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A real 64 MiB migration between two QEMUs, where QEMU is installed and KVM opens.
    #[test]
    fn a_small_qemu_migration_moves_every_page() {
        let Some(binary) = find_qemu() else {
            println!("SKIP: qemu-system-x86_64 is not on PATH");
            return;
        };
        if let Err(e) = check_kvm() {
            println!("SKIP: {e}");
            return;
        }
        // Paused, so that nothing writes guest RAM and the files must match byte for byte
        // (with SeaBIOS running, one page of its shadow area differs on this host: see
        // `QemuMigration::differing_pages`).
        let options = QemuOptions {
            source_paused: true,
            ..QemuOptions::new(binary, 64 << 20)
        };
        let run = run_qemu_migration(&options).unwrap();
        assert_eq!(run.info.status, MigrateStatus::Completed);
        assert_eq!(run.differing_pages, Some(0));
        let ram = run.info.ram();
        // Random RAM: (nearly) every page goes with its contents, none as a zero marker,
        // apart from the few the firmware regions leave zero.
        assert!(ram.normal_bytes >= 64 << 20, "{ram:?}");
        assert!(run.transferred() >= ram.normal_bytes);
        assert!(run.total_time() > Duration::ZERO && run.wall >= run.total_time() / 2);
        assert!(run.version.starts_with(char::is_numeric), "{}", run.version);
    }
}
