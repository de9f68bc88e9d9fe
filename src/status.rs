//! The status snapshot of a running agent, and `btcagent status`.

use std::path::Path;
use std::process::ExitCode;

/// `btcagent status`: placeholder until the status file is written.
pub fn print_summary(file: Option<&Path>) -> ExitCode {
    let path = file.unwrap_or(Path::new(crate::config::DEFAULT_STATUS_FILE));
    eprintln!("btcagent: no status available at {}", path.display());
    ExitCode::from(1)
}
