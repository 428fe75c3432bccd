//! Entry points for `cargo fuzz` (the `fuzz/` directory of the repository), compiled
//! only with the off-by-default feature `fuzzing`. Each takes bytes as a peer would
//! send them and runs the code that reads them; none panics on any input (a panic is
//! a bug, and the fuzzer reports it).
//!
//! - [`request_batch`]: a `RequestBatch` as a caller writes it, through the callee's
//!   real path: the gRPC decoder, the `Remote/Open` stream of a running member
//!   (in-memory membership, one member, tracing and metrics on) and what it does with
//!   each envelope — kind, identity, owner, method, headers (trace context), deadline,
//!   payload — down to a grain and the answers written back.
//! - [`response_batch`]: a `ResponseBatch` as a callee writes it: each response turned
//!   into a call outcome, as the caller does, and back into a wire response.
//! - [`handshake`]: the handshake metadata of `Remote/Open` (cluster, member id,
//!   address, protocol version), checked as the callee and the caller check it.
//!
//! The member runs on a single-threaded runtime whose clock is paused (time moves only
//! when every task waits), so deadlines and sleeps cost no real time and a run is
//! repeatable.
#![doc(hidden)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{BufMut, Bytes};
use futures::StreamExt;
use opentelemetry::global::BoxedTracer;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use tonic::codec::{EncodeBody, EncodeBuf, Encoder, Streaming};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};
use tonic_prost::ProstDecoder;

use crate::config::NodeConfig;
use crate::context::GrainContext;
use crate::grain::{Code, Grain, GrainError, Kind};
use crate::identity::MemberId;
use crate::inbound::Inbound;
use crate::membership::InMemoryMembership;
use crate::node::Node;
use crate::remote::pb::remote_server::Remote;
use crate::remote::{self, HDR_ADDRESS, HDR_CLUSTER, HDR_MEMBER_ID, HDR_PROTOCOL, pb};
use crate::remote::{Leave, RemoteService, ServerLimits};

/// The cluster the fuzzed member belongs to.
const CLUSTER: &str = "fuzz";
/// The caller the fuzzed requests come from.
const PEER: &str = "fuzz-peer";
/// The largest message the member accepts (as [`NodeConfig::max_message_bytes`]).
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// The longest a fuzzed grain sleeps (past every deadline worth fuzzing).
const SLEEP_MAX: Duration = Duration::from_secs(2);
/// How long after its answers an input waits for its activations to passivate:
/// `SLEEP_MAX`, then the kinds' idle timeout (1 s) and a sweep, with room to spare.
const LEFT_BEHIND: Duration = Duration::from_secs(10);

/// Methods of the grain kinds the fuzzed member hosts (`Fuzz`, and `Flaky`, whose
/// activation fails for identities starting with `x`).
pub const METHODS: &[&str] = &[
    "fuzz.v1.Fuzz/Echo",
    "fuzz.v1.Fuzz/Decode",
    "fuzz.v1.Fuzz/Fail",
    "fuzz.v1.Fuzz/Sleep",
];

/// Starts the member [`request_batch`] and [`handshake`] talk to (once; later calls
/// answer the first one's result). A fuzz target calls it in its `init`, so that a
/// member that cannot start is reported instead of fuzzing nothing.
pub fn init() -> Result<(), String> {
    harness().map(|_| ())
}

/// Decodes `bytes` as one `RequestBatch` message of a caller's `Remote/Open` stream
/// and serves it as the member would, until every request is answered.
pub fn request_batch(bytes: &[u8]) {
    let Ok(h) = harness() else { return };
    let message = Bytes::copy_from_slice(bytes);
    h.block_on(h.serve(handshake_metadata(), message));
}

/// Decodes `bytes` as one `ResponseBatch` and turns each response into the outcome its
/// caller gets, and that outcome back into the response a callee writes.
pub fn response_batch(bytes: &[u8]) {
    let Ok(batch) = pb::ResponseBatch::decode(bytes) else {
        return;
    };
    let member = MemberId::new("fuzz-callee");
    let started = tokio::time::Instant::now();
    for r in batch.responses {
        let outcome = remote::outcome(&member, started, r.result);
        if let Err(e) = &outcome {
            let _ = (e.to_string(), e.code(), e.provably_not_run());
        }
        let _ = remote::response(r.correlation_id, outcome).encoded_len();
    }
}

/// Checks handshake metadata made of `bytes`: up to four values separated by `\n` —
/// `grain-protocol`, `grain-cluster`, `grain-member-id`, `grain-address` — each left
/// out when it is not a valid header value (HTTP/2 carries no such header). The
/// protocol header is checked as both ends check it, then the whole metadata is
/// presented to the member's `Remote/Open`.
pub fn handshake(bytes: &[u8]) {
    let mut md = MetadataMap::new();
    let keys = [HDR_PROTOCOL, HDR_CLUSTER, HDR_MEMBER_ID, HDR_ADDRESS];
    for (key, value) in keys.into_iter().zip(bytes.split(|b| *b == b'\n')) {
        if let Ok(v) = MetadataValue::try_from(value) {
            md.insert(key, v);
        }
    }
    for who in ["caller", "callee"] {
        let _ = remote::check_protocol(md.get(HDR_PROTOCOL).map(|v| v.to_str()), who);
    }
    let Ok(h) = harness() else { return };
    h.block_on(h.serve(md, Bytes::new()));
}

/// The running member and what serves its `Remote/Open`.
struct Harness {
    runtime: tokio::runtime::Runtime,
    service: RemoteService,
    /// The member's activations: each input waits until they are all gone.
    catalog: Arc<crate::catalog::Catalog>,
    /// Kept running for the life of the process.
    _node: Node,
    _metrics: SdkMeterProvider,
}

fn harness() -> Result<&'static Harness, String> {
    static HARNESS: OnceLock<Result<Harness, String>> = OnceLock::new();
    HARNESS
        .get_or_init(Harness::start)
        .as_ref()
        .map_err(Clone::clone)
}

impl Harness {
    fn start() -> Result<Harness, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .map_err(|e| format!("cannot build the runtime: {e}"))?;
        // Metrics recorded for real (bound instruments included), exported nowhere.
        let metrics = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(Discard)
                    .with_interval(Duration::from_secs(3600))
                    .build(),
            )
            .build();
        let tracer = SdkTracerProvider::builder().build().tracer("grain-fuzz");
        let propagator = TextMapCompositePropagator::new(vec![
            Box::new(TraceContextPropagator::new()),
            Box::new(BaggagePropagator::new()),
        ]);
        let config = NodeConfig {
            cluster_name: CLUSTER.into(),
            member_id: Some("fuzz-owner".into()),
            meter: Some(metrics.meter("grain-fuzz")),
            tracing: Some(crate::trace::Tracing::new(
                BoxedTracer::new(Box::new(tracer)),
                Arc::new(propagator),
            )),
            max_message_bytes: MAX_MESSAGE_BYTES,
            ..NodeConfig::default()
        };
        let limits = ServerLimits::of(&config);
        let idle = Duration::from_secs(1);
        let kinds = vec![
            Kind::new("Fuzz", |_| FuzzGrain).idle_timeout(idle),
            Kind::new("Flaky", |_| FuzzGrain).idle_timeout(idle),
        ];
        let provider = Arc::new(InMemoryMembership::new(Duration::from_secs(30)));
        let node = runtime.block_on(async {
            let node = Node::start(config, kinds, provider)
                .await
                .map_err(|e| format!("the fuzzed member did not start: {e}"))?;
            node.cluster()
                .wait_for_kinds(&["Fuzz", "Flaky"], Duration::from_secs(60))
                .await
                .map_err(|e| format!("the fuzzed member never listed itself: {e:?}"))?;
            Ok::<_, String>(node)
        })?;
        let cluster = node.cluster();
        let catalog = cluster.shared.catalog.clone();
        let metrics_of_node = cluster.shared.metrics.clone();
        let inbound = Arc::new(Inbound::new(cluster));
        let service =
            RemoteService::new(inbound, limits, metrics_of_node, Arc::new(Leave::default()));
        Ok(Harness {
            runtime,
            service,
            catalog,
            _node: node,
            _metrics: metrics,
        })
    }

    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// Opens a stream with handshake `md` whose one message is `message` (if not
    /// empty), and reads the answers until the member has answered every request;
    /// then lets the activations it made passivate: an input leaves nothing behind
    /// (activations still running a sleep whose call timed out had piled up, their
    /// timers and catalog entries slowing every later input).
    async fn serve(&self, md: MetadataMap, message: Bytes) {
        let messages: Vec<Result<Bytes, Status>> = if message.is_empty() {
            Vec::new()
        } else {
            vec![Ok(message)]
        };
        let body = EncodeBody::new_client(Raw, futures::stream::iter(messages), None, None);
        let decoder = ProstDecoder::<pb::RequestBatch>::default();
        let inbound = Streaming::new_request(decoder, body, None, Some(MAX_MESSAGE_BYTES));
        let mut request = Request::new(inbound);
        *request.metadata_mut() = md;
        if let Ok(response) = self.service.open(request).await {
            let mut answers = response.into_inner();
            while let Some(batch) = answers.next().await {
                if let Ok(b) = batch {
                    let _ = b.encoded_len();
                }
            }
        }
        // A grain sleeps at most SLEEP_MAX and is swept once idle for its timeout:
        // every activation is gone well within LEFT_BEHIND of (paused) time.
        let until = tokio::time::Instant::now() + LEFT_BEHIND;
        while self.catalog.live_count() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The metadata of a caller of this cluster speaking this protocol.
fn handshake_metadata() -> MetadataMap {
    let mut md = MetadataMap::new();
    md.insert(HDR_CLUSTER, MetadataValue::from_static(CLUSTER));
    md.insert(HDR_MEMBER_ID, MetadataValue::from_static(PEER));
    md.insert(HDR_ADDRESS, MetadataValue::from_static("127.0.0.1:1"));
    md.insert(HDR_PROTOCOL, MetadataValue::from(remote::PROTOCOL_VERSION));
    md
}

/// Writes a message's bytes as they are: the gRPC frame around them is tonic's.
struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

/// A metrics exporter that drops what it is given.
struct Discard;

impl PushMetricExporter for Discard {
    async fn export(&self, _: &ResourceMetrics) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}

/// The grain behind every fuzzed call: its methods read the payload as grains do.
struct FuzzGrain;

#[async_trait]
impl Grain for FuzzGrain {
    async fn activated(&mut self, ctx: &GrainContext) -> Result<(), GrainError> {
        let id = ctx.identity();
        if id.kind() == "Flaky" && id.identity().starts_with('x') {
            return Err(GrainError::internal("this activation fails"));
        }
        Ok(())
    }

    async fn handle(
        &mut self,
        ctx: &GrainContext,
        method: &str,
        payload: Bytes,
    ) -> Result<Bytes, GrainError> {
        match method {
            "fuzz.v1.Fuzz/Echo" => Ok(payload),
            "fuzz.v1.Fuzz/Decode" => {
                let s: prost_types::Struct = crate::codegen::decode(method, payload)?;
                Ok(crate::codegen::encode(&s))
            }
            "fuzz.v1.Fuzz/Fail" => {
                let code = payload.first().map_or(2, |b| i32::from(*b));
                let message = String::from_utf8_lossy(payload.get(1..).unwrap_or(&[]));
                Err(GrainError::new(Code::from_i32(code), message))
            }
            "fuzz.v1.Fuzz/Sleep" => {
                let ms = payload
                    .iter()
                    .take(4)
                    .fold(0u64, |n, b| n << 8 | u64::from(*b));
                tokio::time::sleep(Duration::from_millis(ms).min(SLEEP_MAX)).await;
                // What a nested call would carry on: the deadline and trace context.
                let options = ctx.call_options();
                let headers: &HashMap<String, String> = &options.headers;
                Ok(Bytes::from(format!("{:?} {headers:?}", ctx.remaining())))
            }
            _ => Err(GrainError::unimplemented(method)),
        }
    }
}
