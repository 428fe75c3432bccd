//! The membership driver: the two background loops that connect a member to its
//! [`MembershipProvider`] — the keep-alive loop (register, refresh, register again when
//! forgotten) and the watch loop (blocking queries under Consul's index rules, a grace
//! period after the store restarted) — and what a new member list does to this member:
//! a new topology, logged joins and leaves, links to departed members closed.
//!
//! While the provider fails, both loops keep the last known topology and retry with
//! backoff, logging once per change of state and counting every failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{MembershipError, MembershipProvider};
use crate::call::Backoff;
use crate::catalog::Catalog;
use crate::error::panic_message;
use crate::identity::Member;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::remote::Links;
use crate::topology::TopologyView;

/// What the membership loops act on.
pub(crate) struct Driver {
    /// This member.
    pub(crate) me: Member,
    /// The discovery service.
    pub(crate) provider: Arc<dyn MembershipProvider>,
    /// Where failures and the topology size are recorded.
    pub(crate) metrics: Arc<Metrics>,
    /// The view each member list is applied to.
    pub(crate) topology: Arc<TopologyView>,
    /// Closed for members that leave.
    pub(crate) links: Arc<Links>,
    /// Its activations of identities this member no longer owns are passivated.
    pub(crate) catalog: Arc<Catalog>,
    /// The provider has listed this member since it registered (so a list without it
    /// means its check is not passing).
    pub(crate) seen_listed: AtomicBool,
    /// The last index the watch loop saw (0: none yet).
    pub(crate) last_index: AtomicU64,
    /// Moved when this member is listed or fenced.
    pub(crate) readiness: Arc<Readiness>,
    /// Wakes the watch loop to query at once (after the keep-alive loop fenced).
    pub(crate) recheck: tokio::sync::Notify,
    /// How long a blocking query waits.
    pub(crate) wait: Duration,
    /// The shortest pause between two queries.
    pub(crate) min_interval: Duration,
}

impl Driver {
    /// Starts the keep-alive and watch loops, and the passivation of activations this
    /// member no longer owns; all end when `stop` turns true. A loop that panics is
    /// logged and started again, so membership never freezes silently.
    pub(crate) fn spawn(self, stop: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
        let driver = Arc::new(self);
        vec![
            supervise(
                "keep-alive",
                driver.clone(),
                stop.subscribe(),
                keep_alive_loop,
            ),
            supervise("watch", driver.clone(), stop.subscribe(), watch_loop),
            supervise(
                "passivation",
                driver,
                stop.subscribe(),
                passivate_unowned_loop,
            ),
        ]
    }

    /// Applies a member list from the provider (`union`: add or update, remove
    /// nobody), fences or unfences this member by whether it is listed, then logs who
    /// joined and left and closes the links of those who left.
    fn install(&self, members: Vec<Member>, union: bool) {
        let listed = members.iter().any(|m| m.id == self.me.id);
        if listed {
            self.seen_listed.store(true, Ordering::SeqCst);
            self.unfence();
        } else if !union {
            self.fence_if_dropped();
        }
        let diff = if union {
            self.topology.apply_union(members)
        } else {
            self.topology.apply(members)
        };
        let Some(diff) = diff else { return };
        for m in diff.joined.iter().filter(|m| m.id != self.me.id) {
            tracing::info!(member = %m.id, address = %m.address, kinds = ?m.kinds, "member joined");
        }
        for m in diff.left.iter().filter(|m| m.id != self.me.id) {
            tracing::info!(member = %m.id, address = %m.address, "member left");
        }
        self.metrics
            .topology(self.topology.listed().members().len());
        self.links.close_left(&diff.left);
    }

    /// The provider answered and does not list this member although it did before: its
    /// check is not passing (it was frozen, cut off, or its keep-alives were refused),
    /// so others own its identities now. Host nothing until listed again.
    fn fence_if_dropped(&self) {
        if !self.seen_listed.load(Ordering::SeqCst) {
            return;
        }
        self.readiness.set_listed(false);
        if self.topology.set_fenced(true) {
            tracing::warn!(member = %self.me.id,
                "the membership provider no longer lists this member as passing: \
                 it hosts nothing (its activations are passivated) until listed again");
            self.metrics
                .topology(self.topology.listed().members().len());
        }
    }

    fn unfence(&self) {
        self.readiness.set_listed(true);
        if self.topology.set_fenced(false) {
            tracing::info!(member = %self.me.id, "listed as passing again: hosting again");
        }
    }
}

/// Runs `body` until `stop`; restarts it when it panics or ends on its own.
fn supervise<F, Fut>(
    name: &'static str,
    driver: Arc<Driver>,
    stop: watch::Receiver<bool>,
    body: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Driver>, watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut restarts: u32 = 0;
        loop {
            let run = std::panic::AssertUnwindSafe(body(driver.clone(), stop.clone()));
            let ended = run.catch_unwind().await;
            if *stop.borrow() {
                return;
            }
            restarts += 1;
            let why = match ended {
                Ok(()) => "ended on its own".to_string(),
                Err(p) => format!("panicked: {}", panic_message(p.as_ref())),
            };
            tracing::error!(member = %driver.me.id, restarts,
                "the membership {name} loop {why}; starting it again");
            driver.metrics.membership_error(name, "loop_restarted");
            let pause = Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
                multiplier: 2,
            }
            .delay(restarts);
            let mut stop = stop.clone();
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    })
}

/// After every change of the view (members, suspicion, fence), passivates the
/// activations of identities this member no longer owns, so a stale activation never
/// answers again when ownership comes back.
async fn passivate_unowned_loop(driver: Arc<Driver>, mut stop: watch::Receiver<bool>) {
    let mut changes = driver.topology.subscribe();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let table = driver.topology.load_full();
        let me = &driver.me.id;
        let stale = driver.catalog.passivate_unowned(|id| {
            table
                .owner(id.kind(), id.identity())
                .is_some_and(|m| m.id == *me)
        });
        if stale > 0 {
            tracing::debug!(
                stale,
                "passivating activations of identities owned elsewhere now"
            );
        }
    }
}

/// Logs a provider error once per change of state, and counts every one.
struct Trouble {
    last: Option<String>,
    metrics: Arc<Metrics>,
}

impl Trouble {
    fn new(metrics: &Arc<Metrics>) -> Self {
        Self {
            last: None,
            metrics: metrics.clone(),
        }
    }

    fn failed(&mut self, what: &'static str, e: &MembershipError) {
        let kind = match e {
            MembershipError::NotRegistered(_) => "not-registered",
            MembershipError::Unavailable(_) => "unavailable",
            MembershipError::Rejected(_) => "rejected",
        };
        self.metrics.membership_error(what, kind);
        let key = format!("{what}:{kind}");
        if self.last.as_deref() != Some(&key) {
            tracing::warn!(
                "membership {what} failed: {e}; keeping the last known topology and retrying"
            );
            self.last = Some(key);
        }
    }

    fn recovered(&mut self, what: &str) {
        self.metrics.membership_ok();
        if self.last.take().is_some() {
            tracing::info!("membership {what} works again");
        }
    }
}

async fn keep_alive_loop(driver: Arc<Driver>, mut stop: watch::Receiver<bool>) {
    let (me, provider) = (&driver.me, &driver.provider);
    let interval = provider.keep_alive_interval();
    let retry = Backoff {
        initial: Duration::from_millis(100),
        max: interval.max(Duration::from_millis(100)),
        multiplier: 2,
    };
    let mut trouble = Trouble::new(&driver.metrics);
    let mut registered = false;
    let mut failures = 0;
    let mut last_ok = Instant::now();
    // Past this long without a keep-alive that worked, the provider may have declared
    // this member dead (Consul's TTL is a few intervals).
    let stalled_after = interval * 2 + Duration::from_millis(500);
    loop {
        // Frozen, or cut off? Before saying "alive" again, look whether the provider
        // still lists this member as passing (see `keep_alive_outcome`).
        let absent = registered
            && last_ok.elapsed() > stalled_after
            && provider.members(None, Duration::ZERO).await.is_ok_and(|s| {
                s.index >= driver.last_index.load(Ordering::SeqCst)
                    && !s.members.iter().any(|m| m.id == me.id)
            });
        let pause = if !registered {
            match provider.register(me).await {
                Ok(()) => {
                    trouble.recovered("registration");
                    tracing::info!(member = %me.id, "registered with the membership provider");
                    registered = true;
                    failures = 0;
                    last_ok = Instant::now();
                    interval
                }
                Err(e) => {
                    trouble.failed("registration", &e);
                    failures += 1;
                    retry.delay(failures)
                }
            }
        } else {
            match provider.keep_alive(&me.id).await {
                Ok(()) => {
                    trouble.recovered("keep-alive");
                    let gap = last_ok.elapsed();
                    last_ok = Instant::now();
                    if absent || gap > stalled_after {
                        // The provider knew this member (the keep-alive worked) but did
                        // not list it as passing, or went longer than its TTL without
                        // hearing from it (a keep-alive stuck while the network was
                        // cut): its check went critical, and others own its identities
                        // now. Fence at once, before any caller can have seen it
                        // passing again; a fresh snapshot (asked for now) lifts it.
                        driver.fence_if_dropped();
                        driver.recheck.notify_one();
                    }
                    interval
                }
                Err(MembershipError::NotRegistered(_)) => {
                    tracing::warn!(member = %me.id, "the membership provider forgot this member; registering again");
                    registered = false;
                    Duration::ZERO
                }
                Err(e) => {
                    trouble.failed("keep-alive", &e);
                    interval
                }
            }
        };
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn watch_loop(driver: Arc<Driver>, mut stop: watch::Receiver<bool>) {
    let provider = &driver.provider;
    let retry = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        multiplier: 2,
    };
    let mut index: Option<u64> = None;
    let mut last_seen: Option<u64> = None;
    let mut grace_until: Option<Instant> = None;
    let grace = provider.keep_alive_interval() * 2 + Duration::from_millis(500);
    let mut trouble = Trouble::new(&driver.metrics);
    let mut failures = 0;
    loop {
        let started = Instant::now();
        let answer = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = driver.recheck.notified() => {
                // Something changed this member's standing: look now, not when the
                // blocking query ends.
                index = None;
                continue;
            }
            a = provider.members(index, driver.wait) => a,
        };
        let pause = match answer {
            Ok(snapshot) => {
                trouble.recovered("watch");
                failures = 0;
                // Consul's rules for blocking-query indexes: start over when the index
                // goes backwards, and never use an index below 1.
                let went_back = last_seen.is_some_and(|seen| snapshot.index < seen);
                last_seen = Some(snapshot.index);
                driver.last_index.store(snapshot.index, Ordering::SeqCst);
                index = if went_back {
                    None
                } else {
                    Some(snapshot.index.max(1))
                };
                if went_back {
                    // The store restarted empty (a dev agent, a lost Consul server): the
                    // members are re-registering right now. Keep everyone for a grace
                    // period instead of reshuffling placement twice.
                    tracing::info!(
                        ?grace,
                        "membership index went backwards (the store restarted); \
                        keeping current members while they register again"
                    );
                    grace_until = Some(Instant::now() + grace);
                }
                if grace_until.is_some_and(|g| Instant::now() < g) {
                    driver.install(snapshot.members, true);
                    index = None;
                    Duration::from_millis(100)
                } else {
                    grace_until = None;
                    driver.install(snapshot.members, false);
                    driver.min_interval.saturating_sub(started.elapsed())
                }
            }
            Err(e) => {
                trouble.failed("watch", &e);
                failures += 1;
                index = None;
                retry.delay(failures)
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
