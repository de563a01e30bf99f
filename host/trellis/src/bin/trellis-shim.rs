//! `trellis-shim --dir POD_RUN_DIR`: the per-pod container shim as a program
//! of its own, which the agent starts for each pod (`trellis shim` is the
//! same shim inside the whole `trellis` command).
//!
//! The agent starts one per pod, and libcontainer forks it twice for each
//! container; a program that holds only the runtime (not the API server,
//! the scheduler and the Wasm engine) is a fraction of the size, so each of
//! those processes maps, relocates, copies and tears down that much less.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let dir = match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(dir), None) if flag == "--dir" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: trellis-shim --dir POD_RUN_DIR");
            return ExitCode::from(2);
        }
    };
    // Runs before any thread exists: libcontainer forks.
    match trellis_runtime::shim::run_shim(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis-shim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
