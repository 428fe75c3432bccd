//! An in-memory membership provider with TTL semantics modelled on Consul's TTL checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{MemberSnapshot, MembershipError, MembershipProvider};
use crate::identity::{Member, MemberId};

/// A membership provider that lives in one process: share one instance (it is a cheap
/// clone) between the nodes of a test or a single-process cluster.
///
/// Like a Consul TTL check: a registered member is alive until `ttl` passes with no
/// keep-alive, then it is no longer listed (critical); a keep-alive brings it back
/// until it has been critical for `reap_after`, when it is forgotten and keep-alives
/// answer [`MembershipError::NotRegistered`].
#[derive(Clone)]
pub struct InMemoryMembership {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    reap_after: Duration,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    index: u64,
    entries: HashMap<MemberId, Entry>,
}

struct Entry {
    member: Member,
    expires: Instant,
    critical: bool,
}

impl std::fmt::Debug for InMemoryMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryMembership")
            .field("ttl", &self.inner.ttl)
            .field("reap_after", &self.inner.reap_after)
            .finish_non_exhaustive()
    }
}

impl InMemoryMembership {
    /// A provider whose members expire `ttl` after their last keep-alive and are
    /// forgotten one minute after that (Consul's minimum `DeregisterCriticalServiceAfter`).
    pub fn new(ttl: Duration) -> Self {
        Self::with_reap_after(ttl, Duration::from_secs(60))
    }

    /// As [`Self::new`], forgetting expired members after `reap_after`.
    pub fn with_reap_after(ttl: Duration, reap_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                reap_after,
                state: Mutex::new(State {
                    index: 1,
                    entries: HashMap::new(),
                }),
                changed: Notify::new(),
            }),
        }
    }

    /// The time-to-live of a keep-alive.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Applies expiries and reaping due at `now`; returns the next instant at which
    /// something will expire or be reaped.
    fn sweep(state: &mut State, now: Instant, reap_after: Duration) -> Option<Instant> {
        let mut changed = false;
        let mut next: Option<Instant> = None;
        state.entries.retain(|_, e| {
            if !e.critical && e.expires <= now {
                e.critical = true;
                changed = true;
            }
            let due = if e.critical {
                e.expires + reap_after
            } else {
                e.expires
            };
            if e.critical && due <= now {
                return false; // reaped; it was already unlisted, so the index needn't move
            }
            next = Some(next.map_or(due, |n| n.min(due)));
            true
        });
        if changed {
            state.index += 1;
        }
        next
    }

    fn snapshot(state: &State) -> MemberSnapshot {
        MemberSnapshot {
            index: state.index,
            members: state
                .entries
                .values()
                .filter(|e| !e.critical)
                .map(|e| e.member.clone())
                .collect(),
        }
    }

    fn bump(&self, state: &mut State) {
        state.index += 1;
        self.inner.changed.notify_waiters();
    }
}

#[async_trait]
impl MembershipProvider for InMemoryMembership {
    async fn register(&self, member: &Member) -> Result<(), MembershipError> {
        let mut st = self.inner.state.lock();
        st.entries.insert(
            member.id.clone(),
            Entry {
                member: member.clone(),
                expires: Instant::now() + self.inner.ttl,
                critical: false,
            },
        );
        self.bump(&mut st);
        Ok(())
    }

    async fn keep_alive(&self, member: &MemberId) -> Result<(), MembershipError> {
        let now = Instant::now();
        let mut st = self.inner.state.lock();
        Self::sweep(&mut st, now, self.inner.reap_after);
        let Some(e) = st.entries.get_mut(member) else {
            return Err(MembershipError::NotRegistered(member.clone()));
        };
        e.expires = now + self.inner.ttl;
        if e.critical {
            e.critical = false;
            self.bump(&mut st);
        }
        Ok(())
    }

    async fn members(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<MemberSnapshot, MembershipError> {
        let give_up = Instant::now() + wait;
        loop {
            // Register interest before looking, so a change between the look and the
            // wait is not missed.
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_expiry = {
                let mut st = self.inner.state.lock();
                let before = st.index;
                let next = Self::sweep(&mut st, Instant::now(), self.inner.reap_after);
                if st.index != before {
                    self.inner.changed.notify_waiters();
                }
                match after {
                    Some(i) if i == st.index && Instant::now() < give_up => next,
                    _ => return Ok(Self::snapshot(&st)),
                }
            };
            let until = next_expiry.map_or(give_up, |n| n.min(give_up));
            let _ = tokio::time::timeout_at(until, notified).await;
        }
    }

    async fn deregister(&self, member: &MemberId) -> Result<(), MembershipError> {
        let mut st = self.inner.state.lock();
        if st.entries.remove(member).is_some() {
            self.bump(&mut st);
        }
        Ok(())
    }

    fn keep_alive_interval(&self) -> Duration {
        (self.inner.ttl / 3).max(Duration::from_millis(10))
    }
}
