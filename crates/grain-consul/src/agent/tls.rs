//! HTTPS for the dev agent, so that tests (and a laptop) can exercise a member's
//! Consul TLS settings: a certificate and key, and optionally a CA whose certificates
//! clients must present (Consul's `verify_incoming`).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How long a client may take over its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The dev agent's HTTPS settings: PEM certificate chain and key, and optionally the CA
/// clients' certificates must chain to. `Debug` shows no key.
#[derive(Clone)]
pub struct DevAgentTls {
    /// The agent's certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// The agent's private key (PEM).
    pub key_pem: Vec<u8>,
    /// When set, clients must present a certificate this CA (PEM) signed.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for DevAgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAgentTls")
            .field("key", &format_args!("<redacted>"))
            .field("verify_incoming", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not readable PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no certificate"));
    }
    Ok(certs)
}

impl DevAgentTls {
    /// The acceptor these settings give; errors say what is wrong.
    pub(crate) fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = certificates(&self.cert_pem, "the TLS certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| format!("the TLS key holds no readable private key: {e}"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca_pem {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certificates(ca, "the client CA")? {
                    roots.add(c).map_err(|e| format!("the client CA: {e}"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("the client CA: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("the TLS certificate and key: {e}"))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
