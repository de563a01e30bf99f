//! The parts of a kubeconfig Trellis writes and reads: the current context's
//! server, CA and bearer token.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

/// Why a kubeconfig cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Reading failed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not the expected YAML, or the current context is incomplete.
    #[error("kubeconfig {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is missing or wrong.
        message: String,
    },
}

/// Server, CA and token of the current context.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    /// `https://HOST:PORT`.
    pub server: String,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The bearer token.
    pub token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Raw {
    #[serde(default)]
    clusters: Vec<Named<RawCluster>>,
    #[serde(default)]
    users: Vec<Named<RawUser>>,
    #[serde(default)]
    contexts: Vec<Named<RawContext>>,
    #[serde(default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawCluster {
    server: String,
    #[serde(default)]
    certificate_authority_data: String,
    #[serde(default)]
    certificate_authority: String,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(default)]
    token: String,
}

#[derive(Deserialize)]
struct RawContext {
    cluster: String,
    user: String,
}

impl Kubeconfig {
    /// Read the current context of a kubeconfig file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, KubeconfigError> {
        let path = path.as_ref();
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KubeconfigError::Read {
            path: p.clone(),
            source,
        })?;
        let bad = |message: String| KubeconfigError::Invalid {
            path: p.clone(),
            message,
        };
        let raw: Raw = serde_yaml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let ctx = raw
            .contexts
            .iter()
            .find(|c| c.name == raw.current_context)
            .ok_or_else(|| {
                bad(format!(
                    "current-context {:?} is not among the contexts",
                    raw.current_context
                ))
            })?;
        let cluster = raw
            .clusters
            .iter()
            .find(|c| c.name == ctx.value.cluster)
            .ok_or_else(|| bad(format!("cluster {:?} is missing", ctx.value.cluster)))?;
        let user = raw
            .users
            .iter()
            .find(|u| u.name == ctx.value.user)
            .ok_or_else(|| bad(format!("user {:?} is missing", ctx.value.user)))?;
        let ca_pem = if !cluster.value.certificate_authority_data.is_empty() {
            let der = base64::engine::general_purpose::STANDARD
                .decode(cluster.value.certificate_authority_data.trim())
                .map_err(|e| bad(format!("certificate-authority-data is not base64: {e}")))?;
            String::from_utf8(der)
                .map_err(|_| bad("certificate-authority-data is not PEM".into()))?
        } else if !cluster.value.certificate_authority.is_empty() {
            std::fs::read_to_string(&cluster.value.certificate_authority).map_err(|e| {
                bad(format!(
                    "certificate-authority {}: {e}",
                    cluster.value.certificate_authority
                ))
            })?
        } else {
            return Err(bad("the cluster has no certificate authority".into()));
        };
        if user.value.token.is_empty() {
            return Err(bad("the user has no token".into()));
        }
        Ok(Kubeconfig {
            server: cluster.value.server.clone(),
            ca_pem,
            token: user.value.token.clone(),
        })
    }
}
