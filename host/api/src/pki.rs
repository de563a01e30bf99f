//! The cluster's certificates: a self-signed CA and a serving certificate made
//! on first start in `DIR/pki/`, reused after. kubectl sends bearer tokens only
//! over TLS, so the API server always serves HTTPS, and the kubeconfig carries
//! the CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Why the certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// File access failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a certificate or key failed.
    #[error("certificates in {dir}: {message}")]
    Crypto {
        /// The folder.
        dir: PathBuf,
        /// What failed.
        message: String,
    },
}

/// The CA (for clients) and the server's TLS configuration.
pub struct Pki {
    /// The CA certificate, PEM: what a kubeconfig's `certificate-authority-data` holds.
    pub ca_pem: String,
    /// Ready for the server.
    pub server_config: Arc<rustls::ServerConfig>,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.into(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

/// Make (first time) or load the CA and a serving certificate valid for
/// `hosts` (IP addresses or DNS names; loopback and `localhost` are always in).
pub fn ensure(dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
    let crypto = |e: &dyn std::fmt::Display| PkiError::Crypto {
        dir: dir.into(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.into(),
        source,
    })?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    // The CA's parameters are fixed, so the issuer can be rebuilt from them and
    // the stored key on every start; certificates it signs chain to ca.crt.
    let ca_params = || -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| crypto(&e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "trellis-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(params)
    };
    if !ca_crt.exists() || !ca_key.exists() {
        let key = KeyPair::generate().map_err(|e| crypto(&e))?;
        let cert = ca_params()?.self_signed(&key).map_err(|e| crypto(&e))?;
        write(&ca_key, &key.serialize_pem(), true)?;
        write(&ca_crt, &cert.pem(), false)?;
    }
    let ca_pem = read(&ca_crt)?;
    let ca_key = KeyPair::from_pem(&read(&ca_key)?).map_err(|e| crypto(&e))?;
    let ca = ca_params()?;
    let issuer = Issuer::from_params(&ca, ca_key);

    // The serving certificate is remade each start: hosts may change.
    let mut names: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let key = KeyPair::generate().map_err(|e| crypto(&e))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| crypto(&e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "trellis-apiserver");
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| crypto(&e)),
        })
        .collect::<Result<_, _>>()?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| crypto(&e))?;
    write(&dir.join("apiserver.crt"), &cert.pem(), false)?;
    write(&dir.join("apiserver.key"), &key.serialize_pem(), true)?;

    let chain = vec![cert.der().clone()];
    let key_der =
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| crypto(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crypto(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| crypto(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem,
        server_config: Arc::new(config),
    })
}
