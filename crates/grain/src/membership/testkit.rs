//! The conformance suite every [`MembershipProvider`] must pass (feature `testkit`).
//!
//! Each rule is a public async function named after the rule it checks; the
//! [`membership_conformance_tests!`](crate::membership_conformance_tests) macro turns
//! them into one `#[tokio::test]` each, so a failing test name says which rule broke:
//!
//! ```ignore
//! grain::membership_conformance_tests!(|| async {
//!     let ttl = std::time::Duration::from_secs(2);
//!     grain::membership::testkit::Harness::new(grain::membership::InMemoryMembership::new(ttl), ttl)
//! });
//! ```
//!
//! Rules use fresh random member ids and only look at those, so they can run against
//! a shared real backend (a Consul agent with other services on it).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{MemberSnapshot, MembershipError, MembershipProvider};
use crate::identity::{Member, MemberId};

/// A provider under test and the time-to-live it was configured with.
pub struct Harness {
    /// The provider under test.
    pub provider: Arc<dyn MembershipProvider>,
    /// How long a member stays listed without keep-alives.
    pub ttl: Duration,
}

impl Harness {
    /// Wraps a provider configured with `ttl`.
    pub fn new(provider: impl MembershipProvider, ttl: Duration) -> Self {
        Self {
            provider: Arc::new(provider),
            ttl,
        }
    }
}

/// Slack allowed on top of a provider's stated timing.
pub const SLACK: Duration = Duration::from_secs(1);

fn member(tag: &str, incarnation: u64) -> Member {
    let id = MemberId::random(&format!("conformance-{tag}"));
    Member {
        address: format!("127.0.0.1:{}", 20000 + (incarnation % 1000)),
        id,
        kinds: vec!["ConformanceKind".into(), "OtherKind".into()],
        incarnation,
    }
}

fn find<'a>(snap: &'a MemberSnapshot, id: &MemberId) -> Vec<&'a Member> {
    snap.members.iter().filter(|m| &m.id == id).collect()
}

async fn now_members(h: &Harness) -> MemberSnapshot {
    match h.provider.members(None, Duration::from_secs(1)).await {
        Ok(s) => s,
        Err(e) => panic!("members(None) failed: {e}"),
    }
}

async fn register(h: &Harness, m: &Member) {
    if let Err(e) = h.provider.register(m).await {
        panic!("register({}) failed: {e}", m.id);
    }
}

async fn cleanup(h: &Harness, m: &Member) {
    let _ = h.provider.deregister(&m.id).await;
}

/// After `register`, the member is listed with the same id, address, kinds and
/// incarnation.
pub async fn registered_member_is_listed_with_its_details(h: &Harness) {
    let m = member("listed", 7);
    register(h, &m).await;
    let snap = now_members(h).await;
    let found = find(&snap, &m.id);
    assert_eq!(
        found.len(),
        1,
        "registered member listed {} times",
        found.len()
    );
    let got = found[0];
    assert_eq!(got.address, m.address, "address");
    let mut kinds = got.kinds.clone();
    kinds.sort();
    assert_eq!(kinds, m.kinds, "kinds");
    assert_eq!(got.incarnation, m.incarnation, "incarnation");
    cleanup(h, &m).await;
}

/// The index of any answer is at least 1.
pub async fn index_is_at_least_one(h: &Harness) {
    let snap = now_members(h).await;
    assert!(snap.index >= 1, "index {} < 1", snap.index);
}

/// After `deregister`, the member is no longer listed.
pub async fn deregistered_member_is_no_longer_listed(h: &Harness) {
    let m = member("deregistered", 1);
    register(h, &m).await;
    if let Err(e) = h.provider.deregister(&m.id).await {
        panic!("deregister failed: {e}");
    }
    let snap = now_members(h).await;
    assert!(
        find(&snap, &m.id).is_empty(),
        "deregistered member still listed"
    );
}

/// Deregistering a member the provider never knew is not an error.
pub async fn deregistering_an_unknown_member_is_not_an_error(h: &Harness) {
    let id = MemberId::random("conformance-unknown");
    let r = h.provider.deregister(&id).await;
    assert!(r.is_ok(), "deregister(unknown) = {r:?}");
}

/// `keep_alive` of an id the provider does not know answers `NotRegistered`.
pub async fn keep_alive_of_an_unknown_member_answers_not_registered(h: &Harness) {
    let id = MemberId::random("conformance-unknown");
    match h.provider.keep_alive(&id).await {
        Err(MembershipError::NotRegistered(got)) => assert_eq!(got, id),
        other => panic!("keep_alive(unknown) = {other:?}, want NotRegistered"),
    }
}

/// A member whose keep-alives stop is unlisted within TTL + 1 s, while a member that
/// keeps sending them stays listed.
pub async fn member_without_keep_alive_leaves_within_ttl_plus_one_second(h: &Harness) {
    let silent = member("silent", 1);
    let alive = member("alive", 1);
    register(h, &silent).await;
    register(h, &alive).await;
    let started = Instant::now();
    let interval = h.provider.keep_alive_interval();
    assert!(
        interval < h.ttl,
        "keep-alive interval {interval:?} >= ttl {:?}",
        h.ttl
    );
    let limit = h.ttl + SLACK;
    let mut next_keep_alive = Instant::now();
    let gone_after = loop {
        if Instant::now() >= next_keep_alive {
            if let Err(e) = h.provider.keep_alive(&alive.id).await {
                panic!("keep_alive(alive) failed: {e}");
            }
            next_keep_alive = Instant::now() + interval;
        }
        let snap = now_members(h).await;
        assert_eq!(
            find(&snap, &alive.id).len(),
            1,
            "kept-alive member was dropped"
        );
        if find(&snap, &silent.id).is_empty() {
            break started.elapsed();
        }
        assert!(
            started.elapsed() <= limit,
            "silent member still listed {:?} after its last keep-alive (ttl {:?})",
            started.elapsed(),
            h.ttl
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        gone_after <= limit,
        "silent member left after {gone_after:?}"
    );
    cleanup(h, &silent).await;
    cleanup(h, &alive).await;
}

/// A blocking query returns early (well before its wait) when a member joins.
pub async fn blocking_query_returns_early_when_a_member_joins(h: &Harness) {
    let index = now_members(h).await.index;
    let m = member("joiner", 1);
    let provider = h.provider.clone();
    let joiner = m.clone();
    let reg = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        provider.register(&joiner).await
    });
    let started = Instant::now();
    let wait = Duration::from_secs(10);
    let mut last = index;
    loop {
        // A provider may answer early with an unchanged index; ask again then.
        let snap = match h.provider.members(Some(last), wait).await {
            Ok(s) => s,
            Err(e) => panic!("blocking members() failed: {e}"),
        };
        if !find(&snap, &m.id).is_empty() {
            break;
        }
        last = snap.index;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "blocking query did not see the joiner within 3 s"
        );
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "blocking query returned after {elapsed:?}"
    );
    match reg.await {
        Ok(Ok(())) => {}
        other => panic!("register in background failed: {other:?}"),
    }
    cleanup(h, &m).await;
}

/// A blocking query with nothing changing returns within its wait plus one second.
pub async fn blocking_query_returns_within_wait_plus_one_second(h: &Harness) {
    let index = now_members(h).await.index;
    let wait = Duration::from_secs(1);
    let started = Instant::now();
    let r = h.provider.members(Some(index), wait).await;
    let elapsed = started.elapsed();
    assert!(r.is_ok(), "blocking members() failed: {r:?}");
    assert!(
        elapsed <= wait + SLACK,
        "blocking query took {elapsed:?} for a wait of {wait:?}"
    );
}

/// Registering the same id again replaces the earlier registration.
pub async fn registering_again_replaces_the_earlier_registration(h: &Harness) {
    let first = member("again", 1);
    let second = Member {
        address: "127.0.0.1:29999".into(),
        incarnation: 2,
        ..first.clone()
    };
    register(h, &first).await;
    register(h, &second).await;
    let snap = now_members(h).await;
    let found = find(&snap, &first.id);
    assert_eq!(
        found.len(),
        1,
        "re-registered member listed {} times",
        found.len()
    );
    assert_eq!(found[0].incarnation, 2, "incarnation");
    assert_eq!(found[0].address, second.address, "address");
    cleanup(h, &first).await;
}

/// A member that was deregistered answers `NotRegistered` to its keep-alive.
pub async fn keep_alive_after_deregister_answers_not_registered(h: &Harness) {
    let m = member("gone", 1);
    register(h, &m).await;
    if let Err(e) = h.provider.deregister(&m.id).await {
        panic!("deregister failed: {e}");
    }
    match h.provider.keep_alive(&m.id).await {
        Err(MembershipError::NotRegistered(_)) => {}
        other => panic!("keep_alive after deregister = {other:?}, want NotRegistered"),
    }
}

/// Generates one `#[tokio::test]` per conformance rule. The argument is a closure
/// returning a future of [`Harness`]; each test gets a fresh one. With
/// `ignore = "reason", ` first, every test is `#[ignore]`d with that reason (for a
/// backend that is not always there, such as a real Consul agent).
#[macro_export]
macro_rules! membership_conformance_tests {
    (ignore = $reason:literal, $make:expr) => {
        $crate::membership_conformance_tests!(@rules [#[ignore = $reason]] $make);
    };
    ($make:expr) => {
        $crate::membership_conformance_tests!(@rules [] $make);
    };
    (@rules $attrs:tt $make:expr) => {
        $crate::__membership_conformance_tests!($attrs $make;
            registered_member_is_listed_with_its_details,
            index_is_at_least_one,
            deregistered_member_is_no_longer_listed,
            deregistering_an_unknown_member_is_not_an_error,
            keep_alive_of_an_unknown_member_answers_not_registered,
            member_without_keep_alive_leaves_within_ttl_plus_one_second,
            blocking_query_returns_early_when_a_member_joins,
            blocking_query_returns_within_wait_plus_one_second,
            registering_again_replaces_the_earlier_registration,
            keep_alive_after_deregister_answers_not_registered,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __membership_conformance_tests {
    ($attrs:tt $make:expr; $($rule:ident),* $(,)?) => {
        $( $crate::__membership_conformance_test!($attrs $make; $rule); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __membership_conformance_test {
    ([$(#[$meta:meta])*] $make:expr; $rule:ident) => {
        $(#[$meta])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $rule() {
            let harness = ($make)().await;
            $crate::membership::testkit::$rule(&harness).await;
        }
    };
}
