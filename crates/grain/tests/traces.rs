//! The spans of grain calls, recorded on the tracer each member is handed (an SDK
//! tracer provider per member with an in-memory exporter), their trace context carried
//! in the envelopes between members over real tonic on loopback.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use grain::membership::InMemoryMembership;
use grain::{CallOptions, ClusterIdentity, Kind, Node, NodeConfig, Tracing};
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{SpanKind, Status, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};

const TTL: Duration = Duration::from_secs(2);
const HOOKED: &str = "Hooked";

/// A grain whose `activated` hook calls the counter identity named by its own
/// identity: calls made outside any turn must still continue the caller's trace.
struct HookedGrain {
    inner: ClusterIdentity,
}

#[async_trait::async_trait]
impl grain::Grain for HookedGrain {
    async fn activated(&mut self, ctx: &grain::GrainContext) -> Result<(), grain::GrainError> {
        let answer = ctx.cluster().call(&self.inner, ADD, Bytes::new()).await;
        answer
            .map(|_| ())
            .map_err(|e| grain::GrainError::internal(e.to_string()))
    }

    async fn handle(
        &mut self,
        _ctx: &grain::GrainContext,
        _method: &str,
        _payload: Bytes,
    ) -> Result<Bytes, grain::GrainError> {
        Ok(Bytes::new())
    }
}

fn hooked_kind() -> Kind {
    Kind::new(HOOKED, |id: &ClusterIdentity| HookedGrain {
        inner: ClusterIdentity::new(COUNTER, id.identity().to_string()),
    })
}

/// One member's tracer provider and what it exported.
struct Traced {
    provider: SdkTracerProvider,
    exporter: InMemorySpanExporter,
    /// The sampler never samples under an unsampled parent: the runtime is told so
    /// (and then makes no span object there).
    follows_parent: bool,
}

impl Traced {
    fn new(sampler: Sampler) -> Self {
        let follows_parent = matches!(sampler, Sampler::ParentBased(_) | Sampler::AlwaysOff);
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(sampler)
            .build();
        Traced {
            provider,
            exporter,
            follows_parent,
        }
    }

    fn tracing(&self) -> Tracing {
        let tracer = BoxedTracer::new(Box::new(self.provider.tracer("grain-test")));
        Tracing::new(tracer, Arc::new(TraceContextPropagator::new()))
            .parent_based(self.follows_parent)
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter
            .get_finished_spans()
            .unwrap_or_else(|e| panic!("in-memory exporter: {e}"))
    }
}

async fn start(
    name: &str,
    prefix: &str,
    kinds: Vec<Kind>,
    traced: &Traced,
    provider: &InMemoryMembership,
) -> Node {
    let config = NodeConfig {
        tracing: Some(traced.tracing()),
        ..config(name, prefix)
    };
    Node::start(config, kinds, Arc::new(provider.clone()))
        .await
        .unwrap_or_else(|e| panic!("{prefix} did not start: {e}"))
}

/// Two members hosting the counter, each with its own tracer.
async fn two_members(name: &str, samplers: [Sampler; 2]) -> (Vec<Node>, Vec<Traced>) {
    let provider = InMemoryMembership::new(TTL);
    let traced: Vec<Traced> = samplers.into_iter().map(Traced::new).collect();
    let mut nodes = Vec::new();
    for (i, t) in traced.iter().enumerate() {
        let kinds = vec![counter_kind(), hooked_kind()];
        nodes.push(start(name, &format!("m{i}"), kinds, t, &provider).await);
    }
    for node in &nodes {
        let all = node
            .cluster()
            .wait_until(Duration::from_secs(5), |t| t.members().len() == 2)
            .await;
        assert!(all, "{} did not see both members", node.member().id);
    }
    (nodes, traced)
}

/// An identity of the counter that `owner` owns.
fn owned_by(node: &Node, owner: &Node, prefix: &str) -> ClusterIdentity {
    owned_of(COUNTER, node, owner, prefix)
}

/// An identity of `kind` that `owner` owns, as `node` sees it.
fn owned_of(kind: &str, node: &Node, owner: &Node, prefix: &str) -> ClusterIdentity {
    (0..1000)
        .map(|i| ClusterIdentity::new(kind, format!("{prefix}{i}")))
        .find(|id| node.cluster().owner_of(id).map(|m| m.id) == Some(owner.member().id.clone()))
        .unwrap_or_else(|| panic!("no identity owned by {}", owner.member().id))
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

fn one<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    let found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && s.span_kind == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "want one {kind:?} span {name}, got {}: {:?}",
        found.len(),
        spans
            .iter()
            .map(|s| (&s.name, &s.span_kind))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn is_child(child: &SpanData, parent: &SpanData) -> bool {
    child.span_context.trace_id() == parent.span_context.trace_id()
        && child.parent_span_id == parent.span_context.span_id()
}

async fn shutdown(nodes: Vec<Node>) {
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_call_is_a_child_of_the_call_that_made_it_across_members() {
    let (nodes, traced) = two_members("trace-nested", [Sampler::AlwaysOn, Sampler::AlwaysOn]).await;
    let outer = owned_by(&nodes[0], &nodes[1], "outer");
    let inner = owned_by(&nodes[0], &nodes[0], "inner");
    // Called from m0: runs on m1, which calls `inner` back on m0.
    let answer = nodes[0]
        .cluster()
        .call(
            &outer,
            NESTED_REMAINING,
            Bytes::from(inner.identity().to_string()),
        )
        .await;
    answer.unwrap_or_else(|e| panic!("nested call failed: {e}"));
    let (m0, m1) = (traced[0].spans(), traced[1].spans());

    let outer_client = one(&m0, NESTED_REMAINING, SpanKind::Client);
    let outer_server = one(&m1, NESTED_REMAINING, SpanKind::Server);
    let inner_client = one(&m1, REMAINING, SpanKind::Client);
    let inner_server = one(&m0, REMAINING, SpanKind::Server);
    assert_eq!(
        outer_client.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );
    assert!(
        is_child(outer_server, outer_client),
        "outer SERVER under outer CLIENT"
    );
    assert!(
        outer_server.parent_span_is_remote,
        "the outer SERVER span's parent came over the wire"
    );
    assert!(
        is_child(inner_client, outer_server),
        "the nested CLIENT span under the SERVER span of the call that made it"
    );
    assert!(
        is_child(inner_server, inner_client),
        "inner SERVER under inner CLIENT"
    );

    // Both calls activated their grain: an activation span under each SERVER span.
    let activate = "activate Counter";
    let outer_activation = one(&m1, activate, SpanKind::Internal);
    let inner_activation = one(&m0, activate, SpanKind::Internal);
    assert!(is_child(outer_activation, outer_server));
    assert!(is_child(inner_activation, inner_server));

    for (span, owner, caller) in [
        (outer_server, &nodes[1], &nodes[0]),
        (inner_server, &nodes[0], &nodes[1]),
    ] {
        assert_eq!(attr(span, "rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(attr(span, "rpc.method"), Some(span.name.to_string()));
        assert_eq!(
            attr(span, "rpc.response.status_code").as_deref(),
            Some("OK")
        );
        assert_eq!(attr(span, "grain.kind").as_deref(), Some(COUNTER));
        assert_eq!(
            attr(span, "grain.owner.member_id"),
            Some(owner.member().id.to_string())
        );
        assert_eq!(
            attr(span, "grain.caller.member_id"),
            Some(caller.member().id.to_string())
        );
        assert_eq!(span.status, Status::Unset);
    }
    assert_eq!(
        attr(outer_client, "grain.identity"),
        Some(outer.identity().to_string())
    );
    let address = &nodes[1].member().address;
    let port = address.rsplit_once(':').map(|(_, p)| p.to_string());
    assert_eq!(attr(outer_client, "server.port"), port);
    assert_eq!(attr(outer_client, "grain.attempts").as_deref(), Some("1"));
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_call_has_an_error_status_with_its_code() {
    let (nodes, traced) = two_members("trace-error", [Sampler::AlwaysOn, Sampler::AlwaysOn]).await;
    let target = owned_by(&nodes[0], &nodes[1], "failing");
    let failed = nodes[0].cluster().call(&target, FAIL, Bytes::new()).await;
    assert!(failed.is_err(), "Fail must fail");
    let panicked = nodes[0].cluster().call(&target, PANIC, Bytes::new()).await;
    assert!(panicked.is_err(), "Panic must fail");
    let (m0, m1) = (traced[0].spans(), traced[1].spans());

    let client = one(&m0, FAIL, SpanKind::Client);
    assert_eq!(
        attr(client, "rpc.response.status_code").as_deref(),
        Some("FAILED_PRECONDITION")
    );
    assert_eq!(
        attr(client, "error.type").as_deref(),
        Some("FAILED_PRECONDITION")
    );
    match &client.status {
        Status::Error { description } => {
            assert!(description.contains("counter is closed"), "{description}")
        }
        other => panic!("the CLIENT span of a failed call has status {other:?}"),
    }
    // On the server, a grain refusing a call is not the server failing (OpenTelemetry's
    // gRPC conventions); a panic is.
    let server = one(&m1, FAIL, SpanKind::Server);
    assert_eq!(
        attr(server, "rpc.response.status_code").as_deref(),
        Some("FAILED_PRECONDITION")
    );
    assert_eq!(server.status, Status::Unset);
    let panic_server = one(&m1, PANIC, SpanKind::Server);
    assert_eq!(
        attr(panic_server, "rpc.response.status_code").as_deref(),
        Some("INTERNAL")
    );
    assert!(
        matches!(panic_server.status, Status::Error { .. }),
        "{:?}",
        panic_server.status
    );
    shutdown(nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_call_shows_its_retries() {
    let provider = InMemoryMembership::new(TTL);
    let (caller_t, host_t) = (
        Traced::new(Sampler::AlwaysOn),
        Traced::new(Sampler::AlwaysOn),
    );
    // The caller hosts nothing: until a member hosting the counter joins, attempts find
    // no member for the kind and are retried.
    let caller = start("trace-retry", "caller", vec![], &caller_t, &provider).await;
    let options = CallOptions::default()
        .with_timeout(Duration::from_secs(20))
        .with_max_attempts(1000);
    let cluster = caller.cluster().clone();
    let target = ClusterIdentity::new(COUNTER, "late");
    let call = tokio::spawn(async move {
        cluster
            .call_with(&target, ADD, Bytes::new(), &options)
            .await
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while caller.cluster().retries().get("no_member") == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the call was never retried"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let host = start(
        "trace-retry",
        "host",
        vec![counter_kind()],
        &host_t,
        &provider,
    )
    .await;
    let answer = call.await.unwrap_or_else(|e| panic!("call task: {e}"));
    answer.unwrap_or_else(|e| panic!("the call failed after the host joined: {e}"));

    let spans = caller_t.spans();
    let client = one(&spans, ADD, SpanKind::Client);
    let retries: Vec<HashMap<String, String>> = client
        .events
        .iter()
        .filter(|e| e.name == "retry")
        .map(|e| {
            e.attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect()
        })
        .collect();
    assert!(!retries.is_empty(), "no retry event on the CLIENT span");
    for (i, r) in retries.iter().enumerate() {
        assert_eq!(
            r.get("grain.retry.reason").map(String::as_str),
            Some("no_member")
        );
        assert_eq!(r.get("grain.retry.attempt"), Some(&(i + 1).to_string()));
    }
    let attempts = attr(client, "grain.attempts");
    assert_eq!(attempts, Some((retries.len() + 1).to_string()));
    assert_eq!(
        client.status,
        Status::Unset,
        "the call succeeded in the end"
    );
    let host_spans = host_t.spans();
    let server = one(&host_spans, ADD, SpanKind::Server);
    assert!(
        is_child(server, client),
        "the answering attempt's SERVER span under the CLIENT span"
    );
    shutdown(vec![caller, host]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsampled_call_is_recorded_nowhere() {
    // The caller samples nothing; the owner follows its parent's sampled flag.
    let (nodes, traced) = two_members(
        "trace-unsampled",
        [
            Sampler::AlwaysOff,
            Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        ],
    )
    .await;
    let target = owned_by(&nodes[0], &nodes[1], "quiet");
    let inner = owned_by(&nodes[0], &nodes[0], "quiet-inner");
    let answer = nodes[0]
        .cluster()
        .call(
            &target,
            NESTED_REMAINING,
            Bytes::from(inner.identity().to_string()),
        )
        .await;
    answer.unwrap_or_else(|e| panic!("call failed: {e}"));
    // A call made by an `activated` hook (outside any turn) follows the same flag.
    let hooked = owned_of(HOOKED, &nodes[0], &nodes[1], "quiet-hook");
    let activated = nodes[0].cluster().call(&hooked, "any", Bytes::new()).await;
    activated.unwrap_or_else(|e| panic!("call to the hooked grain failed: {e}"));
    assert!(traced[0].spans().is_empty(), "the caller recorded spans");
    assert!(
        traced[1].spans().is_empty(),
        "the owner recorded spans of a call its caller did not sample: {:?}",
        traced[1]
            .spans()
            .iter()
            .map(|s| &s.name)
            .collect::<Vec<_>>()
    );
    // The same owner, called by a sampling root, records (the sampler is not just off).
    let sampled = nodes[1].cluster().call(&target, ADD, Bytes::new()).await;
    sampled.unwrap_or_else(|e| panic!("call failed: {e}"));
    one(&traced[1].spans(), ADD, SpanKind::Server);
    shutdown(nodes).await;
}
