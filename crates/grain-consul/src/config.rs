//! Settings of the Consul provider: plain data, read from the environment by
//! [`ConsulConfig::from_env`], checked by [`ConsulConfig::validate`].

use std::fmt;
use std::time::Duration;

/// `CONSUL_HTTP_ADDR`: the agent's HTTP address (`127.0.0.1:8500` or
/// `http://127.0.0.1:8500`), as Consul's own tools read it.
pub const ENV_HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";
/// `CONSUL_HTTP_TOKEN`: the ACL token, sent as `X-Consul-Token`.
pub const ENV_HTTP_TOKEN: &str = "CONSUL_HTTP_TOKEN";
/// `CONSUL_HTTP_TOKEN_FILE`: a file holding the ACL token (what `CONSUL_HTTP_TOKEN`
/// would hold; that one wins when both are set).
pub const ENV_HTTP_TOKEN_FILE: &str = "CONSUL_HTTP_TOKEN_FILE";
/// `CONSUL_DATACENTER`: the datacenter to query (default: the agent's own).
pub const ENV_DATACENTER: &str = "CONSUL_DATACENTER";

/// The default agent address.
pub const DEFAULT_HTTP_ADDR: &str = "http://127.0.0.1:8500";

/// A secret (an ACL token). Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The token in `path` (surrounding whitespace trimmed), as Consul reads
    /// `CONSUL_HTTP_TOKEN_FILE`. The error names the file, never what it holds.
    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("the token file {}: cannot read it: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        Ok(Self::new(token))
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Token {
    type Err = std::convert::Infallible;

    /// Any string is a token (for command-line parsers).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Token::new(s))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How a member registers with, refreshes and watches Consul.
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// The agent's HTTP address (`http://host:port` or `host:port`).
    pub address: String,
    /// The ACL token, if the agent requires one.
    pub token: Option<Token>,
    /// The datacenter to query; `None` means the agent's own.
    pub datacenter: Option<String>,
    /// The TTL of the member's health check: without a refresh for this long, the
    /// member is critical and drops out of everyone's topology.
    pub ttl: Duration,
    /// How often the check is refreshed; well under `ttl`.
    pub keep_alive_interval: Duration,
    /// Consul deregisters a member whose check stayed critical this long (at least one
    /// minute: Consul's minimum).
    pub deregister_critical_after: Duration,
    /// The timeout of one non-blocking request.
    pub request_timeout: Duration,
    /// The member's role, registered as metadata (`fizz`, `buzz`, `client`).
    pub role: String,
    /// The software version, registered as metadata.
    pub version: String,
    /// HTTPS to the agent ([`crate::tls`]: Consul's own `CONSUL_*` TLS variables).
    pub tls: crate::tls::ConsulTls,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_HTTP_ADDR.into(),
            token: None,
            datacenter: None,
            ttl: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(1),
            deregister_critical_after: Duration::from_secs(60),
            request_timeout: Duration::from_secs(5),
            role: "member".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            tls: crate::tls::ConsulTls::default(),
        }
    }
}

impl ConsulConfig {
    /// Defaults, overridden by `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN` (or the file
    /// `CONSUL_HTTP_TOKEN_FILE` names), `CONSUL_DATACENTER` and Consul's TLS variables
    /// ([`crate::tls`]) when set and not empty. Errors name the variable.
    pub fn from_env() -> Result<Self, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut c = Self::default();
        if let Some(a) = var(ENV_HTTP_ADDR) {
            c.address = a;
        }
        c.token = match (var(ENV_HTTP_TOKEN), var(ENV_HTTP_TOKEN_FILE)) {
            (Some(t), _) => Some(Token::new(t)),
            (None, Some(file)) => Some(Token::from_file(std::path::Path::new(&file))?),
            (None, None) => None,
        };
        c.datacenter = var(ENV_DATACENTER);
        c.tls = crate::tls::ConsulTls::from_lookup(|k| std::env::var(k).ok())?;
        Ok(c)
    }

    /// Checks the settings; the message names the wrong one.
    pub fn validate(&self) -> Result<(), String> {
        if base_url(&self.address, self.tls.https)?.starts_with("https://") {
            crate::tls::check(&self.tls)?;
        }
        if self.ttl < Duration::from_millis(100) {
            return Err(format!(
                "consul ttl {:?} is too short (at least 100ms)",
                self.ttl
            ));
        }
        if self.keep_alive_interval.is_zero() || self.keep_alive_interval >= self.ttl {
            return Err(format!(
                "consul keep_alive_interval {:?} must be greater than zero and below the ttl {:?}",
                self.keep_alive_interval, self.ttl
            ));
        }
        if self.deregister_critical_after < Duration::from_secs(60) {
            return Err(format!(
                "consul deregister_critical_after {:?} is below Consul's minimum of 1m",
                self.deregister_critical_after
            ));
        }
        if self.request_timeout.is_zero() {
            return Err("consul request_timeout must be greater than zero".into());
        }
        if let Some(dc) = &self.datacenter
            && !dc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "consul datacenter {dc:?} has characters Consul does not allow"
            ));
        }
        Ok(())
    }
}

/// The agent's base URL for an address given as `host:port`, `http://host:port` or
/// `https://host:port`: HTTPS when the scheme says so or `https` is set (as
/// `CONSUL_HTTP_SSL=true` does for the `consul` CLI).
pub(crate) fn base_url(address: &str, https: bool) -> Result<String, String> {
    let a = address.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(r) = a.strip_prefix("http://") {
        (if https { "https" } else { "http" }, r)
    } else if let Some(r) = a.strip_prefix("https://") {
        ("https", r)
    } else if a.contains("://") {
        return Err(format!(
            "consul address {a:?}: only http:// and https:// are supported"
        ));
    } else {
        (if https { "https" } else { "http" }, a)
    };
    let ok = rest
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok || rest.contains('/') {
        return Err(format!(
            "consul address {a:?} must be host:port, http://host:port or https://host:port"
        ));
    }
    Ok(format!("{scheme}://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_accepted_with_or_without_scheme() {
        assert_eq!(
            base_url("127.0.0.1:8500", false).as_deref(),
            Ok("http://127.0.0.1:8500")
        );
        assert_eq!(
            base_url("http://consul:8500/", false).as_deref(),
            Ok("http://consul:8500")
        );
        assert_eq!(
            base_url("https://consul:8501", false).as_deref(),
            Ok("https://consul:8501")
        );
        assert_eq!(
            base_url("consul:8501", true).as_deref(),
            Ok("https://consul:8501")
        );
        assert!(base_url("consul", false).is_err_and(|e| e.contains("host:port")));
        assert!(base_url("unix:///tmp/consul.sock", false).is_err());
    }

    #[test]
    fn the_token_never_shows_in_debug_or_display() {
        let c = ConsulConfig {
            token: Some(Token::new("s3cr3t-token")),
            ..ConsulConfig::default()
        };
        let shown = format!("{c:?} {}", Token::new("s3cr3t-token"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn validate_names_the_wrong_setting() {
        let bad = ConsulConfig {
            deregister_critical_after: Duration::from_secs(10),
            ..ConsulConfig::default()
        };
        assert!(
            bad.validate()
                .is_err_and(|e| e.contains("deregister_critical_after"))
        );
        let bad = ConsulConfig {
            keep_alive_interval: Duration::from_secs(5),
            ..ConsulConfig::default()
        };
        assert!(
            bad.validate()
                .is_err_and(|e| e.contains("keep_alive_interval"))
        );
        assert!(ConsulConfig::default().validate().is_ok());
    }
}
