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
    metrics: Arc<Metrics>,
}

/// An answer on its way out, still holding its in-flight slot: the response queue has
/// room for every slot, so queueing an answer never waits (a grain's turn never blocks
/// on a slow caller), and a slot is freed only when its answer is taken for writing.
type Answer = (pb::Response, OwnedSemaphorePermit);

impl ResponseSink {
    /// Queues the answer; never waits (see [`Answer`]).
    pub(crate) async fn send(self, result: Result<Bytes, CallError>) {
        let sent = self
            .tx
            .send((super::response(self.correlation_id, result), self.permit))
            .await;
        if sent.is_err() {
            self.metrics.deadletter("stream_closed");
        }
    }
}

/// What the server hands requests to.
#[async_trait]
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// The cluster this member belongs to.
    fn cluster_name(&self) -> &str;
    /// This member's id.
    fn member_id(&self) -> &MemberId;
    /// Runs (or refuses) one request and eventually answers through `sink`.
    async fn dispatch(&self, from: &MemberId, request: pb::Request, sink: ResponseSink);
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
                                metrics: metrics.clone(),
                            };
                            dispatch.dispatch(&peer, req, sink).await;
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
