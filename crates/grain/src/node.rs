//! A member's life: [`Node::start`] wires the parts (config → catalog, topology, links,
//! gRPC server, membership loops) and [`Node::shutdown`] takes them down in order.
//! What a call does once the node runs is in `cluster.rs` (caller side) and
//! `inbound.rs` (owner side).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::catalog::{Catalog, InFlight};
use crate::cluster::{Cluster, Shared};
use crate::config::{NodeConfig, validate_kinds};
use crate::error::StartError;
use crate::grain::Kind;
use crate::identity::{Member, MemberId};
use crate::inbound::Inbound;
use crate::membership::MembershipProvider;
use crate::membership::driver::Driver;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::remote::{Dialer, Leave, LinkConfig, Links, RemoteService, Server, ServerLimits};
use crate::suspicion::Suspicion;
use crate::topology::TopologyView;

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
    server: Server,
    leave: Arc<Leave>,
    readiness: Arc<Readiness>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("member", &self.cluster.shared.me)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// This member as others will see it: its id (chosen or random), the address to reach
/// it, its kinds, and an incarnation (start time in milliseconds) that tells a
/// restarted member from its former self.
fn this_member(config: &NodeConfig, local_addr: SocketAddr, kinds: &[Kind]) -> Member {
    let id = match &config.member_id {
        Some(id) => MemberId::new(id.as_str()),
        None => MemberId::random(&config.member_prefix),
    };
    let incarnation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    Member {
        id,
        address: config
            .advertise
            .clone()
            .unwrap_or_else(|| local_addr.to_string()),
        kinds: kinds.iter().map(|k| k.name().to_string()).collect(),
        incarnation,
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
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        Self::start_on(listener, config, kinds, provider).await
    }

    /// Starts a member as [`Node::start`] does, on a `listener` bound beforehand
    /// (`config.bind` is then the listener's address): for a program that must know
    /// its address before the node starts — to name it in its telemetry Resource, say.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        mut config: NodeConfig,
        kinds: Vec<Kind>,
        provider: Arc<dyn MembershipProvider>,
    ) -> Result<Node, StartError> {
        let bind_error = |source| StartError::Bind {
            addr: config.bind,
            source,
        };
        let local_addr = listener.local_addr().map_err(bind_error)?;
        config.bind = local_addr;
        config.validate().map_err(StartError::Config)?;
        validate_kinds(&kinds).map_err(StartError::Config)?;
        let me = this_member(&config, local_addr, &kinds);
        let tls = config.tls.as_ref().map(|t| t.build(&me.address));
        let tls = tls.transpose().map_err(StartError::Config)?.map(Arc::new);
        let metrics = Arc::new(Metrics::new(config.meter.as_ref(), &me));
        metrics.topology(1);
        let topology = Arc::new(TopologyView::new(me.clone()));
        let probe_timeout = config.connect_timeout.min(Duration::from_millis(250));
        let dialer = Arc::new(Dialer::of(&config, &me, tls.clone()));
        let suspicion = Arc::new(Suspicion::new(
            topology.clone(),
            probe_timeout,
            dialer.clone(),
        ));
        let links = Arc::new(Links::new(LinkConfig {
            metrics: metrics.clone(),
            dialer,
            queue: config.outbound_queue,
            queue_bytes: config.outbound_queue_bytes,
            max_batch: config.max_batch,
            max_batch_bytes: config.max_message_bytes / 2,
            reconnect: config.reconnect_backoff,
            suspicion: suspicion.clone(),
        }));
        let limits = ServerLimits::of(&config);
        let catalog = Catalog::new(
            me.id.clone(),
            kinds,
            metrics.clone(),
            config.max_payload_bytes,
            config.hook_timeout,
        );
        let catalog = Arc::new(catalog);
        let cluster = Cluster {
            shared: Arc::new(Shared {
                metrics: metrics.clone(),
                catalog: catalog.clone(),
                inflight: Arc::new(InFlight::default()),
                topology: topology.clone(),
                links: links.clone(),
                suspicion: suspicion.clone(),
                retries: Default::default(),
                me: me.clone(),
                config,
            }),
        };
        let config = &cluster.shared.config;

        let inbound = Arc::new(Inbound::new(cluster.clone()));
        let leave = Arc::new(Leave::default());
        let service = RemoteService::new(inbound, limits, metrics.clone(), leave.clone());
        let server = Server::start(listener, service, config.max_message_bytes, tls);

        let (stop, _) = watch::channel(false);
        let readiness = Arc::new(Readiness::default());
        let mut tasks = Driver {
            me: me.clone(),
            provider: provider.clone(),
            metrics,
            topology,
            links,
            catalog,
            seen_listed: Default::default(),
            readiness: readiness.clone(),
            last_index: Default::default(),
            recheck: Default::default(),
            wait: config.membership_wait,
            min_interval: config.membership_min_interval,
        }
        .spawn(&stop);
        tasks.push(tokio::spawn(suspicion.reprobe(stop.subscribe())));
        let catalog = cluster.shared.catalog.clone();
        tasks.push(tokio::spawn(catalog.sweep_idle(stop.subscribe())));
        tracing::info!(member = %me.id, address = %me.address, cluster = %config.cluster_name,
            kinds = ?me.kinds, tls = crate::tls::mode(config.tls.as_ref()), "node started");
        Ok(Node {
            cluster,
            local_addr,
            provider,
            stop,
            tasks,
            server,
            leave,
            readiness,
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

    /// True while this member is fenced: the membership provider, answering, does not
    /// list it as passing, so it hosts nothing until it is listed again.
    pub fn is_fenced(&self) -> bool {
        self.cluster.shared.topology.is_fenced()
    }

    /// Whether this member is ready to take calls: listed as passing by its membership
    /// provider, not fenced, and not leaving (a health check's readiness). The receiver
    /// sees every change; a membership provider that does not answer changes nothing.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.readiness.subscribe()
    }

    /// How many grains are active on this member.
    pub fn activation_count(&self) -> usize {
        self.cluster.shared.catalog.live_count()
    }

    /// How many grains of `kind` are active on this member.
    pub fn activation_count_of(&self, kind: &str) -> usize {
        self.cluster.shared.catalog.live_count_of(kind)
    }

    /// Leaves the cluster gracefully, losing no call — each step bounded by
    /// `shutdown_grace`:
    /// 1. stop the membership loops and tell every caller's stream that this member is
    ///    leaving, and wait (at most 2 s) until each caller said it heard (callers then
    ///    wait for the answers of what they already sent);
    /// 2. deregister, so others stop routing here;
    /// 3. keep answering until every caller has closed its stream (each does once it
    ///    has seen this member leave and has its answers);
    /// 4. stop accepting (late calls are refused as `ShuttingDown`, retriable), finish
    ///    the calls in flight, passivate every activation, close links, stop the
    ///    server.
    pub async fn shutdown(mut self) {
        let shared = self.cluster.shared.clone();
        let until = Instant::now() + shared.config.shutdown_grace;
        self.readiness.drain();
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        self.leave.announce();
        // Callers learn that answers will come before they see this member leave.
        let acks_until = until.min(Instant::now() + Duration::from_secs(2));
        if !self.leave.wait_acknowledged(acks_until).await {
            tracing::debug!("not every caller acknowledged the leave; leaving anyway");
        }
        if let Err(e) = self.provider.deregister(&shared.me.id).await {
            tracing::warn!(member = %shared.me.id, "could not deregister from the membership provider: {e}");
        }
        if !self.leave.wait_streams_closed(until).await {
            tracing::warn!("callers still had streams open when the shutdown grace ran out");
        }
        shared.catalog.stop_accepting();
        if !shared.inflight.wait_idle(until).await {
            tracing::warn!(
                in_flight = shared.inflight.count(),
                "calls still in flight when the shutdown grace ran out"
            );
        }
        let late = shared.catalog.passivate_all(until).await;
        if late > 0 {
            tracing::warn!(
                late,
                "activations did not passivate within the shutdown grace"
            );
        }
        shared.links.close_all();
        self.server.stop(until).await;
        tracing::info!(member = %shared.me.id, "node stopped");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        self.cluster.shared.catalog.abandon();
        // The server aborts itself when dropped.
    }
}
