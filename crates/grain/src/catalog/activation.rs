//! One activation: the ractor actor that owns a grain value, runs its calls one at a
//! time (with the deadline, panic and payload rules of the catalog), passivates it when
//! idle, and on stopping hands the calls that waited back to the catalog.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use opentelemetry::trace::FutureExt as _;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;

use super::{Catalog, Invocation};
use crate::context::GrainContext;
use crate::error::{CallError, panic_message};
use crate::grain::{Grain, GrainError, GrainFactory};

/// How long a turn still running at its call's deadline may go on (its caller already
/// has `Timeout`) before it is cancelled and the activation discarded.
const TURN_GRACE: Duration = Duration::from_secs(1);

/// What an activation's mailbox carries.
pub(super) enum GrainMsg {
    /// A call to run.
    Call(Invocation),
    /// Time to check whether the activation has been idle long enough.
    IdleCheck,
    /// This member no longer owns the identity: passivate now (calls already in the
    /// mailbox still run here).
    Passivate,
}

/// The actor behaviour (stateless; the grain lives in [`State`]).
pub(super) struct Activation;

/// What an activation starts with.
pub(super) struct Args {
    pub(super) factory: GrainFactory,
    pub(super) ctx: GrainContext,
    pub(super) idle_timeout: Duration,
    pub(super) number: u64,
    pub(super) catalog: Arc<Catalog>,
}

pub(super) struct State {
    factory: GrainFactory,
    /// Built by the factory on the first call, inside this activation's task (never on
    /// the task that reads a peer's stream).
    grain: Option<Box<dyn Grain>>,
    ctx: GrainContext,
    idle_timeout: Duration,
    number: u64,
    catalog: Arc<Catalog>,
    activated: bool,
    /// The grain panicked or failed to activate: hand every further call to a fresh
    /// activation.
    broken: bool,
    stopping: bool,
    last_call: Instant,
}

/// The message of a panic payload, for the caller and the log.
impl State {
    /// Leaves the catalog and drains: queued calls still arrive here, later ones bounce.
    /// Drains: queued calls still arrive here; later ones are parked in the catalog
    /// entry, which stays until `post_stop` has run the `deactivated` hook.
    fn retire(&mut self, myself: &ActorRef<GrainMsg>) {
        if !self.stopping {
            self.stopping = true;
            let _ = myself.drain();
        }
    }
}

impl Actor for Activation {
    type Msg = GrainMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<GrainMsg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        myself.send_after(args.idle_timeout, || GrainMsg::IdleCheck);
        Ok(State {
            factory: args.factory,
            grain: None,
            ctx: args.ctx,
            idle_timeout: args.idle_timeout,
            number: args.number,
            catalog: args.catalog,
            activated: false,
            broken: false,
            stopping: false,
            last_call: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GrainMsg>,
        msg: GrainMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GrainMsg::Passivate => {
                if !state.stopping {
                    tracing::debug!(grain = %state.ctx.identity, "passivating: no longer owned here");
                    state.retire(&myself);
                }
            }
            GrainMsg::IdleCheck => {
                if state.stopping {
                    return Ok(());
                }
                let idle = state.last_call.elapsed();
                if idle >= state.idle_timeout {
                    tracing::debug!(grain = %state.ctx.identity, ?idle, "passivating idle grain");
                    state.retire(&myself);
                } else {
                    myself.send_after(state.idle_timeout - idle, || GrainMsg::IdleCheck);
                }
            }
            GrainMsg::Call(inv) => {
                let catalog = state.catalog.clone();
                let metrics = &catalog.metrics;
                let kind = state.ctx.identity.kind_arc().clone();
                metrics.mailbox(&kind, -1);
                if state.broken {
                    let id = state.ctx.identity.clone();
                    catalog.deliver(id, inv, &|id| state.ctx.for_identity(id));
                    return Ok(());
                }
                state.last_call = Instant::now();
                if Instant::now() >= inv.deadline {
                    let target = format!("{} {}", state.ctx.identity, inv.method);
                    let after = Duration::ZERO;
                    catalog.fail(inv, CallError::Timeout { target, after });
                    return Ok(());
                }
                // A call that activates the grain gets an activation span (the factory
                // and the `activated` hook) under its SERVER span.
                let activation = match (&inv.trace, &state.ctx.cluster.shared.config.tracing) {
                    (Some(cx), Some(t)) if !state.activated => {
                        t.activation_span(cx, &state.ctx.identity, &state.ctx.member)
                    }
                    _ => None,
                };
                let ended = |outcome: &Result<(), CallError>| {
                    if let Some(cx) = &activation {
                        crate::trace::end_internal(cx, outcome);
                    }
                };
                if state.grain.is_none() {
                    let id = state.ctx.identity.clone();
                    let built = std::panic::catch_unwind(AssertUnwindSafe(|| (state.factory)(&id)));
                    match built {
                        Ok(g) => state.grain = Some(g),
                        Err(p) => {
                            let msg = format!(
                                "the factory of {} panicked: {}",
                                id.kind(),
                                panic_message(p.as_ref())
                            );
                            let error = CallError::from(GrainError::internal(msg));
                            ended(&Err(error.clone()));
                            metrics.activation_failed(&kind);
                            state.broken = true;
                            state.retire(&myself);
                            catalog.fail(inv, error);
                            return Ok(());
                        }
                    }
                }
                let Some(grain) = state.grain.as_mut() else {
                    return Ok(());
                };
                if !state.activated {
                    let activating = Instant::now();
                    let hook = AssertUnwindSafe(grain.activated(&state.ctx)).catch_unwind();
                    // Inside the activation span, or the call's (unsampled) context: calls
                    // the hook makes continue the trace, sampled or not.
                    let hook = match activation.clone().or_else(|| inv.trace.clone()) {
                        Some(cx) => Either::Left(hook.with_context(cx)),
                        None => Either::Right(hook),
                    };
                    let until = inv.deadline.min(activating + catalog.hook_timeout);
                    let outcome = match tokio::time::timeout_at(until, hook).await {
                        Ok(Ok(Ok(()))) => Ok(()),
                        Ok(Ok(Err(e))) => Err(CallError::from(e)),
                        Ok(Err(p)) => Err(CallError::from(GrainError::internal(format!(
                            "grain {} panicked while activating: {}",
                            state.ctx.identity,
                            panic_message(p.as_ref())
                        )))),
                        Err(_) => Err(CallError::Timeout {
                            target: format!("{} activation", state.ctx.identity),
                            after: Duration::ZERO,
                        }),
                    };
                    metrics.spawned_in(&kind, activating.elapsed());
                    ended(&outcome);
                    if let Err(e) = outcome {
                        metrics.activation_failed(&kind);
                        state.broken = true;
                        state.retire(&myself);
                        catalog.fail(inv, e);
                        return Ok(());
                    }
                    state.activated = true;
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
                state.ctx.headers = headers;
                state.ctx.deadline = Some(deadline);
                state.ctx.trace = trace.clone();
                let handling = Instant::now();
                let mut reply = Some(reply);
                let (outcome, overran) = {
                    let call =
                        AssertUnwindSafe(grain.handle(&state.ctx, &method, payload)).catch_unwind();
                    // Log lines of the turn carry its trace context.
                    let call = match trace.clone() {
                        Some(cx) => Either::Left(call.with_context(cx)),
                        None => Either::Right(call),
                    };
                    tokio::pin!(call);
                    match tokio::time::timeout_at(deadline, &mut call).await {
                        Ok(done) => (Some(done), false),
                        Err(_) => {
                            // The caller's deadline passed mid-turn: it gets `Timeout`
                            // now. The turn may still finish (its answer is dropped)
                            // within TURN_GRACE, so the grain's state stays whole; past
                            // that it is cancelled and the activation discarded, as
                            // after a panic — never left torn.
                            if let Some(reply) = reply.take() {
                                let target = format!("{} {}", state.ctx.identity, method);
                                let after = deadline.saturating_duration_since(state.last_call);
                                let timeout = Err(CallError::Timeout { target, after });
                                catalog.respond(&method, received, trace.as_ref(), reply, timeout);
                            }
                            match tokio::time::timeout(TURN_GRACE, &mut call).await {
                                Ok(done) => (Some(done), false),
                                Err(_) => (None, true),
                            }
                        }
                    }
                };
                if overran {
                    tracing::warn!(grain = %state.ctx.identity, %method,
                        "a turn ran {TURN_GRACE:?} past its deadline: cancelled, and the activation discarded");
                    metrics.activation_failed(&kind);
                    state.broken = true;
                    state.retire(&myself);
                }
                let result = match outcome {
                    Some(Ok(r)) => r.map_err(CallError::from),
                    Some(Err(p)) => {
                        let msg = format!(
                            "grain {} panicked in {}: {}",
                            state.ctx.identity,
                            method,
                            panic_message(p.as_ref())
                        );
                        tracing::warn!(grain = %state.ctx.identity, %method, "{msg}");
                        metrics.activation_failed(&kind);
                        state.broken = true;
                        state.retire(&myself);
                        Err(CallError::from(GrainError::internal(msg)))
                    }
                    None => Err(CallError::Timeout {
                        target: format!("{} {}", state.ctx.identity, method),
                        after: deadline.saturating_duration_since(state.last_call),
                    }),
                };
                let max = catalog.max_payload_bytes;
                let result = match result {
                    Ok(answer) if answer.len() > max => Err(CallError::Codec(format!(
                        "the answer of {} {method} is {} bytes, over the limit of {max}",
                        state.ctx.identity,
                        answer.len()
                    ))),
                    other => other,
                };
                // Method labels stay bounded: a method the grain does not know (any
                // string a peer sends) is recorded as "unknown".
                let unknown = matches!(
                    &result,
                    Err(CallError::Application {
                        code: tonic::Code::Unimplemented,
                        ..
                    })
                );
                let label = if unknown { "unknown" } else { method.as_str() };
                metrics.received(&kind, label, result.is_ok(), handling.elapsed());
                state.ctx.headers = HashMap::new();
                state.ctx.deadline = None;
                state.ctx.trace = None;
                state.last_call = Instant::now();
                if let Some(reply) = reply {
                    let rpc_method = if unknown { "_OTHER" } else { method.as_str() };
                    catalog.respond(rpc_method, received, trace.as_ref(), reply, result);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GrainMsg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        if state.activated
            && !state.broken
            && let Some(grain) = state.grain.as_mut()
        {
            let hook = AssertUnwindSafe(grain.deactivated(&state.ctx)).catch_unwind();
            let limit = state.catalog.hook_timeout;
            match tokio::time::timeout(limit, hook).await {
                Ok(Ok(())) => {}
                Ok(Err(p)) => tracing::warn!(
                    grain = %state.ctx.identity,
                    "grain panicked while deactivating: {}",
                    panic_message(p.as_ref())
                ),
                Err(_) => tracing::warn!(
                    grain = %state.ctx.identity,
                    "deactivated did not finish within {limit:?}; the activation ends anyway"
                ),
            }
        }
        let catalog = state.catalog.clone();
        let id = state.ctx.identity.clone();
        catalog
            .metrics
            .activation_stopped(id.kind_arc(), state.broken);
        // Only now may a successor start: hand it the calls that waited.
        for inv in catalog.finish(&id, state.number) {
            catalog.deliver(id.clone(), inv, &|id| state.ctx.for_identity(id));
        }
        Ok(())
    }
}
