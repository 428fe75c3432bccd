//! The membership driver: the two background loops that connect a member to its
//! [`MembershipProvider`] — the keep-alive loop (register, refresh, register again when
//! forgotten) and the watch loop (blocking queries under Consul's index rules, a grace
//! period after the store restarted) — and what a new member list does to this member:
//! a new topology, logged joins and leaves, links to departed members closed.
//!
//! While the provider fails, both loops keep the last known topology and retry with
//! backoff, logging once per change of state and counting every failure.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{MembershipError, MembershipProvider};
use crate::call::Backoff;
use crate::identity::Member;
use crate::metrics::Metrics;
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
    /// How long a blocking query waits.
    pub(crate) wait: Duration,
    /// The shortest pause between two queries.
    pub(crate) min_interval: Duration,
}

impl Driver {
    /// Starts the keep-alive and watch loops; both end when `stop` turns true.
    pub(crate) fn spawn(self, stop: &watch::Sender<bool>) -> Vec<JoinHandle<()>> {
        let driver = Arc::new(self);
        vec![
            tokio::spawn(keep_alive_loop(driver.clone(), stop.subscribe())),
            tokio::spawn(watch_loop(driver, stop.subscribe())),
        ]
    }

    /// Applies a member list from the provider (`union`: add or update, remove
    /// nobody), then logs who joined and left and closes the links of those who left.
    fn install(&self, members: Vec<Member>, union: bool) {
        let diff = if union {
            self.topology.apply_union(members)
        } else {
            self.topology.apply(members)
        };
        let Some(diff) = diff else { return };
        for m in &diff.joined {
            tracing::info!(member = %m.id, address = %m.address, kinds = ?m.kinds, "member joined");
        }
        for m in &diff.left {
            tracing::info!(member = %m.id, address = %m.address, "member left");
        }
        self.metrics
            .topology(self.topology.load().topology().members().len());
        self.links.close_left(&diff.left);
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
    loop {
        let pause = if !registered {
            match provider.register(me).await {
                Ok(()) => {
                    trouble.recovered("registration");
                    tracing::info!(member = %me.id, "registered with the membership provider");
                    registered = true;
                    failures = 0;
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
