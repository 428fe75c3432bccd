//! Limits in bytes and streams: what one peer may have in flight on this member
//! ([`PeerBudgets`], the callee's side) and what callers may queue on one outbound link
//! ([`QueueBudget`], the caller's side). Both count payload bytes in a [`Budget`]; a
//! payload larger than the whole budget takes all of it, so it still goes through,
//! alone.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::identity::MemberId;

/// A number of bytes that takers share. Taking and giving back is one atomic operation
/// each while there is room and nobody waits (the hot path: every call takes and gives
/// back). A taker that finds no room queues: waiters are served in order, one at a
/// time (the first waits for room, woken when bytes are given back), and while any
/// waits, newcomers queue behind them instead of passing — so a waiter is never
/// starved by later takers.
pub(crate) struct Budget {
    max: usize,
    used: AtomicUsize,
    waiting: AtomicUsize,
    freed: Notify,
    closed: AtomicBool,
    /// The queue of waiters (tokio's mutex is fair: first come, first served).
    queue: tokio::sync::Mutex<()>,
}

/// Bytes taken from a [`Budget`], given back when dropped.
pub(crate) struct BudgetPermit {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::SeqCst);
            if self.budget.waiting.load(Ordering::SeqCst) > 0 {
                self.budget.freed.notify_waiters();
            }
        }
    }
}

impl Budget {
    /// A budget of `max` bytes (at least 1).
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max: max.max(1),
            used: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
            closed: AtomicBool::new(false),
            queue: tokio::sync::Mutex::new(()),
        })
    }

    /// Takes room for a payload of `len` bytes (all of the budget, if it is larger)
    /// if there is room now.
    fn try_take(self: &Arc<Self>, len: usize) -> Option<BudgetPermit> {
        let bytes = len.min(self.max);
        let mut used = self.used.load(Ordering::SeqCst);
        loop {
            if used + bytes > self.max {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Some(BudgetPermit {
                        budget: self.clone(),
                        bytes,
                    });
                }
                Err(now) => used = now,
            }
        }
    }

    /// Takes room for a payload of `len` bytes, waiting until there is some. `None`
    /// once the budget is closed.
    pub(crate) async fn take(self: &Arc<Self>, len: usize) -> Option<BudgetPermit> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        if self.waiting.load(Ordering::SeqCst) == 0
            && let Some(p) = self.try_take(len)
        {
            return Some(p);
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self);
        // In line; the first in line waits for room.
        let _turn = self.queue.lock().await;
        loop {
            // Registered before looking again: bytes given back after the look wake it.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(p) = self.try_take(len) {
                return Some(p);
            }
            freed.await;
        }
    }

    /// Fails every waiting and future [`Budget::take`].
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.freed.notify_waiters();
    }

    /// The bytes taken now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// One waiter of a [`Budget`], counted until dropped.
struct Waiting<'a>(&'a Budget);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
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
    bytes: Arc<Budget>,
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
            bytes: Budget::new(self.max_bytes),
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
    bytes: Arc<Budget>,
}

impl PeerStream {
    /// Waits until the peer's budget has room for a payload of `len` bytes and takes
    /// it, until the permit drops. `None` only if the budget was closed (never).
    pub(crate) async fn reserve(&self, len: usize) -> Option<BudgetPermit> {
        self.bytes.take(len).await
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
    bytes: Arc<Budget>,
}

impl QueueBudget {
    /// A budget of `max_bytes` bytes.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            bytes: Budget::new(max_bytes),
        }
    }

    /// Takes room for a payload of `len` bytes if there is some now and nobody waits
    /// (no waiting, no timer: the common case).
    pub(crate) fn try_reserve(&self, len: usize) -> Option<BudgetPermit> {
        if self.bytes.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.bytes.try_take(len)
    }

    /// Waits until the queue has room for a payload of `len` bytes and takes it, until
    /// the permit drops (when the request is written). `None` if the link closed.
    pub(crate) async fn reserve(&self, len: usize) -> Option<BudgetPermit> {
        self.bytes.take(len).await
    }

    /// Fails every waiting and future [`QueueBudget::reserve`].
    pub(crate) fn close(&self) {
        self.bytes.close();
    }

    /// The budget, in bytes.
    pub(crate) fn max_bytes(&self) -> usize {
        self.bytes.max
    }

    /// The bytes taken from the budget now.
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.bytes.used()
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

#[cfg(test)]
mod budget_tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_given_back_wake_a_waiter_and_the_total_never_exceeds_the_budget() {
        let budget = Budget::new(1000);
        let most = Arc::new(AtomicUsize::new(0));
        let mut takers = Vec::new();
        for i in 0..16 {
            let (budget, most) = (budget.clone(), most.clone());
            takers.push(tokio::spawn(async move {
                for _ in 0..200 {
                    let p = budget.take(100 + i * 37).await;
                    assert!(p.is_some());
                    most.fetch_max(budget.used(), Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    drop(p);
                }
            }));
        }
        for t in takers {
            let done = tokio::time::timeout(Duration::from_secs(20), t).await;
            assert!(
                matches!(done, Ok(Ok(()))),
                "a taker never got room: {done:?}"
            );
        }
        assert!(most.load(Ordering::SeqCst) <= 1000, "{most:?}");
        assert_eq!(budget.used(), 0, "bytes not given back");
        // A payload larger than the budget takes all of it, once it is free.
        let all = budget.take(1 << 30).await;
        assert_eq!(budget.used(), 1000);
        assert!(budget.try_take(1).is_none());
        drop(all);
        assert!(budget.try_take(1).is_some());
    }
}

#[cfg(test)]
mod fairness_tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_served_before_takers_that_came_after_it() {
        let budget = Budget::new(1000);
        let held = budget.take(900).await;
        // A large taker waits for room...
        let large = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(800).await.is_some() })
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while budget.waiting.load(Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the large taker never waited"));
        // ...and a small one, though there is room for it, queues behind it.
        let small = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(50).await })
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while budget.waiting.load(Ordering::SeqCst) < 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the small taker did not queue"));
        assert_eq!(budget.used(), 900, "the small taker passed the waiting one");
        drop(held);
        let large = tokio::time::timeout(Duration::from_secs(10), large).await;
        assert!(matches!(large, Ok(Ok(true))), "{large:?}");
        let small = tokio::time::timeout(Duration::from_secs(10), small).await;
        assert!(
            matches!(small, Ok(Ok(Some(_)))),
            "the small taker never got room"
        );
    }
}
