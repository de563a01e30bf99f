//! A TLS client that trusts only a cluster's CA (`DATA_DIR/pki/ca.crt`),
//! shared by the tests and the API benchmark.

use std::sync::Arc;

/// Client configuration trusting the CA in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let b64: String = ca_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    roots
        .add(rustls::pki_types::CertificateDer::from(base64_decode(&b64)))
        .expect("the cluster CA parses");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("valid base64 in a PEM")
}
