//! The command lines of the two QEMUs: a machine with no devices, no disk and no display, its
//! RAM one `memory-backend-file` shared with the file we filled, KVM on, and QMP on a unix
//! socket. The destination adds `-incoming tcp:127.0.0.1:PORT`.
//!
//! The destination always starts with `-S`: it then stays paused once the migration lands,
//! so its RAM file holds exactly what arrived (for the comparison) and its vCPU does not take
//! a core from the source while the source is still sending.

use std::ffi::OsString;
use std::path::Path;

use super::error::Role;

/// What differs between one QEMU and the other.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// Which QEMU.
    pub role: Role,
    /// Guest RAM, MiB.
    pub ram_mib: u64,
    /// The file backing the RAM.
    pub ram_file: &'a Path,
    /// Where QEMU listens for QMP.
    pub qmp_socket: &'a Path,
    /// `-cpu` model.
    pub cpu: &'a str,
    /// `-machine` type.
    pub machine: &'a str,
    /// Whether the source starts with its vCPU stopped (`-S`).
    pub source_paused: bool,
    /// The loopback port the destination listens on.
    pub port: u16,
}

/// The arguments (after the binary) for `launch`.
pub fn qemu_args(launch: &Launch<'_>) -> Vec<OsString> {
    let mut backend = OsString::from(format!(
        "memory-backend-file,id=ram,size={}M,share=on,mem-path=",
        launch.ram_mib
    ));
    // mem-path comes last so that a comma in the directory cannot be read as another
    // option: QEMU would need it doubled, and our work directories never contain one.
    backend.push(launch.ram_file);
    let mut qmp = OsString::from("unix:");
    qmp.push(launch.qmp_socket);
    qmp.push(",server=on,wait=off");

    let mut args: Vec<OsString> = [
        "-enable-kvm",
        "-nodefaults",
        "-nographic",
        "-display",
        "none",
        "-cpu",
        launch.cpu,
        "-machine",
        &format!("{},memory-backend=ram", launch.machine),
        "-m",
        &format!("{}M", launch.ram_mib),
        "-object",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(backend);
    args.push("-qmp".into());
    args.push(qmp);
    match launch.role {
        Role::Destination => {
            args.push("-S".into());
            args.push("-incoming".into());
            args.push(format!("tcp:127.0.0.1:{}", launch.port).into());
        }
        Role::Source if launch.source_paused => args.push("-S".into()),
        Role::Source => {}
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(role: Role, source_paused: bool) -> Vec<String> {
        qemu_args(&Launch {
            role,
            ram_mib: 1024,
            ram_file: Path::new("/tmp/w/src.ram"),
            qmp_socket: Path::new("/tmp/w/src.qmp"),
            cpu: "qemu64",
            machine: "pc",
            source_paused,
            port: 4444,
        })
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
    }

    #[test]
    fn the_source_runs_from_the_file_with_kvm() {
        assert_eq!(
            launch(Role::Source, false).join(" "),
            "-enable-kvm -nodefaults -nographic -display none -cpu qemu64 \
             -machine pc,memory-backend=ram -m 1024M \
             -object memory-backend-file,id=ram,size=1024M,share=on,mem-path=/tmp/w/src.ram \
             -qmp unix:/tmp/w/src.qmp,server=on,wait=off"
        );
        assert_eq!(launch(Role::Source, true).last().unwrap(), "-S");
    }

    #[test]
    fn the_destination_listens_on_loopback_and_stays_paused() {
        let args = launch(Role::Destination, false);
        assert_eq!(
            args[args.len() - 3..],
            ["-S", "-incoming", "tcp:127.0.0.1:4444"]
        );
        // Paused whatever the source does.
        assert_eq!(launch(Role::Destination, true), args);
    }
}
