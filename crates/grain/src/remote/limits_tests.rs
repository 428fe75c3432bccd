//! The transport's limits in bytes and streams, over a real gRPC server and client on
//! loopback: payload bytes in flight per peer (over all its streams), streams per
//! peer, and payload bytes queued per outbound link.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

use super::client::PeerLink;
use super::server::{Dispatch, Leave, RemoteService, ResponseSink, Server, ServerLimits};
use super::{Dialer, HDR_ADDRESS, HDR_CLUSTER, HDR_MEMBER_ID, HDR_PROTOCOL, LinkConfig, pb};
use crate::call::Backoff;
use crate::error::CallError;
use crate::identity::{Member, MemberId};
use crate::metrics::Metrics;
use crate::suspicion::Suspicion;
use crate::topology::TopologyView;

const CLUSTER: &str = "limits";
const KIB: usize = 1 << 10;

fn member(id: &str, address: &str) -> Member {
    Member {
        id: MemberId::new(id),
        address: address.into(),
        kinds: vec!["K".into()],
        incarnation: 1,
    }
}

/// Holds every request it is given, unanswered, until the test answers it; records
/// the most payload bytes it ever held at once.
struct Holder {
    me: MemberId,
    held: Mutex<Held>,
    changed: Notify,
}

#[derive(Default)]
struct Held {
    sinks: Vec<(usize, ResponseSink)>,
    bytes: usize,
    most_bytes: usize,
    most_calls: usize,
    dispatched: usize,
}

impl Dispatch for Holder {
    fn cluster_name(&self) -> &str {
        CLUSTER
    }

    fn member_id(&self) -> &MemberId {
        &self.me
    }

    fn dispatch(&self, _from: &MemberId, request: pb::Request, sink: ResponseSink) {
        let mut h = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let len = request.payload.len();
        h.sinks.push((len, sink));
        h.bytes += len;
        h.dispatched += 1;
        h.most_bytes = h.most_bytes.max(h.bytes);
        h.most_calls = h.most_calls.max(h.sinks.len());
        drop(h);
        self.changed.notify_waiters();
    }
}

impl Default for Holder {
    fn default() -> Self {
        Self {
            me: MemberId::new("callee"),
            held: Mutex::default(),
            changed: Notify::new(),
        }
    }
}

impl Holder {
    /// Waits until `done` holds of what is held (checked at every change).
    async fn wait(&self, what: &str, done: impl Fn(&Held) -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if done(&self.held.lock().unwrap_or_else(PoisonError::into_inner)) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "waited 10 s for {what}");
    }

    /// Answers the oldest request held.
    fn answer_oldest(&self) {
        let mut h = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !h.sinks.is_empty() {
            let (len, sink) = h.sinks.remove(0);
            h.bytes -= len;
            let _ = sink.send(Ok(Bytes::from_static(b"ok")));
        }
    }
}

/// A listener on a free loopback port, and its address.
async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
    let listener = listener.unwrap_or_else(|e| panic!("bind: {e}"));
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    (listener, address)
}

/// A member serving `holder` with `limits` on a free loopback port.
async fn serve(holder: Arc<Holder>, limits: ServerLimits) -> (Server, String) {
    let (listener, address) = listener().await;
    let me = member("callee", &address);
    let metrics = Arc::new(Metrics::new(None, &me));
    let service = RemoteService::new(holder, limits, metrics, Arc::new(Leave::default()));
    (Server::start(listener, service, 16 << 20, None), address)
}

fn limits(bytes: usize, streams: usize) -> ServerLimits {
    ServerLimits {
        max_inflight_per_stream: 10_000,
        max_inflight_bytes_per_peer: bytes,
        max_streams_per_peer: streams,
        max_batch: 256,
        max_batch_bytes: 8 << 20,
    }
}

/// A raw `Remote/Open` stream as member `peer`: the sender of its request batches,
/// and the response stream (or the status it was refused with).
async fn open(
    address: &str,
    peer: &str,
) -> (
    mpsc::Sender<pb::RequestBatch>,
    Result<tonic::Streaming<pb::ResponseBatch>, tonic::Status>,
) {
    let client = pb::remote_client::RemoteClient::connect(format!("http://{address}")).await;
    let mut client = client
        .unwrap_or_else(|e| panic!("connect: {e}"))
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(16);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let md = request.metadata_mut();
    md.insert(HDR_CLUSTER, MetadataValue::from_static(CLUSTER));
    if let Ok(v) = MetadataValue::try_from(peer) {
        md.insert(HDR_MEMBER_ID, v);
    }
    md.insert(HDR_ADDRESS, MetadataValue::from_static("127.0.0.1:1"));
    md.insert(HDR_PROTOCOL, MetadataValue::from(super::PROTOCOL_VERSION));
    let opened = client.open(request).await.map(tonic::Response::into_inner);
    (tx, opened)
}

fn requests(first_id: u64, n: u64, payload_bytes: usize) -> pb::RequestBatch {
    pb::RequestBatch {
        requests: (first_id..first_id + n)
            .map(|id| pb::Request {
                correlation_id: id,
                kind: "K".into(),
                identity: format!("i{id}"),
                method: "test.v1.K/Take".into(),
                payload: Bytes::from(vec![7u8; payload_bytes]),
                headers: Default::default(),
                timeout_micros: 0,
            })
            .collect(),
        leaving_seen: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_has_at_most_its_byte_budget_in_flight_over_all_its_streams() {
    let holder = Arc::new(Holder::default());
    let (_server, address) = serve(holder.clone(), limits(1024 * KIB, 8)).await;
    // Two streams of one peer, three requests of 400 KiB each: 2 fit in 1 MiB, 3 do not.
    let (tx1, rx1) = open(&address, "flooder").await;
    let (tx2, rx2) = open(&address, "flooder").await;
    let (mut rx1, mut rx2) = match (rx1, rx2) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("streams refused: {:?} {:?}", a.err(), b.err()),
    };
    for (tx, first) in [(&tx1, 1), (&tx2, 101)] {
        let sent = tx.send(requests(first, 3, 400 * KIB)).await;
        assert!(sent.is_ok(), "the stream closed");
    }
    // Answer one request each time two are held, until all six arrived.
    for answered in 0..6 {
        holder
            .wait("two requests held (or the last one)", |h| {
                h.sinks.len() == 2 || (h.dispatched == 6 && !h.sinks.is_empty())
            })
            .await;
        holder.answer_oldest();
        let _ = answered;
    }
    holder.wait("all six answered", |h| h.dispatched == 6).await;
    while holder
        .held
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .bytes
        > 0
    {
        holder.answer_oldest();
    }
    let (most_calls, most_bytes) = {
        let h = holder.held.lock().unwrap_or_else(PoisonError::into_inner);
        (h.most_calls, h.most_bytes)
    };
    assert_eq!(most_calls, 2, "calls in flight at once");
    assert_eq!(most_bytes, 800 * KIB, "payload bytes in flight at once");
    // Every request was answered on its own stream.
    let mut answers = 0;
    for rx in [&mut rx1, &mut rx2] {
        let mut got = 0;
        while got < 3 {
            match tokio::time::timeout(Duration::from_secs(10), rx.message()).await {
                Ok(Ok(Some(batch))) => got += batch.responses.len(),
                other => panic!("after {got} answers: {other:?}"),
            }
        }
        answers += got;
    }
    assert_eq!(answers, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_ends_the_stream_with_a_status_naming_it() {
    let holder = Arc::new(Holder::default());
    let (_server, address) = serve(holder.clone(), limits(64 << 20, 8)).await;
    let (tx, rx) = open(&address, "oversize").await;
    let mut rx = rx.unwrap_or_else(|e| panic!("refused: {e}"));
    // One request that fits, answered; then a message of 17 MiB (the limit is 16).
    let sent = tx.send(requests(1, 1, 1024)).await;
    assert!(sent.is_ok());
    holder
        .wait("the first request", |h| h.dispatched == 1)
        .await;
    holder.answer_oldest();
    let sent = tx.send(requests(2, 1, 17 << 20)).await;
    assert!(sent.is_ok());
    let mut answers = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.message()).await {
            Ok(Ok(Some(batch))) => answers += batch.responses.len(),
            Ok(Err(status)) => break status,
            other => panic!("after {answers} answers: {other:?}"),
        }
    };
    assert_eq!(
        answers, 1,
        "the request before the oversized one is answered"
    );
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("refused a message from oversize")
            && status.message().contains("too large"),
        "{}",
        status.message()
    );
    assert_eq!(
        holder
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dispatched,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_past_its_streams_is_refused_with_resource_exhausted() {
    let holder = Arc::new(Holder::default());
    let (_server, address) = serve(holder, limits(1 << 20, 2)).await;
    let first = open(&address, "greedy").await;
    let second = open(&address, "greedy").await;
    assert!(first.1.is_ok() && second.1.is_ok());
    let third = open(&address, "greedy").await;
    let status = third.1.err().unwrap_or_else(|| panic!("a third stream"));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("greedy") && status.message().contains("max_streams_per_peer"),
        "{}",
        status.message()
    );
    // Another peer is not held back by this one.
    assert!(open(&address, "other").await.1.is_ok());
    // A closed stream frees its place (once the callee has seen it end).
    drop(first);
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if open(&address, "greedy").await.1.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "no stream again after one closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_wait_for_room_in_a_links_byte_queue_within_their_deadline() {
    // A peer that accepts connections and never answers: the link stays connecting,
    // holding what was queued.
    let (listener, address) = listener().await;
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let me = member("caller", "127.0.0.1:2");
    let peer = member("silent", &address);
    let view = Arc::new(TopologyView::new(me.clone()));
    let dialer = Arc::new(Dialer {
        cluster: CLUSTER.into(),
        member_id: me.id.clone(),
        address: me.address.clone(),
        max_message_bytes: 16 << 20,
        connect_timeout: Duration::from_secs(30),
        tls: None,
    });
    let link = PeerLink::spawn(
        LinkConfig {
            metrics: Arc::new(Metrics::new(None, &me)),
            dialer: dialer.clone(),
            queue: 100,
            queue_bytes: 1024 * KIB,
            max_batch: 8,
            max_batch_bytes: 8 << 20,
            reconnect: Backoff::default(),
            suspicion: Arc::new(Suspicion::new(view, Duration::from_millis(100), dialer)),
        },
        peer,
    );
    let link = Arc::new(link);
    let call = |bytes: usize, within: Duration| {
        let link = link.clone();
        let mut batch = requests(1, 1, bytes);
        let request = batch.requests.remove(0);
        async move {
            let deadline = tokio::time::Instant::now() + within;
            link.call(request, deadline).await
        }
    };
    // 600 KiB queued (it never leaves: the peer never answers the connection)...
    let first = tokio::spawn(call(600 * KIB, Duration::from_secs(60)));
    let queued = |want: usize| {
        let link = link.clone();
        async move {
            let waited = tokio::time::timeout(Duration::from_secs(10), async {
                while link.queued_bytes() != want {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(
                waited.is_ok(),
                "{} bytes queued, not {want}",
                link.queued_bytes()
            );
        }
    };
    queued(600 * KIB).await;
    // ...leaves no room for 600 KiB more: that caller waits, outside the queue, then
    // times out at its deadline...
    let started = tokio::time::Instant::now();
    let second = tokio::spawn(call(600 * KIB, Duration::from_millis(300)));
    let second = second.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(second, Err(CallError::Timeout { .. })),
        "{second:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(link.queued_bytes(), 600 * KIB, "the second was queued");
    // ...while a small one fits, and waits for the peer like the first.
    let third = tokio::spawn(call(100 * KIB, Duration::from_secs(60)));
    queued(700 * KIB).await;
    // Closing the link fails the queued calls as not run, and frees their bytes.
    link.close();
    for queued in [first, third] {
        let outcome = tokio::time::timeout(Duration::from_secs(10), queued).await;
        match outcome {
            Ok(Ok(Err(e))) => assert!(e.provably_not_run(), "{e:?}"),
            other => panic!("{other:?}"),
        }
    }
    silent.abort();
}
