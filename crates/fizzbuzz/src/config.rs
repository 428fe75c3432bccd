//! Options every node takes, each also an environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use grain::{MemberId, NodeConfig};
use grain_consul::{ConsulConfig, ConsulMembership, Token};
use grain_telemetry::{LogFormat, Overrides, ProcessInfo, Telemetry, TelemetryConfig};

use crate::AppError;

/// `FIZZBUZZ_CLUSTER`: the cluster name.
pub const ENV_CLUSTER: &str = "FIZZBUZZ_CLUSTER";
/// `FIZZBUZZ_BIND`: the gRPC bind address.
pub const ENV_BIND: &str = "FIZZBUZZ_BIND";
/// `FIZZBUZZ_ADVERTISE`: the address other members use.
pub const ENV_ADVERTISE: &str = "FIZZBUZZ_ADVERTISE";
/// `FIZZBUZZ_LOG`: the log filter.
pub const ENV_LOG: &str = "FIZZBUZZ_LOG";
/// `FIZZBUZZ_LOG_FORMAT`: `human` (the default) or `json` (`--log-format`).
pub const ENV_LOG_FORMAT: &str = "FIZZBUZZ_LOG_FORMAT";
/// `FIZZBUZZ_WORKERS`: the async runtime's worker threads.
pub const ENV_WORKERS: &str = "FIZZBUZZ_WORKERS";
/// `FIZZBUZZ_OTLP_ENDPOINT`: the OTLP/HTTP base URL of all signals (`--otlp-endpoint`).
pub const ENV_OTLP_ENDPOINT: &str = "FIZZBUZZ_OTLP_ENDPOINT";
/// `FIZZBUZZ_OTLP_HEADERS`: extra export headers, `key=value,key2=value2` as in
/// `OTEL_EXPORTER_OTLP_HEADERS` (`--otlp-header`; values never shown).
pub const ENV_OTLP_HEADERS: &str = "FIZZBUZZ_OTLP_HEADERS";
/// `FIZZBUZZ_METRICS_INTERVAL`: how often metrics are exported (`--metrics-interval`).
pub const ENV_METRICS_INTERVAL: &str = "FIZZBUZZ_METRICS_INTERVAL";
/// `FIZZBUZZ_HEALTH_BIND`: where the gRPC health service listens (`--health-bind`).
pub const ENV_HEALTH_BIND: &str = "FIZZBUZZ_HEALTH_BIND";
/// `FIZZBUZZ_PROBE`: `true` to also host the diagnostic `ProbeService` grain
/// (`--probe`, fizz and buzz nodes).
pub const ENV_PROBE: &str = "FIZZBUZZ_PROBE";
/// `FIZZBUZZ_NEW_RELIC_REGION`: `us` or `eu` (`--new-relic-region`).
pub const ENV_NEW_RELIC_REGION: &str = "FIZZBUZZ_NEW_RELIC_REGION";

/// `FIZZBUZZ_TLS_CERT`: this member's certificate chain, PEM (`--tls-cert`).
pub const ENV_TLS_CERT: &str = "FIZZBUZZ_TLS_CERT";
/// `FIZZBUZZ_TLS_KEY`: this member's private key, PEM (`--tls-key`).
pub const ENV_TLS_KEY: &str = "FIZZBUZZ_TLS_KEY";
/// `FIZZBUZZ_TLS_SERVER_NAME`: the name every member's certificate holds, checked
/// instead of the advertised host (`--tls-server-name`).
pub const ENV_TLS_SERVER_NAME: &str = "FIZZBUZZ_TLS_SERVER_NAME";
/// `FIZZBUZZ_TLS_CA`: the CA that signs every member's certificate, PEM (`--tls-ca`).
pub const ENV_TLS_CA: &str = "FIZZBUZZ_TLS_CA";

/// The role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Hosts `FizzService`.
    Fizz,
    /// Hosts `BuzzService`.
    Buzz,
    /// Hosts nothing; drives the work.
    Client,
}

impl Role {
    /// `fizz`, `buzz` or `client`: the process name, member id prefix and Consul role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Fizz => "fizz",
            Role::Buzz => "buzz",
            Role::Client => "client",
        }
    }
}

/// Parses `300ms`, `5s`, `2m`, `1h30m` (Go/Consul style).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    grain_consul::api::parse_go_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration (examples: 500ms, 5s, 2m)"))
}

/// Who a node is, where it listens and where it records its metrics and spans; made
/// before the node starts, so the telemetry resource can name the member and its
/// address.
#[derive(Debug)]
pub struct NodeSetup {
    /// The member id the node will use.
    pub member_id: MemberId,
    /// The member port, bound before the runtime starts; taken by the node.
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
    /// The address other members use: `--advertise`, else the bound address.
    pub address: String,
    /// The meter for the runtime's instruments, when metrics are exported.
    pub meter: Option<opentelemetry::metrics::Meter>,
    /// The tracer and propagator for the runtime's spans, when traces are exported.
    pub tracing: Option<grain::Tracing>,
    /// TLS between members, read and checked against `address`.
    pub tls: Option<grain::TlsConfig>,
}

impl NodeSetup {
    /// A fresh member id for `role`, its port bound as `common` says, and no telemetry
    /// yet; call outside an async context or inside one, it does not block on I/O.
    pub fn new(role: Role, common: &CommonArgs) -> Result<Self, AppError> {
        let cannot = |e: std::io::Error| {
            AppError::Failed(format!("--bind {}: cannot listen: {e}", common.bind))
        };
        let listener = std::net::TcpListener::bind(common.bind).map_err(cannot)?;
        listener.set_nonblocking(true).map_err(cannot)?;
        let local = listener.local_addr().map_err(cannot)?;
        let address = common
            .advertise
            .clone()
            .unwrap_or_else(|| local.to_string());
        let tls = common.tls.load(&address)?;
        // Checked now, before anything starts: the Consul settings (TLS files included).
        common.membership(role)?;
        Ok(Self {
            member_id: MemberId::random(role.name()),
            listener: std::sync::Mutex::new(Some(listener)),
            address,
            meter: None,
            tracing: None,
            tls,
        })
    }

    /// The bound member port, for the node (once; in the runtime).
    pub fn take_listener(&self) -> Result<tokio::net::TcpListener, AppError> {
        let taken = self.listener.lock().ok().and_then(|mut l| l.take());
        let listener =
            taken.ok_or_else(|| AppError::Failed("the member port was already taken".into()))?;
        tokio::net::TcpListener::from_std(listener)
            .map_err(|e| AppError::Failed(format!("the member port: {e}")))
    }
}

/// Parses `--log-format` (`human`, `text` or `json`).
pub fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse::<LogFormat>().map_err(|e| e.to_string())
}

/// Options shared by `fizz`, `buzz` and `client`.
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// Cluster name; members of another cluster are refused.
    #[arg(long, env = ENV_CLUSTER, default_value = "fizzbuzz-cluster")]
    pub cluster: String,
    /// Consul agent address (`host:port` or `http://host:port`).
    #[arg(long, env = grain_consul::config::ENV_HTTP_ADDR, default_value = grain_consul::config::DEFAULT_HTTP_ADDR)]
    pub consul_addr: String,
    /// Consul ACL token, sent as X-Consul-Token (never printed). Prefer
    /// CONSUL_HTTP_TOKEN or --consul-token-file: command lines are visible to other
    /// users.
    #[arg(long, env = grain_consul::config::ENV_HTTP_TOKEN, hide_env_values = true)]
    pub consul_token: Option<Token>,
    /// Consul ACL token file and HTTPS to the agent.
    #[command(flatten)]
    pub consul: crate::consul_tls::ConsulTlsArgs,
    /// Consul datacenter to query (default: the agent's).
    #[arg(long, env = grain_consul::config::ENV_DATACENTER)]
    pub datacenter: Option<String>,
    /// Where the gRPC server listens (port 0: any free port).
    #[arg(long, env = ENV_BIND, default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// The host:port other members use to reach this node (containers, NAT).
    #[arg(long, env = ENV_ADVERTISE)]
    pub advertise: Option<String>,
    /// Serve the standard gRPC health service (grpc.health.v1) here, plaintext, on a
    /// port of its own: readiness is the service "", liveness the service "liveness".
    /// Off by default.
    #[arg(long, env = ENV_HEALTH_BIND)]
    pub health_bind: Option<SocketAddr>,
    /// Log filter: error, warn, info, debug, trace, or directives like `grain=debug`.
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log_level: String,
    /// Log line format: human (the default) or json (one object per line, with the
    /// trace_id and span_id of the call being served).
    #[arg(long, env = ENV_LOG_FORMAT, default_value = "human", value_parser = parse_log_format)]
    pub log_format: LogFormat,
    /// Async runtime worker threads (default: one per CPU core). Nodes that share a
    /// small machine often answer faster with 1.
    #[arg(long, env = ENV_WORKERS, value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// TLS between members.
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Metrics, traces and logs export (OTLP/HTTP).
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// TLS between members: files, read when the node starts.
#[derive(clap::Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsArgs {
    /// This member's certificate chain (PEM), for TLS between members. It must name
    /// the host of the advertised address (a DNS or IP subject alternative name).
    /// Off by default: plaintext, for loopback and trusted networks.
    #[arg(long, env = ENV_TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// This member's private key (PEM), for --tls-cert.
    #[arg(long, env = ENV_TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// The CA (PEM) that signs every member's certificate: with it, mutual TLS (a peer
    /// must present a certificate this CA signed, and only it is trusted); without it,
    /// peers are verified against the system's roots.
    #[arg(long, env = ENV_TLS_CA, requires = "tls_cert")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The DNS name every member's certificate holds, checked instead of the host of
    /// the advertised address: for members whose addresses are not known in advance
    /// (pod IPs), with --tls-ca.
    #[arg(long, env = ENV_TLS_SERVER_NAME, requires = "tls_cert")]
    pub tls_server_name: Option<String>,
}

impl TlsArgs {
    /// Reads the files and checks them for a member advertised at `address`; `None`
    /// when TLS is off. Errors name the option and the file.
    pub fn load(&self, address: &str) -> Result<Option<grain::TlsConfig>, AppError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |flag: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| {
                AppError::Usage(format!("{flag} {}: cannot read it: {e}", path.display()))
            })
        };
        let mut tls = grain::TlsConfig::new(read("--tls-cert", cert)?, read("--tls-key", key)?);
        if let Some(ca) = &self.tls_ca {
            tls = tls.with_ca(read("--tls-ca", ca)?);
        }
        if let Some(name) = &self.tls_server_name {
            tls = tls.with_server_name(name.clone());
        }
        tls.check(address).map_err(|e| {
            let files = [Some(cert), Some(key), self.tls_ca.as_ref()]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let name = self
                .tls_server_name
                .as_ref()
                .map_or_else(String::new, |n| format!(", --tls-server-name {n}"));
            AppError::Usage(format!(
                "invalid option (--tls-cert/--tls-key/--tls-ca: {files}{name}): {e}"
            ))
        })?;
        Ok(Some(tls))
    }

    /// The same options as the environment variables their flags read, for a child.
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        vec![
            (ENV_TLS_CERT, path(&self.tls_cert)),
            (ENV_TLS_KEY, path(&self.tls_key)),
            (ENV_TLS_CA, path(&self.tls_ca)),
            (ENV_TLS_SERVER_NAME, self.tls_server_name.clone()),
        ]
    }
}

/// `key=value` headers (`k=v,k2=v2` allowed) from the command line or
/// `FIZZBUZZ_OTLP_HEADERS`; `Debug` shows the keys only.
#[derive(Clone)]
pub struct HeaderArg(String);

impl std::str::FromStr for HeaderArg {
    type Err = std::convert::Infallible;

    /// Takes any text: [`ExportArgs::config`] checks it and says what is wrong without
    /// showing it (clap's own message would quote the value, which may be a secret).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(HeaderArg(s.to_string()))
    }
}

impl std::fmt::Debug for HeaderArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the keys of well-formed items: a malformed one may be a bare secret.
        let items: Vec<&str> = self
            .0
            .split(',')
            .map(|item| match item.split_once('=') {
                Some((k, _)) => k.trim(),
                None => "?",
            })
            .collect();
        write!(f, "{}=***", items.join("=***,"))
    }
}

/// Export options of metrics, traces and logs. The standard `OTEL_*` variables and
/// `NEW_RELIC_LICENSE_KEY` are read too; these flags win over them.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TelemetryArgs {
    /// Where and how telemetry is exported.
    #[command(flatten)]
    pub export: ExportArgs,
    /// service.name (default: the role, or OTEL_SERVICE_NAME).
    #[arg(long)]
    pub service_name: Option<String>,
}

/// Where and how telemetry is exported: the options `fizzbuzz up` passes to every node.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ExportArgs {
    /// OTLP/HTTP base URL of metrics, traces and logs (e.g. http://127.0.0.1:4318:
    /// /v1/metrics, /v1/traces and /v1/logs are appended; a URL ending in one of them
    /// is taken as its base).
    #[arg(long, env = ENV_OTLP_ENDPOINT)]
    pub otlp_endpoint: Option<String>,
    /// An extra export header, key=value (repeatable). Prefer OTEL_EXPORTER_OTLP_HEADERS
    /// or FIZZBUZZ_OTLP_HEADERS for secrets: command lines are visible to other users.
    #[arg(long = "otlp-header", env = ENV_OTLP_HEADERS, hide_env_values = true)]
    pub otlp_headers: Vec<HeaderArg>,
    /// How often metrics are exported (default 1s, or OTEL_METRIC_EXPORT_INTERVAL).
    #[arg(long, env = ENV_METRICS_INTERVAL, value_parser = parse_duration)]
    pub metrics_interval: Option<Duration>,
    /// New Relic region, us or eu (with NEW_RELIC_LICENSE_KEY; or NEW_RELIC_REGION).
    #[arg(long, env = ENV_NEW_RELIC_REGION)]
    pub new_relic_region: Option<String>,
}

impl ExportArgs {
    /// The export settings these flags give over the environment (the standard
    /// variables, the New Relic preset); errors name the setting.
    pub fn config(&self, service_name: Option<String>) -> Result<TelemetryConfig, AppError> {
        let overrides = Overrides {
            endpoint: self.otlp_endpoint.clone(),
            headers: self.otlp_headers.iter().map(|h| h.0.clone()).collect(),
            interval: self.metrics_interval,
            service_name,
            new_relic_region: self.new_relic_region.clone(),
        };
        TelemetryConfig::from_env(&overrides).map_err(|e| AppError::Usage(e.to_string()))
    }

    /// The same options as the environment variables their flags read, for a child
    /// node (never its command line: a header may carry a licence key); `None`: the
    /// variable is to be unset.
    pub fn to_env(&self) -> Vec<(&'static str, Option<String>)> {
        // Each header is split on commas when it is used, so joining them is lossless.
        let headers: Vec<&str> = self.otlp_headers.iter().map(|h| h.0.as_str()).collect();
        vec![
            (ENV_OTLP_ENDPOINT, self.otlp_endpoint.clone()),
            (
                ENV_OTLP_HEADERS,
                Some(headers.join(",")).filter(|h| !h.is_empty()),
            ),
            (
                ENV_METRICS_INTERVAL,
                self.metrics_interval
                    .map(|d| format!("{}us", d.as_micros())),
            ),
            (ENV_NEW_RELIC_REGION, self.new_relic_region.clone()),
        ]
    }
}

impl CommonArgs {
    /// Builds the telemetry pipelines for the node of `role` that `setup` describes
    /// (call outside an async context); errors name the setting.
    pub fn telemetry(&self, role: Role, setup: &NodeSetup) -> Result<Telemetry, AppError> {
        let config = self
            .telemetry
            .export
            .config(self.telemetry.service_name.clone())?;
        let process = ProcessInfo {
            service_name: role.name().into(),
            instance_id: setup.member_id.to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            cluster: self.cluster.clone(),
            member_address: Some(setup.address.clone()),
        };
        Telemetry::install(&config, &process).map_err(|e| AppError::Usage(e.to_string()))
    }

    /// The node's configuration; errors name the option.
    pub fn node_config(&self, role: Role, setup: &NodeSetup) -> Result<NodeConfig, AppError> {
        let config = NodeConfig {
            cluster_name: self.cluster.clone(),
            member_id: Some(setup.member_id.to_string()),
            member_prefix: role.name().into(),
            bind: self.bind,
            advertise: self.advertise.clone(),
            meter: setup.meter.clone(),
            tracing: setup.tracing.clone(),
            tls: setup.tls.clone(),
            ..NodeConfig::default()
        };
        config.validate().map_err(|e| {
            AppError::Usage(format!(
                "invalid option (--cluster/--bind/--advertise): {e}"
            ))
        })?;
        Ok(config)
    }

    /// The Consul membership provider; errors name the option.
    pub fn membership(&self, role: Role) -> Result<ConsulMembership, AppError> {
        let config = ConsulConfig {
            address: self.consul_addr.clone(),
            token: self.consul.token(self.consul_token.as_ref())?,
            tls: self.consul.tls(),
            datacenter: self.datacenter.clone().filter(|d| !d.is_empty()),
            role: role.name().into(),
            ..ConsulConfig::default()
        };
        ConsulMembership::new(&self.cluster, config).map_err(|e| {
            AppError::Usage(format!(
                "invalid option (--consul-addr/--datacenter/the Consul TLS settings): {e}"
            ))
        })
    }
}

/// Parses a worker-thread count: 1 to 1024.
pub fn parse_workers(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to 1024, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_shows_its_keys_only() {
        let h = |s: &str| format!("{:?}", HeaderArg(s.into()));
        assert_eq!(h("api-key=secret"), "api-key=***");
        assert_eq!(h("a=1,b=2"), "a=***,b=***");
        assert_eq!(h("bare-secret"), "?=***");
    }

    #[test]
    fn a_malformed_header_is_a_usage_error_that_does_not_show_it() {
        let export = ExportArgs {
            otlp_headers: vec![HeaderArg("bare-secret-value".into())],
            ..ExportArgs::default()
        };
        match export.config(None) {
            Err(AppError::Usage(m)) => {
                assert!(m.contains("--otlp-header"), "{m}");
                assert!(!m.contains("bare-secret-value"), "{m}");
            }
            other => panic!("want a usage error, got {:?}", other.map(|_| ())),
        }
    }
}
