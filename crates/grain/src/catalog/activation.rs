//! One activation at work: the task that runs an activation's queued calls one at a
//! time (with the deadline, panic and payload rules of the catalog) and, when the
//! queue is empty, parks the activation back in its catalog entry as its state alone;
//! and the stop of an activation (its `deactivated` hook, then its successor).
//!
//! An idle activation is no task and no channel: it is a [`Resident`] in its entry.
//! A call for it takes the resident out and spawns a runner; the runner gives it back
//! when no call is left.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use opentelemetry::trace::FutureExt as _;
use tokio::time::Instant;

use super::{Catalog, Invocation, Next};
use crate::context::GrainContext;
use crate::error::{CallError, panic_message};
use crate::grain::{Grain, GrainError, GrainFactory};
use crate::identity::ClusterIdentity;

/// How long a turn still running at its call's deadline may go on (its caller already
/// has `Timeout`) before it is cancelled and the activation discarded.
const TURN_GRACE: Duration = Duration::from_secs(1);

/// An activation's own state: what an idle activation is, whole.
pub(super) struct Resident {
    factory: GrainFactory,
    /// The count of calls queued for this kind (`Hosted::queued`).
    queued: Arc<AtomicI64>,
    /// Built by the factory on the first call, inside the runner (never on the task
    /// that reads a peer's stream).
    grain: Option<Box<dyn Grain>>,
    ctx: GrainContext,
    /// `activated` ran and succeeded.
    activated: bool,
    /// The grain panicked, overran a deadline or failed to activate: its state may be
    /// torn, so it takes no further call and skips `deactivated`.
    pub(super) broken: bool,
}

impl Resident {
    /// A fresh activation, not yet built: the factory runs on its first call.
    pub(super) fn new(factory: GrainFactory, queued: Arc<AtomicI64>, ctx: GrainContext) -> Self {
        Self {
            factory,
            queued,
            grain: None,
            ctx,
            activated: false,
            broken: false,
        }
    }

    /// A fresh activation of the same identity (the successor of this one).
    pub(super) fn successor(&self) -> Self {
        let ctx = self.ctx.for_identity(self.ctx.identity.clone());
        Self::new(self.factory.clone(), self.queued.clone(), ctx)
    }
}

impl Catalog {
    /// Runs activation `number` of `id`: its queued calls, one at a time, until none is
    /// left (then it parks as `res`), or it must stop (then it stops here).
    pub(super) async fn run(self: Arc<Self>, id: ClusterIdentity, number: u64, res: Resident) {
        let mut res = res;
        loop {
            match self.next_call(&id, number, res) {
                Next::Run(inv, back) => {
                    res = back;
                    res.queued.fetch_sub(1, Ordering::Relaxed);
                    self.turn(&mut res, inv).await;
                    if res.broken {
                        self.retire_broken(&id, number);
                    }
                }
                // Parked in its entry (or its entry is gone): nothing runs until a call.
                Next::Parked => return,
                Next::Stop(back) => return self.stop(id, number, back).await,
            }
        }
    }

    /// Runs one call on `res`.
    async fn turn(&self, res: &mut Resident, inv: Invocation) {
        let metrics = &self.metrics;
        let kind = res.ctx.identity.kind_arc().clone();
        if Instant::now() >= inv.deadline {
            let target = format!("{} {}", res.ctx.identity, inv.method);
            let after = Duration::ZERO;
            return self.fail(inv, CallError::Timeout { target, after });
        }
        // A call that activates the grain gets an activation span (the factory and the
        // `activated` hook) under its SERVER span.
        let activation = match (&inv.trace, &res.ctx.cluster.shared.config.tracing) {
            (Some(cx), Some(t)) if !res.activated => {
                t.activation_span(cx, &res.ctx.identity, &res.ctx.member)
            }
            _ => None,
        };
        let ended = |outcome: &Result<(), CallError>| {
            if let Some(cx) = &activation {
                crate::trace::end_internal(cx, outcome);
            }
        };
        if res.grain.is_none() {
            let id = res.ctx.identity.clone();
            match std::panic::catch_unwind(AssertUnwindSafe(|| (res.factory)(&id))) {
                Ok(g) => res.grain = Some(g),
                Err(p) => {
                    let msg = format!(
                        "the factory of {} panicked: {}",
                        id.kind(),
                        panic_message(p.as_ref())
                    );
                    let error = CallError::from(GrainError::internal(msg));
                    ended(&Err(error.clone()));
                    metrics.activation_failed(&kind);
                    res.broken = true;
                    return self.fail(inv, error);
                }
            }
        }
        let Some(grain) = res.grain.as_mut() else {
            return;
        };
        if !res.activated {
            let activating = Instant::now();
            let hook = AssertUnwindSafe(grain.activated(&res.ctx)).catch_unwind();
            // Inside the activation span, or the call's (unsampled) context: calls the
            // hook makes continue the trace, sampled or not.
            let hook = match activation.clone().or_else(|| inv.trace.clone()) {
                Some(cx) => Either::Left(hook.with_context(cx)),
                None => Either::Right(hook),
            };
            let until = inv.deadline.min(activating + self.hook_timeout);
            let outcome = match tokio::time::timeout_at(until, hook).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(CallError::from(e)),
                Ok(Err(p)) => Err(CallError::from(GrainError::internal(format!(
                    "grain {} panicked while activating: {}",
                    res.ctx.identity,
                    panic_message(p.as_ref())
                )))),
                Err(_) => Err(CallError::Timeout {
                    target: format!("{} activation", res.ctx.identity),
                    after: Duration::ZERO,
                }),
            };
            metrics.spawned_in(&kind, activating.elapsed());
            ended(&outcome);
            if let Err(e) = outcome {
                metrics.activation_failed(&kind);
                res.broken = true;
                return self.fail(inv, e);
            }
            res.activated = true;
        }
        let Invocation {
            method,
            payload,
            headers,
            deadline,
            received,
            trace,
            reply,
            guard: _guard,
        } = inv;
        res.ctx.headers = headers;
        res.ctx.deadline = Some(deadline);
        res.ctx.trace = trace.clone();
        let handling = Instant::now();
        let mut reply = Some(reply);
        let (outcome, overran) = {
            let call = AssertUnwindSafe(grain.handle(&res.ctx, &method, payload)).catch_unwind();
            // Log lines of the turn carry its trace context.
            let call = match trace.clone() {
                Some(cx) => Either::Left(call.with_context(cx)),
                None => Either::Right(call),
            };
            tokio::pin!(call);
            match tokio::time::timeout_at(deadline, &mut call).await {
                Ok(done) => (Some(done), false),
                Err(_) => {
                    // The caller's deadline passed mid-turn: it gets `Timeout` now. The
                    // turn may still finish (its answer is dropped) within TURN_GRACE,
                    // so the grain's state stays whole; past that it is cancelled and
                    // the activation discarded, as after a panic — never left torn.
                    if let Some(reply) = reply.take() {
                        let target = format!("{} {}", res.ctx.identity, method);
                        let after = deadline.saturating_duration_since(handling);
                        let timeout = Err(CallError::Timeout { target, after });
                        self.respond(&method, received, trace.as_ref(), reply, timeout);
                    }
                    match tokio::time::timeout(TURN_GRACE, &mut call).await {
                        Ok(done) => (Some(done), false),
                        Err(_) => (None, true),
                    }
                }
            }
        };
        if overran {
            tracing::warn!(grain = %res.ctx.identity, %method,
                "a turn ran {TURN_GRACE:?} past its deadline: cancelled, and the activation discarded");
            metrics.activation_failed(&kind);
            res.broken = true;
        }
        let result = match outcome {
            Some(Ok(r)) => r.map_err(CallError::from),
            Some(Err(p)) => {
                let msg = format!(
                    "grain {} panicked in {}: {}",
                    res.ctx.identity,
                    method,
                    panic_message(p.as_ref())
                );
                tracing::warn!(grain = %res.ctx.identity, %method, "{msg}");
                metrics.activation_failed(&kind);
                res.broken = true;
                Err(CallError::from(GrainError::internal(msg)))
            }
            None => Err(CallError::Timeout {
                target: format!("{} {}", res.ctx.identity, method),
                after: deadline.saturating_duration_since(handling),
            }),
        };
        let max = self.max_payload_bytes;
        let result = match result {
            Ok(answer) if answer.len() > max => Err(CallError::Codec(format!(
                "the answer of {} {method} is {} bytes, over the limit of {max}",
                res.ctx.identity,
                answer.len()
            ))),
            other => other,
        };
        // Method labels stay bounded: a method the grain does not know (any string a
        // peer sends) is recorded as "unknown".
        let unknown = matches!(
            &result,
            Err(CallError::Application {
                code: tonic::Code::Unimplemented,
                ..
            })
        );
        let label = if unknown { "unknown" } else { method.as_str() };
        let rpc_method = if unknown { "_OTHER" } else { method.as_str() };
        let code = result
            .as_ref()
            .err()
            .map_or(tonic::Code::Ok, CallError::code);
        let answered = reply.as_ref().map(|_| (rpc_method, code, received));
        metrics.served(&kind, label, result.is_ok(), handling, answered);
        res.ctx.headers = HashMap::new();
        res.ctx.deadline = None;
        res.ctx.trace = None;
        if let Some(reply) = reply {
            self.respond_recorded(trace.as_ref(), reply, result);
        }
    }

    /// Ends activation `number` of `id`, whose state is `res`: runs `deactivated`
    /// (unless it broke), counts it stopped, and hands the calls that waited to a
    /// successor, which starts only now.
    pub(super) async fn stop(self: Arc<Self>, id: ClusterIdentity, number: u64, mut res: Resident) {
        if res.activated
            && !res.broken
            && let Some(grain) = res.grain.as_mut()
        {
            let hook = AssertUnwindSafe(grain.deactivated(&res.ctx)).catch_unwind();
            let limit = self.hook_timeout;
            match tokio::time::timeout(limit, hook).await {
                Ok(Ok(())) => {}
                Ok(Err(p)) => tracing::warn!(
                    grain = %res.ctx.identity,
                    "grain panicked while deactivating: {}",
                    panic_message(p.as_ref())
                ),
                Err(_) => tracing::warn!(
                    grain = %res.ctx.identity,
                    "deactivated did not finish within {limit:?}; the activation ends anyway"
                ),
            }
        }
        self.metrics.activation_stopped(id.kind_arc(), res.broken);
        self.finish(&id, number, &res);
    }
}
