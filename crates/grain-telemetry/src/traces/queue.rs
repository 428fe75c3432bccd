//! Our limit in front of the SDK's batch span processor. The SDK drops spans when its
//! queue is full but only counts them internally; this processor keeps its own count
//! of spans queued (up when a span ends, down by the batch size when an export
//! starts), drops a span itself when the queue is full, and counts every span on
//! `otel.sdk.processor.span.processed` (OpenTelemetry's SDK self-observability
//! convention): with `error.type=queue_full` when dropped, without when handed to the
//! exporter. The SDK's own queue is as large as ours and never holds more than our
//! count, so it never drops a span on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Meter};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor,
};

use crate::config::BatchSettings;
use crate::export::FailureLog;
use crate::process::ProcessInstrument;

/// The counter's name, from the OpenTelemetry semantic conventions for SDK metrics.
pub(crate) const PROCESSED: &str = "otel.sdk.processor.span.processed";

/// The counter, as `docs/metrics.md` lists it.
pub(crate) const INSTRUMENT: ProcessInstrument = ProcessInstrument {
    name: PROCESSED,
    kind: "counter",
    unit: "{span}",
    attributes: &["otel.component.type", "error.type"],
    description: "Spans whose processing finished: handed to the exporter, or dropped \
        (error.type=queue_full) because the export queue was full.",
};

/// The queue count and the counter, shared by the processor and the exporter.
#[derive(Debug)]
struct Queue {
    queued: AtomicUsize,
    max: usize,
    processed: Counter<u64>,
    exported: [KeyValue; 1],
    full: [KeyValue; 2],
}

impl Queue {
    /// Takes a place in the queue, if there is one.
    fn enter(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back `n` places (a batch whose export starts).
    fn leave(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }
}

/// The SDK batch span processor over `exporter` with `settings`, behind our queue
/// limit; spans are counted on `meter`.
pub(super) fn processor<E>(
    exporter: E,
    failures: FailureLog,
    settings: &BatchSettings,
    meter: &Meter,
) -> QueueingProcessor
where
    E: SpanExporter + 'static,
{
    let processed = meter
        .u64_counter(INSTRUMENT.name)
        .with_description(INSTRUMENT.description)
        .with_unit(INSTRUMENT.unit)
        .build();
    let kind = KeyValue::new("otel.component.type", "batching_span_processor");
    let queue = Arc::new(Queue {
        queued: AtomicUsize::new(0),
        max: settings.max_queue_size,
        processed,
        exported: [kind.clone()],
        full: [kind, KeyValue::new("error.type", "queue_full")],
    });
    // Every setting explicitly: the builder's defaults read the OTEL_BSP_* variables
    // themselves, silently ignoring bad values. (The export timeout has no setter on
    // the thread-based processor, which ignores it.)
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(settings.max_queue_size)
        .with_max_export_batch_size(settings.max_export_batch_size)
        .with_scheduled_delay(settings.schedule_delay)
        .build();
    let exporter = GuardedSpanExporter {
        inner: exporter,
        failures,
        queue: queue.clone(),
    };
    QueueingProcessor {
        inner: BatchSpanProcessor::builder(exporter)
            .with_batch_config(config)
            .build(),
        queue,
    }
}

/// The span processor installed on the tracer provider.
#[derive(Debug)]
pub(crate) struct QueueingProcessor {
    inner: BatchSpanProcessor,
    queue: Arc<Queue>,
}

impl SpanProcessor for QueueingProcessor {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.queue.enter() {
            self.inner.on_end(span);
        } else {
            self.queue.processed.add(1, &self.queue.full);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The span exporter the batch processor drives: gives the batch's places back, counts
/// it, and explains failures in the log.
#[derive(Debug)]
struct GuardedSpanExporter<E> {
    inner: E,
    failures: FailureLog,
    queue: Arc<Queue>,
}

impl<E: SpanExporter> SpanExporter for GuardedSpanExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.queue.leave(n);
        self.queue
            .processed
            .add(u64::try_from(n).unwrap_or(u64::MAX), &self.queue.exported);
        let result = self.inner.export(batch).await;
        self.failures.record(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::mpsc;
    use std::sync::{Condvar, Mutex};

    /// An exporter that says when an export starts, then waits until the gate opens.
    #[derive(Debug)]
    struct Gated {
        started: mpsc::Sender<usize>,
        gate: Arc<Gate>,
    }

    #[derive(Debug, Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
    }

    impl Gate {
        fn open(&self) {
            if let Ok(mut open) = self.open.lock() {
                *open = true;
            }
            self.opened.notify_all();
        }
    }

    /// Opens the gate when the test ends, even by a panic, so the worker can stop.
    struct OpenOnDrop(Arc<Gate>);

    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    impl SpanExporter for Gated {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let _ = self.started.send(batch.len());
            let mut open = self
                .gate
                .open
                .lock()
                .unwrap_or_else(|e| panic!("gate: {e}"));
            while !*open {
                open = self
                    .gate
                    .opened
                    .wait(open)
                    .unwrap_or_else(|e| panic!("gate: {e}"));
            }
            Ok(())
        }
    }

    /// The counter's value for the data point with exactly `error_type` (or none).
    fn processed(metrics: &InMemoryMetricExporter, error_type: Option<&str>) -> u64 {
        let all = metrics
            .get_finished_metrics()
            .unwrap_or_else(|e| panic!("metrics: {e}"));
        let Some(last) = all.last() else {
            return 0;
        };
        let mut total = 0;
        for scope in last.scope_metrics() {
            for metric in scope.metrics().filter(|m| m.name() == PROCESSED) {
                let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
                    panic!("{PROCESSED} is not a u64 sum");
                };
                for point in sum.data_points() {
                    let kind = point
                        .attributes()
                        .find(|kv| kv.key.as_str() == "otel.component.type")
                        .map(|kv| kv.value.to_string());
                    assert_eq!(kind.as_deref(), Some("batching_span_processor"));
                    let error = point
                        .attributes()
                        .find(|kv| kv.key.as_str() == "error.type")
                        .map(|kv| kv.value.to_string());
                    if error.as_deref() == error_type {
                        total += point.value();
                    }
                }
            }
        }
        total
    }

    #[test]
    fn spans_beyond_the_queue_are_dropped_and_counted_as_queue_full() {
        let metrics = InMemoryMetricExporter::default();
        let meters = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        let (started, export_started) = mpsc::channel();
        let gate = Arc::new(Gate::default());
        let _open = OpenOnDrop(gate.clone());
        let queue = 2;
        let settings = BatchSettings {
            // Export as soon as one span is queued; never on the timer.
            max_queue_size: queue,
            max_export_batch_size: 1,
            schedule_delay: Duration::from_secs(3600),
            ..BatchSettings::SPANS
        };
        let exporter = Gated {
            started,
            gate: gate.clone(),
        };
        let failures = FailureLog::new("traces", "test".into(), false);
        let processor = processor(exporter, failures, &settings, &meters.meter("test"));
        let tracer_provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .build();
        let tracer = tracer_provider.tracer("test");

        // The first span goes to the exporter, which holds it: the queue is empty again.
        tracer.start("first").end();
        let first = export_started
            .recv()
            .unwrap_or_else(|e| panic!("no export started: {e}"));
        assert_eq!(first, 1);
        // While the export hangs, the queue fills up, and then spans are dropped.
        let dropped = 3;
        for _ in 0..queue + dropped {
            tracer.start("later").end();
        }
        meters
            .force_flush()
            .unwrap_or_else(|e| panic!("flush: {e}"));
        assert_eq!(processed(&metrics, Some("queue_full")), dropped as u64);
        assert_eq!(processed(&metrics, None), 1);

        // Once the exporter moves again, the queued spans are exported and counted.
        gate.open();
        tracer_provider
            .shutdown()
            .unwrap_or_else(|e| panic!("shutdown: {e}"));
        meters
            .force_flush()
            .unwrap_or_else(|e| panic!("flush: {e}"));
        assert_eq!(processed(&metrics, None), 1 + queue as u64);
        assert_eq!(processed(&metrics, Some("queue_full")), dropped as u64);
        let exports: usize = export_started.try_iter().sum();
        assert_eq!(exports, queue);
    }
}
