//! The caller side of a link: one task per peer that owns the stream, batches queued
//! requests into one write, matches responses to callers by correlation id, and
//! reconnects with backoff and jitter.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use std::sync::Arc;

use super::budget::{BudgetPermit, QueueBudget};
use super::connect::{Dialer, OpenError};
use super::pb;
use crate::call::Backoff;
use crate::error::CallError;
use crate::identity::Member;
use crate::metrics::Metrics;
use crate::suspicion::Suspicion;

/// Settings shared by all links of a member.
#[derive(Clone, Debug)]
pub(crate) struct LinkConfig {
    pub(crate) metrics: Arc<Metrics>,
    /// Who this member is in a handshake, and how it connects.
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) queue: usize,
    /// Payload bytes queued per link before callers wait.
    pub(crate) queue_bytes: usize,
    pub(crate) max_batch: usize,
    pub(crate) max_batch_bytes: usize,
    pub(crate) reconnect: Backoff,
    /// Where a refused connection is reported (and an answer ends a suspicion).
    pub(crate) suspicion: Arc<Suspicion>,
}

type ReplyTx = oneshot::Sender<Result<Bytes, CallError>>;

/// How long a stream must have lived (and answered) for its break to count as a one-off
/// rather than as a failing peer.
const STABLE_AFTER: Duration = Duration::from_secs(1);

struct Outbound {
    request: pb::Request,
    deadline: Instant,
    reply: ReplyTx,
    /// The payload's bytes in the link's queue budget, freed when it is staged for
    /// writing (or fails).
    _queued: BudgetPermit,
}

/// A handle on the link to one peer. Dropping or closing it ends the link task, failing
/// everything still pending.
pub(crate) struct PeerLink {
    member: Member,
    tx: mpsc::Sender<Outbound>,
    queued: QueueBudget,
    close: watch::Sender<bool>,
}

impl PeerLink {
    /// Starts the link task for `member`; it connects on first use.
    pub(crate) fn spawn(config: LinkConfig, member: Member) -> Self {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let queued = QueueBudget::new(config.queue_bytes);
        let (close, closed) = watch::channel(false);
        let task = LinkTask {
            config,
            member: member.clone(),
            rx,
            closed,
        };
        tokio::spawn(task.run());
        Self {
            member,
            tx,
            queued,
            close,
        }
    }

    /// Payload bytes queued on this link now (not yet written).
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.queued_bytes()
    }

    /// The peer.
    pub(crate) fn member(&self) -> &Member {
        &self.member
    }

    /// Closes the link: calls written to the peer fail at once with
    /// `MemberUnavailable { maybe_ran: true }`, queued ones with `maybe_ran: false`.
    pub(crate) fn close(&self) {
        self.queued.close();
        let _ = self.close.send(true);
    }

    /// Sends one request and waits for its answer until `deadline`. Its errors name no
    /// target: the caller adds it ([`CallError::with_target`]).
    pub(crate) async fn call(
        &self,
        mut request: pb::Request,
        deadline: Instant,
    ) -> Result<Bytes, CallError> {
        let started = Instant::now();
        let timeout = |started: Instant| CallError::Timeout {
            target: String::new(),
            after: started.elapsed(),
        };
        let closed = || CallError::MemberUnavailable {
            member: self.member.id.clone(),
            reason: "the link to this member is closed".into(),
            maybe_ran: false,
        };
        let len = request.payload.len();
        let waited = match self.queued.try_reserve(len) {
            Some(permit) => Ok(Some(permit)),
            None => tokio::time::timeout_at(deadline, self.queued.reserve(len)).await,
        };
        let queued = match waited {
            Ok(Some(permit)) => permit,
            Ok(None) => return Err(closed()),
            Err(_) => {
                tracing::debug!(peer = %self.member.id, payload_bytes = len,
                    "call to {}/{} {} timed out waiting for room in the link's queue \
                     ({} bytes of payloads at most, outbound_queue_bytes)",
                    request.kind, request.identity, request.method, self.queued.max_bytes());
                return Err(timeout(started));
            }
        };
        let (reply, answer) = oneshot::channel();
        request.correlation_id = 0;
        let out = Outbound {
            request,
            deadline,
            reply,
            _queued: queued,
        };
        match tokio::time::timeout_at(deadline, self.tx.send(out)).await {
            Err(_) => return Err(timeout(started)),
            Ok(Err(_)) => return Err(closed()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Err(_) => Err(timeout(started)),
            Ok(Err(_)) => Err(CallError::MemberUnavailable {
                member: self.member.id.clone(),
                reason: "the link to this member closed while the call was in flight".into(),
                maybe_ran: true,
            }),
            Ok(Ok(r)) => r,
        }
    }
}

impl Drop for PeerLink {
    fn drop(&mut self) {
        self.close();
    }
}

struct LinkTask {
    config: LinkConfig,
    member: Member,
    rx: mpsc::Receiver<Outbound>,
    closed: watch::Receiver<bool>,
}

enum Ended {
    /// The link was closed (the member left): nothing to reconnect to.
    Closed,
    /// The stream failed; `answered` says whether any answer came on it.
    Broken { reason: String, answered: bool },
}

/// The calls written on a stream and not answered, by correlation id. Ids are
/// this member's own sequence, so a fast hash (foldhash) is safe here.
type Calls = hashbrown::HashMap<u64, Pending>;

struct Pending {
    started: Instant,
    reply: ReplyTx,
}

/// What a stream's answers said besides the answers.
#[derive(Default)]
struct StreamNews {
    /// Some answer came on this stream.
    answered: bool,
    /// The peer said it is leaving gracefully: it will answer what was written to it.
    leaving: bool,
    /// The peer is to be told that this caller saw it leaving.
    ack_due: bool,
}

impl LinkTask {
    fn unavailable(&self, reason: &str, maybe_ran: bool) -> CallError {
        CallError::MemberUnavailable {
            member: self.member.id.clone(),
            reason: reason.to_string(),
            maybe_ran,
        }
    }

    /// Closes the queue (senders now fail at once) and fails what it held.
    fn close_and_fail_queued(&mut self, reason: &str) {
        self.rx.close();
        self.fail_queued(reason);
    }

    /// Fails every queued (never written) request.
    fn fail_queued(&mut self, reason: &str) {
        while let Ok(o) = self.rx.try_recv() {
            let _ = o.reply.send(Err(self.unavailable(reason, false)));
        }
    }

    async fn run(mut self) {
        let mut failures: u32 = 0;
        loop {
            // Connect on demand: wait for the first request (or the close).
            let first = tokio::select! {
                biased;
                _ = self.closed.wait_for(|c| *c) => None,
                o = self.rx.recv() => match o {
                    Some(o) => Some(o),
                    None => return,
                },
            };
            let Some(first) = first else {
                self.close_and_fail_queued("the member left the cluster");
                return;
            };
            // A link closed while connecting fails what it holds at once.
            let opened = tokio::select! {
                biased;
                _ = self.closed.wait_for(|c| *c) => None,
                r = super::connect::open(&self.config.dialer, &self.member) => Some(r),
            };
            let Some(opened) = opened else {
                let _ = first
                    .reply
                    .send(Err(self.unavailable("the member left the cluster", false)));
                self.close_and_fail_queued("the member left the cluster");
                return;
            };
            let reason = match opened {
                Ok((requests, responses)) => {
                    self.config.suspicion.answered(&self.member);
                    if failures > 0 {
                        tracing::info!(peer = %self.member.id, address = %self.member.address,
                            "reconnected to peer");
                    }
                    let peer = self.member.id.to_string();
                    self.config.metrics.connected(&peer);
                    let connected_at = Instant::now();
                    match self.serve(first, requests, responses).await {
                        Ended::Closed => {
                            self.config.metrics.disconnected(&peer, "closed");
                            return;
                        }
                        Ended::Broken { reason, answered } => {
                            self.config.metrics.disconnected(&peer, "broken");
                            tracing::warn!(peer = %self.member.id, address = %self.member.address,
                                "link to peer broke: {reason}");
                            if answered && connected_at.elapsed() >= STABLE_AFTER {
                                // It worked: the next call reconnects at once.
                                failures = 0;
                                continue;
                            }
                            // It broke before answering anything, or soon after it
                            // connected: a peer that accepts and then fails is retried
                            // with backoff, like one that cannot be reached, not as
                            // fast as calls arrive.
                            reason
                        }
                    }
                }
                Err(e) => {
                    let (reason, replaced) = match e {
                        OpenError::Replaced(r) => (r, true),
                        OpenError::Failed(r) => (r, false),
                    };
                    if failures == 0 {
                        tracing::warn!(peer = %self.member.id, address = %self.member.address,
                            "cannot connect to peer: {reason}");
                    } else {
                        tracing::debug!(peer = %self.member.id, failures, "cannot connect to peer: {reason}");
                    }
                    let _ = first.reply.send(Err(self.unavailable(&reason, false)));
                    self.fail_queued(&reason);
                    if replaced {
                        self.config.suspicion.replaced(&self.member, &reason);
                        self.fail_queued("another member answers at the member's address");
                    } else if self.config.suspicion.check_refused(&self.member).await {
                        self.fail_queued("the member refuses connections");
                    }
                    reason
                }
            };
            failures += 1;
            if self.pause(failures, &reason).await {
                return;
            }
        }
    }

    /// Waits before connection attempt `failures + 1`. Calls queued meanwhile wait,
    /// within their deadlines, for the next attempt or for the member to leave the
    /// topology (then they fail as not run and their callers retry on the new owner):
    /// failing them at once would give up on an identity just before it fails over.
    /// True when the link was closed meanwhile (and the queue failed).
    async fn pause(&mut self, failures: u32, reason: &str) -> bool {
        let pause = self.config.reconnect.delay(failures);
        tracing::debug!(peer = %self.member.id, failures, ?pause, "next connection attempt after a pause: {reason}");
        let closed = tokio::select! {
            _ = self.closed.wait_for(|c| *c) => true,
            _ = tokio::time::sleep(pause) => false,
        };
        if closed {
            self.close_and_fail_queued("the member left the cluster");
        }
        closed
    }

    /// Runs one connected stream until it breaks or the link is closed.
    async fn serve(
        &mut self,
        first: Outbound,
        requests: mpsc::Sender<pb::RequestBatch>,
        mut responses: tonic::Streaming<pb::ResponseBatch>,
    ) -> Ended {
        let mut pending = Calls::default();
        let mut next_id: u64 = 1;
        let mut staged: Option<pb::RequestBatch> = None;
        let mut staged_at = Instant::now();
        let mut carry: Option<Outbound> = Some(first);
        let mut news = StreamNews::default();

        // Stage a batch from `carry` and whatever else is queued right now.
        let stage = |this: &mut Self,
                     first: Outbound,
                     pending: &mut Calls,
                     next_id: &mut u64,
                     carry: &mut Option<Outbound>|
         -> Option<pb::RequestBatch> {
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let mut next = Some(first);
            // One clock read a batch: the requests it takes were queued by now.
            let now = Instant::now();
            while let Some(mut o) = next.take() {
                if o.reply.is_closed() {
                    // The caller gave up; never send it.
                } else if o.deadline <= now {
                    let _ = o.reply.send(Err(CallError::Timeout {
                        target: String::new(),
                        after: Duration::ZERO,
                    }));
                } else {
                    let len = o.request.encoded_len();
                    if !batch.is_empty() && bytes + len > this.config.max_batch_bytes {
                        *carry = Some(o);
                        break;
                    }
                    bytes += len;
                    let id = *next_id;
                    *next_id += 1;
                    o.request.correlation_id = id;
                    o.request.timeout_micros = super::micros_between(now, o.deadline);
                    batch.push(o.request);
                    pending.insert(
                        id,
                        Pending {
                            started: now,
                            reply: o.reply,
                        },
                    );
                }
                if batch.len() >= this.config.max_batch {
                    break;
                }
                next = this.rx.try_recv().ok();
            }
            if batch.is_empty() {
                return None;
            }
            let n = batch.len() as u64;
            this.config.metrics.serialized("request", n);
            this.config.metrics.batch("request", n);
            this.config.metrics.inflight(n as i64);
            Some(pb::RequestBatch {
                requests: batch,
                leaving_seen: false,
            })
        };

        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ended = loop {
            if staged.is_none()
                && let Some(o) = carry.take()
            {
                staged = stage(self, o, &mut pending, &mut next_id, &mut carry);
                staged_at = Instant::now();
            }
            if news.ack_due {
                // Tell the leaving peer we know, with the next write.
                news.ack_due = false;
                staged
                    .get_or_insert_with(|| {
                        staged_at = Instant::now();
                        pb::RequestBatch::default()
                    })
                    .leaving_seen = true;
            }
            tokio::select! {
                biased;
                _ = self.closed.wait_for(|c| *c) => break Ended::Closed,
                msg = responses.next() => match msg {
                    Some(Ok(batch)) => take_answers(&self.member, &self.config.metrics, batch, &mut pending, &mut news),
                    Some(Err(status)) => break Ended::Broken { reason: format!("stream error: {status}"), answered: news.answered },
                    None => break Ended::Broken { reason: "the peer closed the stream".into(), answered: news.answered },
                },
                permit = requests.reserve(), if staged.is_some() => match permit {
                    Ok(permit) => {
                        if let Some(b) = staged.take() {
                            self.config.metrics.write_waited(staged_at.elapsed());
                            permit.send(b);
                        }
                    }
                    Err(_) => break Ended::Broken { reason: "the request stream closed".into(), answered: news.answered },
                },
                _ = sweep.tick() => {
                    // Forget calls whose callers gave up and whose answers never came.
                    let before = pending.len();
                    pending.retain(|_, p| !p.reply.is_closed());
                    self.config.metrics.inflight(-((before - pending.len()) as i64));
                }
                o = self.rx.recv(), if staged.is_none() && carry.is_none() => match o {
                    Some(o) => carry = Some(o),
                    None => break Ended::Closed,
                },
            }
        };
        let (reason, left) = match &ended {
            Ended::Closed => ("the member left the cluster".to_string(), true),
            Ended::Broken { reason, .. } => (reason.clone(), false),
        };
        let mut reason = reason;
        // Staged requests were never written: they did not run.
        if let Some(b) = staged.take() {
            for r in b.requests {
                if let Some(p) = pending.remove(&r.correlation_id) {
                    self.config.metrics.inflight(-1);
                    let _ = p.reply.send(Err(self.unavailable(&reason, false)));
                }
            }
        }
        if let Some(o) = carry.take() {
            let _ = o.reply.send(Err(self.unavailable(&reason, false)));
        }
        if left {
            self.close_and_fail_queued(&reason);
            if news.leaving && !pending.is_empty() {
                // A graceful leave: the member answers what was written to it. Keep
                // reading until every such call is answered or its caller gave up.
                reason = self.drain(&mut responses, &mut pending, &mut news).await;
            }
        }
        self.config.metrics.inflight(-(pending.len() as i64));
        for (_, p) in pending.drain() {
            let _ = p.reply.send(Err(self.unavailable(&reason, true)));
        }
        ended
    }

    /// After a leaving member left the topology: reads answers until nothing written
    /// to it is pending (answered, or its caller gave up), or the stream ends. Returns
    /// why the calls still pending (if any) failed.
    async fn drain(
        &self,
        responses: &mut tonic::Streaming<pb::ResponseBatch>,
        pending: &mut Calls,
        news: &mut StreamNews,
    ) -> String {
        let mut sweep = tokio::time::interval(Duration::from_millis(100));
        while !pending.is_empty() {
            tokio::select! {
                msg = responses.next() => match msg {
                    Some(Ok(batch)) => take_answers(&self.member, &self.config.metrics, batch, pending, news),
                    Some(Err(status)) => return format!("the leaving member's stream failed: {status}"),
                    None => return "the leaving member closed the stream before answering".into(),
                },
                _ = sweep.tick() => {
                    let before = pending.len();
                    pending.retain(|_, p| !p.reply.is_closed());
                    self.config.metrics.inflight(-((before - pending.len()) as i64));
                }
            }
        }
        String::new()
    }
}

/// Hands the answers of `batch` to their callers; notes what the batch said.
fn take_answers(
    member: &Member,
    metrics: &Metrics,
    batch: pb::ResponseBatch,
    pending: &mut Calls,
    news: &mut StreamNews,
) {
    if batch.leaving && !news.leaving {
        tracing::debug!(peer = %member.id, "peer is leaving; it answers what it was sent");
        news.leaving = true;
        news.ack_due = true;
    }
    if batch.responses.is_empty() {
        return;
    }
    news.answered = true;
    metrics.deserialized("response", batch.responses.len() as u64);
    for r in batch.responses {
        match pending.remove(&r.correlation_id) {
            Some(p) => {
                metrics.inflight(-1);
                let outcome = super::outcome(&member.id, p.started, r.result);
                if p.reply.send(outcome).is_err() {
                    metrics.deadletter("caller_gone");
                }
            }
            None => metrics.deadletter("unknown_correlation_id"),
        }
    }
}
