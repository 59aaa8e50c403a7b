//! How a command ends: an error printed once to stderr, naming what is wrong, and an exit code
//! (2 for bad configuration or input, 1 for a failure while running).

use std::process::ExitCode;

/// Print an error to stderr and return the exit code. Every error type here already includes
/// its cause in its message, so the chain is not walked again.
pub(crate) fn fail(code: u8, error: &dyn std::error::Error) -> ExitCode {
    eprintln!("zonegate: {error}");
    ExitCode::from(code)
}

/// Where an export writes: the file (created, or truncated), else standard output; buffered.
/// The error names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot create {path}: {source}")]
pub(crate) struct CreateError {
    path: std::path::PathBuf,
    source: std::io::Error,
}

pub(crate) fn output(
    path: Option<&std::path::Path>,
) -> Result<Box<dyn std::io::Write>, CreateError> {
    Ok(match path {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).map_err(|source| CreateError {
                path: path.to_owned(),
                source,
            })?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}
