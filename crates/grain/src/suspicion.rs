//! Fast failover: a member that crashed is routed around within a connection attempt,
//! not after the membership provider's TTL.
//!
//! The rule (ARCHITECTURE.md, "Failure"):
//! - **Evidence.** A member is *suspected* when a connection to its address is
//!   *refused*: nothing listens there any more, so it cannot be serving any call. A
//!   connection that times out (a frozen process, a cut network) is not evidence: those
//!   wait for the provider's TTL.
//! - **A caller** whose link to a member broke or could not connect probes it; when the
//!   probe is refused it suspects the member, and placement sends its identities to the
//!   next owner by the same hashing ([`TopologyView::suspect`]).
//! - **The next owner accepts only after confirming for itself.** An arriving call for
//!   an identity whose owner, in this member's view, is another member is not refused
//!   as "wrong owner" at once: this member probes that owner itself, and only if its own
//!   connection attempt is refused does it suspect it too — and then own the identity.
//!   One caller's view alone never creates a second activation.
//! - **It ends** when the member answers again (a link connects, or a later probe is
//!   not refused — checked every second) or leaves the topology.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::identity::{Member, MemberId};
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
    /// Something accepted the connection.
    Accepted,
    /// No answer within the time limit, or another error: no evidence either way.
    Unknown,
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
    /// The last probe of each member: its incarnation, when, and what it said.
    recent: Mutex<HashMap<MemberId, (u64, Instant, Probe)>>,
}

impl std::fmt::Debug for Suspicion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suspicion").finish_non_exhaustive()
    }
}

impl Suspicion {
    /// Suspicions over `view`; probes give up after `timeout`.
    pub(crate) fn new(view: Arc<TopologyView>, timeout: Duration) -> Self {
        Self {
            view,
            timeout,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Probes `member` (reusing a probe of the last 250 ms) and suspects it when the
    /// connection is refused. Returns true when it is suspected now.
    pub(crate) async fn check(&self, member: &Member) -> bool {
        let reuse = self
            .recent
            .lock()
            .get(&member.id)
            .filter(|(inc, at, _)| *inc == member.incarnation && at.elapsed() < PROBE_REUSE)
            .map(|(_, _, p)| *p);
        let result = match reuse {
            Some(p) => p,
            None => {
                let p = probe(&member.address, self.timeout).await;
                let entry = (member.incarnation, Instant::now(), p);
                self.recent.lock().insert(member.id.clone(), entry);
                p
            }
        };
        if result == Probe::Refused {
            if self.view.suspect(member) {
                tracing::warn!(peer = %member.id, address = %member.address,
                    "connection refused: suspecting the member and routing its identities to the next owner");
            }
            true
        } else {
            false
        }
    }

    /// `member` answered: it is not suspected any more.
    pub(crate) fn answered(&self, member: &Member) {
        if self.view.clear_suspicion(&member.id) {
            tracing::info!(peer = %member.id, "suspected member answers again");
        }
    }

    /// Probes every suspected member every second and ends the suspicion of those whose
    /// connection is no longer refused; returns when `stop` turns true.
    pub(crate) async fn reprobe(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(REPROBE_EVERY) => {}
            }
            for m in self.view.suspects() {
                if probe(&m.address, self.timeout).await != Probe::Refused {
                    self.answered(&m);
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
