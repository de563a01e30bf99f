//! `trellis shim --dir POD_DIR`: the per-pod container shim. The agent starts
//! it; it returns as soon as the shim listens, leaving the shim detached.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `trellis shim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pod's directory: socket, state and logs live there.
    #[arg(long)]
    dir: PathBuf,
}

/// Start the shim. Runs before any thread exists: libcontainer forks.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    trellis_runtime::shim::run_shim(&a.dir)?;
    Ok(ExitCode::SUCCESS)
}
