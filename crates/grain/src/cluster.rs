//! The caller's side of a grain call: [`Cluster`], the cheap handle through which code
//! calls grains anywhere in the cluster — placement over the current topology, the
//! local catalog or the link to the owner, attempts and retries — and looks at the
//! topology.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::call::CallOptions;
use crate::catalog::{Catalog, InFlight, Invocation};
use crate::config::{MAX_ENVELOPE_META_BYTES, NodeConfig};
use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::{Code, GrainError};
use crate::identity::{ClusterIdentity, Member, Topology};
use crate::metrics::{ClientMeters, Metrics};
use crate::remote::{Links, pb};
pub use crate::retry::RetryCounts;
use crate::retry::{RetryCounters, RetryReason, retry_reason};
use crate::suspicion::Suspicion;
use crate::topology::TopologyView;
use crate::trace;

/// What every handle on one member shares.
pub(crate) struct Shared {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) config: NodeConfig,
    pub(crate) me: Member,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) inflight: Arc<InFlight>,
    pub(crate) topology: Arc<TopologyView>,
    pub(crate) links: Arc<Links>,
    pub(crate) suspicion: Arc<Suspicion>,
    pub(crate) retries: RetryCounters,
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

    /// How many times this member's calls were retried, by reason, since it started.
    pub fn retries(&self) -> RetryCounts {
        let counts = RetryReason::ALL
            .iter()
            .zip(&self.shared.retries.0)
            .map(|(r, n)| (r.as_str(), n.load(Ordering::Relaxed)))
            .collect();
        RetryCounts { counts }
    }

    /// Where this member records spans ([`crate::NodeConfig::tracing`]), if anywhere.
    pub fn tracing(&self) -> Option<&crate::trace::Tracing> {
        self.shared.config.tracing.as_ref()
    }

    /// The options used by [`Cluster::call`].
    pub fn call_defaults(&self) -> &CallOptions {
        &self.shared.config.call_defaults
    }

    /// The current topology as this member sees it.
    pub fn topology(&self) -> Topology {
        self.shared.topology.load().topology().clone()
    }

    /// The member that owns `id` under the current topology.
    pub fn owner_of(&self, id: &ClusterIdentity) -> Option<Member> {
        self.shared
            .topology
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
        let mut rx = self.shared.topology.subscribe();
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
    /// provably did not run — or, for an idempotent method
    /// ([`CallOptions::idempotent`]), also when an attempt may have run; a retry waits
    /// for the backoff or a topology change, whichever comes first.
    pub async fn call_with(
        &self,
        id: &ClusterIdentity,
        method: &str,
        payload: Bytes,
        options: &CallOptions,
    ) -> Result<Bytes, CallError> {
        self.call_with_idempotency(id, method, payload, options, options.idempotent)
            .await
    }

    /// [`Cluster::call_with`], with `idempotent` saying whether the method may run more
    /// than once (generated clients pass what the `.proto` declares).
    pub(crate) async fn call_with_idempotency(
        &self,
        id: &ClusterIdentity,
        method: &str,
        payload: Bytes,
        options: &CallOptions,
        idempotent: bool,
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
        let call = Call {
            id,
            method,
            payload,
            options,
            idempotent,
            deadline,
            meters: self.shared.metrics.client_meters(id.kind_arc(), method),
        };
        let Some(tracing) = self.shared.config.tracing.as_ref() else {
            check_addressing(id, method, &options.headers)?;
            if let Some(m) = &call.meters {
                self.shared.metrics.future_started(m);
            }
            let run = self.attempts(&call, &options.headers, None).await;
            return self.finished(&call, run, started, None);
        };
        let (cx, attach) = tracing.client_span(id, method, &options.headers, &self.shared.me.id);
        let mut headers = options.headers.clone();
        tracing.inject(&cx, &mut headers);
        // Checked with the trace context in: it travels in the same envelope.
        if let Err(e) = check_addressing(id, method, &headers) {
            let failed = Err(e);
            trace::end_client(&cx, &failed, None, 0);
            return failed;
        }
        if let Some(m) = &call.meters {
            self.shared.metrics.future_started(m);
        }
        let attempts = self.attempts(&call, &headers, Some(&cx));
        let run = if attach {
            attempts.with_context(cx.clone()).await
        } else {
            attempts.await
        };
        self.finished(&call, run, started, Some(&cx))
    }

    /// The trace-context headers of a call made while handling one that arrived with
    /// `incoming` headers: the context of that call's SERVER span `span` when this
    /// member records spans, else the context it arrived with.
    pub(crate) fn nested_headers(
        &self,
        span: Option<&opentelemetry::Context>,
        incoming: &HashMap<String, String>,
    ) -> HashMap<String, String> {
        match (span, &self.shared.config.tracing) {
            (Some(cx), Some(t)) => t.nested_headers(cx),
            _ => trace::context_headers(incoming),
        }
    }

    /// Records the end of a call (metrics, and its CLIENT span `span`) and answers its
    /// result; a timeout says how long the whole call took.
    fn finished(
        &self,
        call: &Call<'_>,
        run: Run,
        started: Instant,
        span: Option<&opentelemetry::Context>,
    ) -> Result<Bytes, CallError> {
        let took = started.elapsed();
        let (outcome, result) = match run.result {
            Ok(answer) => ("ok", Ok(answer)),
            Err(CallError::Timeout { target, .. }) => (
                "timeout",
                Err(CallError::Timeout {
                    target,
                    after: took,
                }),
            ),
            Err(e) => ("error", Err(e)),
        };
        if let Some(meters) = &call.meters {
            let metrics = &self.shared.metrics;
            metrics.future_finished(meters, run.source, outcome, took);
            let code = result.as_ref().err().map_or(Code::Ok, CallError::code);
            let owner = run.owner.as_ref().map(|m| m.address.as_str());
            metrics.client_call(meters, code, owner, took);
        }
        if let Some(cx) = span {
            trace::end_client(cx, &result, run.owner.as_ref(), run.attempts);
        }
        result
    }

    /// Makes attempts until one answers, fails for good, or the deadline passes; each
    /// carries `headers`. Retries are counted, and recorded on the CLIENT span `span`.
    async fn attempts(
        &self,
        call: &Call<'_>,
        headers: &HashMap<String, String>,
        span: Option<&opentelemetry::Context>,
    ) -> Run {
        let (id, method, options) = (call.id, call.method, call.options);
        let mut topology_changes = self.shared.topology.subscribe();
        let mut attempt: u32 = 0;
        let mut source = "lookup";
        loop {
            attempt += 1;
            let attempt_deadline = options
                .attempt_timeout
                .map_or(call.deadline, |t| (Instant::now() + t).min(call.deadline));
            topology_changes.mark_unchanged();
            let (result, from, owner) = self
                .attempt(call, call.payload.clone(), headers, attempt_deadline)
                .await;
            if attempt == 1 {
                source = from;
            }
            let reason = match &result {
                Err(e) if attempt < options.max_attempts.max(1) => retry_reason(e, call.idempotent),
                _ => None,
            };
            let pause = options.backoff.delay(attempt);
            let retry = match (&result, reason) {
                (Err(e), Some(reason)) if Instant::now() + pause < call.deadline => {
                    Some((e, reason))
                }
                _ => None,
            };
            let Some((e, reason)) = retry else {
                return Run {
                    result,
                    source,
                    owner,
                    attempts: attempt,
                };
            };
            self.shared.retries.count(reason);
            self.shared
                .metrics
                .retried(id.kind_arc(), method, reason.as_str());
            if let Some(cx) = span {
                trace::retried(cx, attempt, reason.as_str(), e);
            }
            tracing::debug!(target_grain = %id, method, attempt, error = %e, ?pause, "retrying call");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = topology_changes.changed() => {}
            }
        }
    }

    /// One attempt; also says whether the owner came from the placement cache, and
    /// which member it went to.
    async fn attempt(
        &self,
        call: &Call<'_>,
        payload: Bytes,
        headers: &HashMap<String, String>,
        deadline: Instant,
    ) -> (Result<Bytes, CallError>, &'static str, Option<Member>) {
        let (id, method) = (call.id, call.method);
        let (owner, hit) = {
            let view = self.shared.topology.load();
            match view.cached(id) {
                Some(owner) => (owner.cloned(), true),
                None => {
                    // Timed only when looked up and recorded, as Proto.Actor does: a
                    // cache hit is not worth two clock reads and a histogram record.
                    let resolving = call.meters.as_ref().map(|m| (m, Instant::now()));
                    let owner = view.look_up(id);
                    if let Some((m, resolving)) = resolving {
                        self.shared.metrics.resolved(m, resolving.elapsed());
                    }
                    (owner.cloned(), false)
                }
            }
        };
        let source = if hit { "cache" } else { "lookup" };
        let Some(owner) = owner else {
            let kind = id.kind().to_string();
            return (Err(CallError::NoMemberHostsKind { kind }), source, None);
        };
        // Formatted only when a call fails.
        let target = || format!("{id} {method}");
        if owner.id == self.shared.me.id {
            let (tx, rx) = oneshot::channel();
            let me = &self.shared.me;
            let trace = self.shared.config.tracing.as_ref();
            let inv = Invocation {
                trace: trace.map(|t| t.server_span(id, method, headers, me, Some(&me.id))),
                method: method.to_string(),
                payload,
                headers: headers.clone(),
                deadline,
                received: Instant::now(),
                reply: Box::new(tx),
                guard: self.shared.inflight.enter(),
            };
            let new_context = |id| GrainContext::new(id, self.clone());
            self.shared.catalog.deliver(id.clone(), inv, &new_context);
            let result = match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => Err(CallError::Timeout {
                    target: target(),
                    after: Duration::ZERO,
                }),
                Ok(Err(_)) => Err(CallError::from(GrainError::new(
                    Code::Internal,
                    format!("{}: the activation ended without answering", target()),
                ))),
                Ok(Ok(r)) => r,
            };
            return (result, source, Some(owner));
        }
        let Some(link) = self.shared.links.get(&owner, &self.shared.topology) else {
            let err = CallError::MemberUnavailable {
                member: owner.id.clone(),
                reason: "the member left the topology".into(),
                maybe_ran: false,
            };
            return (Err(err), source, Some(owner));
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
        let result = link
            .call(request, deadline)
            .await
            .map_err(|e| e.with_target(target));
        (result, source, Some(owner))
    }
}

/// Refuses a call whose kind, identity, method and headers would not fit in an
/// envelope's metadata limit, as encoded: each string and each header entry also costs
/// its tags and lengths (at most 12 bytes for an entry of this size; 16 for the three
/// strings).
fn check_addressing(
    id: &ClusterIdentity,
    method: &str,
    headers: &HashMap<String, String>,
) -> Result<(), CallError> {
    let addressing = 16
        + id.kind().len()
        + id.identity().len()
        + method.len()
        + headers
            .iter()
            .map(|(k, v)| 12 + k.len() + v.len())
            .sum::<usize>();
    if addressing > MAX_ENVELOPE_META_BYTES {
        return Err(CallError::Codec(format!(
            "the kind, identity, method and headers of a call take {addressing} bytes, \
             over the limit of {MAX_ENVELOPE_META_BYTES} bytes"
        )));
    }
    Ok(())
}

/// One call, as its attempts see it.
struct Call<'a> {
    id: &'a ClusterIdentity,
    method: &'a str,
    payload: Bytes,
    options: &'a CallOptions,
    idempotent: bool,
    deadline: Instant,
    /// The bound metric handles of (kind, method), when this member records metrics.
    meters: Option<Arc<ClientMeters>>,
}

/// What a call's attempts came to: the last result, where the first attempt found the
/// owner (`cache` or `lookup`), the last owner tried, and how many attempts were made.
struct Run {
    result: Result<Bytes, CallError>,
    source: &'static str,
    owner: Option<Member>,
    attempts: u32,
}
