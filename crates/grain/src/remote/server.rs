//! The callee side of a link: accepts `Open` streams, checks the handshake, hands
//! each request to the [`Dispatch`], and writes the answers back in batches.

use std::pin::Pin;
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::budget::PeerBudgets;
use super::{HDR_ADDRESS, HDR_CLUSTER, HDR_MEMBER_ID, HDR_PROTOCOL, pb};
use crate::error::CallError;
use crate::identity::MemberId;
use crate::metrics::Metrics;

/// Where a remote caller's answer goes: its stream's response queue. Holding one keeps
/// one of the stream's in-flight slots and its request's payload bytes in the peer's
/// budget.
pub(crate) struct ResponseSink {
    correlation_id: u64,
    tx: mpsc::Sender<Answer>,
    permit: Held,
}

/// What a request holds while it is in flight: a slot of its stream, and its payload's
/// bytes in its peer's budget.
struct Held {
    _slot: OwnedSemaphorePermit,
    _bytes: super::budget::BudgetPermit,
}

/// An answer on its way out, still holding its in-flight slot: the response queue has
/// room for every slot, so queueing an answer never waits (a grain's turn never blocks
/// on a slow caller), and a slot is freed only when its answer is taken for writing.
type Answer = (pb::Response, Held);

impl ResponseSink {
    /// Queues the answer; never waits: the queue has room for every in-flight slot and
    /// this sink holds one (see [`Answer`]). `Err` names why it was not delivered (the
    /// stream closed), as a `deadletter` reason.
    pub(crate) fn send(self, result: Result<Bytes, CallError>) -> Result<(), &'static str> {
        let answer = (super::response(self.correlation_id, result), self.permit);
        self.tx.try_send(answer).map_err(|e| match e {
            mpsc::error::TrySendError::Closed(_) => "stream_closed",
            // Cannot happen while each queued answer holds one of the slots the queue
            // was sized for; say so rather than lose it silently.
            mpsc::error::TrySendError::Full(_) => "stream_full",
        })
    }
}

/// What the server hands requests to.
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// The cluster this member belongs to.
    fn cluster_name(&self) -> &str;
    /// This member's id.
    fn member_id(&self) -> &MemberId;
    /// Starts (or refuses) one request without waiting for it; it answers through
    /// `sink`, now or later.
    fn dispatch(&self, from: &MemberId, request: pb::Request, sink: ResponseSink);
}

/// Limits of the callee side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerLimits {
    pub(crate) max_inflight_per_stream: usize,
    pub(crate) max_inflight_bytes_per_peer: usize,
    pub(crate) max_streams_per_peer: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
}

impl ServerLimits {
    /// The limits `config` sets.
    pub(crate) fn of(config: &crate::config::NodeConfig) -> Self {
        Self {
            max_inflight_per_stream: config.max_inflight_per_peer,
            max_inflight_bytes_per_peer: config.max_inflight_bytes_per_peer,
            max_streams_per_peer: config.max_streams_per_peer,
            max_batch: config.max_batch,
            max_batch_bytes: config.max_message_bytes / 2,
        }
    }
}

/// The server's part in a graceful leave: telling every caller that this member is
/// leaving, and knowing when they have all closed their streams.
#[derive(Default)]
pub(crate) struct Leave {
    leaving: std::sync::atomic::AtomicBool,
    announced: tokio::sync::Notify,
    open: std::sync::atomic::AtomicUsize,
    closed: tokio::sync::Notify,
    /// Open streams whose caller has not yet said it saw the announcement.
    unacked: std::sync::atomic::AtomicUsize,
    acked: tokio::sync::Notify,
}

impl Leave {
    /// Tells every open and future inbound stream that this member is leaving.
    pub(crate) fn announce(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.announced.notify_waiters();
    }

    fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    /// Waits until every open stream's caller said it saw the announcement (or closed
    /// its stream), or `until`. True when all did. Members before protocol 2 never say
    /// so; for them this waits until `until`.
    pub(crate) async fn wait_acknowledged(&self, until: tokio::time::Instant) -> bool {
        wait_for_zero(&self.unacked, &self.acked, until).await
    }

    /// Waits until every caller closed its stream, or `until`. True when all closed.
    pub(crate) async fn wait_streams_closed(&self, until: tokio::time::Instant) -> bool {
        wait_for_zero(&self.open, &self.closed, until).await
    }

    /// Counts one open inbound stream until the guard drops.
    fn opened(self: &Arc<Self>) -> StreamGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.unacked.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            leave: self.clone(),
            acked: false,
        }
    }
}

/// Waits until `count` is zero (`zero` is notified when it gets there), or `until`.
async fn wait_for_zero(
    count: &std::sync::atomic::AtomicUsize,
    zero: &tokio::sync::Notify,
    until: tokio::time::Instant,
) -> bool {
    loop {
        let notified = zero.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if count.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if tokio::time::timeout_at(until, notified).await.is_err() {
            return count.load(Ordering::SeqCst) == 0;
        }
    }
}

/// One open inbound stream.
struct StreamGuard {
    leave: Arc<Leave>,
    acked: bool,
}

impl StreamGuard {
    /// Its caller saw the announcement.
    fn ack(&mut self) {
        if !self.acked {
            self.acked = true;
            if self.leave.unacked.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.leave.acked.notify_waiters();
            }
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.ack();
        if self.leave.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.leave.closed.notify_waiters();
        }
    }
}

/// The `grain.v1.Remote` service.
pub(crate) struct RemoteService {
    dispatch: Arc<dyn Dispatch>,
    limits: ServerLimits,
    budgets: Arc<PeerBudgets>,
    metrics: Arc<Metrics>,
    leave: Arc<Leave>,
}

impl RemoteService {
    pub(crate) fn new(
        dispatch: Arc<dyn Dispatch>,
        limits: ServerLimits,
        metrics: Arc<Metrics>,
        leave: Arc<Leave>,
    ) -> Self {
        let budgets = PeerBudgets::new(
            limits.max_streams_per_peer,
            limits.max_inflight_bytes_per_peer,
        );
        Self {
            dispatch,
            limits,
            budgets: Arc::new(budgets),
            metrics,
            leave,
        }
    }
}

fn header<'a>(md: &'a tonic::metadata::MetadataMap, key: &str) -> &'a str {
    md.get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::ResponseBatch, Status>> + Send>>;

#[async_trait]
impl pb::remote_server::Remote for RemoteService {
    type OpenStream = ResponseStream;

    async fn open(
        &self,
        request: Request<Streaming<pb::RequestBatch>>,
    ) -> Result<Response<Self::OpenStream>, Status> {
        let md = request.metadata();
        let ours = self.dispatch.cluster_name();
        let me = self.dispatch.member_id().clone();
        let theirs = header(md, HDR_CLUSTER).to_string();
        let peer = MemberId::new(header(md, HDR_MEMBER_ID));
        let peer_addr = header(md, HDR_ADDRESS).to_string();
        if theirs != ours {
            let msg = format!(
                "cluster mismatch: member {me} belongs to cluster '{ours}', \
                 but the caller {peer} at {peer_addr} belongs to cluster '{theirs}'"
            );
            tracing::warn!(%peer, peer_address = %peer_addr, peer_cluster = %theirs, cluster = %ours,
                "refused a peer of another cluster: {msg}");
            return Err(Status::failed_precondition(msg));
        }
        if let Err(msg) = super::check_protocol(md.get(HDR_PROTOCOL).map(|v| v.to_str()), "caller")
        {
            let msg = format!("member {me} refused {peer} at {peer_addr}: {msg}");
            tracing::warn!(%peer, peer_address = %peer_addr, "{msg}");
            return Err(Status::failed_precondition(msg));
        }
        let budget = match self.budgets.open(&peer) {
            Ok(b) => b,
            Err(open) => {
                let msg = format!(
                    "member {me} refused a stream from {peer} at {peer_addr}: it has {open} \
                     open already, the most a peer may have (max_streams_per_peer)"
                );
                tracing::warn!(%peer, peer_address = %peer_addr, "{msg}");
                return Err(Status::resource_exhausted(msg));
            }
        };
        tracing::debug!(%peer, peer_address = %peer_addr, "peer connected");

        let mut inbound = request.into_inner();
        let limits = self.limits;
        let (tx, rx) = mpsc::channel::<Answer>(limits.max_inflight_per_stream.max(1));
        let permits = Arc::new(Semaphore::new(limits.max_inflight_per_stream.max(1)));
        let dispatch = self.dispatch.clone();
        let metrics = self.metrics.clone();
        let mut open = self.leave.opened();
        // Why the caller's stream was refused, if it was: its last answer.
        let refusal = Arc::new(std::sync::Mutex::new(None::<Status>));
        let refused = refusal.clone();
        let (callee, peer_address) = (me.clone(), peer_addr.clone());
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        if batch.leaving_seen {
                            open.ack();
                        }
                        metrics.deserialized("request", batch.requests.len() as u64);
                        for req in batch.requests {
                            // Room for it first (a slot, then its bytes): until then
                            // nothing more is read, and flow control holds the peer.
                            let Ok(slot) = permits.clone().acquire_owned().await else {
                                return;
                            };
                            let Some(bytes) = budget.reserve(req.payload.len()).await else {
                                return;
                            };
                            let sink = ResponseSink {
                                correlation_id: req.correlation_id,
                                tx: tx.clone(),
                                permit: Held {
                                    _slot: slot,
                                    _bytes: bytes,
                                },
                            };
                            dispatch.dispatch(&peer, req, sink);
                        }
                    }
                    Ok(None) => break,
                    Err(status) if refuses(&status) => {
                        // A message too large or that does not decode: the caller is
                        // told, and it is logged; the calls in flight still answer.
                        tracing::warn!(%peer, %peer_address, code = ?status.code(),
                            "refused a message from {peer}: {}", status.message());
                        let msg = format!(
                            "member {callee} refused a message from {peer}: {}",
                            status.message()
                        );
                        *refused.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some(Status::new(status.code(), msg));
                        break;
                    }
                    Err(status) => {
                        tracing::debug!(%peer, %status, "inbound stream ended");
                        break;
                    }
                }
            }
        });

        let metrics = self.metrics.clone();
        let refusal = futures::stream::once(async move {
            refusal
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        })
        .filter_map(|r| async move { r.map(Err) });
        let counted = batches(rx, limits, self.leave.clone())
            .chain(refusal)
            .map(move |b| {
                if let Ok(b) = &b {
                    let n = b.responses.len() as u64;
                    metrics.serialized("response", n);
                    metrics.batch("response", n);
                }
                b
            });
        let mut response = Response::new(Box::pin(counted) as ResponseStream);
        let md = response.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(ours) {
            md.insert(HDR_CLUSTER, v);
        }
        if let Ok(v) = MetadataValue::try_from(me.as_str()) {
            md.insert(HDR_MEMBER_ID, v);
        }
        md.insert(HDR_PROTOCOL, MetadataValue::from(super::PROTOCOL_VERSION));
        Ok(response)
    }
}

/// True for a caller's stream error that is the caller's fault (a message over the
/// size limit, or one that does not decode), not a stream going away.
fn refuses(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::OutOfRange | tonic::Code::Internal | tonic::Code::InvalidArgument
    )
}

/// Drains whatever answers are queued into one batch per write; once this member is
/// leaving, one batch says so (an empty one if nothing is queued).
fn batches(
    rx: mpsc::Receiver<Answer>,
    limits: ServerLimits,
    leave: Arc<Leave>,
) -> impl Stream<Item = Result<pb::ResponseBatch, Status>> + Send {
    futures::stream::unfold(
        (rx, None::<pb::Response>, false),
        move |(mut rx, carry, told)| {
            let leave = leave.clone();
            async move {
                let first = match carry {
                    Some(r) => Some(r),
                    None if told => Some(rx.recv().await?.0),
                    None => {
                        let announced = leave.announced.notified();
                        tokio::pin!(announced);
                        announced.as_mut().enable();
                        if leave.is_leaving() {
                            rx.try_recv().ok().map(|a| a.0)
                        } else {
                            tokio::select! {
                                a = rx.recv() => Some(a?.0),
                                _ = announced => rx.try_recv().ok().map(|a| a.0),
                            }
                        }
                    }
                };
                let mut responses = Vec::new();
                let mut bytes = 0;
                let mut carry = None;
                if let Some(first) = first {
                    bytes = first.encoded_len();
                    responses.push(first);
                }
                while !responses.is_empty() && responses.len() < limits.max_batch {
                    match rx.try_recv() {
                        Ok((r, _permit)) => {
                            let len = r.encoded_len();
                            if bytes + len > limits.max_batch_bytes {
                                carry = Some(r);
                                break;
                            }
                            bytes += len;
                            responses.push(r);
                        }
                        Err(_) => break,
                    }
                }
                let leaving = !told && leave.is_leaving();
                let batch = pb::ResponseBatch { responses, leaving };
                Some((Ok(batch), (rx, carry, told || leaving)))
            }
        },
    )
}

/// The running gRPC server of a member.
pub(crate) struct Server {
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Serves `service` on `listener` (HTTP/2 keep-alives, large flow-control windows,
    /// `TCP_NODELAY`), with messages up to `max_message_bytes` either way; over TLS
    /// when `tls` is set (handshakes done by [`crate::tls`]).
    pub(crate) fn start(
        listener: tokio::net::TcpListener,
        service: RemoteService,
        max_message_bytes: usize,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> Self {
        let service = pb::remote_server::RemoteServer::new(service)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(8 << 20));
        let shutdown = async {
            let _ = stopped.await;
        };
        let task = tokio::spawn(async move {
            let builder = builder;
            // One service, served directly: no router (and no web framework).
            let result = match tls {
                Some(tls) => {
                    let incoming = tls.incoming(listener);
                    builder
                        .serve_with_incoming_shutdown(service, incoming, shutdown)
                        .await
                }
                None => {
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    builder
                        .serve_with_incoming_shutdown(service, incoming, shutdown)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!("gRPC server failed: {e}");
            }
        });
        Self {
            task: Some(task),
            stop: Some(stop),
        }
    }

    /// Stops accepting connections and waits for the server to end until `until` (at
    /// least 100 ms), then aborts it.
    pub(crate) async fn stop(&mut self, until: tokio::time::Instant) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(mut task) = self.task.take() {
            let left = until
                .saturating_duration_since(tokio::time::Instant::now())
                .max(std::time::Duration::from_millis(100));
            if tokio::time::timeout(left, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
