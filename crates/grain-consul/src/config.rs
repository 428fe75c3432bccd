//! Settings of the Consul provider: plain data, read from the environment by
//! [`ConsulConfig::from_env`], checked by [`ConsulConfig::validate`].

use std::fmt;
use std::time::Duration;

/// `CONSUL_HTTP_ADDR`: the agent's HTTP address (`127.0.0.1:8500` or
/// `http://127.0.0.1:8500`), as Consul's own tools read it.
pub const ENV_HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";
/// `CONSUL_HTTP_TOKEN`: the ACL token, sent as `X-Consul-Token`.
pub const ENV_HTTP_TOKEN: &str = "CONSUL_HTTP_TOKEN";
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
        }
    }
}

impl ConsulConfig {
    /// Defaults, overridden by `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN` and
    /// `CONSUL_DATACENTER` when set and not empty.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut c = Self::default();
        if let Some(a) = var(ENV_HTTP_ADDR) {
            c.address = a;
        }
        c.token = var(ENV_HTTP_TOKEN).map(Token::new);
        c.datacenter = var(ENV_DATACENTER);
        c
    }

    /// Checks the settings; the message names the wrong one.
    pub fn validate(&self) -> Result<(), String> {
        base_url(&self.address)?;
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

/// `http://host:port` for an address given as `host:port` or `http://host:port`.
pub(crate) fn base_url(address: &str) -> Result<String, String> {
    let a = address.trim().trim_end_matches('/');
    let rest = if let Some(r) = a.strip_prefix("http://") {
        r
    } else if a.starts_with("https://") {
        return Err(format!(
            "consul address {a:?}: https is not supported yet; reach the agent over http (e.g. a local agent)"
        ));
    } else if a.contains("://") {
        return Err(format!("consul address {a:?}: only http:// is supported"));
    } else {
        a
    };
    let ok = rest
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !ok || rest.contains('/') {
        return Err(format!(
            "consul address {a:?} must be host:port or http://host:port"
        ));
    }
    Ok(format!("http://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_accepted_with_or_without_scheme() {
        assert_eq!(
            base_url("127.0.0.1:8500").as_deref(),
            Ok("http://127.0.0.1:8500")
        );
        assert_eq!(
            base_url("http://consul:8500/").as_deref(),
            Ok("http://consul:8500")
        );
        assert!(base_url("https://consul:8501").is_err_and(|e| e.contains("https")));
        assert!(base_url("consul").is_err_and(|e| e.contains("host:port")));
        assert!(base_url("unix:///tmp/consul.sock").is_err());
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
