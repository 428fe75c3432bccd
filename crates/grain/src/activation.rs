//! The local activation catalog: one ractor actor per live grain on this member.
//!
//! Rules this module keeps:
//! - **One live activation per identity per member.** The catalog maps identity →
//!   activation under one lock; an activation removes its own entry (compare-and-remove
//!   by activation number) before it stops, so a newer one is never removed by an older.
//! - **Turn-based.** An activation is a ractor actor: it handles one call at a time, in
//!   the order the calls reached its mailbox.
//! - **Nothing is lost at passivation.** A passivating activation first leaves the
//!   catalog, then *drains*: calls already in its mailbox still run; a call sent after
//!   that bounces back to the catalog, which starts a fresh activation for it.
//! - **A panic fails only the call that panicked.** The caller gets `Internal`, the
//!   activation is discarded (its state may be broken), and calls queued behind it are
//!   handed to a fresh activation.
//! - **A call that outlives its deadline is cancelled** at its next await point and
//!   answered `Timeout`, so a grain that never answers does not block its mailbox
//!   forever.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::error::CallError;
use crate::grain::{Grain, GrainContext, GrainError, Kind};
use crate::identity::{ClusterIdentity, MemberId};
use crate::metrics::Metrics;
use crate::node::Cluster;
use crate::remote::ResponseSink;

/// Where the answer to a call goes.
pub(crate) enum Reply {
    /// A caller on this member.
    Local(oneshot::Sender<Result<Bytes, CallError>>),
    /// A caller on another member: the answer goes onto that caller's response stream.
    Remote(ResponseSink),
}

impl Reply {
    pub(crate) async fn send(self, result: Result<Bytes, CallError>, metrics: &Metrics) {
        match self {
            Reply::Local(tx) => {
                if tx.send(result).is_err() {
                    metrics.deadletter("caller_gone");
                }
            }
            Reply::Remote(sink) => sink.send(result).await,
        }
    }
}

/// Counts calls accepted by this member and not yet answered, so shutdown can wait for
/// them.
#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until nothing is in flight, or `until`. True when drained.
    pub(crate) async fn wait_idle(&self, until: Instant) -> bool {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.count() == 0;
            }
        }
    }
}

pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// One call on its way to an activation.
pub(crate) struct Invocation {
    pub(crate) method: String,
    pub(crate) payload: Bytes,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) deadline: Instant,
    pub(crate) reply: Reply,
    pub(crate) _guard: InFlightGuard,
}

impl Invocation {
    async fn fail(self, error: CallError, metrics: &Metrics) {
        self.reply.send(Err(error), metrics).await;
    }
}

pub(crate) enum GrainMsg {
    Call(Invocation),
    IdleCheck,
}

struct Entry {
    number: u64,
    actor: ActorRef<GrainMsg>,
    /// Calls that arrived while this activation was stopping; they go to its successor
    /// once it has fully stopped (its `deactivated` hook included).
    parked: Vec<Invocation>,
}

/// The kinds this member hosts and its live activations.
pub(crate) struct Registry {
    member: MemberId,
    kinds: HashMap<String, Kind>,
    live: Mutex<HashMap<ClusterIdentity, Entry>>,
    next_number: AtomicU64,
    accepting: AtomicBool,
}

/// How many times a call may bounce off stopping activations before giving up.
const MAX_BOUNCES: usize = 16;

impl Registry {
    pub(crate) fn new(member: MemberId, kinds: Vec<Kind>) -> Self {
        Self {
            member,
            kinds: kinds.into_iter().map(|k| (k.name.to_string(), k)).collect(),
            live: Mutex::new(HashMap::new()),
            next_number: AtomicU64::new(1),
            accepting: AtomicBool::new(true),
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

    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// Hands `inv` to the activation of `id`, activating it if needed. The caller has
    /// already checked ownership.
    pub(crate) async fn deliver(
        &self,
        cluster: &Cluster,
        id: ClusterIdentity,
        mut inv: Invocation,
    ) {
        let Some(kind) = self.kinds.get(id.kind()) else {
            let msg = format!("member {} hosts no grain kind {}", self.member, id.kind());
            return inv
                .fail(
                    CallError::Application {
                        code: tonic::Code::Unimplemented,
                        message: msg,
                    },
                    &cluster.shared.metrics,
                )
                .await;
        };
        for _ in 0..MAX_BOUNCES {
            if !self.is_accepting() {
                let member = self.member.clone();
                return inv
                    .fail(CallError::ShuttingDown { member }, &cluster.shared.metrics)
                    .await;
            }
            // Existing activation? (Look without building anything.)
            let existing = self
                .live
                .lock()
                .get(&id)
                .map(|e| (e.number, e.actor.clone()));
            let (number, actor) = match existing {
                Some(found) => found,
                None => {
                    // Build the grain outside the lock: the factory is user code.
                    let built = std::panic::catch_unwind(AssertUnwindSafe(|| (kind.factory)(&id)));
                    let grain = match built {
                        Ok(g) => g,
                        Err(p) => {
                            let msg = format!(
                                "the factory of {} panicked: {}",
                                id.kind(),
                                panic_message(p.as_ref())
                            );
                            cluster.shared.metrics.activation_failed(id.kind_arc());
                            return inv
                                .fail(
                                    CallError::from(GrainError::internal(msg)),
                                    &cluster.shared.metrics,
                                )
                                .await;
                        }
                    };
                    let spawned = {
                        let mut live = self.live.lock();
                        match live.get(&id) {
                            // Someone else activated it meanwhile: use theirs.
                            Some(e) => Ok((e.number, e.actor.clone())),
                            None => {
                                let number = self.next_number.fetch_add(1, Ordering::Relaxed);
                                let args = Args {
                                    grain,
                                    ctx: GrainContext {
                                        identity: id.clone(),
                                        member: self.member.clone(),
                                        cluster: cluster.clone(),
                                        headers: HashMap::new(),
                                        deadline: None,
                                    },
                                    idle_timeout: kind.idle_timeout,
                                    number,
                                };
                                match ractor::ActorRuntime::spawn_instant(None, Activation, args) {
                                    Ok((actor, _)) => {
                                        cluster.shared.metrics.activation_started(id.kind_arc());
                                        live.insert(
                                            id.clone(),
                                            Entry {
                                                number,
                                                actor: actor.clone(),
                                                parked: Vec::new(),
                                            },
                                        );
                                        Ok((number, actor))
                                    }
                                    Err(e) => Err(format!("cannot activate {id}: {e}")),
                                }
                            }
                        }
                    };
                    match spawned {
                        Ok(found) => found,
                        Err(msg) => {
                            return inv
                                .fail(
                                    CallError::from(GrainError::internal(msg)),
                                    &cluster.shared.metrics,
                                )
                                .await;
                        }
                    }
                }
            };
            match actor.send_message(GrainMsg::Call(inv)) {
                Ok(()) => {
                    cluster.shared.metrics.mailbox(id.kind_arc(), 1);
                    return;
                }
                Err(MessagingErr::SendErr(GrainMsg::Call(back))) => {
                    // The activation is stopping. While it is still in the catalog (its
                    // queued calls and `deactivated` hook are running), park the call:
                    // its successor starts only after it has fully stopped.
                    let mut live = self.live.lock();
                    match live.get_mut(&id) {
                        Some(e) if e.number == number => {
                            e.parked.push(back);
                            return;
                        }
                        _ => inv = back,
                    }
                }
                Err(_) => return, // unreachable: the message is handed back on SendErr
            }
        }
        let msg = format!("{id} could not be activated: activations kept stopping");
        inv.fail(
            CallError::from(GrainError::internal(msg)),
            &cluster.shared.metrics,
        )
        .await;
    }

    /// Passivates every activation (each finishes the calls in its mailbox and runs its
    /// `deactivated` hook), waiting at most until `until`. Returns how many did not
    /// stop in time.
    pub(crate) async fn passivate_all(&self, cluster: &Cluster, until: Instant) -> usize {
        let entries: Vec<(ClusterIdentity, Entry)> = self.live.lock().drain().collect();
        let metrics = &cluster.shared.metrics;
        let drains = entries.into_iter().map(|(id, mut e)| async move {
            for inv in e.parked.drain(..) {
                let member = self.member.clone();
                inv.fail(CallError::ShuttingDown { member }, metrics).await;
            }
            let left = until.saturating_duration_since(Instant::now());
            let drained = e
                .actor
                .drain_and_wait(Some(left.max(Duration::from_millis(1))))
                .await;
            if drained.is_err() {
                // Killed actors skip post_stop: count them down here.
                e.actor.kill();
                metrics.activation_stopped(id.kind_arc(), false);
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

    /// True when this member hosts `kind`.
    pub(crate) fn hosts(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }
}

struct Activation;

struct Args {
    grain: Box<dyn Grain>,
    ctx: GrainContext,
    idle_timeout: Duration,
    number: u64,
}

struct State {
    grain: Box<dyn Grain>,
    ctx: GrainContext,
    idle_timeout: Duration,
    number: u64,
    activated: bool,
    /// The grain panicked or failed to activate: hand every further call to a fresh
    /// activation.
    broken: bool,
    stopping: bool,
    last_call: Instant,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

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
            grain: args.grain,
            ctx: args.ctx,
            idle_timeout: args.idle_timeout,
            number: args.number,
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
                let metrics = state.ctx.cluster.shared.metrics.clone();
                let kind = state.ctx.identity.kind_arc().clone();
                metrics.mailbox(&kind, -1);
                if state.broken {
                    let cluster = state.ctx.cluster.clone();
                    let id = state.ctx.identity.clone();
                    cluster.shared.registry.deliver(&cluster, id, inv).await;
                    return Ok(());
                }
                state.last_call = Instant::now();
                if Instant::now() >= inv.deadline {
                    let target = format!("{} {}", state.ctx.identity, inv.method);
                    inv.fail(
                        CallError::Timeout {
                            target,
                            after: Duration::ZERO,
                        },
                        &metrics,
                    )
                    .await;
                    return Ok(());
                }
                if !state.activated {
                    let activating = Instant::now();
                    let hook = AssertUnwindSafe(state.grain.activated(&state.ctx)).catch_unwind();
                    let outcome = match tokio::time::timeout_at(inv.deadline, hook).await {
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
                    if let Err(e) = outcome {
                        metrics.activation_failed(&kind);
                        state.broken = true;
                        state.retire(&myself);
                        inv.fail(e, &metrics).await;
                        return Ok(());
                    }
                    state.activated = true;
                }
                let Invocation {
                    method,
                    payload,
                    headers,
                    deadline,
                    reply,
                    _guard,
                } = inv;
                state.ctx.headers = headers;
                state.ctx.deadline = Some(deadline);
                let handling = Instant::now();
                let call = AssertUnwindSafe(state.grain.handle(&state.ctx, &method, payload))
                    .catch_unwind();
                let result = match tokio::time::timeout_at(deadline, call).await {
                    Ok(Ok(r)) => r.map_err(CallError::from),
                    Ok(Err(p)) => {
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
                    Err(_) => Err(CallError::Timeout {
                        target: format!("{} {}", state.ctx.identity, method),
                        after: deadline.saturating_duration_since(state.last_call),
                    }),
                };
                let max = state.ctx.cluster.shared.config.max_payload_bytes;
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
                state.last_call = Instant::now();
                reply.send(result, &metrics).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GrainMsg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        if state.activated && !state.broken {
            let hook = AssertUnwindSafe(state.grain.deactivated(&state.ctx)).catch_unwind();
            if let Err(p) = hook.await {
                tracing::warn!(
                    grain = %state.ctx.identity,
                    "grain panicked while deactivating: {}",
                    panic_message(p.as_ref())
                );
            }
        }
        let cluster = state.ctx.cluster.clone();
        let id = state.ctx.identity.clone();
        cluster
            .shared
            .metrics
            .activation_stopped(id.kind_arc(), state.broken);
        // Only now may a successor start: hand it the calls that waited.
        for inv in cluster.shared.registry.finish(&id, state.number) {
            cluster
                .shared
                .registry
                .deliver(&cluster, id.clone(), inv)
                .await;
        }
        Ok(())
    }
}
