//! How a command ends: an error printed once to stderr, naming what is wrong, and an exit code
//! (2 for bad configuration or input, 1 for a failure while running).

use std::process::ExitCode;

/// Print an error to stderr and return the exit code. Every error type here already includes
/// its cause in its message, so the chain is not walked again.
pub(crate) fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    eprintln!("zonegate: {error}");
    ExitCode::from(code)
}
