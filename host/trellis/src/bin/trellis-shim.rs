//! `trellis-shim --dir POD_RUN_DIR`: the per-pod container shim as a program
//! of its own, which the agent starts for each pod (`trellis shim` is the
//! same shim inside the whole `trellis` command). `trellis-shim --factory`
//! starts shims by forking itself, one per pod directory read on its input
//! (see `trellis_runtime::shim::ShimFactory`).
//!
//! The agent starts one per pod, and libcontainer forks it twice for each
//! container; a program that holds only the runtime (not the API server,
//! the scheduler and the Wasm engine) is a fraction of the size, so each of
//! those processes maps, relocates, copies and tears down that much less.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    // Runs before any thread exists: it forks, and so does libcontainer.
    let r = match (args.next(), args.next(), args.next()) {
        (Some(flag), Some(dir), None) if flag == "--dir" => {
            trellis_runtime::shim::run_shim(&PathBuf::from(dir))
        }
        // The factory's second argument is blank room for its shims'
        // command lines.
        (Some(flag), _, None) if flag == "--factory" => trellis_runtime::shim::run_factory(),
        _ => {
            eprintln!("usage: trellis-shim --dir POD_RUN_DIR | trellis-shim --factory");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("trellis-shim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
