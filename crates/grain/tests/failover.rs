//! A member's failure costs no call: each test causes the failure for real over tonic
//! on loopback and checks the rule that handles it.
//!
//! - a member whose address refuses connections (its process is gone) is routed
//!   around within a second, long before the provider's TTL, and only after the next
//!   owner confirmed it for itself;
//! - a member whose address now answers as another member (its process restarted
//!   there with a new id) is routed around at once, long before the provider's TTL;
//! - a dead member whose address then falls silent stays routed around: only its own
//!   handshake ends a suspicion;
//! - a member the provider stops listing (keep-alives refused) hosts nothing until it
//!   is listed again, and then starts its grains afresh;
//! - an activation whose identity moved away is passivated, so it never answers stale
//!   when the identity comes back;
//! - a graceful leave answers every call already written to the leaver, and calls made
//!   during it are answered by the new owner;
//! - a membership loop that panics is started again.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::proxy::{Proxy, Silent};
use common::*;
use grain::membership::{InMemoryMembership, MemberSnapshot, MembershipError, MembershipProvider};
use grain::{CallOptions, ClusterIdentity, Member, MemberId, Node};
use tokio::time::Instant;

/// A TTL far longer than any test: what is checked here must not wait for it.
const LONG_TTL: Duration = Duration::from_secs(30);

fn named(cluster: &str, id: &str) -> grain::NodeConfig {
    let mut c = config(cluster, id);
    c.member_id = Some(id.to_string());
    c
}

async fn start(
    config: grain::NodeConfig,
    hosts: bool,
    provider: &Arc<dyn MembershipProvider>,
) -> Node {
    let kinds = if hosts { vec![counter_kind()] } else { vec![] };
    Node::start(config, kinds, provider.clone())
        .await
        .unwrap_or_else(|e| panic!("node did not start: {e}"))
}

async fn see_members(node: &Node, n: usize) {
    let seen = node
        .cluster()
        .wait_until(Duration::from_secs(5), |t| t.members().len() == n)
        .await;
    assert!(seen, "{} did not see {n} members", node.member().id);
}

/// Member `id`'s config, bound to a loopback port free now (to put a proxy before it).
fn on_free_port(cluster: &str, id: &str) -> grain::NodeConfig {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .port();
    drop(listener);
    let mut c = named(cluster, id);
    c.bind = SocketAddr::from(([127, 0, 0, 1], port));
    c
}

/// Identities `grain0…` that `of` owns among members `ids` (all hosting the counter).
fn owned_by(of: &str, ids: &[&str], n: usize) -> Vec<ClusterIdentity> {
    let members: Vec<Member> = ids
        .iter()
        .map(|id| Member {
            id: MemberId::new(*id),
            address: "unused:1".into(),
            kinds: vec![COUNTER.into()],
            incarnation: 1,
        })
        .collect();
    (0..)
        .map(|i| format!("grain{i}"))
        .filter(|g| {
            grain::placement::owner(&members, COUNTER, g).is_some_and(|m| m.id.as_str() == of)
        })
        .take(n)
        .map(|g| ClusterIdentity::new(COUNTER, g))
        .collect()
}

async fn add(cluster: &grain::Cluster, id: &ClusterIdentity) -> (String, u64) {
    let options = CallOptions::default().with_timeout(Duration::from_secs(5));
    match cluster.call_with(id, ADD, Bytes::new(), &options).await {
        Ok(b) => member_of(&b),
        Err(e) => panic!("{id}: {e}"),
    }
}

/// Polls `f` every 10 ms until it holds or `within` passes.
async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// h1 and h2 hosting the counter, h1 reachable only through a proxy, and a caller
/// that made h1 activate `ids` (identities h1 owns among `owners`).
struct BehindProxy {
    provider: Arc<dyn MembershipProvider>,
    proxy: Proxy,
    h1: Node,
    h2: Node,
    caller: Node,
    ids: Vec<ClusterIdentity>,
}

async fn h1_behind_a_proxy(cluster: &str, owners: &[&str]) -> BehindProxy {
    let provider: Arc<dyn MembershipProvider> = Arc::new(InMemoryMembership::new(LONG_TTL));
    let proxy = Proxy::start().await;
    let mut h1 = on_free_port(cluster, "h1");
    proxy.forward_to(h1.bind);
    h1.advertise = Some(proxy.addr.to_string());
    let h1 = start(h1, true, &provider).await;
    let h2 = start(named(cluster, "h2"), true, &provider).await;
    let caller = start(named(cluster, "c"), false, &provider).await;
    for n in [&h1, &h2, &caller] {
        see_members(n, 3).await;
    }
    let ids = owned_by("h1", owners, 8);
    for id in &ids {
        assert_eq!(add(&caller.cluster(), id).await, ("h1".to_string(), 1));
    }
    BehindProxy {
        provider,
        proxy,
        h1,
        h2,
        caller,
        ids,
    }
}

impl BehindProxy {
    /// Calls every identity again (idempotent, as FizzBuzz's methods are: a call written
    /// just as the stream broke may be sent again), each answering within 5 s; returns
    /// who answered each and its count, and how long all took.
    async fn call_all_again(&self) -> (Vec<(String, u64)>, Duration) {
        let started = Instant::now();
        let options = CallOptions::default()
            .with_timeout(Duration::from_secs(5))
            .with_idempotent(true);
        let mut answers = Vec::new();
        for id in &self.ids {
            let answer = self
                .caller
                .cluster()
                .call_with(id, ADD, Bytes::new(), &options)
                .await;
            answers.push(member_of(&answer.unwrap_or_else(|e| panic!("{id}: {e}"))));
        }
        (answers, started.elapsed())
    }

    /// The provider still lists h1: what happened was not its TTL's doing.
    async fn h1_still_listed(&self) {
        let listed = self
            .provider
            .members(None, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(listed.members.iter().any(|m| m.id.as_str() == "h1"));
    }

    async fn shutdown(self) {
        for n in [self.caller, self.h2, self.h1] {
            n.shutdown().await;
        }
    }
}

#[tokio::test]
async fn a_member_whose_address_refuses_connections_is_routed_around_within_a_second() {
    let t = h1_behind_a_proxy("failover-refused", &["h1", "h2"]).await;
    t.proxy.kill();
    let (answers, took) = t.call_all_again().await;
    for (id, answer) in t.ids.iter().zip(&answers) {
        assert_eq!(
            (answer.0.as_str(), answer.1),
            ("h2", 1),
            "{id} after h1's address died"
        );
    }
    println!("identities of a dead member served elsewhere after {took:?}");
    assert!(took < Duration::from_secs(1), "failover took {took:?}");
    t.h1_still_listed().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_member_whose_address_now_answers_as_another_member_is_routed_around_at_once() {
    // A container restarted by its restart policy: a new process, a new member id, the
    // same address, while the provider still lists the old member until its TTL.
    let cluster = "failover-replaced";
    let t = h1_behind_a_proxy(cluster, &["h1", "h2", "h1b"]).await;
    // h1 goes on running (and keeping its registration alive) but nothing reaches it:
    // its address now leads to h1b, a new member.
    let mut h1b = on_free_port(cluster, "h1b");
    t.proxy.forward_to(h1b.bind);
    t.proxy.cut();
    h1b.advertise = Some(t.proxy.addr.to_string());
    let h1b = start(h1b, true, &t.provider).await;
    for n in [&t.h2, &t.caller, &h1b] {
        see_members(n, 4).await;
    }
    let (answers, took) = t.call_all_again().await;
    for (id, (member, count)) in t.ids.iter().zip(&answers) {
        assert!(
            member == "h2" || member == "h1b",
            "{id} answered by {member} after h1's address was taken"
        );
        assert_eq!(*count, 1, "{id} on {member} must start afresh");
    }
    println!("identities of a replaced member served elsewhere after {took:?}");
    assert!(took < Duration::from_secs(1), "failover took {took:?}");
    t.h1_still_listed().await;
    h1b.shutdown().await;
    t.shutdown().await;
}

#[tokio::test]
async fn a_dead_member_whose_address_falls_silent_stays_routed_around() {
    // A killed container: its address first refuses connections; then, the container
    // stopped, nothing there answers (its name stops resolving, or something accepts
    // and never completes the handshake). Silence is no sign that the member is back:
    // only the member's own handshake ends the suspicion.
    let mut t = h1_behind_a_proxy("failover-silent", &["h1", "h2"]).await;
    t.proxy.kill_and_wait().await;
    let (answers, _) = t.call_all_again().await;
    for (id, answer) in t.ids.iter().zip(&answers) {
        assert_eq!(
            (answer.0.as_str(), answer.1),
            ("h2", 1),
            "{id} after h1 died"
        );
    }
    let silent = Silent::listen(t.proxy.addr).await;
    // The caller and h2 both suspect h1 and probe it every second (a connection, then
    // a handshake that gets no answer): wait for a few rounds of them.
    let mut probes = silent.accepted_changes();
    // (A member that wrongly took silence for an answer stops probing.)
    let probed = tokio::time::timeout(Duration::from_secs(15), probes.wait_for(|n| *n >= 8));
    let probed = probed.await.is_ok();
    for node in [&t.caller, &t.h2] {
        let placed = node.cluster().topology();
        assert!(
            placed.members().iter().all(|m| m.id.as_str() != "h1"),
            "{} placed identities on h1 again although it never answered",
            node.member().id
        );
    }
    assert!(probed, "h1's silent address was not probed");
    let (answers, _) = t.call_all_again().await;
    for (id, answer) in t.ids.iter().zip(&answers) {
        assert_eq!(
            (answer.0.as_str(), answer.1),
            ("h2", 2),
            "{id} while h1 is silent"
        );
    }
    t.h1_still_listed().await;
    drop(silent);
    t.shutdown().await;
}

/// A provider that can refuse one member's keep-alives, and panic once in `members`.
struct Flaky {
    inner: InMemoryMembership,
    refuse: Mutex<Option<MemberId>>,
    panic_once: AtomicBool,
    queries: AtomicUsize,
}

#[async_trait]
impl MembershipProvider for Flaky {
    async fn register(&self, member: &Member) -> Result<(), MembershipError> {
        if self
            .refuse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(&member.id)
        {
            return Err(MembershipError::Rejected("refused by the test".into()));
        }
        self.inner.register(member).await
    }

    async fn keep_alive(&self, member: &MemberId) -> Result<(), MembershipError> {
        if self
            .refuse
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(member)
        {
            return Err(MembershipError::Rejected("refused by the test".into()));
        }
        self.inner.keep_alive(member).await
    }

    async fn members(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<MemberSnapshot, MembershipError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("a provider bug");
        }
        self.inner.members(after, wait).await
    }

    async fn deregister(&self, member: &MemberId) -> Result<(), MembershipError> {
        self.inner.deregister(member).await
    }

    fn keep_alive_interval(&self) -> Duration {
        self.inner.keep_alive_interval()
    }
}

fn flaky(ttl: Duration) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: InMemoryMembership::new(ttl),
        refuse: Mutex::new(None),
        panic_once: AtomicBool::new(false),
        queries: AtomicUsize::new(0),
    })
}

#[tokio::test]
async fn a_member_the_provider_stops_listing_hosts_nothing_until_listed_again() {
    let cluster = "failover-fenced";
    let flaky = flaky(Duration::from_millis(600));
    let provider: Arc<dyn MembershipProvider> = flaky.clone();
    let h1 = start(named(cluster, "h1"), true, &provider).await;
    let h2 = start(named(cluster, "h2"), true, &provider).await;
    let caller = start(named(cluster, "c"), false, &provider).await;
    for n in [&h1, &h2, &caller] {
        see_members(n, 3).await;
    }
    let id = owned_by("h1", &["h1", "h2"], 1).remove(0);
    assert_eq!(add(&caller.cluster(), &id).await, ("h1".to_string(), 1));
    assert_eq!(add(&caller.cluster(), &id).await, ("h1".to_string(), 2));

    // h1's keep-alives are refused: the provider stops listing it after its TTL, and
    // h1, seeing the provider answer without it, fences itself.
    *flaky.refuse.lock().unwrap_or_else(|e| e.into_inner()) = Some(MemberId::new("h1"));
    assert!(
        eventually(Duration::from_secs(5), || h1.is_fenced()).await,
        "h1 was not fenced after the provider dropped it"
    );
    assert!(
        eventually(Duration::from_secs(5), || h1.activation_count() == 0).await,
        "a fenced member kept {} activations",
        h1.activation_count()
    );
    see_members(&caller, 2).await;
    assert_eq!(add(&caller.cluster(), &id).await, ("h2".to_string(), 1));

    // Listed again: h1 owns the identity again, with a fresh activation.
    *flaky.refuse.lock().unwrap_or_else(|e| e.into_inner()) = None;
    assert!(
        eventually(Duration::from_secs(5), || !h1.is_fenced()).await,
        "h1 was not listed again"
    );
    see_members(&caller, 3).await;
    assert!(
        caller
            .cluster()
            .wait_until(Duration::from_secs(5), |t| t.members().len() == 3)
            .await
    );
    assert!(eventually(Duration::from_secs(5), || h2.activation_count() == 0).await);
    let (member, count) = add(&caller.cluster(), &id).await;
    assert_eq!(
        (member.as_str(), count),
        ("h1", 1),
        "the identity came back to h1 with its stale activation"
    );
    for n in [caller, h2, h1] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn an_activation_whose_identity_moved_away_never_answers_again() {
    let cluster = "failover-moved";
    let provider: Arc<dyn MembershipProvider> = Arc::new(InMemoryMembership::new(LONG_TTL));
    let h1 = start(named(cluster, "h1"), true, &provider).await;
    let caller = start(named(cluster, "c"), false, &provider).await;
    see_members(&caller, 2).await;
    // An identity h2 wins once it joins.
    let id = owned_by("h2", &["h1", "h2"], 1).remove(0);
    assert_eq!(add(&caller.cluster(), &id).await, ("h1".to_string(), 1));
    assert_eq!(add(&caller.cluster(), &id).await, ("h1".to_string(), 2));

    let h2 = start(named(cluster, "h2"), true, &provider).await;
    for n in [&h1, &h2, &caller] {
        see_members(n, 3).await;
    }
    assert!(
        eventually(Duration::from_secs(5), || h1.activation_count() == 0).await,
        "h1 kept the activation of an identity it no longer owns"
    );
    assert_eq!(add(&caller.cluster(), &id).await, ("h2".to_string(), 1));

    h2.shutdown().await;
    see_members(&caller, 2).await;
    see_members(&h1, 2).await;
    let (member, count) = add(&caller.cluster(), &id).await;
    assert_eq!(
        (member.as_str(), count),
        ("h1", 1),
        "a stale activation answered when the identity came back"
    );
    for n in [caller, h1] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_graceful_leave_answers_what_was_written_to_the_leaver_and_fails_no_call() {
    let cluster = "failover-leave";
    let provider: Arc<dyn MembershipProvider> = Arc::new(InMemoryMembership::new(LONG_TTL));
    let h1 = start(named(cluster, "h1"), true, &provider).await;
    let h2 = start(named(cluster, "h2"), true, &provider).await;
    let caller = start(named(cluster, "c"), false, &provider).await;
    for n in [&h1, &h2, &caller] {
        see_members(n, 3).await;
    }
    let slow = owned_by("h1", &["h1", "h2"], 5);
    let options = CallOptions::default().with_timeout(Duration::from_secs(5));
    // Calls written to h1 (not idempotent) that are still running when it leaves.
    let in_flight: Vec<_> = slow
        .iter()
        .map(|id| {
            let (c, id, o) = (caller.cluster(), id.clone(), options.clone());
            tokio::spawn(async move { c.call_with(&id, SLOW, Bytes::new(), &o).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || h1.activation_count()
            == slow.len())
        .await,
        "the slow calls did not reach h1"
    );
    // Calls made all through the leave (not idempotent either).
    let busy = {
        let (c, ids, o) = (
            caller.cluster(),
            owned_by("h1", &["h1", "h2"], 20),
            options.clone(),
        );
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let until = Instant::now() + Duration::from_millis(800);
            while Instant::now() < until {
                for id in ids.iter().skip(5) {
                    if let Err(e) = c.call_with(id, ADD, Bytes::new(), &o).await {
                        failures.push(e.to_string());
                    }
                }
            }
            failures
        })
    };
    h1.shutdown().await;
    for (id, call) in slow.iter().zip(in_flight) {
        let answer = call.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            answer.as_deref().ok(),
            Some(&b"slow"[..]),
            "{id}: a call written to the leaving member was not answered: {answer:?}"
        );
    }
    let failures = busy.await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        failures.is_empty(),
        "calls failed during a graceful leave: {failures:?}"
    );
    assert_eq!(caller.cluster().retries().get("maybe_ran"), 0);
    for n in [caller, h2] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_membership_loop_that_panics_is_started_again() {
    let cluster = "failover-panic";
    let flaky = flaky(LONG_TTL);
    flaky.panic_once.store(true, Ordering::SeqCst);
    let provider: Arc<dyn MembershipProvider> = flaky.clone();
    let h1 = start(named(cluster, "h1"), true, &provider).await;
    let caller = start(named(cluster, "c"), false, &provider).await;
    // One of the two watch loops panicked on its first query; both must still see
    // both members.
    for n in [&h1, &caller] {
        see_members(n, 2).await;
    }
    assert!(flaky.queries.load(Ordering::SeqCst) >= 3);
    for n in [caller, h1] {
        n.shutdown().await;
    }
}
