//! The dev agent's command-line options ([`DevAgentArgs`]), shared by the
//! `consul-dev-agent` binary and `fizzbuzz agent`: secrets from the environment or a
//! file, certificate files read and checked before the agent starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{DevAgentConfig, DevAgentTls};
use crate::config::Token;

/// Options of a dev agent (`clap` arguments: flatten them into a command).
#[derive(clap::Args, Clone, Debug)]
pub struct DevAgentArgs {
    /// Where to listen (port 0 picks a free one).
    #[arg(long, env = "GRAIN_DEV_AGENT_BIND", default_value = "127.0.0.1:8500")]
    pub bind: SocketAddr,
    /// Allow a non-loopback address (the dev agent has no real security).
    #[arg(long)]
    pub allow_non_loopback: bool,
    /// Require this ACL token on every request (as Consul's X-Consul-Token). Prefer
    /// GRAIN_DEV_AGENT_TOKEN or --token-file: command lines are visible to other users.
    #[arg(long, env = "GRAIN_DEV_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
    /// A file holding the ACL token to require.
    #[arg(long, env = "GRAIN_DEV_AGENT_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The datacenter name.
    #[arg(long, default_value = "dc1")]
    pub datacenter: String,
    /// The smallest DeregisterCriticalServiceAfter honoured, in seconds (Consul: 60).
    #[arg(long, default_value_t = 60)]
    pub min_reap_seconds: u64,
    /// Serve HTTPS with this certificate (PEM) instead of HTTP.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: clients must present a certificate this CA (PEM) signed, as
    /// Consul's verify_incoming asks.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl DevAgentArgs {
    /// The agent's settings, its files read; the error names the option (and the
    /// file), never a token.
    pub fn config(&self) -> Result<DevAgentConfig, String> {
        let read = |flag: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
        };
        let token = match &self.token_file {
            Some(file) => Some(Token::from_file(file).map_err(|e| format!("--token-file: {e}"))?),
            None => self.token.clone().filter(|t| !t.expose().is_empty()),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(DevAgentTls {
                cert_pem: read("--tls-cert", cert)?,
                key_pem: read("--tls-key", key)?,
                client_ca_pem: self
                    .tls_client_ca
                    .as_deref()
                    .map(|ca| read("--tls-client-ca", ca))
                    .transpose()?,
            }),
            _ => None,
        };
        Ok(DevAgentConfig {
            bind: self.bind,
            allow_non_loopback: self.allow_non_loopback,
            token,
            datacenter: self.datacenter.clone(),
            min_deregister_critical_after: Duration::from_secs(self.min_reap_seconds),
            tls,
            ..DevAgentConfig::default()
        })
    }
}
