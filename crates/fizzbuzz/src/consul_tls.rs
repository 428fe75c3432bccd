//! The Consul options beyond the address: the token from a file and HTTPS, each read
//! from the variable the `consul` CLI reads.

use std::path::PathBuf;

use grain_consul::config::ENV_HTTP_TOKEN_FILE;
use grain_consul::tls::{
    ENV_CACERT, ENV_CAPATH, ENV_CLIENT_CERT, ENV_CLIENT_KEY, ENV_HTTP_SSL, ENV_HTTP_SSL_VERIFY,
    ENV_TLS_SERVER_NAME,
};
use grain_consul::{ConsulTls, Token};

use crate::AppError;

fn parse_ssl(s: &str) -> Result<bool, String> {
    grain_consul::tls::parse_bool(s).map_err(|e| format!("{e} ({ENV_HTTP_SSL})"))
}

fn parse_ssl_verify(s: &str) -> Result<bool, String> {
    grain_consul::tls::parse_bool(s).map_err(|e| format!("{e} ({ENV_HTTP_SSL_VERIFY})"))
}

/// How a node reaches an HTTPS Consul agent, and where its token may be read from.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConsulTlsArgs {
    /// A file holding the Consul ACL token: prefer it (or CONSUL_HTTP_TOKEN) to
    /// --consul-token, since command lines are visible to other users.
    #[arg(long, env = ENV_HTTP_TOKEN_FILE)]
    pub consul_token_file: Option<PathBuf>,
    /// HTTPS to an agent address given without a scheme (an https:// address is HTTPS
    /// anyway).
    #[arg(long, env = ENV_HTTP_SSL, value_name = "BOOL", value_parser = parse_ssl)]
    pub consul_ssl: Option<bool>,
    /// Verify the agent's certificate (default true; false encrypts without knowing
    /// who answers).
    #[arg(long, env = ENV_HTTP_SSL_VERIFY, value_name = "BOOL", value_parser = parse_ssl_verify)]
    pub consul_ssl_verify: Option<bool>,
    /// The CA (PEM) that signs the agent's certificate (default: the system's roots).
    #[arg(long, env = ENV_CACERT)]
    pub consul_ca_file: Option<PathBuf>,
    /// A directory of CA files (PEM).
    #[arg(long, env = ENV_CAPATH)]
    pub consul_ca_path: Option<PathBuf>,
    /// This node's certificate (PEM), for an agent that verifies incoming connections.
    #[arg(long, env = ENV_CLIENT_CERT, requires = "consul_client_key")]
    pub consul_client_cert: Option<PathBuf>,
    /// The key (PEM) of --consul-client-cert.
    #[arg(long, env = ENV_CLIENT_KEY, requires = "consul_client_cert")]
    pub consul_client_key: Option<PathBuf>,
    /// The name the agent's certificate must hold (default: the address's host).
    #[arg(long, env = ENV_TLS_SERVER_NAME)]
    pub consul_tls_server_name: Option<String>,
}

impl ConsulTlsArgs {
    /// The TLS settings of the provider.
    pub fn tls(&self) -> ConsulTls {
        let empty = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        ConsulTls {
            https: self.consul_ssl.unwrap_or(false),
            verify: self.consul_ssl_verify.unwrap_or(true),
            ca_file: empty(&self.consul_ca_file),
            ca_path: empty(&self.consul_ca_path),
            client_cert: empty(&self.consul_client_cert),
            client_key: empty(&self.consul_client_key),
            server_name: self
                .consul_tls_server_name
                .clone()
                .filter(|n| !n.is_empty()),
        }
    }

    /// The token: `given` (--consul-token / CONSUL_HTTP_TOKEN), else the token file's.
    pub fn token(&self, given: Option<&Token>) -> Result<Option<Token>, AppError> {
        if let Some(t) = given.filter(|t| !t.expose().is_empty()) {
            return Ok(Some(t.clone()));
        }
        match self
            .consul_token_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            Some(file) => Token::from_file(file)
                .map(Some)
                .map_err(|e| AppError::Usage(format!("--consul-token-file: {e}"))),
            None => Ok(None),
        }
    }
}
