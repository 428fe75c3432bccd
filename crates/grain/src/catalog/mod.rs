//! The local activation catalog (Orleans' name for it): the grain kinds this member
//! hosts and its live activations (`activation.rs`).
//!
//! An activation is an entry in one map: an idle one is its state alone (no task, no
//! channel, no timer); a call for it spawns a runner task that runs the calls queued
//! in the entry one at a time and parks the state back when none is left. Idle
//! passivation is one sweep of the map for all activations (`sweep_idle`).
//!
//! Rules this module keeps:
//! - **One live activation per identity per member.** The catalog maps identity →
//!   activation under one lock; an activation removes its own entry (compare-and-remove
//!   by activation number) once it has fully stopped, so a newer one is never removed
//!   by an older.
//! - **Turn-based.** At most one runner per entry: an activation handles one call at a
//!   time, in the order the calls reached its queue.
//! - **Nothing is lost at passivation.** A stopping activation drains the calls already
//!   in its queue; calls arriving later are parked in its entry and handed to a fresh
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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use activation::Resident;

use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::Kind;
use crate::identity::{ClusterIdentity, MemberId};
use crate::metrics::Metrics;

/// Makes the context of a new activation of an identity (its cluster handle and
/// member come from whoever delivers the call).
pub(crate) type NewContext<'a> = &'a (dyn Fn(ClusterIdentity) -> GrainContext + Sync);

/// Where an activation is in its life.
enum Phase {
    /// No call waits and no task runs: the activation is its state alone.
    Idle(Resident),
    /// A runner task holds the state and runs the queue.
    Running,
    /// Running its `deactivated` hook, or about to; later calls are parked.
    Stopping,
}

/// One identity's activation in the catalog.
struct Entry {
    /// Which activation of the identity this is (a successor gets a new number).
    number: u64,
    phase: Phase,
    /// Calls to run here, in the order they arrived.
    queue: VecDeque<Invocation>,
    /// This activation is to stop once `queue` is done: calls arriving now wait in
    /// `parked`.
    retiring: bool,
    /// Calls that arrived while this activation was retiring or stopping; they go to
    /// its successor once it has fully stopped (its `deactivated` hook included).
    parked: Vec<Invocation>,
    /// When its last turn ended (or it started).
    last_call: Instant,
    /// The runner, while one runs (aborted when the shutdown grace runs out).
    task: Option<AbortHandle>,
}

impl Entry {
    fn new(number: u64) -> Self {
        Entry {
            number,
            phase: Phase::Running,
            queue: VecDeque::new(),
            retiring: false,
            parked: Vec::new(),
            last_call: Instant::now(),
            task: None,
        }
    }

    /// Takes the state of an idle activation, leaving it `then`.
    fn take_idle(&mut self, then: Phase) -> Option<Resident> {
        if !matches!(self.phase, Phase::Idle(_)) {
            return None;
        }
        match std::mem::replace(&mut self.phase, then) {
            Phase::Idle(res) => Some(res),
            _ => None,
        }
    }
}

/// What a runner does after a turn.
enum Next {
    /// Run this call (the state is handed back).
    Run(Invocation, Resident),
    /// No call is left: the state is parked in the entry (or the entry is gone).
    Parked,
    /// No call is left and the activation is to stop: run its stop.
    Stop(Resident),
}

/// Activations stopped together (idle, unowned, shut down) run their hooks this many
/// at a time.
const STOP_CONCURRENCY: usize = 256;

/// A kind this member hosts, and how many calls wait in its activations' queues.
struct Hosted {
    kind: Kind,
    queued: Arc<AtomicI64>,
}

impl Hosted {
    fn queued(&self, delta: i64) {
        self.queued.fetch_add(delta, Ordering::Relaxed);
    }
}

/// The kinds this member hosts and its live activations.
pub(crate) struct Catalog {
    member: MemberId,
    kinds: HashMap<String, Hosted>,
    live: Mutex<HashMap<ClusterIdentity, Entry>>,
    next_number: AtomicU64,
    accepting: AtomicBool,
    metrics: Arc<Metrics>,
    max_payload_bytes: usize,
    /// How long `activated` and `deactivated` may run.
    hook_timeout: Duration,
    /// Notified whenever an activation leaves the catalog.
    stopped: Notify,
}

/// The `rpc.method` of a call whose method the grain does not know (OpenTelemetry's
/// value for it).
const OTHER_METHOD: &str = "_OTHER";

/// The most calls parked on one stopping activation; more are refused.
const MAX_PARKED: usize = 10_000;

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
            kinds: kinds
                .into_iter()
                .map(|kind| {
                    let queued = metrics.queued(&kind.name);
                    (kind.name.to_string(), Hosted { kind, queued })
                })
                .collect(),
            live: Mutex::new(HashMap::new()),
            next_number: AtomicU64::new(1),
            accepting: AtomicBool::new(true),
            metrics,
            max_payload_bytes,
            hook_timeout,
            stopped: Notify::new(),
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
        self.metrics.server_call(method, code, received);
        self.respond_recorded(trace, reply, result);
    }

    /// [`Catalog::respond`] when `rpc.server.call.duration` is recorded already.
    pub(crate) fn respond_recorded(
        &self,
        trace: Option<&opentelemetry::Context>,
        reply: Box<dyn Reply>,
        result: Result<Bytes, CallError>,
    ) {
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
        inv: Invocation,
        new_context: NewContext<'_>,
    ) {
        let Some(hosted) = self.kinds.get(id.kind()) else {
            let message = format!("member {} hosts no grain kind {}", self.member, id.kind());
            let code = tonic::Code::Unimplemented;
            return self.fail(inv, CallError::Application { code, message });
        };
        if !self.is_accepting() {
            let member = self.member.clone();
            return self.fail(inv, CallError::ShuttingDown { member });
        }
        let mut live = self.live.lock();
        let entry = match live.get_mut(&id) {
            Some(e) => e,
            None => {
                let number = self.next_number.fetch_add(1, Ordering::Relaxed);
                self.metrics.activation_started(id.kind_arc());
                live.entry(id.clone()).or_insert(Entry::new(number))
            }
        };
        if entry.retiring || matches!(entry.phase, Phase::Stopping) {
            // The activation is stopping. Park the call: its successor starts only
            // after it has fully stopped. Parked calls are bounded, and those past
            // their deadline are answered now rather than when the successor starts.
            let now = Instant::now();
            let (expired, waiting): (Vec<_>, Vec<_>) =
                entry.parked.drain(..).partition(|p| p.deadline <= now);
            entry.parked = waiting;
            let refused = if entry.parked.len() >= MAX_PARKED {
                Some(inv)
            } else {
                entry.parked.push(inv);
                None
            };
            drop(live);
            for p in expired {
                let target = format!("{id} {}", p.method);
                let after = Duration::ZERO;
                self.fail(p, CallError::Timeout { target, after });
            }
            if let Some(back) = refused {
                let message = format!("{MAX_PARKED} calls already wait for {id} to restart");
                let code = tonic::Code::ResourceExhausted;
                self.fail(back, CallError::Application { code, message });
            }
            return;
        }
        entry.queue.push_back(inv);
        let start = if entry.task.is_some() {
            None
        } else if let Some(res) = entry.take_idle(Phase::Running) {
            Some(res)
        } else {
            // A new entry: the grain itself is built by the factory (user code) in
            // the runner, on its first call — never here, on a peer stream's reader.
            let factory = hosted.kind.factory.clone();
            Some(Resident::new(
                factory,
                hosted.queued.clone(),
                new_context(id.clone()),
            ))
        };
        if let Some(res) = start {
            let number = entry.number;
            let runner = tokio::spawn(self.clone().run(id.clone(), number, res));
            entry.task = Some(runner.abort_handle());
        }
        drop(live);
        hosted.queued(1);
    }

    /// What activation `number` of `id`, whose state is `res`, does next.
    fn next_call(&self, id: &ClusterIdentity, number: u64, res: Resident) -> Next {
        let mut live = self.live.lock();
        let Some(e) = live.get_mut(id).filter(|e| e.number == number) else {
            return Next::Parked;
        };
        if let Some(inv) = e.queue.pop_front() {
            return Next::Run(inv, res);
        }
        e.last_call = Instant::now();
        if e.queue.capacity() > 0 {
            // An idle activation keeps no buffer.
            e.queue = VecDeque::new();
        }
        if e.retiring || res.broken {
            e.phase = Phase::Stopping;
            return Next::Stop(res);
        }
        e.task = None;
        e.phase = Phase::Idle(res);
        Next::Parked
    }

    /// Activation `number` of `id` broke: the calls queued behind it wait for a fresh
    /// activation (ahead of any already parked).
    fn retire_broken(&self, id: &ClusterIdentity, number: u64) {
        let mut live = self.live.lock();
        if let Some(e) = live.get_mut(id).filter(|e| e.number == number) {
            e.retiring = true;
            let moved = e.queue.len();
            let mut parked: Vec<Invocation> = e.queue.drain(..).collect();
            parked.append(&mut e.parked);
            e.parked = parked;
            drop(live);
            if let Some(hosted) = self.kinds.get(id.kind()) {
                hosted.queued(-(moved as i64));
            }
        }
    }

    /// Activation `number` of `id` (whose state was `res`) has fully stopped: forgets
    /// it, or, when calls were parked meanwhile, starts its successor with them.
    fn finish(self: &Arc<Self>, id: &ClusterIdentity, number: u64, res: &Resident) {
        let mut live = self.live.lock();
        let Some(e) = live.get_mut(id).filter(|e| e.number == number) else {
            return;
        };
        let parked = std::mem::take(&mut e.parked);
        if parked.is_empty() || !self.is_accepting() {
            live.remove(id);
            drop(live);
            self.stopped.notify_waiters();
            for inv in parked {
                let member = self.member.clone();
                self.fail(inv, CallError::ShuttingDown { member });
            }
            return;
        }
        let next = self.next_number.fetch_add(1, Ordering::Relaxed);
        let moved = parked.len();
        *e = Entry::new(next);
        e.queue = parked.into();
        let runner = tokio::spawn(self.clone().run(id.clone(), next, res.successor()));
        e.task = Some(runner.abort_handle());
        drop(live);
        self.metrics.activation_started(id.kind_arc());
        if let Some(hosted) = self.kinds.get(id.kind()) {
            hosted.queued(moved as i64);
        }
    }

    /// Asks the activations `stop` picks to stop: a running one once its queued calls
    /// are done, an idle one now (returned, to be stopped by the caller). Answers how
    /// many were asked.
    fn retire_where(
        &self,
        mut stop: impl FnMut(&ClusterIdentity, &Entry) -> bool,
    ) -> (usize, Vec<(ClusterIdentity, u64, Resident)>) {
        let mut asked = 0;
        let mut idle = Vec::new();
        let mut live = self.live.lock();
        for (id, e) in live.iter_mut() {
            if e.retiring || matches!(e.phase, Phase::Stopping) || !stop(id, e) {
                continue;
            }
            asked += 1;
            e.retiring = true;
            if let Some(res) = e.take_idle(Phase::Stopping) {
                idle.push((id.clone(), e.number, res));
            }
        }
        (asked, idle)
    }

    /// Stops these idle activations, [`STOP_CONCURRENCY`] at a time.
    async fn stop_each(self: Arc<Self>, idle: Vec<(ClusterIdentity, u64, Resident)>) {
        futures::stream::iter(idle)
            .for_each_concurrent(STOP_CONCURRENCY, |(id, number, res)| {
                self.clone().stop(id, number, res)
            })
            .await;
    }

    /// Passivates the activations of identities `owned` says this member no longer
    /// owns (after a topology change or a fence), so a stale activation never answers
    /// again if ownership comes back. Returns how many were asked to stop.
    pub(crate) fn passivate_unowned(
        self: &Arc<Self>,
        owned: impl Fn(&ClusterIdentity) -> bool,
    ) -> usize {
        let (asked, idle) = self.retire_where(|id, _| !owned(id));
        if !idle.is_empty() {
            tokio::spawn(self.clone().stop_each(idle));
        }
        asked
    }

    /// Passivates activations idle for their kind's idle timeout, until `stop` says
    /// true. Looks a few times per shortest idle timeout (at most once a minute).
    pub(crate) async fn sweep_idle(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let Some(shortest) = self.kinds.values().map(|h| h.kind.idle_timeout).min() else {
            return;
        };
        let period = (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(60));
        let timeouts: HashMap<&str, Duration> = self
            .kinds
            .iter()
            .map(|(name, h)| (name.as_str(), h.kind.idle_timeout))
            .collect();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(period) => {}
            }
            let now = Instant::now();
            let (asked, idle) = self.retire_where(|id, e| {
                matches!(e.phase, Phase::Idle(_))
                    && timeouts
                        .get(id.kind())
                        .is_some_and(|t| now.saturating_duration_since(e.last_call) >= *t)
            });
            if asked > 0 {
                tracing::debug!(asked, "passivating idle activations");
                tokio::spawn(self.clone().stop_each(idle));
            }
        }
    }

    /// Passivates every activation (each finishes the calls in its queue and runs its
    /// `deactivated` hook, many at once), waiting at most until `until`; calls parked
    /// meanwhile are answered `ShuttingDown`. Returns how many did not stop in time
    /// (their runners are aborted).
    pub(crate) async fn passivate_all(self: &Arc<Self>, until: Instant) -> usize {
        let (_, idle) = self.retire_where(|_, _| true);
        let parked: Vec<Invocation> = self
            .live
            .lock()
            .values_mut()
            .flat_map(|e| std::mem::take(&mut e.parked))
            .collect();
        for inv in parked {
            let member = self.member.clone();
            self.fail(inv, CallError::ShuttingDown { member });
        }
        let _ = tokio::time::timeout_at(until, self.clone().stop_each(idle)).await;
        // Running activations finish their queues and stop themselves.
        loop {
            let stopped = self.stopped.notified();
            tokio::pin!(stopped);
            stopped.as_mut().enable();
            if self.live.lock().is_empty() || tokio::time::timeout_at(until, stopped).await.is_err()
            {
                break;
            }
        }
        let late: Vec<(ClusterIdentity, Entry)> = self.live.lock().drain().collect();
        for (id, e) in &late {
            if let Some(task) = &e.task {
                task.abort();
            }
            self.metrics.activation_stopped(id.kind_arc(), false);
        }
        late.len()
    }

    /// Drops every activation at once, hooks unrun (a node dropped without shutdown).
    pub(crate) fn abandon(&self) {
        for (_, e) in self.live.lock().drain() {
            if let Some(task) = e.task {
                task.abort();
            }
        }
    }
}
