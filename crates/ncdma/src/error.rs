//! The one place where errors become one-line messages and exit codes.

use std::fmt;
use std::process::ExitCode;

/// A command's failure, already classified by whose fault it is.
#[derive(Debug)]
pub(crate) enum CliError {
    /// The input was wrong (a value, a file, a stream): exit code 2.
    BadInput(String),
    /// The operation itself failed (e.g. /dev/kvm cannot be opened): exit code 1.
    Failed(String),
}

impl CliError {
    /// Prints `ncdma: <message>` on stderr and returns the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        eprintln!("ncdma: {self}");
        match self {
            CliError::BadInput(_) => ExitCode::from(2),
            CliError::Failed(_) => ExitCode::from(1),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::BadInput(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

/// Help and version go to stdout with exit 0; every parse error becomes its first line
/// (clap adds a usage hint after it) on stderr with exit 2.
pub(crate) fn report_clap(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            print!("{e}");
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("{e}");
            ExitCode::from(2)
        }
        _ => {
            // clap's message may continue on indented lines (the missing arguments); its
            // usage hint follows a blank line. Keep the message, on one line.
            let text = e.render().to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("ncdma: {message}");
            ExitCode::from(2)
        }
    }
}
