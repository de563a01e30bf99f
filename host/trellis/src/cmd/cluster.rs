//! What `trellis up` and `trellis server` share: the data directory (token
//! file, kubeconfig), the listener, the API server, and a clean stop on Ctrl-C
//! or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use trellis_api::auth::TokenAuthenticator;
use trellis_api::{ApiConfig, ApiServer};
use trellis_store::Store;

/// The default data directory: `$XDG_DATA_HOME/trellis` or `~/.local/share/trellis`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("trellis")
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The admin token: read from `DIR/tokens.csv`, made on first start.
fn admin_token(dir: &Path) -> anyhow::Result<(String, TokenAuthenticator)> {
    let file = dir.join("tokens.csv");
    if !file.exists() {
        let token = uuid::Uuid::new_v4().simple().to_string();
        write_private(&file, &format!("{token},admin,admin,\"system:masters\"\n"))?;
    }
    let auth = TokenAuthenticator::from_file(&file)?;
    let text = std::fs::read_to_string(&file)?;
    let token = text
        .lines()
        .find(|l| l.contains(",admin,"))
        .and_then(|l| l.split(',').next())
        .context("tokens.csv has no admin token")?
        .to_string();
    Ok((token, auth))
}

fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: trellis\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: trellis\n  context:\n    cluster: trellis\n    user: admin\n    namespace: default\ncurrent-context: trellis\n"
    )
}

/// Run the API server over `store` until Ctrl-C or SIGTERM.
pub async fn run(
    store: Arc<dyn Store>,
    data_dir: &Path,
    listen: SocketAddr,
    what: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (token, auth) = admin_token(data_dir)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let pki = trellis_api::pki::ensure(&data_dir.join("pki"), &[addr.ip().to_string()])?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let server_url = format!("https://{host}:{}", addr.port());
    let kubeconfig_path = data_dir.join("kubeconfig");
    write_private(
        &kubeconfig_path,
        &kubeconfig(&server_url, &pki.ca_pem, &token),
    )?;
    let server = ApiServer::new(store, ApiConfig::new(auth))
        .await
        .map_err(|e| anyhow::anyhow!("starting the API server: {e}"))?;
    println!("trellis: {what} listening on {server_url}");
    println!(
        "trellis: kubeconfig written to {}",
        kubeconfig_path.display()
    );
    println!();
    println!("  export KUBECONFIG={}", kubeconfig_path.display());
    println!("  kubectl get namespaces");
    println!();
    println!("Press Ctrl-C to stop.");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        println!("trellis: stopping");
    };
    server
        .serve(listener, Some(pki.server_config), shutdown)
        .await?;
    println!("trellis: stopped");
    Ok(())
}
