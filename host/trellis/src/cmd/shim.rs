//! `trellis shim --dir POD_DIR`: the per-pod container shim. The agent starts
//! it; it returns as soon as the shim listens, leaving the shim detached.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `trellis shim`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Args {
    /// The pod's directory: socket, state and logs live there.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Start shims by forking this process, one per pod directory read on
    /// standard input (a line each), answering `ok` or `error: ...` on
    /// standard output, until input ends (what the agent runs).
    #[arg(long)]
    factory: bool,
    /// Blank room the factory's shims write their command lines into.
    #[arg(hide = true, requires = "factory")]
    room: Option<String>,
}

/// Start the shim, or the factory. Runs before any thread exists: it forks,
/// and so does libcontainer.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    match a.dir {
        Some(dir) => trellis_runtime::shim::run_shim(&dir)?,
        None => trellis_runtime::shim::run_factory()?,
    }
    Ok(ExitCode::SUCCESS)
}
