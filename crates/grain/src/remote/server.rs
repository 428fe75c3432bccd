//! The callee side of a link: accepts `Open` streams, checks the handshake, hands
//! each request to the [`Dispatch`], and writes the answers back in batches.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::{HDR_ADDRESS, HDR_CLUSTER, HDR_MEMBER_ID, pb};
use crate::error::CallError;
use crate::identity::MemberId;
use crate::metrics::Metrics;

/// Where a remote caller's answer goes: its stream's response queue. Holding one keeps
/// one of the stream's in-flight slots.
pub(crate) struct ResponseSink {
    correlation_id: u64,
    tx: mpsc::Sender<Answer>,
    permit: OwnedSemaphorePermit,
}

/// An answer on its way out, still holding its in-flight slot: the response queue has
/// room for every slot, so queueing an answer never waits (a grain's turn never blocks
/// on a slow caller), and a slot is freed only when its answer is taken for writing.
type Answer = (pb::Response, OwnedSemaphorePermit);

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
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
}

/// The `grain.v1.Remote` service.
pub(crate) struct RemoteService {
    dispatch: Arc<dyn Dispatch>,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
}

impl RemoteService {
    pub(crate) fn new(
        dispatch: Arc<dyn Dispatch>,
        limits: ServerLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            dispatch,
            limits,
            metrics,
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
        tracing::debug!(%peer, peer_address = %peer_addr, "peer connected");

        let mut inbound = request.into_inner();
        let limits = self.limits;
        let (tx, rx) = mpsc::channel::<Answer>(limits.max_inflight_per_stream.max(1));
        let permits = Arc::new(Semaphore::new(limits.max_inflight_per_stream.max(1)));
        let dispatch = self.dispatch.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(batch)) => {
                        metrics.deserialized("request", batch.requests.len() as u64);
                        for req in batch.requests {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                return;
                            };
                            let sink = ResponseSink {
                                correlation_id: req.correlation_id,
                                tx: tx.clone(),
                                permit,
                            };
                            dispatch.dispatch(&peer, req, sink);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%peer, %status, "inbound stream ended");
                        break;
                    }
                }
            }
        });

        let metrics = self.metrics.clone();
        let counted = batches(rx, limits).map(move |b| {
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
        Ok(response)
    }
}

/// Drains whatever answers are queued into one batch per write.
fn batches(
    rx: mpsc::Receiver<Answer>,
    limits: ServerLimits,
) -> impl Stream<Item = Result<pb::ResponseBatch, Status>> + Send {
    futures::stream::unfold(
        (rx, None::<pb::Response>),
        move |(mut rx, carry)| async move {
            let first = match carry {
                Some(r) => r,
                None => rx.recv().await?.0,
            };
            let mut bytes = first.encoded_len();
            let mut responses = vec![first];
            let mut carry = None;
            while responses.len() < limits.max_batch {
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
            Some((Ok(pb::ResponseBatch { responses }), (rx, carry)))
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
    /// `TCP_NODELAY`), with messages up to `max_message_bytes` either way.
    pub(crate) fn start(
        listener: tokio::net::TcpListener,
        service: RemoteService,
        max_message_bytes: usize,
    ) -> Self {
        let service = pb::remote_server::RemoteServer::new(service)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
                .initial_stream_window_size(Some(4 << 20))
                .initial_connection_window_size(Some(8 << 20))
                // One service, served directly: no router (and no web framework).
                .serve_with_incoming_shutdown(service, incoming, async {
                    let _ = stopped.await;
                })
                .await;
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
