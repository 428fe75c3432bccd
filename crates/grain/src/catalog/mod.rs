//! The local activation catalog (Orleans' name for it): the grain kinds this member
//! hosts and its live activations, one ractor actor each (`activation.rs`).
//!
//! Rules this module keeps:
//! - **One live activation per identity per member.** The catalog maps identity →
//!   activation under one lock; an activation removes its own entry (compare-and-remove
//!   by activation number) once it has fully stopped, so a newer one is never removed
//!   by an older.
//! - **Turn-based.** An activation is a ractor actor: it handles one call at a time, in
//!   the order the calls reached its mailbox.
//! - **Nothing is lost at passivation.** A stopping activation drains the calls already
//!   in its mailbox; calls arriving later are parked in its entry and handed to a fresh
//!   activation only after the old one has fully stopped (`deactivated` included).
//! - **A panic fails only the call that panicked.** The caller gets `Internal`, the
//!   activation is discarded (its state may be broken), and calls queued behind it are
//!   handed to a fresh activation.
//! - **A call that outlives its deadline is cancelled** at its next await point and
//!   answered `Timeout`, so a grain that never answers does not block its mailbox
//!   forever.
//!
//! The catalog knows no transport and no cluster internals: answers go through the
//! [`Reply`] trait, and what it needs (metrics, the payload limit, a way to make a
//! grain's context) is handed in.

mod activation;
mod inflight;
mod invocation;

pub(crate) use inflight::InFlight;
pub(crate) use invocation::{Invocation, Reply};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use ractor::{ActorRef, MessagingErr};
use tokio::time::Instant;

use activation::{Activation, Args, GrainMsg};

use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::{GrainError, Kind};
use crate::identity::{ClusterIdentity, MemberId};
use crate::metrics::Metrics;

/// Makes the context of a new activation of an identity (its cluster handle and
/// member come from whoever delivers the call).
pub(crate) type NewContext<'a> = &'a (dyn Fn(ClusterIdentity) -> GrainContext + Sync);

struct Entry {
    number: u64,
    actor: ActorRef<GrainMsg>,
    /// Calls that arrived while this activation was stopping; they go to its successor
    /// once it has fully stopped (its `deactivated` hook included).
    parked: Vec<Invocation>,
}

/// The kinds this member hosts and its live activations.
pub(crate) struct Catalog {
    member: MemberId,
    kinds: HashMap<String, Kind>,
    live: Mutex<HashMap<ClusterIdentity, Entry>>,
    next_number: AtomicU64,
    accepting: AtomicBool,
    metrics: Arc<Metrics>,
    max_payload_bytes: usize,
    /// How long `activated` and `deactivated` may run.
    hook_timeout: Duration,
}

/// The `rpc.method` of a call whose method the grain does not know (OpenTelemetry's
/// value for it).
const OTHER_METHOD: &str = "_OTHER";

/// The most calls parked on one stopping activation; more are refused.
const MAX_PARKED: usize = 10_000;

/// How many times a call may bounce off stopping activations before giving up.
const MAX_BOUNCES: usize = 16;

impl Catalog {
    /// A catalog of `member` hosting `kinds`; answers longer than `max_payload_bytes`
    /// fail as codec errors; `activated` and `deactivated` may run `hook_timeout`.
    pub(crate) fn new(
        member: MemberId,
        kinds: Vec<Kind>,
        metrics: Arc<Metrics>,
        max_payload_bytes: usize,
        hook_timeout: Duration,
    ) -> Self {
        Self {
            member,
            kinds: kinds.into_iter().map(|k| (k.name.to_string(), k)).collect(),
            live: Mutex::new(HashMap::new()),
            next_number: AtomicU64::new(1),
            accepting: AtomicBool::new(true),
            metrics,
            max_payload_bytes,
            hook_timeout,
        }
    }

    /// The number of live activations.
    pub(crate) fn live_count(&self) -> usize {
        self.live.lock().len()
    }

    /// The number of live activations of `kind`.
    pub(crate) fn live_count_of(&self, kind: &str) -> usize {
        self.live.lock().keys().filter(|k| k.kind() == kind).count()
    }

    /// From now on every call is refused as `ShuttingDown` (retriable).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// False once [`Catalog::stop_accepting`] was called.
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// True when this member hosts `kind`.
    pub(crate) fn hosts(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// Sends `result` to `reply`, counting an answer nobody was left to take.
    pub(crate) fn answer(&self, reply: Box<dyn Reply>, result: Result<Bytes, CallError>) {
        if let Err(reason) = reply.send(result) {
            self.metrics.deadletter(reason);
        }
    }

    /// Answers a call that reached this member: records `rpc.server.call.duration`
    /// (with `method`, or `_OTHER` when the grain did not know it) and ends the call's
    /// SERVER span.
    pub(crate) fn respond(
        &self,
        method: &str,
        received: Instant,
        trace: Option<&opentelemetry::Context>,
        reply: Box<dyn Reply>,
        result: Result<Bytes, CallError>,
    ) {
        let code = result
            .as_ref()
            .err()
            .map_or(tonic::Code::Ok, CallError::code);
        self.metrics.server_call(method, code, received.elapsed());
        if let Some(cx) = trace {
            crate::trace::end_server(cx, &result);
        }
        self.answer(reply, result);
    }

    /// Fails a call before its turn. Its method is not known to be one the grain has
    /// (any string a peer sends), so its metrics say `_OTHER`.
    fn fail(&self, inv: Invocation, error: CallError) {
        let trace = inv.trace.as_ref();
        self.respond(OTHER_METHOD, inv.received, trace, inv.reply, Err(error));
    }

    /// Hands `inv` to the activation of `id`, activating it if needed (with a context
    /// from `new_context`). The caller has already checked ownership.
    pub(crate) fn deliver(
        self: &Arc<Self>,
        id: ClusterIdentity,
        mut inv: Invocation,
        new_context: NewContext<'_>,
    ) {
        let Some(kind) = self.kinds.get(id.kind()) else {
            let message = format!("member {} hosts no grain kind {}", self.member, id.kind());
            let code = tonic::Code::Unimplemented;
            return self.fail(inv, CallError::Application { code, message });
        };
        for _ in 0..MAX_BOUNCES {
            if !self.is_accepting() {
                let member = self.member.clone();
                return self.fail(inv, CallError::ShuttingDown { member });
            }
            // Existing activation? (Look without building anything.)
            let existing = self
                .live
                .lock()
                .get(&id)
                .map(|e| (e.number, e.actor.clone()));
            let (number, actor) = match existing {
                Some(found) => found,
                None => match self.activate(kind, &id, new_context) {
                    Ok(found) => found,
                    Err(error) => return self.fail(inv, error),
                },
            };
            match actor.send_message(GrainMsg::Call(inv)) {
                Ok(()) => {
                    self.metrics.mailbox(id.kind_arc(), 1);
                    return;
                }
                Err(MessagingErr::SendErr(GrainMsg::Call(back))) => {
                    // The activation is stopping. While it is still in the catalog (its
                    // queued calls and `deactivated` hook are running), park the call:
                    // its successor starts only after it has fully stopped.
                    let mut live = self.live.lock();
                    match live.get_mut(&id) {
                        Some(e) if e.number == number => {
                            // Parked calls are bounded, and those past their deadline
                            // are answered now rather than when the successor starts.
                            let now = Instant::now();
                            let (expired, waiting): (Vec<_>, Vec<_>) =
                                e.parked.drain(..).partition(|p| p.deadline <= now);
                            e.parked = waiting;
                            let full = e.parked.len() >= MAX_PARKED;
                            let refused = if full {
                                Some(back)
                            } else {
                                e.parked.push(back);
                                None
                            };
                            drop(live);
                            for p in expired {
                                let target = format!("{id} {}", p.method);
                                let after = Duration::ZERO;
                                self.fail(p, CallError::Timeout { target, after });
                            }
                            if let Some(back) = refused {
                                let message =
                                    format!("{MAX_PARKED} calls already wait for {id} to restart");
                                let code = tonic::Code::ResourceExhausted;
                                self.fail(back, CallError::Application { code, message });
                            }
                            return;
                        }
                        _ => inv = back,
                    }
                }
                Err(_) => return, // unreachable: the message is handed back on SendErr
            }
        }
        let msg = format!("{id} could not be activated: activations kept stopping");
        self.fail(inv, CallError::from(GrainError::internal(msg)));
    }

    /// Builds a grain for `id` and spawns its activation, unless another call did so
    /// meanwhile (then that one is used). Answers the activation's number and actor.
    fn activate(
        self: &Arc<Self>,
        kind: &Kind,
        id: &ClusterIdentity,
        new_context: NewContext<'_>,
    ) -> Result<(u64, ActorRef<GrainMsg>), CallError> {
        // The grain itself is built by the factory (user code) inside the activation,
        // on its first call — never here, on a peer stream's reader.
        let mut live = self.live.lock();
        if let Some(e) = live.get(id) {
            return Ok((e.number, e.actor.clone()));
        }
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let args = Args {
            factory: kind.factory.clone(),
            ctx: new_context(id.clone()),
            idle_timeout: kind.idle_timeout,
            number,
            catalog: self.clone(),
        };
        let (actor, _) =
            ractor::ActorRuntime::spawn_instant(None, Activation, args).map_err(|e| {
                CallError::from(GrainError::internal(format!("cannot activate {id}: {e}")))
            })?;
        self.metrics.activation_started(id.kind_arc());
        let entry = Entry {
            number,
            actor: actor.clone(),
            parked: Vec::new(),
        };
        live.insert(id.clone(), entry);
        Ok((number, actor))
    }

    /// Passivates the activations of identities `owned` says this member no longer
    /// owns (after a topology change or a fence), so a stale activation never answers
    /// again if ownership comes back. Returns how many were asked to stop.
    pub(crate) fn passivate_unowned(&self, owned: impl Fn(&ClusterIdentity) -> bool) -> usize {
        let stale: Vec<ActorRef<GrainMsg>> = self
            .live
            .lock()
            .iter()
            .filter(|(id, _)| !owned(id))
            .map(|(_, e)| e.actor.clone())
            .collect();
        for actor in &stale {
            let _ = actor.send_message(GrainMsg::Passivate);
        }
        stale.len()
    }

    /// Passivates every activation (each finishes the calls in its mailbox and runs its
    /// `deactivated` hook), waiting at most until `until`. Returns how many did not
    /// stop in time.
    pub(crate) async fn passivate_all(&self, until: Instant) -> usize {
        let entries: Vec<(ClusterIdentity, Entry)> = self.live.lock().drain().collect();
        let drains = entries.into_iter().map(|(id, mut e)| async move {
            for inv in e.parked.drain(..) {
                let member = self.member.clone();
                self.fail(inv, CallError::ShuttingDown { member });
            }
            let left = until.saturating_duration_since(Instant::now());
            let drained = e
                .actor
                .drain_and_wait(Some(left.max(Duration::from_millis(1))))
                .await;
            if drained.is_err() {
                // Killed actors skip post_stop: count them down here.
                e.actor.kill();
                self.metrics.activation_stopped(id.kind_arc(), false);
                1
            } else {
                0
            }
        });
        futures::future::join_all(drains).await.into_iter().sum()
    }

    /// Forgets activation `number` of `id` (it has fully stopped) and hands back the
    /// calls parked while it was stopping.
    fn finish(&self, id: &ClusterIdentity, number: u64) -> Vec<Invocation> {
        let mut live = self.live.lock();
        if live.get(id).is_some_and(|e| e.number == number) {
            live.remove(id).map(|e| e.parked).unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}
