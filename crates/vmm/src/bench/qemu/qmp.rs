//! A minimal QMP client: one unix-socket connection, the capabilities handshake, and
//! `execute` of one command at a time.
//!
//! QMP rather than the human monitor because its replies are JSON with a schema QEMU keeps
//! stable across versions (`query-migrate` returns typed numbers, milliseconds and bytes);
//! HMP's `info migrate` is text for people, and its wording and units have changed between
//! releases. Messages are one JSON object per line; asynchronous events (`{"event": …}`) can
//! arrive between a command and its reply and are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::error::{QemuError, Role};
use super::process::QemuProcess;

/// How long one reply may take; `migrate` and `query-migrate` answer at once.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// A QMP session past the handshake.
#[derive(Debug)]
pub struct Qmp {
    role: Role,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    version: String,
}

impl Qmp {
    /// Connects to `qemu`'s QMP socket at `path`, retrying until it exists or `timeout`
    /// passes, and negotiates capabilities. Fails early if `qemu` exits meanwhile.
    pub fn connect(
        qemu: &mut QemuProcess,
        path: &Path,
        timeout: Duration,
    ) -> Result<Qmp, QemuError> {
        let role = qemu.role();
        let deadline = Instant::now() + timeout;
        let stream = loop {
            qemu.check_running()?;
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(_) => {
                    return Err(QemuError::Timeout {
                        what: "QEMU opening its QMP socket",
                        after: timeout,
                    });
                }
            }
        };
        let io = |step| move |source| QemuError::Qmp { role, step, source };
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(io("configuring the socket"))?;
        let writer = stream.try_clone().map_err(io("configuring the socket"))?;
        let mut qmp = Qmp {
            role,
            reader: BufReader::new(stream),
            writer,
            version: String::new(),
        };
        let greeting = qmp.message()?;
        qmp.version = greeting_version(&greeting).ok_or_else(|| qmp.protocol(&greeting))?;
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// QEMU's version from the greeting, e.g. `7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QemuError> {
        let mut line = json!({ "execute": command, "arguments": arguments }).to_string();
        line.push('\n');
        let role = self.role;
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| QemuError::Qmp {
                role,
                step: "sending a command",
                source,
            })?;
        loop {
            let message = self.message()?;
            if message.get("event").is_some() {
                continue;
            }
            return reply(role, command, message);
        }
    }

    /// The next message.
    fn message(&mut self) -> Result<Value, QemuError> {
        let role = self.role;
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| QemuError::Qmp {
                role,
                step: "reading a reply",
                source,
            })?;
        if n == 0 {
            return Err(QemuError::Qmp {
                role,
                step: "reading a reply",
                source: std::io::ErrorKind::UnexpectedEof.into(),
            });
        }
        serde_json::from_str(&line).map_err(|e| QemuError::QmpProtocol {
            role,
            message: format!("{e}: {}", line.trim()),
        })
    }

    fn protocol(&self, message: &Value) -> QemuError {
        QemuError::QmpProtocol {
            role: self.role,
            message: message.to_string(),
        }
    }
}

/// `{"QMP": {"version": {"qemu": {"major", "minor", "micro"}, "package"}}}` as text.
fn greeting_version(greeting: &Value) -> Option<String> {
    let version = greeting.get("QMP")?.get("version")?;
    let qemu = version.get("qemu")?;
    let number = |key: &str| qemu.get(key)?.as_u64();
    let package = version.get("package").and_then(Value::as_str).unwrap_or("");
    let mut text = format!(
        "{}.{}.{}",
        number("major")?,
        number("minor")?,
        number("micro")?
    );
    if !package.is_empty() {
        text.push_str(&format!(" ({package})"));
    }
    Some(text)
}

/// The `return` of a reply, or its `error` as [`QemuError::QmpCommand`].
fn reply(role: Role, command: &str, mut message: Value) -> Result<Value, QemuError> {
    if let Some(value) = message.get_mut("return") {
        return Ok(value.take());
    }
    if let Some(error) = message.get("error") {
        let text = |key: &str| {
            error
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        return Err(QemuError::QmpCommand {
            role,
            command: command.to_string(),
            class: text("class"),
            desc: text("desc"),
        });
    }
    Err(QemuError::QmpProtocol {
        role,
        message: message.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greeting_gives_the_version() {
        // Recorded from Debian 12's qemu-system-x86 on this project's host.
        let greeting: Value = serde_json::from_str(
            r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}"#,
        )
        .unwrap();
        assert_eq!(
            greeting_version(&greeting).as_deref(),
            Some("7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)")
        );
        assert_eq!(greeting_version(&json!({"QMP": {}})), None);
    }

    #[test]
    fn replies_are_returns_or_errors() {
        assert_eq!(
            reply(Role::Source, "migrate", json!({"return": {}})).unwrap(),
            json!({})
        );
        let refused = reply(
            Role::Destination,
            "migrate-set-parameters",
            json!({"error": {"class": "GenericError", "desc": "Parameter 'max_bandwidth' expects an integer in the range of 0 to 18446744073709551615 bytes/second"}}),
        );
        assert!(matches!(
            refused,
            Err(QemuError::QmpCommand { role: Role::Destination, ref class, .. }) if class == "GenericError"
        ));
        assert!(matches!(
            reply(Role::Source, "x", json!({"timestamp": 1})),
            Err(QemuError::QmpProtocol { .. })
        ));
    }
}
