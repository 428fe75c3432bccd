//! HTTPS to the Consul agent, set as the `consul` CLI sets it: an `https://` address or
//! `CONSUL_HTTP_SSL=true`, the CA in `CONSUL_CACERT` / `CONSUL_CAPATH` (else the
//! system's roots), a client certificate in `CONSUL_CLIENT_CERT` + `CONSUL_CLIENT_KEY`
//! (for an agent with `verify_incoming`), the name to verify in
//! `CONSUL_TLS_SERVER_NAME`, and `CONSUL_HTTP_SSL_VERIFY=false` to verify nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// `CONSUL_HTTP_SSL`: `true` for HTTPS to an address given without a scheme.
pub const ENV_HTTP_SSL: &str = "CONSUL_HTTP_SSL";
/// `CONSUL_HTTP_SSL_VERIFY`: `false` to skip verifying the agent's certificate.
pub const ENV_HTTP_SSL_VERIFY: &str = "CONSUL_HTTP_SSL_VERIFY";
/// `CONSUL_CACERT`: a PEM file of the CA(s) that sign the agent's certificate.
pub const ENV_CACERT: &str = "CONSUL_CACERT";
/// `CONSUL_CAPATH`: a directory of PEM files of CAs.
pub const ENV_CAPATH: &str = "CONSUL_CAPATH";
/// `CONSUL_CLIENT_CERT`: this client's certificate (PEM), for `verify_incoming`.
pub const ENV_CLIENT_CERT: &str = "CONSUL_CLIENT_CERT";
/// `CONSUL_CLIENT_KEY`: the key of `CONSUL_CLIENT_CERT` (PEM).
pub const ENV_CLIENT_KEY: &str = "CONSUL_CLIENT_KEY";
/// `CONSUL_TLS_SERVER_NAME`: the name the agent's certificate must hold (default:
/// the address's host).
pub const ENV_TLS_SERVER_NAME: &str = "CONSUL_TLS_SERVER_NAME";

/// TLS to the agent; the default is what the `consul` CLI does with none of its
/// variables set (HTTPS only for an `https://` address, verified against the system's
/// roots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsulTls {
    /// HTTPS even for an address without a scheme (`CONSUL_HTTP_SSL`).
    pub https: bool,
    /// Verify the agent's certificate (`CONSUL_HTTP_SSL_VERIFY`; default true).
    pub verify: bool,
    /// CA file (`CONSUL_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// Directory of CA files (`CONSUL_CAPATH`).
    pub ca_path: Option<PathBuf>,
    /// Client certificate (`CONSUL_CLIENT_CERT`).
    pub client_cert: Option<PathBuf>,
    /// Client key (`CONSUL_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
    /// The name to verify (`CONSUL_TLS_SERVER_NAME`).
    pub server_name: Option<String>,
}

impl Default for ConsulTls {
    fn default() -> Self {
        Self {
            https: false,
            verify: true,
            ca_file: None,
            ca_path: None,
            client_cert: None,
            client_key: None,
            server_name: None,
        }
    }
}

/// Parses a boolean as Go's `strconv.ParseBool` does (what Consul uses): `1`, `t`,
/// `T`, `TRUE`, `true`, `True`, `0`, `f`, `F`, `FALSE`, `false`, `False`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true or false)")),
    }
}

impl ConsulTls {
    /// From Consul's variables, as `lookup` gives them (empty counts as unset).
    /// Errors name the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let var = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let flag = |k: &str, default: bool| {
            var(k).map_or(Ok(default), |v| {
                parse_bool(&v).map_err(|e| format!("{k}: {e}"))
            })
        };
        Ok(Self {
            https: flag(ENV_HTTP_SSL, false)?,
            verify: flag(ENV_HTTP_SSL_VERIFY, true)?,
            ca_file: var(ENV_CACERT).map(PathBuf::from),
            ca_path: var(ENV_CAPATH).map(PathBuf::from),
            client_cert: var(ENV_CLIENT_CERT).map(PathBuf::from),
            client_key: var(ENV_CLIENT_KEY).map(PathBuf::from),
            server_name: var(ENV_TLS_SERVER_NAME),
        })
    }

    /// The rustls configuration these settings give, reading the files now. Errors
    /// name the setting and the file.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| format!("consul TLS: {e}"))?;
        let builder = if self.verify {
            builder.with_root_certificates(self.roots()?)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        };
        // hyper-rustls sets ALPN (http/1.1) itself.
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, ENV_CLIENT_CERT)?;
                let pem = read(key, ENV_CLIENT_KEY)?;
                let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    format!(
                        "{ENV_CLIENT_KEY} {}: no readable private key: {e}",
                        key.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{ENV_CLIENT_CERT}/{ENV_CLIENT_KEY}: {}", mismatch(&e)))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(format!("{ENV_CLIENT_CERT} is set without {ENV_CLIENT_KEY}"));
            }
            (None, Some(_)) => {
                return Err(format!("{ENV_CLIENT_KEY} is set without {ENV_CLIENT_CERT}"));
            }
        };
        Ok(config)
    }

    /// The name the agent's certificate is verified against: the server name if set.
    pub(crate) fn server_name(&self) -> Result<Option<ServerName<'static>>, String> {
        self.server_name
            .as_ref()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map_err(|e| format!("{ENV_TLS_SERVER_NAME} {n:?}: {e}"))
            })
            .transpose()
    }

    fn roots(&self) -> Result<rustls::RootCertStore, String> {
        let mut roots = rustls::RootCertStore::empty();
        if self.ca_file.is_none() && self.ca_path.is_none() {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            return Ok(roots);
        }
        if let Some(file) = &self.ca_file {
            add_all(
                &mut roots,
                certificates(file, ENV_CACERT)?,
                ENV_CACERT,
                file,
            )?;
        }
        if let Some(dir) = &self.ca_path {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| format!("{ENV_CAPATH} {}: cannot read it: {e}", dir.display()))?;
            let mut any = false;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_file()
                    && let Ok(certs) = certificates(&path, ENV_CAPATH)
                {
                    add_all(&mut roots, certs, ENV_CAPATH, &path)?;
                    any = true;
                }
            }
            if !any {
                return Err(format!(
                    "{ENV_CAPATH} {}: holds no PEM certificate",
                    dir.display()
                ));
            }
        }
        Ok(roots)
    }
}

/// Reads and checks everything HTTPS to the agent needs; errors name the setting.
pub(crate) fn check(tls: &ConsulTls) -> Result<(), String> {
    tls.client_config()?;
    tls.server_name()?;
    Ok(())
}

fn mismatch(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InconsistentKeys(_) => "the key does not match the certificate".into(),
        e => e.to_string(),
    }
}

fn add_all(
    roots: &mut rustls::RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    var: &str,
    file: &Path,
) -> Result<(), String> {
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{var} {}: not a usable CA certificate: {e}", file.display()))?;
    }
    Ok(())
}

fn read(path: &Path, var: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{var} {}: cannot read it: {e}", path.display()))
}

fn certificates(path: &Path, var: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, var)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{var} {}: not readable PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{var} {}: holds no certificate (no BEGIN CERTIFICATE block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// `CONSUL_HTTP_SSL_VERIFY=false`: any certificate is accepted (the handshake's
/// signatures are still checked, so the connection is encrypted to whoever holds the
/// key of the certificate shown — just not verified to be the agent).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_parse_as_go_parses_them_and_a_bad_one_names_its_variable() {
        assert_eq!(parse_bool("T"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("yes").is_err());
        let env = |k: &str| (k == ENV_HTTP_SSL_VERIFY).then(|| "maybe".to_string());
        let err = ConsulTls::from_lookup(env).err().unwrap_or_default();
        assert!(
            err.contains(ENV_HTTP_SSL_VERIFY) && err.contains("maybe"),
            "{err}"
        );
        let none = ConsulTls::from_lookup(|_| None);
        assert_eq!(none, Ok(ConsulTls::default()));
    }
}
