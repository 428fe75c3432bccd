//! A member of the cluster: [`Node`] starts one (gRPC server, membership, activation
//! catalog) and shuts it down gracefully; [`Cluster`] is the cheap handle through which
//! code calls grains anywhere in the cluster.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::activation::{InFlight, Invocation, Registry, Reply};
use crate::call::{Backoff, CallOptions};
use crate::error::{CallError, StartError};
use crate::grain::{Code, GrainError, Kind};
use crate::identity::{ClusterIdentity, Member, MemberId, Topology};
use crate::membership::{MembershipError, MembershipProvider};
use crate::metrics::Metrics;
use crate::placement::PlacementTable;
use crate::remote::{
    self, Dispatch, LinkConfig, PeerLink, RemoteService, ResponseSink, ServerLimits, pb,
};

/// How a node is set up. Plain data: build it, then [`NodeConfig::validate`] (done by
/// [`Node::start`] too).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The cluster's name; members of other clusters are refused. Default
    /// `grain-cluster`.
    pub cluster_name: String,
    /// This member's id; default: a random id prefixed with `member_prefix`.
    pub member_id: Option<String>,
    /// The prefix of a random member id (e.g. the role, `fizz`). Default `member`.
    pub member_prefix: String,
    /// Where the gRPC server listens. Default `127.0.0.1:0` (loopback, any free port).
    pub bind: SocketAddr,
    /// The `host:port` other members use to reach this one. Default: the bound address
    /// (required when binding an unspecified address such as `0.0.0.0`).
    pub advertise: Option<String>,
    /// The options of calls made without explicit options.
    pub call_defaults: CallOptions,
    /// Calls a peer may have in flight on this member at once; more wait (backpressure).
    pub max_inflight_per_peer: usize,
    /// Requests queued per outbound link before callers wait.
    pub outbound_queue: usize,
    /// The most envelopes written as one batch.
    pub max_batch: usize,
    /// The largest gRPC message, in bytes, sent or accepted.
    pub max_message_bytes: usize,
    /// The largest request or response payload, in bytes.
    pub max_payload_bytes: usize,
    /// How long connecting (and handshaking) with a peer may take.
    pub connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub reconnect_backoff: Backoff,
    /// How long a blocking membership query waits.
    pub membership_wait: Duration,
    /// The shortest pause between two membership queries.
    pub membership_min_interval: Duration,
    /// How long a graceful shutdown waits for in-flight calls and passivation.
    pub shutdown_grace: Duration,
    /// Where the runtime records its metrics ([`crate::metrics::CATALOG`]); `None`
    /// records nothing. Binaries build it from their own `MeterProvider`; nothing is
    /// read from a global.
    pub meter: Option<opentelemetry::metrics::Meter>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            cluster_name: "grain-cluster".into(),
            member_id: None,
            member_prefix: "member".into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            call_defaults: CallOptions::default(),
            max_inflight_per_peer: 10_000,
            outbound_queue: 10_000,
            max_batch: 256,
            max_message_bytes: 16 << 20,
            max_payload_bytes: 4 << 20,
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(5),
                multiplier: 2,
            },
            membership_wait: Duration::from_secs(30),
            membership_min_interval: Duration::from_millis(20),
            shutdown_grace: Duration::from_secs(10),
            meter: None,
        }
    }
}

impl NodeConfig {
    /// Checks the configuration; the message names the wrong setting.
    pub fn validate(&self) -> Result<(), String> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(&self.cluster_name) {
            return Err(format!(
                "cluster_name {:?} must be 1-128 characters of letters, digits, '-', '_' or '.'",
                self.cluster_name
            ));
        }
        if let Some(id) = &self.member_id
            && !name_ok(id)
        {
            return Err(format!(
                "member_id {id:?} must be 1-128 characters of letters, digits, '-', '_' or '.'"
            ));
        }
        if !name_ok(&self.member_prefix) {
            return Err(format!(
                "member_prefix {:?} is not a valid name",
                self.member_prefix
            ));
        }
        if self.bind.ip().is_unspecified() && self.advertise.is_none() {
            return Err(format!(
                "bind address {} listens on every interface: set advertise to the host:port other members should use",
                self.bind
            ));
        }
        if let Some(a) = &self.advertise {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!(
                    "advertise {a:?} must be host:port with a non-zero port"
                ));
            }
        }
        self.call_defaults
            .validate()
            .map_err(|e| format!("call_defaults: {e}"))?;
        self.reconnect_backoff
            .validate()
            .map_err(|e| format!("reconnect_backoff: {e}"))?;
        let positive = [
            ("max_inflight_per_peer", self.max_inflight_per_peer),
            ("outbound_queue", self.outbound_queue),
            ("max_batch", self.max_batch),
            ("max_payload_bytes", self.max_payload_bytes),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        let room = crate::remote::MAX_ENVELOPE_META_BYTES + 1024;
        if self.max_message_bytes < self.max_payload_bytes.saturating_add(room) {
            return Err(format!(
                "max_message_bytes must exceed max_payload_bytes by at least {} KiB \
                 (room for the kind, identity, method and headers of a call)",
                room >> 10
            ));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("membership_wait", self.membership_wait),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        Ok(())
    }
}

pub(crate) struct Shared {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: NodeConfig,
    pub(crate) me: Member,
    pub(crate) registry: Registry,
    pub(crate) inflight: Arc<InFlight>,
    view: ArcSwap<PlacementTable>,
    view_tx: watch::Sender<Arc<PlacementTable>>,
    links: Mutex<HashMap<MemberId, Arc<PeerLink>>>,
    link_config: LinkConfig,
}

impl Shared {
    /// The link to `member`, or `None` when it is no longer in the topology (a link made
    /// now would never be closed).
    fn link(&self, member: &Member) -> Option<Arc<PeerLink>> {
        if self.view.load().topology().member(&member.id) != Some(member) {
            return None;
        }
        let mut links = self.links.lock();
        if let Some(l) = links.get(&member.id) {
            if l.member() == member {
                return Some(l.clone());
            }
            l.close();
        }
        let link = Arc::new(PeerLink::spawn(self.link_config.clone(), member.clone()));
        links.insert(member.id.clone(), link.clone());
        Some(link)
    }

    /// Adds (or updates) `members` without removing anyone.
    fn apply_union(&self, members: Vec<Member>) -> bool {
        let current = self.view.load_full();
        let mut all: Vec<Member> = current
            .topology()
            .members()
            .iter()
            .filter(|m| !members.iter().any(|n| n.id == m.id))
            .cloned()
            .collect();
        all.extend(members);
        self.apply(all)
    }

    /// Installs a new member list (from the provider); returns true when it changed.
    fn apply(&self, mut members: Vec<Member>) -> bool {
        // This member is always part of its own view: local calls keep working while the
        // provider is unreachable or has not listed it yet.
        members.retain(|m| m.id != self.me.id);
        members.push(self.me.clone());
        let current = self.view.load_full();
        let next = Topology::new(current.topology().version() + 1, members);
        if next.same_members(current.topology()) {
            return false;
        }
        let diff = next.diff(current.topology());
        for m in &diff.joined {
            tracing::info!(member = %m.id, address = %m.address, kinds = ?m.kinds, "member joined");
        }
        for m in &diff.left {
            tracing::info!(member = %m.id, address = %m.address, "member left");
        }
        self.metrics.topology(next.members().len());
        let table = Arc::new(PlacementTable::new(next));
        self.view.store(table.clone());
        self.view_tx.send_replace(table);
        let mut links = self.links.lock();
        for m in &diff.left {
            if links.get(&m.id).is_some_and(|l| l.member() == m)
                && let Some(l) = links.remove(&m.id)
            {
                l.close();
            }
        }
        true
    }
}

/// A handle on the cluster, as seen from one member: call grains, look at the topology.
/// Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("cluster", &self.shared.config.cluster_name)
            .field("member", &self.shared.me.id)
            .finish_non_exhaustive()
    }
}

/// Returned by [`Cluster::wait_for_kinds`] when some kinds are still missing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no member hosting {} joined within {waited:?}", missing.join(", "))]
pub struct MissingKinds {
    /// The kinds no member hosts.
    pub missing: Vec<String>,
    /// How long we waited.
    pub waited: Duration,
}

impl Cluster {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.shared.config.cluster_name
    }

    /// This member.
    pub fn member(&self) -> &Member {
        &self.shared.me
    }

    /// The options used by [`Cluster::call`].
    pub fn call_defaults(&self) -> &CallOptions {
        &self.shared.config.call_defaults
    }

    /// The current topology as this member sees it.
    pub fn topology(&self) -> Topology {
        self.shared.view.load().topology().clone()
    }

    /// The member that owns `id` under the current topology.
    pub fn owner_of(&self, id: &ClusterIdentity) -> Option<Member> {
        self.shared
            .view
            .load()
            .owner(id.kind(), id.identity())
            .cloned()
    }

    /// Waits until `predicate` holds for the topology, or `timeout`. True if it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        predicate: impl Fn(&Topology) -> bool,
    ) -> bool {
        let mut rx = self.shared.view_tx.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|t| predicate(t.topology()))).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Waits until every kind in `kinds` is hosted by some member, or `timeout`.
    pub async fn wait_for_kinds(
        &self,
        kinds: &[&str],
        timeout: Duration,
    ) -> Result<(), MissingKinds> {
        let started = Instant::now();
        if self
            .wait_until(timeout, |t| kinds.iter().all(|k| t.hosts(k)))
            .await
        {
            return Ok(());
        }
        let t = self.topology();
        Err(MissingKinds {
            missing: kinds
                .iter()
                .filter(|k| !t.hosts(k))
                .map(|k| k.to_string())
                .collect(),
            waited: started.elapsed(),
        })
    }

    /// Calls `method` of grain `id` with an encoded request, using the cluster's
    /// default call options.
    pub async fn call(
        &self,
        id: &ClusterIdentity,
        method: &str,
        payload: Bytes,
    ) -> Result<Bytes, CallError> {
        let options = &self.shared.config.call_defaults;
        self.call_with(id, method, payload, options).await
    }

    /// Calls `method` of grain `id` with an encoded request and explicit options.
    ///
    /// The call goes to the member that owns `id` under this member's topology. It is
    /// retried (up to `max_attempts`, with backoff, within `timeout`) only when it
    /// provably did not run; a retry waits for the backoff or a topology change,
    /// whichever comes first.
    pub async fn call_with(
        &self,
        id: &ClusterIdentity,
        method: &str,
        payload: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, CallError> {
        let started = Instant::now();
        let deadline = started + options.timeout;
        if payload.len() > self.shared.config.max_payload_bytes {
            return Err(CallError::Codec(format!(
                "request of {} bytes to {id} {method} exceeds the limit of {} bytes",
                payload.len(),
                self.shared.config.max_payload_bytes
            )));
        }
        // As encoded: each string and each header entry also costs its tags and
        // lengths (at most 12 bytes for an entry of this size; 16 for the three strings).
        let addressing = 16
            + id.kind().len()
            + id.identity().len()
            + method.len()
            + options
                .headers
                .iter()
                .map(|(k, v)| 12 + k.len() + v.len())
                .sum::<usize>();
        if addressing > crate::remote::MAX_ENVELOPE_META_BYTES {
            return Err(CallError::Codec(format!(
                "the kind, identity, method and headers of a call take {addressing} bytes, \
                 over the limit of {} bytes",
                crate::remote::MAX_ENVELOPE_META_BYTES
            )));
        }
        let metrics = &self.shared.metrics;
        let kind = id.kind_arc();
        metrics.future_started(kind, method);
        let mut source = "lookup";
        let finish = |source: &'static str, outcome: &'static str| {
            metrics.future_finished(kind, method, source, outcome, started.elapsed());
        };
        let mut topology_changes = self.shared.view_tx.subscribe();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let attempt_deadline = options
                .attempt_timeout
                .map_or(deadline, |t| (Instant::now() + t).min(deadline));
            topology_changes.mark_unchanged();
            let (result, from) = self
                .attempt(
                    id,
                    method,
                    payload.clone(),
                    &options.headers,
                    attempt_deadline,
                )
                .await;
            if attempt == 1 {
                source = from;
            }
            match result {
                Err(e) if e.provably_not_run() && attempt < options.max_attempts.max(1) => {
                    let pause = options.backoff.delay(attempt);
                    if Instant::now() + pause >= deadline {
                        finish(source, "error");
                        return Err(e);
                    }
                    metrics.retried(kind, method, retry_reason(&e));
                    tracing::debug!(target_grain = %id, method, attempt, error = %e, ?pause, "retrying call");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = topology_changes.changed() => {}
                    }
                }
                Err(CallError::Timeout { target, .. }) => {
                    finish(source, "timeout");
                    return Err(CallError::Timeout {
                        target,
                        after: started.elapsed(),
                    });
                }
                other => {
                    finish(source, if other.is_ok() { "ok" } else { "error" });
                    return other;
                }
            }
        }
    }

    /// One attempt; also says whether the owner came from the placement cache.
    async fn attempt(
        &self,
        id: &ClusterIdentity,
        method: &str,
        payload: Bytes,
        headers: &HashMap<String, String>,
        deadline: Instant,
    ) -> (Result<Bytes, CallError>, &'static str) {
        let resolving = Instant::now();
        let (owner, hit) = {
            let view = self.shared.view.load();
            let (owner, hit) = view.owner_cached(id);
            (owner.cloned(), hit)
        };
        let source = if hit { "cache" } else { "lookup" };
        self.shared
            .metrics
            .resolved(id.kind_arc(), source, resolving.elapsed());
        let Some(owner) = owner else {
            let kind = id.kind().to_string();
            return (Err(CallError::NoMemberHostsKind { kind }), source);
        };
        let target = format!("{id} {method}");
        if owner.id == self.shared.me.id {
            let (tx, rx) = oneshot::channel();
            let inv = Invocation {
                method: method.to_string(),
                payload,
                headers: headers.clone(),
                deadline,
                reply: Reply::Local(tx),
                _guard: self.shared.inflight.enter(),
            };
            self.shared.registry.deliver(self, id.clone(), inv).await;
            let result = match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => Err(CallError::Timeout {
                    target,
                    after: Duration::ZERO,
                }),
                Ok(Err(_)) => Err(CallError::from(GrainError::new(
                    Code::Internal,
                    format!("{target}: the activation ended without answering"),
                ))),
                Ok(Ok(r)) => r,
            };
            return (result, source);
        }
        let Some(link) = self.shared.link(&owner) else {
            let err = CallError::MemberUnavailable {
                member: owner.id.clone(),
                reason: "the member left the topology".into(),
                maybe_ran: false,
            };
            return (Err(err), source);
        };
        let request = pb::Request {
            correlation_id: 0,
            kind: id.kind().to_string(),
            identity: id.identity().to_string(),
            method: method.to_string(),
            payload,
            headers: headers.clone(),
            timeout_micros: 0,
        };
        (link.call(request, target, deadline).await, source)
    }
}

fn retry_reason(e: &CallError) -> &'static str {
    match e {
        CallError::NoMemberHostsKind { .. } => "no_member",
        CallError::WrongOwner { .. } => "wrong_owner",
        CallError::ShuttingDown { .. } => "shutting_down",
        _ => "not_delivered",
    }
}

/// The server side's entry into this member.
struct Inbound {
    cluster: Cluster,
}

#[async_trait]
impl Dispatch for Inbound {
    fn cluster_name(&self) -> &str {
        &self.cluster.shared.config.cluster_name
    }

    fn member_id(&self) -> &MemberId {
        &self.cluster.shared.me.id
    }

    async fn dispatch(&self, _from: &MemberId, request: pb::Request, sink: ResponseSink) {
        let shared = &self.cluster.shared;
        let guard = shared.inflight.enter();
        let id = ClusterIdentity::new(request.kind, request.identity);
        if !shared.registry.hosts(id.kind()) {
            // Not a placement disagreement (retrying cannot help): say what is wrong.
            let err = CallError::Application {
                code: Code::Unimplemented,
                message: format!("member {} hosts no grain kind {}", shared.me.id, id.kind()),
            };
            return sink.send(Err(err)).await;
        }
        if !shared.registry.is_accepting() {
            let member = shared.me.id.clone();
            return sink.send(Err(CallError::ShuttingDown { member })).await;
        }
        let owned = shared
            .view
            .load()
            .owner(id.kind(), id.identity())
            .is_some_and(|m| m.id == shared.me.id);
        if !owned {
            let err = CallError::WrongOwner {
                member: shared.me.id.clone(),
                target: id.to_string(),
            };
            return sink.send(Err(err)).await;
        }
        let inv = Invocation {
            method: request.method,
            payload: request.payload,
            headers: request.headers,
            deadline: remote::deadline_from_micros(request.timeout_micros),
            reply: Reply::Remote(sink),
            _guard: guard,
        };
        shared.registry.deliver(&self.cluster, id, inv).await;
    }
}

/// A running member: its gRPC server, its membership tasks and its activations.
///
/// Drop it only after [`Node::shutdown`]; dropping a running node aborts its tasks
/// without leaving the cluster gracefully.
pub struct Node {
    cluster: Cluster,
    local_addr: SocketAddr,
    provider: Arc<dyn MembershipProvider>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
    server_stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("member", &self.cluster.shared.me)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a member hosting `kinds`: binds the gRPC server, then registers with
    /// `provider` and watches the topology in the background. Returns once the server
    /// listens; the provider may still be unreachable (the node keeps trying and logs
    /// it), so use [`Cluster::wait_for_kinds`] before relying on other members.
    pub async fn start(
        config: NodeConfig,
        kinds: Vec<Kind>,
        provider: Arc<dyn MembershipProvider>,
    ) -> Result<Node, StartError> {
        config.validate().map_err(StartError::Config)?;
        let mut names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(StartError::Config(format!(
                "kind {} is registered twice",
                w[0]
            )));
        }
        if let Some(k) = kinds.iter().find(|k| k.idle_timeout.is_zero()) {
            return Err(StartError::Config(format!(
                "kind {}: idle_timeout must be greater than zero",
                k.name()
            )));
        }
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
        let address = config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string());
        let id = match &config.member_id {
            Some(id) => MemberId::new(id.as_str()),
            None => MemberId::random(&config.member_prefix),
        };
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let me = Member {
            id: id.clone(),
            address: address.clone(),
            kinds: kinds.iter().map(|k| k.name().to_string()).collect(),
            incarnation,
        };
        let metrics = Arc::new(Metrics::new(config.meter.as_ref(), &me));
        metrics.topology(1);
        let link_config = LinkConfig {
            metrics: metrics.clone(),
            cluster: config.cluster_name.clone(),
            member_id: id.clone(),
            address,
            queue: config.outbound_queue,
            max_batch: config.max_batch,
            max_batch_bytes: config.max_message_bytes / 2,
            max_message_bytes: config.max_message_bytes,
            connect_timeout: config.connect_timeout,
            reconnect: config.reconnect_backoff,
        };
        let table = Arc::new(PlacementTable::new(Topology::new(1, [me.clone()])));
        let (view_tx, _) = watch::channel(table.clone());
        let limits = ServerLimits {
            max_inflight_per_stream: config.max_inflight_per_peer,
            max_batch: config.max_batch,
            max_batch_bytes: config.max_message_bytes / 2,
        };
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            registry: Registry::new(id, kinds),
            inflight: Arc::new(InFlight::default()),
            view: ArcSwap::new(table),
            view_tx,
            links: Mutex::new(HashMap::new()),
            link_config,
            me,
            config,
        });
        let cluster = Cluster { shared };

        let service = pb::remote_server::RemoteServer::new(RemoteService::new(
            Arc::new(Inbound {
                cluster: cluster.clone(),
            }),
            limits,
            metrics,
        ))
        .max_decoding_message_size(cluster.shared.config.max_message_bytes)
        .max_encoding_message_size(cluster.shared.config.max_message_bytes);
        let (server_stop, stop_rx) = oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(Duration::from_secs(20)))
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(8 << 20))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!("gRPC server failed: {e}");
            }
        });

        let (stop, _) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(keep_alive_loop(
                cluster.clone(),
                provider.clone(),
                stop.subscribe(),
            )),
            tokio::spawn(watch_loop(
                cluster.clone(),
                provider.clone(),
                stop.subscribe(),
            )),
        ];
        tracing::info!(member = %cluster.shared.me.id, address = %cluster.shared.me.address,
            cluster = %cluster.shared.config.cluster_name, kinds = ?cluster.shared.me.kinds, "node started");
        Ok(Node {
            cluster,
            local_addr,
            provider,
            stop,
            tasks,
            server: Some(server),
            server_stop: Some(server_stop),
        })
    }

    /// A handle to call grains through this member.
    pub fn cluster(&self) -> Cluster {
        self.cluster.clone()
    }

    /// The address the gRPC server is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This member.
    pub fn member(&self) -> &Member {
        &self.cluster.shared.me
    }

    /// How many grains are active on this member.
    pub fn activation_count(&self) -> usize {
        self.cluster.shared.registry.live_count()
    }

    /// How many grains of `kind` are active on this member.
    pub fn activation_count_of(&self, kind: &str) -> usize {
        self.cluster.shared.registry.live_count_of(kind)
    }

    /// Leaves the cluster gracefully: deregisters (so others stop routing here), stops
    /// accepting calls (callers get a retriable `ShuttingDown`), finishes the calls in
    /// flight, passivates every activation, closes links and stops the server — each
    /// step bounded by `shutdown_grace`.
    pub async fn shutdown(mut self) {
        let shared = self.cluster.shared.clone();
        let until = Instant::now() + shared.config.shutdown_grace;
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Err(e) = self.provider.deregister(&shared.me.id).await {
            tracing::warn!(member = %shared.me.id, "could not deregister from the membership provider: {e}");
        }
        shared.registry.stop_accepting();
        if !shared.inflight.wait_idle(until).await {
            tracing::warn!(
                in_flight = shared.inflight.count(),
                "calls still in flight when the shutdown grace ran out"
            );
        }
        let late = shared.registry.passivate_all(&self.cluster, until).await;
        if late > 0 {
            tracing::warn!(
                late,
                "activations did not passivate within the shutdown grace"
            );
        }
        let links: Vec<_> = shared.links.lock().drain().map(|(_, l)| l).collect();
        for l in links {
            l.close();
        }
        if let Some(s) = self.server_stop.take() {
            let _ = s.send(());
        }
        if let Some(mut server) = self.server.take() {
            let left = until
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(100));
            if tokio::time::timeout(left, &mut server).await.is_err() {
                server.abort();
            }
        }
        tracing::info!(member = %shared.me.id, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

/// Logs a provider error once per change of state, and counts every one.
struct Trouble {
    last: Option<String>,
    metrics: Arc<Metrics>,
}

impl Trouble {
    fn new(metrics: &Arc<Metrics>) -> Self {
        Self {
            last: None,
            metrics: metrics.clone(),
        }
    }

    fn failed(&mut self, what: &'static str, e: &MembershipError) {
        let kind = match e {
            MembershipError::NotRegistered(_) => "not-registered",
            MembershipError::Unavailable(_) => "unavailable",
            MembershipError::Rejected(_) => "rejected",
        };
        self.metrics.membership_error(what, kind);
        let key = format!("{what}:{kind}");
        if self.last.as_deref() != Some(&key) {
            tracing::warn!(
                "membership {what} failed: {e}; keeping the last known topology and retrying"
            );
            self.last = Some(key);
        }
    }

    fn recovered(&mut self, what: &str) {
        self.metrics.membership_ok();
        if self.last.take().is_some() {
            tracing::info!("membership {what} works again");
        }
    }
}

async fn keep_alive_loop(
    cluster: Cluster,
    provider: Arc<dyn MembershipProvider>,
    mut stop: watch::Receiver<bool>,
) {
    let me = cluster.shared.me.clone();
    let interval = provider.keep_alive_interval();
    let retry = Backoff {
        initial: Duration::from_millis(100),
        max: interval.max(Duration::from_millis(100)),
        multiplier: 2,
    };
    let mut trouble = Trouble::new(&cluster.shared.metrics);
    let mut registered = false;
    let mut failures = 0;
    loop {
        let pause = if !registered {
            match provider.register(&me).await {
                Ok(()) => {
                    trouble.recovered("registration");
                    tracing::info!(member = %me.id, "registered with the membership provider");
                    registered = true;
                    failures = 0;
                    interval
                }
                Err(e) => {
                    trouble.failed("registration", &e);
                    failures += 1;
                    retry.delay(failures)
                }
            }
        } else {
            match provider.keep_alive(&me.id).await {
                Ok(()) => {
                    trouble.recovered("keep-alive");
                    interval
                }
                Err(MembershipError::NotRegistered(_)) => {
                    tracing::warn!(member = %me.id, "the membership provider forgot this member; registering again");
                    registered = false;
                    Duration::ZERO
                }
                Err(e) => {
                    trouble.failed("keep-alive", &e);
                    interval
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn watch_loop(
    cluster: Cluster,
    provider: Arc<dyn MembershipProvider>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &cluster.shared.config;
    let retry = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        multiplier: 2,
    };
    let mut index: Option<u64> = None;
    let mut last_seen: Option<u64> = None;
    let mut grace_until: Option<Instant> = None;
    let grace = provider.keep_alive_interval() * 2 + Duration::from_millis(500);
    let mut trouble = Trouble::new(&cluster.shared.metrics);
    let mut failures = 0;
    loop {
        let started = Instant::now();
        let answer = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = provider.members(index, config.membership_wait) => a,
        };
        let pause = match answer {
            Ok(snapshot) => {
                trouble.recovered("watch");
                failures = 0;
                // Consul's rules for blocking-query indexes: start over when the index
                // goes backwards, and never use an index below 1.
                let went_back = last_seen.is_some_and(|seen| snapshot.index < seen);
                last_seen = Some(snapshot.index);
                index = if went_back {
                    None
                } else {
                    Some(snapshot.index.max(1))
                };
                if went_back {
                    // The store restarted empty (a dev agent, a lost Consul server): the
                    // members are re-registering right now. Keep everyone for a grace
                    // period instead of reshuffling placement twice.
                    tracing::info!(
                        ?grace,
                        "membership index went backwards (the store restarted); \
                        keeping current members while they register again"
                    );
                    grace_until = Some(Instant::now() + grace);
                }
                if grace_until.is_some_and(|g| Instant::now() < g) {
                    cluster.shared.apply_union(snapshot.members);
                    index = None;
                    Duration::from_millis(100)
                } else {
                    grace_until = None;
                    cluster.shared.apply(snapshot.members);
                    config
                        .membership_min_interval
                        .saturating_sub(started.elapsed())
                }
            }
            Err(e) => {
                trouble.failed("watch", &e);
                failures += 1;
                index = None;
                retry.delay(failures)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
