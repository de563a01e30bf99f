//! Project tasks: `cargo xtask plugins` builds every Wasm plugin; `cargo xtask
//! encode IN OUT` turns a core module into a component.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage:
  cargo xtask plugins [--rust-only]   build every plugin into build/plugins/
  cargo xtask plugins -p CRATE        build one Rust plugin crate (e.g. replicaset)
  cargo xtask encode IN.wasm OUT.wasm turn a core module (with wit-bindgen's
                                      component-type section) into a component";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("plugins") => match args.iter().position(|a| a == "-p") {
            Some(i) => {
                let krate = args.get(i + 1).context(USAGE)?;
                build_rust(&root(), &out_dir(), Some(krate))
            }
            None => plugins(args[1..].iter().any(|a| a == "--rust-only")),
        },
        Some("encode") if args.len() == 3 => encode(Path::new(&args[1]), Path::new(&args[2])),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where built components go (`TRELLIS_PLUGIN_DIR` overrides).
fn out_dir() -> PathBuf {
    std::env::var_os("TRELLIS_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("build/plugins"))
}

fn encode(input: &Path, output: &Path) -> Result<()> {
    let module = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let mut encoder = wit_component::ComponentEncoder::default();
    let encoder = encoder.validate(true).module(&module).with_context(|| {
        format!(
            "{} is not a module with component metadata",
            input.display()
        )
    })?;
    let component = encoder
        .encode()
        .with_context(|| format!("encoding {}", input.display()))?;
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(output, component).with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

fn plugins(rust_only: bool) -> Result<()> {
    let root = root();
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    build_rust(&root, &out, None)?;
    if !rust_only {
        build_other_languages(&root, &out)?;
    }
    Ok(())
}

/// Rust plugins build with Debian's rustc-web and build-std; the rustup
/// toolchain that runs this xtask has no wasm std, so its variables are scrubbed.
fn build_rust(root: &Path, out: &Path, krate: Option<&str>) -> Result<()> {
    for tool in ["/usr/bin/cargo", "/usr/bin/rustc", "/usr/bin/wasm-ld"] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: run `dev/setup` (apt packages rustc-web cargo-web rust-web-src lld)");
        }
    }
    let ws = root.join("plugins");
    let target = std::env::var_os("TRELLIS_PLUGINS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.join("target"));
    let mut cmd = Command::new("/usr/bin/cargo");
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTDOC",
        "CARGO",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd.current_dir(&ws)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", "wasm-ld")
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "-Zbuild-std=std,panic_abort",
        ]);
    if std::env::var_os("CI").is_some() {
        cmd.arg("--locked");
    }
    if let Some(k) = krate {
        cmd.args(["-p", k]);
    }
    let status = cmd.status().context("running Debian's cargo")?;
    if !status.success() {
        bail!("building the Rust plugins failed");
    }
    let release = target.join("wasm32-unknown-unknown/release");
    let mut n = 0;
    for entry in std::fs::read_dir(&release)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wasm") {
            let name = path
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .replace('_', "-");
            if krate.is_some_and(|k| k != name) {
                continue;
            }
            encode(&path, &out.join(format!("{name}.wasm")))?;
            n += 1;
        }
    }
    println!("xtask: {n} Rust plugin components in {}", out.display());
    Ok(())
}

/// Every `examples/<plugin>/<language>/build.sh` builds
/// `<out>/<plugin>-<language>.wasm`; skipped when that is newer than its sources.
fn build_other_languages(root: &Path, out: &Path) -> Result<()> {
    let mut scripts = Vec::new();
    for example in std::fs::read_dir(root.join("examples"))? {
        let example = example?.path();
        if !example.is_dir() {
            continue;
        }
        for lang in std::fs::read_dir(&example)? {
            let lang = lang?.path();
            if lang.join("build.sh").exists() {
                scripts.push(lang);
            }
        }
    }
    scripts.sort();
    for lang in scripts {
        let example = lang
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let language = lang.file_name().unwrap().to_string_lossy().to_string();
        let target = out.join(format!("{example}-{language}.wasm"));
        if up_to_date(&target, &lang)? {
            println!("xtask: {} is up to date", target.display());
            continue;
        }
        println!("xtask: building {}", target.display());
        let started = std::time::Instant::now();
        let status = Command::new("bash")
            .arg(lang.join("build.sh"))
            .arg(&target)
            .status()
            .with_context(|| format!("running {}/build.sh", lang.display()))?;
        if !status.success() {
            bail!("{}/build.sh failed", lang.display());
        }
        println!(
            "xtask: built {} in {:.1?}",
            target.display(),
            started.elapsed()
        );
    }
    Ok(())
}

fn up_to_date(target: &Path, sources: &Path) -> Result<bool> {
    let Ok(built) = std::fs::metadata(target).and_then(|m| m.modified()) else {
        return Ok(false);
    };
    let newest = newest_file(sources)?;
    let wit = newest_file(&root().join("wit"))?;
    Ok(built > newest.max(wit))
}

fn newest_file(dir: &Path) -> Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if matches!(
            name.to_str(),
            Some("node_modules" | "build" | "target" | "__pycache__")
        ) {
            continue;
        }
        let path = entry.path();
        let t = if path.is_dir() {
            newest_file(&path)?
        } else {
            entry.metadata()?.modified()?
        };
        newest = newest.max(t);
    }
    Ok(newest)
}
