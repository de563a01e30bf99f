//! `trellis plugin inspect FILE.wasm`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The component.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    match trellis_plugin_host::inspect::inspect(&bytes) {
        Ok(i) => {
            print!("{i}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!(
                "error: {} is not a valid Trellis plugin: {e}",
                args.file.display()
            );
            Ok(ExitCode::from(2))
        }
    }
}
