//! The dev agent: a small, stateful, Consul-compatible HTTP server for machines with no
//! Consul. It implements, with Consul's documented semantics, the endpoints the provider
//! and common clients use:
//!
//! | endpoint | notes |
//! |---|---|
//! | `PUT /v1/agent/service/register` | `Check` / `Checks` with `TTL` (other check types are refused with 400), `Status`, `DeregisterCriticalServiceAfter`; `replace-existing-checks` |
//! | `PUT /v1/agent/service/deregister/:id` | 404 for an unknown id |
//! | `PUT /v1/agent/check/{pass,warn,fail}/:id` | `?note=`; 404 for an unknown check |
//! | `PUT /v1/agent/check/update/:id` | body `{"Status","Output"}` |
//! | `GET /v1/health/service/:name` | `passing`, blocking `index` + `wait` (default 5m, at most 10m, plus up to wait/16 of jitter), `X-Consul-Index` |
//! | `GET /v1/agent/services`, `GET /v1/catalog/services`, `GET /v1/status/leader` | |
//!
//! TTL checks turn critical when not refreshed in time; a service whose check stayed
//! critical for its `DeregisterCriticalServiceAfter` (at least one minute, Consul's
//! minimum, unless configured lower for tests) is reaped. With a token configured,
//! every endpoint but `status/leader` needs it (`X-Consul-Token`, `Authorization:
//! Bearer`, or `?token=`), else 403. State lives in memory: a restart forgets
//! everything, as a `consul agent -dev` does.

mod args;
pub(crate) mod state;
mod tls;

pub use args::DevAgentArgs;
pub use tls::DevAgentTls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use crate::api::{CheckUpdate, ServiceRegistration};
use crate::config::Token;
use state::AgentState;

/// How the dev agent runs.
#[derive(Clone, Debug)]
pub struct DevAgentConfig {
    /// Where to listen. Default `127.0.0.1:8500`, Consul's own port.
    pub bind: SocketAddr,
    /// Listen on a non-loopback address (default false: loopback only).
    pub allow_non_loopback: bool,
    /// The ACL token every request must carry; `None` means no ACLs.
    pub token: Option<Token>,
    /// The datacenter name. Default `dc1`.
    pub datacenter: String,
    /// The node name. Default `grain-dev-agent`.
    pub node_name: String,
    /// The smallest `DeregisterCriticalServiceAfter` honoured. Default one minute, as in
    /// Consul; tests lower it to see reaping quickly.
    pub min_deregister_critical_after: Duration,
    /// How often TTL expiry and reaping are checked. Default 100 ms.
    pub sweep_interval: Duration,
    /// Serve HTTPS instead of HTTP. Default `None`.
    pub tls: Option<DevAgentTls>,
}

impl Default for DevAgentConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8500)),
            allow_non_loopback: false,
            token: None,
            datacenter: "dc1".into(),
            node_name: "grain-dev-agent".into(),
            min_deregister_critical_after: Duration::from_secs(60),
            sweep_interval: Duration::from_millis(100),
            tls: None,
        }
    }
}

/// Why the dev agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevAgentError {
    /// The bind address is not loopback and `allow_non_loopback` is off.
    #[error(
        "refusing to listen on {0}: the dev agent has no real security; use a loopback address or allow it explicitly"
    )]
    NotLoopback(SocketAddr),
    /// The HTTPS settings cannot be used.
    #[error("the dev agent's TLS settings: {0}")]
    Tls(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running dev agent. [`DevAgent::stop`] ends it at once, closing every connection, as
/// a killed process would.
pub struct DevAgent {
    addr: SocketAddr,
    https: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DevAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAgent")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DevAgent {
    /// Binds and starts serving.
    pub async fn start(config: DevAgentConfig) -> Result<DevAgent, DevAgentError> {
        if !config.bind.ip().is_loopback() && !config.allow_non_loopback {
            return Err(DevAgentError::NotLoopback(config.bind));
        }
        let tls = config
            .tls
            .as_ref()
            .map(DevAgentTls::acceptor)
            .transpose()
            .map_err(DevAgentError::Tls)?;
        let https = tls.is_some();
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| DevAgentError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevAgentError::Bind {
                addr: config.bind,
                source,
            })?;
        let state = Arc::new(AgentState::new(&config, addr));
        let app = router(state.clone());
        let (stop, mut stopped) = oneshot::channel::<()>();
        let sweep_every = config.sweep_interval.max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            let mut sweep = tokio::time::interval(sweep_every);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = sweep.tick() => state.sweep(),
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else {
                            // Out of file descriptors, say: don't spin, try again shortly.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let service = TowerToHyperService::new(app.clone());
                        let tls = tls.clone();
                        connections.spawn(async move {
                            let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                            let Some(tls) = tls else {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                                return;
                            };
                            let from = stream.peer_addr().ok();
                            match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                                }
                                Ok(Err(e)) => tracing::warn!(client = ?from, "refused a connection: TLS handshake failed: {e}"),
                                Err(_) => tracing::warn!(client = ?from, "refused a connection: no TLS handshake in time"),
                            }
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            connections.abort_all();
        });
        tracing::info!(address = %addr, "consul dev agent listening");
        Ok(DevAgent {
            addr,
            https,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<bound address>` (`https://` when serving HTTPS), ready for
    /// `CONSUL_HTTP_ADDR`.
    pub fn http_addr(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops at once: every connection is closed and all state is lost.
    pub async fn stop(mut self) {
        self.halt().await;
    }

    async fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Runs until `signal` resolves, then stops.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.halt().await;
    }
}

impl Drop for DevAgent {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub(crate) fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route("/v1/agent/service/register", put(register))
        .route("/v1/agent/service/deregister/{id}", put(deregister))
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/agent/check/{verb}/{id}", put(check_status))
        .route("/v1/health/service/{name}", get(health_service))
        .route("/v1/agent/services", get(agent_services))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/status/leader", get(status_leader))
        .fallback(unsupported)
        .with_state(state)
}

type Q = Query<HashMap<String, String>>;

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// A refused request: status and Consul's message.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        text(self.0, self.1)
    }
}

fn json(body: &impl serde::Serialize, index: Option<u64>) -> Response {
    let mut r = match serde_json::to_vec(body) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("encoding failed: {e}"),
            );
        }
    };
    let h = r.headers_mut();
    h.insert("Content-Type", HeaderValue::from_static("application/json"));
    if let Some(i) = index {
        if let Ok(v) = HeaderValue::from_str(&i.max(1).to_string()) {
            h.insert("X-Consul-Index", v);
        }
        h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
        h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    }
    r
}

/// Checks the ACL token; `Err` is the 403 to answer.
fn authorize(
    state: &AgentState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<(), Refusal> {
    let Some(want) = &state.token else {
        return Ok(());
    };
    let given = headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("Authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .or_else(|| q.get("token").cloned());
    match given {
        Some(t) if t == want.expose() => Ok(()),
        Some(_) => Err(Refusal(StatusCode::FORBIDDEN, "ACL not found".into())),
        None => Err(Refusal(
            StatusCode::FORBIDDEN,
            "Permission denied: anonymous token lacks permission".into(),
        )),
    }
}

fn check_dc(state: &AgentState, q: &HashMap<String, String>) -> Result<(), Refusal> {
    match q.get("dc") {
        Some(dc) if !dc.is_empty() && dc != &state.datacenter => Err(Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("No path to datacenter \"{dc}\""),
        )),
        _ => Ok(()),
    }
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    match q.get(key) {
        None => false,
        Some(v) => !matches!(v.as_str(), "0" | "false" | "False" | "FALSE"),
    }
}

async fn register(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q) {
        return r.into_response();
    }
    let reg: ServiceRegistration = match serde_json::from_slice::<serde_json::Value>(&body)
        .map(normalize_registration)
        .and_then(serde_json::from_value)
    {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    };
    match s.register(reg, flag(&q, "replace-existing-checks")) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(msg) => text(StatusCode::BAD_REQUEST, msg),
    }
}

async fn deregister(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q) {
        return r.into_response();
    }
    if s.deregister(&id) {
        StatusCode::OK.into_response()
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown service ID \"{id}\". Ensure that the service ID is passed, not the service name."
            ),
        )
    }
}

fn update_check(
    s: &AgentState,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    id: &str,
    status: &str,
    output: String,
) -> Response {
    if let Err(r) = authorize(s, headers, q) {
        return r.into_response();
    }
    if !matches!(status, "passing" | "warning" | "critical") {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid check status: \"{status}\""),
        );
    }
    if s.update_check(id, status, output) {
        StatusCode::OK.into_response()
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown check ID \"{id}\". Ensure that the check ID is passed, not the check name."
            ),
        )
    }
}

/// `PUT /v1/agent/check/{pass,warn,fail}/:id?note=`.
async fn check_status(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
    Path((verb, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q) {
        return r.into_response();
    }
    let status = match verb.as_str() {
        "pass" => "passing",
        "warn" => "warning",
        "fail" => "critical",
        other => {
            return text(
                StatusCode::NOT_FOUND,
                format!("the grain dev agent does not implement PUT /v1/agent/check/{other}"),
            );
        }
    };
    let note = q.get("note").cloned().unwrap_or_default();
    update_check(&s, &headers, &q, &id, status, note)
}

async fn check_update(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q) {
        return r.into_response();
    }
    let update: CheckUpdate = match serde_json::from_slice::<serde_json::Value>(&body)
        .map(|v| normalize_keys(v, CHECK_UPDATE_FIELDS))
        .and_then(serde_json::from_value)
    {
        Ok(u) => u,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    };
    update_check(&s, &headers, &q, &id, &update.status, update.output)
}

const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "Weights",
    "EnableTagOverride",
    "TaggedAddresses",
    "Kind",
];
const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "Name",
    "TTL",
    "Status",
    "DeregisterCriticalServiceAfter",
    "Notes",
    "HTTP",
    "TCP",
    "GRPC",
    "Interval",
    "Timeout",
    "ServiceID",
];
const CHECK_UPDATE_FIELDS: &[&str] = &["Status", "Output"];

/// Consul decodes request bodies case-insensitively, and its service definitions also
/// accept snake_case (`deregister_critical_service_after`): map every known key of an
/// object to its canonical spelling. Values (and `Meta` keys) are left alone.
fn normalize_keys(value: serde_json::Value, known: &[&str]) -> serde_json::Value {
    let fold = |k: &str| k.replace('_', "").to_ascii_lowercase();
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let canonical = known
                        .iter()
                        .find(|c| fold(c) == fold(&k))
                        .map_or(k, |c| c.to_string());
                    (canonical, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn normalize_registration(value: serde_json::Value) -> serde_json::Value {
    let mut v = normalize_keys(value, SERVICE_FIELDS);
    if let Some(obj) = v.as_object_mut() {
        if let Some(check) = obj.remove("Check") {
            obj.insert("Check".into(), normalize_keys(check, CHECK_FIELDS));
        }
        if let Some(serde_json::Value::Array(checks)) = obj.remove("Checks") {
            let checks = checks
                .into_iter()
                .map(|c| normalize_keys(c, CHECK_FIELDS))
                .collect();
            obj.insert("Checks".into(), serde_json::Value::Array(checks));
        }
    }
    v
}

/// Consul's `wait`: default 5 minutes, at most 10.
fn wait_of(q: &HashMap<String, String>) -> Result<Duration, Refusal> {
    let max = Duration::from_secs(600);
    match q.get("wait") {
        None => Ok(Duration::from_secs(300)),
        Some(w) => crate::api::parse_go_duration(w)
            // Consul: a wait of zero means the default.
            .map(|d| {
                if d.is_zero() {
                    Duration::from_secs(300)
                } else {
                    d.min(max)
                }
            })
            .ok_or_else(|| {
                Refusal(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid wait time: \"{w}\""),
                )
            }),
    }
}

async fn health_service(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
    Path(name): Path<String>,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q).and_then(|()| check_dc(&s, &q)) {
        return r.into_response();
    }
    let index: u64 = match q.get("index").map(|i| i.parse::<u64>()) {
        None => 0,
        Some(Ok(i)) => i,
        Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
    };
    let wait = match wait_of(&q) {
        Ok(w) => w,
        Err(r) => return r.into_response(),
    };
    if index > 0 {
        let jitter = rand::random_range(0..=wait.as_millis() as u64 / 16);
        let deadline = tokio::time::Instant::now() + wait + Duration::from_millis(jitter);
        s.wait_for_change(&name, index, deadline).await;
    }
    let (entries, idx) = s.health(&name, flag(&q, "passing"));
    json(&entries, Some(idx))
}

async fn agent_services(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q) {
        return r.into_response();
    }
    let (services, idx) = s.agent_services();
    json(&services, Some(idx))
}

async fn catalog_services(
    State(s): State<Arc<AgentState>>,
    headers: HeaderMap,
    Query(q): Q,
) -> Response {
    if let Err(r) = authorize(&s, &headers, &q).and_then(|()| check_dc(&s, &q)) {
        return r.into_response();
    }
    let (services, idx) = s.catalog_services();
    json(&services, Some(idx))
}

async fn status_leader(State(s): State<Arc<AgentState>>) -> Response {
    json(&s.leader(), None)
}

async fn unsupported(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Result<Response, Infallible> {
    Ok(text(
        StatusCode::NOT_FOUND,
        format!(
            "the grain dev agent does not implement {method} {}",
            uri.path()
        ),
    ))
}
