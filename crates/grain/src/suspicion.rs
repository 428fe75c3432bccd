//! Fast failover: a member that crashed is routed around within a connection attempt,
//! not after the membership provider's TTL.
//!
//! The rule (ARCHITECTURE.md, "Failure"):
//! - **Evidence.** A member is *suspected* when a connection to its address is
//!   *refused* (nothing listens there any more), or when the handshake there is
//!   answered by *another member* (a process restarted at the same address — by a
//!   container's restart policy, say — has a new member id): either way the process it
//!   was cannot be serving any call. A connection that times out (a frozen process, a
//!   cut network) is not evidence: those wait for the provider's TTL.
//! - **A caller** whose link to a member broke or could not connect probes it; when the
//!   probe is refused it suspects the member, and placement sends its identities to the
//!   next owner by the same hashing ([`TopologyView::suspect`]).
//! - **The next owner accepts only after confirming for itself.** An arriving call for
//!   an identity whose owner, in this member's view, is another member is not refused
//!   as "wrong owner" at once: this member probes that owner itself, and only if its own
//!   connection attempt is refused does it suspect it too — and then own the identity.
//!   One caller's view alone never creates a second activation.
//! - **It ends** when the member itself answers again (a link connects, or a later
//!   probe's handshake is answered by this very member — checked every second) or
//!   leaves the topology. Silence is not an answer: a probe that times out, cannot
//!   resolve the address (a stopped container's name), or is accepted by something that
//!   does not complete the handshake keeps the suspicion. A member replaced at its
//!   address stays suspected until it leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::identity::{Member, MemberId};
use crate::remote::{Dialer, OpenError, open_stream};
use crate::topology::TopologyView;

/// How long a probe's answer is reused for the same member.
const PROBE_REUSE: Duration = Duration::from_millis(250);
/// How often suspected members are probed again.
const REPROBE_EVERY: Duration = Duration::from_secs(1);

/// What a TCP connection attempt to a member's address said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Refused: nothing listens there.
    Refused,
    /// Something accepted the connection (and, when the probe asked, did not answer
    /// the handshake, in time or at all): no evidence either way.
    Accepted,
    /// The handshake was answered by the member itself: it is alive.
    Answered,
    /// No answer within the time limit, or another error: no evidence either way.
    Unknown,
    /// The handshake was answered by another member (or another cluster's): the
    /// process this member was is gone for good.
    Replaced,
}

/// Opens (and at once closes) a TCP connection to `address`.
pub(crate) async fn probe(address: &str, timeout: Duration) -> Probe {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Probe::Accepted,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Unknown,
    }
}

/// A member's suspicions, kept in its topology view.
pub(crate) struct Suspicion {
    view: Arc<TopologyView>,
    timeout: Duration,
    /// How to ask an address that accepts connections which member serves there.
    dialer: Arc<Dialer>,
    /// The last probe of each member: its incarnation, when, what it said, and whether
    /// it asked who answers (`Replaced` is kept until the member leaves the topology:
    /// it cannot change).
    recent: Mutex<HashMap<MemberId, (u64, Instant, Probe, bool)>>,
}

impl std::fmt::Debug for Suspicion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspicion").finish_non_exhaustive()
    }
}

impl Suspicion {
    /// Suspicions over `view`; probes give up after `timeout`, and ask who answers
    /// with `dialer`'s handshake.
    pub(crate) fn new(view: Arc<TopologyView>, timeout: Duration, dialer: Arc<Dialer>) -> Self {
        Self {
            view,
            timeout,
            dialer,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Probes `member`'s address: refused, or — when something accepts — whether the
    /// handshake is answered by `member` itself or by another member (a process started
    /// at the same address has a new member id). A handshake that fails otherwise, or
    /// not in time, is no evidence either way (`Accepted`).
    async fn probe_member(&self, member: &Member, ask: bool) -> Probe {
        match probe(&member.address, self.timeout).await {
            Probe::Accepted if ask => {
                match tokio::time::timeout(self.timeout, open_stream(&self.dialer, member)).await {
                    Ok(Ok(_)) => Probe::Answered,
                    Ok(Err(OpenError::Replaced(_))) => Probe::Replaced,
                    Ok(Err(OpenError::Failed(_))) | Err(_) => Probe::Accepted,
                }
            }
            other => other,
        }
    }

    /// The probe of `member` to reuse, if any (one that asked who answers, if `ask`).
    fn reusable(&self, member: &Member, ask: bool) -> Option<Probe> {
        self.recent
            .lock()
            .get(&member.id)
            .filter(|(inc, at, p, asked)| {
                *inc == member.incarnation
                    && (*p == Probe::Replaced || (at.elapsed() < PROBE_REUSE && (*asked || !ask)))
            })
            .map(|(_, _, p, _)| *p)
    }

    fn remember(&self, member: &Member, probe: Probe, asked: bool) {
        let entry = (member.incarnation, Instant::now(), probe, asked);
        self.recent.lock().insert(member.id.clone(), entry);
    }

    /// Probes `member` (reusing a probe of the last 250 ms) and suspects it when the
    /// connection is refused or another member answers at its address. Returns true
    /// when it is suspected now.
    pub(crate) async fn check(&self, member: &Member) -> bool {
        self.check_with(member, true).await
    }

    /// [`Suspicion::check`] after this member's own handshake with `member` just failed
    /// otherwise than by another member answering: only whether the address refuses
    /// connections is left to learn, so the probe asks nothing more (one connection).
    pub(crate) async fn check_refused(&self, member: &Member) -> bool {
        self.check_with(member, false).await
    }

    async fn check_with(&self, member: &Member, ask: bool) -> bool {
        let result = match self.reusable(member, ask) {
            Some(p) => p,
            None => {
                let p = self.probe_member(member, ask).await;
                self.remember(member, p, ask);
                p
            }
        };
        match result {
            Probe::Refused => {
                if self.view.suspect(member) {
                    tracing::warn!(peer = %member.id, address = %member.address,
                        "connection refused: suspecting the member and routing its identities to the next owner");
                }
                true
            }
            Probe::Replaced => {
                self.suspect_replaced(member, "another member answers at its address");
                true
            }
            Probe::Accepted | Probe::Answered | Probe::Unknown => false,
        }
    }

    /// A handshake with `member` was answered by another member (`reason` says which):
    /// `member` is suspected until it leaves the topology.
    pub(crate) fn replaced(&self, member: &Member, reason: &str) {
        self.remember(member, Probe::Replaced, true);
        self.suspect_replaced(member, reason);
    }

    fn suspect_replaced(&self, member: &Member, reason: &str) {
        if self.view.suspect(member) {
            tracing::warn!(peer = %member.id, address = %member.address,
                "the member is gone ({reason}): suspecting it and routing its identities to the next owner");
        }
    }

    /// `member` answered: it is not suspected any more.
    pub(crate) fn answered(&self, member: &Member) {
        self.recent.lock().remove(&member.id);
        if self.view.clear_suspicion(&member.id) {
            tracing::info!(peer = %member.id, "suspected member answers again");
        }
    }

    /// Probes every suspected member every second and ends the suspicion of those that
    /// answer the handshake themselves (no answer, or a refused connection, keeps it; a
    /// member replaced at its address stays suspected); returns when `stop` turns true.
    pub(crate) async fn reprobe(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(REPROBE_EVERY) => {}
            }
            {
                // Forget the probes of members that left.
                let listed = self.view.listed();
                self.recent
                    .lock()
                    .retain(|id, _| listed.member(id).is_some());
            }
            for m in self.view.suspects() {
                if self.reusable(&m, true) == Some(Probe::Replaced) {
                    continue;
                }
                match self.probe_member(&m, true).await {
                    Probe::Answered => self.answered(&m),
                    Probe::Replaced => self.replaced(&m, "another member answers at its address"),
                    // Silence is no answer: a stopped container's name that no longer
                    // resolves, or a port that accepts but never completes the
                    // handshake, says nothing about the member being back.
                    Probe::Refused | Probe::Accepted | Probe::Unknown => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_listening_one_accepted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
        let Ok(listener) = listener else {
            panic!("cannot bind loopback");
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("no local address");
        };
        let t = Duration::from_secs(2);
        assert_eq!(probe(&addr.to_string(), t).await, Probe::Accepted);
        drop(listener);
        assert_eq!(probe(&addr.to_string(), t).await, Probe::Refused);
    }
}
