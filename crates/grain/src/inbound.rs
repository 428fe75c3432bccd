//! What a call arriving from another member goes through before the catalog: the
//! transport hands it to [`Inbound`] (its [`Dispatch`]), which refuses a kind this
//! member does not host, a call while shutting down (retriable), and a call for an
//! identity this member does not own under *its* topology ("wrong owner", retriable —
//! unless the owner it sees refuses connections from here too: then the caller's
//! suspicion is confirmed and this member, the next owner, takes the call);
//! the rest go to the activation catalog, which answers through the transport's
//! [`ResponseSink`] (the [`Reply`] implemented here).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::time::Instant;

use crate::catalog::{Invocation, Reply};
use crate::cluster::Cluster;
use crate::context::GrainContext;
use crate::error::CallError;
use crate::grain::Code;
use crate::identity::{ClusterIdentity, Member, MemberId};
use crate::remote::{self, Dispatch, ResponseSink, pb};

/// The answer to a remote caller goes onto that caller's response stream.
impl Reply for ResponseSink {
    fn send(self: Box<Self>, result: Result<Bytes, CallError>) -> Result<(), &'static str> {
        (*self).send(result)
    }
}

/// The server side's entry into this member.
pub(crate) struct Inbound {
    cluster: Cluster,
}

impl Inbound {
    /// The entry into the member `cluster` is the handle of.
    pub(crate) fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn refuse(&self, sink: ResponseSink, error: CallError) {
        let catalog = &self.cluster.shared.catalog;
        catalog.answer(Box::new(sink), Err(error));
    }
}

impl Dispatch for Inbound {
    fn cluster_name(&self) -> &str {
        &self.cluster.shared.config.cluster_name
    }

    fn member_id(&self) -> &MemberId {
        &self.cluster.shared.me.id
    }

    fn dispatch(&self, from: &MemberId, request: pb::Request, sink: ResponseSink) {
        let shared = &self.cluster.shared;
        let guard = shared.inflight.enter();
        let id = ClusterIdentity::new(request.kind, request.identity);
        if !shared.catalog.hosts(id.kind()) {
            // Not a placement disagreement (retrying cannot help): say what is wrong.
            let message = format!("member {} hosts no grain kind {}", shared.me.id, id.kind());
            if let Some(suppressed) = UNKNOWN_KINDS.allow() {
                tracing::warn!(peer = %from, kind = %id.kind(), suppressed,
                    "refused a call from {from}: {message}");
            }
            let err = CallError::Application {
                code: Code::Unimplemented,
                message,
            };
            return self.refuse(sink, err);
        }
        if !shared.catalog.is_accepting() {
            let member = shared.me.id.clone();
            return self.refuse(sink, CallError::ShuttingDown { member });
        }
        // The common case (this member owns it) clones nothing; another owner is
        // cloned only for the rare confirmation path below.
        let owner = {
            let table = shared.topology.load();
            match table.owner(id.kind(), id.identity()) {
                Some(m) if m.id == shared.me.id => Owner::Me,
                Some(m) => Owner::Other(m.clone()),
                None => Owner::Nobody,
            }
        };
        let inv = Invocation {
            method: request.method,
            payload: request.payload,
            headers: request.headers,
            deadline: remote::deadline_from_micros(request.timeout_micros),
            received: Instant::now(),
            trace: None,
            reply: Box::new(sink),
            guard,
        };
        match owner {
            Owner::Me => self.deliver(id, inv, from),
            Owner::Other(m) => {
                // The caller thinks this member owns the identity; here, `m` does. If the
                // caller routed around `m` because it refuses connections, confirm that
                // before owning anything (see suspicion.rs); otherwise it is a plain
                // disagreement between topologies: "wrong owner", retried.
                let this = Inbound::new(self.cluster.clone());
                let from = from.clone();
                tokio::spawn(async move { this.confirm_then_deliver(m, id, inv, from).await });
            }
            Owner::Nobody => self.wrong_owner(id, inv),
        }
    }
}

/// Calls for a kind this member does not host are logged at most once a second (a
/// peer can send them at will); the line counts those left out since the last one.
static UNKNOWN_KINDS: Throttle = Throttle::new();

/// At most one event a second passes; the others are counted.
struct Throttle {
    /// When the last event passed, in ms since the first `allow`; `u64::MAX`: never.
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    const fn new() -> Self {
        Self {
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(events left out since the last that passed)` when this one passes.
    fn allow(&self) -> Option<u64> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let now = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis();
        self.allow_at(u64::try_from(now).unwrap_or(u64::MAX - 1))
    }

    /// [`Throttle::allow`] at `now` ms on its clock.
    fn allow_at(&self, now: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= 1000;
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// Who owns an arriving call's identity in this member's view.
enum Owner {
    Me,
    Other(Member),
    Nobody,
}

impl Inbound {
    /// Hands `inv` (from member `from`) to the catalog, with its SERVER span when this
    /// member records spans.
    fn deliver(&self, id: ClusterIdentity, mut inv: Invocation, from: &MemberId) {
        let shared = &self.cluster.shared;
        if let Some(t) = &shared.config.tracing {
            let span = t.server_span(&id, &inv.method, &inv.headers, &shared.me, Some(from));
            inv.trace = Some(span);
        }
        let new_context = |id| GrainContext::new(id, self.cluster.clone());
        self.cluster.shared.catalog.deliver(id, inv, &new_context);
    }

    fn wrong_owner(&self, id: ClusterIdentity, inv: Invocation) {
        let shared = &self.cluster.shared;
        let err = CallError::WrongOwner {
            member: shared.me.id.clone(),
            target: id.to_string(),
        };
        shared.catalog.answer(inv.reply, Err(err));
    }

    /// Delivers `inv` if `owner` refuses connections from here too and this member is
    /// then the owner; answers "wrong owner" otherwise.
    async fn confirm_then_deliver(
        &self,
        owner: Member,
        id: ClusterIdentity,
        inv: Invocation,
        from: MemberId,
    ) {
        let shared = &self.cluster.shared;
        if shared.suspicion.check(&owner).await {
            let owned = shared
                .topology
                .load()
                .owner(id.kind(), id.identity())
                .is_some_and(|m| m.id == shared.me.id);
            if owned && shared.catalog.is_accepting() {
                return self.deliver(id, inv, &from);
            }
        }
        self.wrong_owner(id, inv)
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn a_throttle_lets_one_event_a_second_through_and_counts_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.allow_at(0), Some(0));
        assert_eq!(t.allow_at(10), None);
        assert_eq!(t.allow_at(999), None);
        assert_eq!(t.allow_at(1000), Some(2));
        assert_eq!(t.allow_at(1500), None);
        assert_eq!(t.allow_at(5000), Some(1));
        // The real clock passes the first one.
        assert_eq!(Throttle::new().allow(), Some(0));
    }
}
