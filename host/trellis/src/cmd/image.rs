//! `trellis image import FILE | pull REF | push REF TARGET | ls | rm REF...`:
//! the node-local image store, at `DATA_DIR/images`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use trellis_image::{Image, ImageStore, PullOptions, Reference, RegistryAuth};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where state lives; images are in DATA_DIR/images [default: ~/.local/share/trellis].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ImageCommand {
    /// Import an OCI image layout tar or a `docker save` archive (plain or gzip).
    Import {
        /// The archive.
        file: PathBuf,
    },
    /// Pull an image from a registry.
    Pull {
        /// The image (`busybox`, `localhost:5000/app:v1`, `name@sha256:...`).
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push an image of the store to a registry.
    Push {
        /// The image in the store.
        reference: String,
        /// Where to push it (`localhost:5000/busybox:latest`).
        target: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List images, like `crictl images`.
    #[command(alias = "list")]
    Ls,
    /// Remove images: a name removes that name, an id every name of the image.
    Rm {
        /// Names or ids.
        #[arg(required = true)]
        references: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
struct RegistryArgs {
    /// A registry (HOST or HOST:PORT) to reach over plain HTTP (loopback ones always are).
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure_registries: Vec<String>,
    /// Registry credentials.
    #[arg(long, value_name = "USER:PASSWORD")]
    creds: Option<String>,
}

impl RegistryArgs {
    fn options(self) -> anyhow::Result<PullOptions> {
        let auth = match self.creds {
            Some(c) => {
                let (username, password) =
                    c.split_once(':').context("--creds must be USER:PASSWORD")?;
                Some(RegistryAuth {
                    username: username.to_string(),
                    password: password.to_string(),
                })
            }
            None => None,
        };
        Ok(PullOptions {
            insecure_registries: self.insecure_registries,
            auth,
            platform: None,
        })
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args
        .data_dir
        .unwrap_or_else(super::cluster::default_data_dir)
        .join("images");
    let store = ImageStore::open(&dir)?;
    match args.command {
        ImageCommand::Import { file } => {
            for image in store.import(&file)? {
                let name = image.references.join(", ");
                println!(
                    "{} {}",
                    if name.is_empty() { "<none>" } else { &name },
                    image.id
                );
            }
        }
        ImageCommand::Pull {
            reference,
            registry,
        } => {
            let image = store.pull(&reference, &registry.options()?)?;
            println!("Image is up to date for {}", image.id);
        }
        ImageCommand::Push {
            reference,
            target,
            registry,
        } => {
            let digest = store.push(&reference, &target, &registry.options()?)?;
            println!("{} pushed: {digest}", Reference::parse(&target)?);
        }
        ImageCommand::Ls => print!("{}", table(&store.list()?)),
        ImageCommand::Rm { references } => {
            let mut missing = false;
            for r in references {
                if store.remove(&r)? {
                    println!("Deleted: {r}");
                } else {
                    eprintln!("error: no such image: {r}");
                    missing = true;
                }
            }
            if missing {
                return Ok(ExitCode::from(1));
            }
        }
    }
    std::io::stdout().flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `IMAGE TAG IMAGE ID SIZE`, one row per name, like `crictl images`.
fn table(images: &[Image]) -> String {
    let mut rows = vec![[
        "IMAGE".to_string(),
        "TAG".to_string(),
        "IMAGE ID".to_string(),
        "SIZE".to_string(),
    ]];
    for image in images {
        let id = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(13)
            .collect::<String>();
        let size = human_size(image.size);
        let names: Vec<(String, String)> = image
            .references
            .iter()
            .filter_map(|r| Reference::parse(r).ok())
            .map(|r| (r.name(), r.tag().unwrap_or("<none>").to_string()))
            .collect();
        if names.is_empty() {
            rows.push(["<none>".into(), "<none>".into(), id, size]);
            continue;
        }
        for (name, tag) in names {
            rows.push([name, tag, id.clone(), size.clone()]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0).max(17) + 3)
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: String = (0..4)
            .map(|c| {
                if c == 3 {
                    r[c].clone()
                } else {
                    format!("{:<w$}", r[c], w = widths[c])
                }
            })
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Decimal sizes with 3 significant digits, as crictl shows them (`1.03MB`).
fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.digits$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_crictl() {
        assert_eq!(human_size(1_031_514), "1.03MB");
        assert_eq!(human_size(782_123), "782kB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_500_000), "12.5MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
    }
}
