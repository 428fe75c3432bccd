//! TLS between members ([`TlsConfig`]): every link encrypted, the callee's certificate
//! checked against the host of its advertised address, and with a CA given, mutual
//! TLS — a caller must present a certificate that CA signed, or it is refused (and
//! logged) before any gRPC is spoken.
//!
//! The callee does its handshakes itself, each within [`HANDSHAKE_TIMEOUT`] and at most
//! [`MAX_HANDSHAKES`] at once, so a peer that connects and sends nothing holds no more
//! than a socket for a while, and every refusal is one log line naming the address.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a TLS handshake with a connecting peer may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most handshakes the callee runs at once; more connections wait to be accepted.
pub const MAX_HANDSHAKES: usize = 128;

/// The TLS settings of a member: its certificate chain and key (PEM), and optionally
/// the CA (PEM) that signs every member's certificate.
///
/// - **Without a CA**, links are TLS with the callee verified against the system's
///   trusted roots; callers are not asked for a certificate.
/// - **With a CA**, links are mutual TLS: each side must present a certificate the CA
///   signed, and only that CA is trusted.
///
/// Either way the callee's certificate must name the host of its advertised address
/// (a DNS or IP subject alternative name) — or, with [`TlsConfig::with_server_name`],
/// the one name every member's certificate holds (for members whose addresses are not
/// known in advance, such as pod IPs): [`crate::Node::start`] refuses a certificate
/// that does not name what this member's callers will check. `Debug` shows no key
/// material.
#[derive(Clone)]
pub struct TlsConfig {
    certificate: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    verify_clients: bool,
    server_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field(
                "certificate",
                &format_args!("{} bytes of PEM", self.certificate.len()),
            )
            .field("key", &format_args!("<redacted>"))
            .field("mutual", &self.is_mutual())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsConfig {
    /// TLS with this certificate chain (PEM, the member's own certificate first) and
    /// private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub fn new(certificate_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            certificate: certificate_pem.into(),
            key: key_pem.into(),
            ca: None,
            verify_clients: false,
            server_name: None,
        }
    }

    /// Every member's certificate names `name` (a DNS name), and callers check that
    /// name instead of the host of the callee's advertised address. With a private CA
    /// (mutual TLS), this is how members with addresses unknown in advance — pod IPs —
    /// are verified: as holders of a certificate the cluster's CA issued for `name`.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Mutual TLS: peers must present a certificate signed by a CA in `ca_pem`, and
    /// only those CAs are trusted.
    pub fn with_ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(ca_pem.into());
        self.verify_clients = true;
        self
    }

    /// With a CA set, whether callers must present a certificate it signed (the
    /// default) or may connect without one (one-way TLS: only callees are verified,
    /// against the CA). Without a CA, callers are never asked for one.
    pub fn require_client_certificates(mut self, required: bool) -> Self {
        self.verify_clients = required;
        self
    }

    /// True when callers must present a certificate (a CA is set and required).
    pub fn is_mutual(&self) -> bool {
        self.ca.is_some() && self.verify_clients
    }

    /// Checks everything [`crate::Node::start`] will: the certificate and key parse
    /// and match, the CA holds a certificate, and the certificate names the host of
    /// `advertised` (`host:port`), or the server name when one is set. The message says
    /// what is wrong.
    pub fn check(&self, advertised: &str) -> Result<(), String> {
        self.build(advertised).map(|_| ())
    }

    /// The server and client configurations for a member advertised at `advertised`.
    pub(crate) fn build(&self, advertised: &str) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = certificates(&self.certificate, "the TLS certificate")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| {
            format!("the TLS key holds no readable private key (PEM PKCS#8, PKCS#1 or SEC1): {e}")
        })?;
        let certified = rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the TLS key does not match the TLS certificate".to_string()
                }
                e => format!("the TLS key or certificate cannot be used: {e}"),
            })?;
        let (host, what) = match &self.server_name {
            Some(n) => (n.as_str(), "the TLS server name"),
            None => (host_of(advertised), "this member's advertised host"),
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{what} {host:?} is not a DNS name or IP: {e}"))?;
        let own = chain
            .first()
            .ok_or("the TLS certificate file holds no certificate")?;
        let parsed = rustls::server::ParsedCertificate::try_from(own)
            .map_err(|e| format!("the TLS certificate cannot be read: {e}"))?;
        rustls::client::verify_server_name(&parsed, &name).map_err(|e| {
            format!(
                "the TLS certificate does not name {what} {host:?} \
                 (it needs it as a DNS or IP subject alternative name): {e}"
            )
        })?;

        let versions = rustls::DEFAULT_VERSIONS;
        let roots = self.roots()?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?;
        let server = match roots.as_ref().filter(|_| self.verify_clients) {
            Some(roots) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.clone(),
                    provider.clone(),
                )
                .build()
                .map_err(|e| format!("the TLS CA cannot verify peers: {e}"))?;
                server.with_client_cert_verifier(verifier)
            }
            None => server.with_no_client_auth(),
        };
        let mut server = server.with_cert_resolver(Arc::new(Single(Arc::new(certified.clone()))));
        server.alpn_protocols = vec![b"h2".to_vec()];

        let roots = match roots {
            Some(r) => r,
            None => Arc::new(system_roots()?),
        };
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let mut client = client.with_client_cert_resolver(Arc::new(Single(Arc::new(certified))));
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            mutual: self.is_mutual(),
            server_name: self.server_name.as_ref().map(|_| name.to_owned()),
        })
    }

    fn roots(&self) -> Result<Option<Arc<rustls::RootCertStore>>, String> {
        let Some(ca) = &self.ca else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(ca, "the TLS CA")? {
            roots.add(cert).map_err(|e| {
                format!("the TLS CA holds a certificate that cannot be a root: {e}")
            })?;
        }
        Ok(Some(Arc::new(roots)))
    }
}

/// `off`, `on` (one-way) or `mutual`, for logs.
pub(crate) fn mode(tls: Option<&TlsConfig>) -> &'static str {
    match tls {
        None => "off",
        Some(t) if t.is_mutual() => "mutual",
        Some(_) => "on",
    }
}

/// The certificates of a PEM file; `what` names it in the error.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} file is not readable PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} file holds no certificate (no BEGIN CERTIFICATE block)"
        ));
    }
    Ok(certs)
}

/// The system's trusted roots (what `SSL_CERT_FILE` / `SSL_CERT_DIR` name, else the
/// platform's store).
fn system_roots() -> Result<rustls::RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "TLS without a CA trusts the system's roots, and none were found ({}): \
             give the CA that signs the members' certificates",
            found
                .errors
                .first()
                .map_or_else(|| "empty store".to_string(), ToString::to_string)
        ));
    }
    Ok(roots)
}

/// One certificate for every connection, server or client side.
#[derive(Debug)]
struct Single(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Single {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for Single {
    fn resolve(
        &self,
        _: &[&[u8]],
        _: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The host part of `host:port` (`[v6]:port` gives `v6`).
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// A member's built TLS settings.
#[derive(Clone)]
pub(crate) struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    mutual: bool,
    /// The name every callee's certificate must hold, when not its address's host.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

/// A TLS connection accepted from a peer.
pub(crate) type Accepted = tokio_rustls::server::TlsStream<TcpStream>;

impl Tls {
    /// Accepts connections on `listener` and hands over those whose handshake
    /// succeeded; a failed handshake is logged with the peer's address. Ends when the
    /// returned stream is dropped.
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<Result<Accepted, std::io::Error>> {
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let acceptor = self.acceptor.clone();
        let mutual = self.mutual;
        let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, from) = tokio::select! {
                    _ = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: pause, do not spin.
                            tracing::warn!("cannot accept a connection: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => {
                            let why = if mutual {
                                "peers must present a certificate signed by this member's CA"
                            } else {
                                "peers must speak TLS"
                            };
                            tracing::warn!(peer_address = %from,
                                "refused a connection: TLS handshake failed: {}; {why}",
                                error_chain(&e));
                        }
                        Err(_) => {
                            tracing::warn!(peer_address = %from,
                                "refused a connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    /// Opens a TCP connection to `address` and does the TLS handshake, checking that
    /// the peer's certificate names the host of `address` (or the server name).
    pub(crate) async fn connect(
        &self,
        address: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, std::io::Error> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => {
                let host = host_of(address);
                ServerName::try_from(host.to_string()).map_err(|e| {
                    std::io::Error::other(format!(
                        "the peer's host {host:?} is not a DNS name or IP: {e}"
                    ))
                })?
            }
        };
        let tcp = TcpStream::connect(address).await?;
        let _ = tcp.set_nodelay(true);
        self.connector.connect(name, tcp).await.map_err(|e| {
            std::io::Error::other(format!("TLS handshake failed: {}", error_chain(&e)))
        })
    }
}

/// An error and its sources, joined by ": ".
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_an_address() {
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(
            host_of("fizz-0.fizz.default.svc:7000"),
            "fizz-0.fizz.default.svc"
        );
        assert_eq!(host_of("localhost"), "localhost");
    }
}
