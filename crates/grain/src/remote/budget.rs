//! Limits in bytes and streams: what one peer may have in flight on this member
//! ([`PeerBudgets`], the callee's side) and what callers may queue on one outbound link
//! ([`QueueBudget`], the caller's side). Both count payload bytes with a semaphore of
//! one permit per byte; a payload larger than the whole budget takes all of it, so it
//! still goes through, alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::identity::MemberId;

/// The permits a payload of `len` bytes takes from a budget of `max` bytes.
fn permits(len: usize, max: usize) -> u32 {
    u32::try_from(len.min(max)).unwrap_or(u32::MAX)
}

/// A budget of `max` bytes (at most `u32::MAX`, as [`crate::NodeConfig::validate`]
/// checks).
fn semaphore(max: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max.min(u32::MAX as usize)))
}

/// The streams and payload bytes in flight of every peer with a stream open to this
/// member, by member id.
pub(crate) struct PeerBudgets {
    max_streams: usize,
    max_bytes: usize,
    peers: Mutex<HashMap<MemberId, Peer>>,
}

struct Peer {
    streams: usize,
    bytes: Arc<Semaphore>,
}

impl PeerBudgets {
    /// Budgets of `max_streams` streams and `max_bytes` payload bytes per peer.
    pub(crate) fn new(max_streams: usize, max_bytes: usize) -> Self {
        Self {
            max_streams: max_streams.max(1),
            max_bytes: max_bytes.max(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more stream of `peer`, sharing the peer's byte budget; `Err` with the
    /// number of its open streams when it already has the most it may.
    pub(crate) fn open(self: &Arc<Self>, peer: &MemberId) -> Result<PeerStream, usize> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = peers.entry(peer.clone()).or_insert_with(|| Peer {
            streams: 0,
            bytes: semaphore(self.max_bytes),
        });
        if entry.streams >= self.max_streams {
            return Err(entry.streams);
        }
        entry.streams += 1;
        Ok(PeerStream {
            budgets: self.clone(),
            peer: peer.clone(),
            bytes: entry.bytes.clone(),
        })
    }
}

/// One open stream of a peer: holds its place among the peer's streams until dropped.
pub(crate) struct PeerStream {
    budgets: Arc<PeerBudgets>,
    peer: MemberId,
    bytes: Arc<Semaphore>,
}

impl PeerStream {
    /// Waits until the peer's budget has room for a payload of `len` bytes and takes
    /// it, until the permit drops. `None` only if the budget was closed (never).
    pub(crate) async fn reserve(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let n = permits(len, self.budgets.max_bytes);
        self.bytes.clone().acquire_many_owned(n).await.ok()
    }
}

impl Drop for PeerStream {
    fn drop(&mut self) {
        let mut peers = self
            .budgets
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(p) = peers.get_mut(&self.peer) {
            p.streams = p.streams.saturating_sub(1);
            if p.streams == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// The payload bytes queued on one outbound link and not yet written to the peer.
pub(crate) struct QueueBudget {
    max_bytes: usize,
    bytes: Arc<Semaphore>,
}

impl QueueBudget {
    /// A budget of `max_bytes` bytes.
    pub(crate) fn new(max_bytes: usize) -> Self {
        let max_bytes = max_bytes.max(1);
        Self {
            max_bytes,
            bytes: semaphore(max_bytes),
        }
    }

    /// Waits until the queue has room for a payload of `len` bytes and takes it, until
    /// the permit drops (when the request is written). `None` if the link closed.
    pub(crate) async fn reserve(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let n = permits(len, self.max_bytes);
        self.bytes.clone().acquire_many_owned(n).await.ok()
    }

    /// Fails every waiting and future [`QueueBudget::reserve`].
    pub(crate) fn close(&self) {
        self.bytes.close();
    }

    /// The budget, in bytes.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The bytes taken from the budget now.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.max_bytes.min(u32::MAX as usize) - self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_peer_gets_at_most_its_streams_and_a_closed_one_frees_its_place() {
        let budgets = Arc::new(PeerBudgets::new(2, 1024));
        let a = MemberId::new("a");
        let first = budgets.open(&a);
        let second = budgets.open(&a);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(budgets.open(&a).err(), Some(2));
        // Another peer has its own.
        assert!(budgets.open(&MemberId::new("b")).is_ok());
        drop(first);
        assert!(budgets.open(&a).is_ok());
    }

    #[tokio::test]
    async fn the_streams_of_a_peer_share_its_bytes_and_a_large_payload_takes_them_all() {
        let budgets = Arc::new(PeerBudgets::new(4, 1000));
        let a = MemberId::new("a");
        let (s1, s2) = match (budgets.open(&a), budgets.open(&a)) {
            (Ok(s1), Ok(s2)) => (s1, s2),
            _ => panic!("two streams are allowed"),
        };
        let held = s1.reserve(600).await;
        assert!(held.is_some());
        let waiting = tokio::time::timeout(Duration::from_millis(50), s2.reserve(600)).await;
        assert!(waiting.is_err(), "600 + 600 bytes fit in a budget of 1000");
        drop(held);
        let big = tokio::time::timeout(Duration::from_secs(5), s2.reserve(1 << 30)).await;
        assert!(
            big.is_ok_and(|p| p.is_some()),
            "a payload over the budget waits forever"
        );
    }

    #[tokio::test]
    async fn a_full_queue_makes_callers_wait_and_a_closed_one_fails_them() {
        let queue = Arc::new(QueueBudget::new(100));
        let held = queue.reserve(100).await;
        assert!(held.is_some());
        let q = queue.clone();
        let waiter = tokio::spawn(async move { q.reserve(1).await.is_some() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        queue.close();
        assert!(matches!(waiter.await, Ok(false)));
    }
}
