//! One number through the cluster: `SayFizz(n)`, then `SayBuzz(n, answer)`, timed, in
//! a span of its own (`fizzbuzz.number`) when the client records spans.

use std::sync::Arc;
use std::time::Duration;

use grain::{CallError, CallOptions, Cluster, Tracing};
use opentelemetry::trace::{FutureExt, SpanBuilder, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use tokio::time::Instant;

use crate::proto::{BuzzRequest, BuzzServiceClient, FizzRequest, FizzServiceClient};

/// What became of one number.
pub(super) struct Outcome {
    /// The number.
    pub(super) number: i64,
    /// How long `SayFizz` took, when it answered.
    pub(super) fizz: Option<Duration>,
    /// How long `SayBuzz` took, when it answered.
    pub(super) buzz: Option<Duration>,
    /// The final message (empty: print the number), or why it failed.
    pub(super) result: Result<String, String>,
}

/// The name of the span of one number, the parent of its two calls.
const NUMBER_SPAN: &str = "fizzbuzz.number";

/// Calls `SayFizz(number)` then `SayBuzz(number, answer)` on `identity`; with
/// `tracing`, inside a root span `fizzbuzz.number` (the sampler decides whether the
/// number is traced, and its calls follow).
pub(super) async fn one_number(
    cluster: Cluster,
    identity: Arc<str>,
    number: i64,
    options: Arc<CallOptions>,
    tracing: Option<Tracing>,
) -> Outcome {
    let Some(tracing) = tracing else {
        return both_calls(cluster, identity, number, options).await;
    };
    let tracer = tracing.tracer();
    let builder = SpanBuilder::from_name(NUMBER_SPAN).with_kind(SpanKind::Internal);
    let span = tracer.build_with_context(builder, &Context::new());
    let cx = Context::new().with_span(span);
    let span = cx.span();
    if span.is_recording() {
        span.set_attribute(KeyValue::new("fizzbuzz.number", number));
        span.set_attribute(KeyValue::new("grain.identity", identity.to_string()));
    }
    let outcome = both_calls(cluster, identity, number, options)
        .with_context(cx.clone())
        .await;
    if let Err(reason) = &outcome.result {
        span.set_status(Status::error(reason.clone()));
    }
    span.end();
    outcome
}

async fn both_calls(
    cluster: Cluster,
    identity: Arc<str>,
    number: i64,
    options: Arc<CallOptions>,
) -> Outcome {
    let started = Instant::now();
    let fizz = FizzServiceClient::new(&cluster, identity.clone())
        .say_fizz_with(
            FizzRequest {
                number,
                message: String::new(),
            },
            &options,
        )
        .await;
    let fizz_took = started.elapsed();
    let fizz = match fizz {
        Ok(f) => f,
        Err(e) => return failed(number, None, "SayFizz", &identity, e),
    };
    let started = Instant::now();
    let buzz = BuzzServiceClient::new(&cluster, identity.clone())
        .say_buzz_with(
            BuzzRequest {
                number,
                message: fizz.message,
            },
            &options,
        )
        .await;
    let buzz_took = started.elapsed();
    match buzz {
        Ok(b) => Outcome {
            number,
            fizz: Some(fizz_took),
            buzz: Some(buzz_took),
            result: Ok(b.message),
        },
        Err(e) => failed(number, Some(fizz_took), "SayBuzz", &identity, e),
    }
}

fn failed(
    number: i64,
    fizz: Option<Duration>,
    method: &str,
    identity: &str,
    e: CallError,
) -> Outcome {
    Outcome {
        number,
        fizz,
        buzz: None,
        result: Err(format!(
            "number {number}: {method} on {identity} failed: {e}"
        )),
    }
}
