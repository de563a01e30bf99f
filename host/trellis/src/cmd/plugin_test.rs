//! `trellis plugin test PLUGIN.wasm FIXTURE.yaml...`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use trellis_plugin_host::{EngineConfig, PluginEngine};
use trellis_testkit::{run_scheduler_fixture, Fixture};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plugin component.
    plugin: PathBuf,
    /// Fixture files (see the trellis-testkit docs for the format).
    #[arg(required = true)]
    fixtures: Vec<PathBuf>,
    /// Print each case's outcome as JSON instead of a report.
    #[arg(long)]
    json: bool,
    /// Where compiled components are cached [default: ~/.cache/trellis/artifacts].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

/// `$XDG_CACHE_HOME/trellis/artifacts`, else `~/.cache/trellis/artifacts`.
pub fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("trellis/artifacts"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let wasm = std::fs::read(&args.plugin)
        .with_context(|| format!("cannot read {}", args.plugin.display()))?;
    let engine = PluginEngine::new(EngineConfig {
        cache_dir: args.cache_dir.or_else(default_cache_dir),
        ..EngineConfig::default()
    })?;
    let mut ok = true;
    for path in &args.fixtures {
        let fixture = Fixture::load(path)?;
        let report = run_scheduler_fixture(&engine, &wasm, &fixture)
            .with_context(|| format!("running {}", path.display()))?;
        ok &= report.passed();
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}:\n{report}", path.display());
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
