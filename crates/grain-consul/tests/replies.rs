//! The provider against a stand-in for Consul: no reply, however odd, makes it panic;
//! a bad health entry costs only that entry.

mod support;

use std::time::Duration;

use grain::MemberId;
use grain::membership::{MembershipError, MembershipProvider};
use grain_consul::{ConsulConfig, ConsulMembership};
use support::{Reply, config, member, mixed_health, provider, stand_in};

#[tokio::test]
async fn an_error_body_is_cut_on_a_character_boundary_not_inside_one() {
    // 499 ASCII bytes, then two-byte characters: byte 500 is inside the first 'é'.
    let body = format!("{}{}", "a".repeat(499), "é".repeat(100));
    let mut agent = stand_in(move |_| Reply::new(400, body.clone())).await;
    let answer = provider(&agent).register(&member("m1")).await;
    let request = agent.requests.recv().await.unwrap_or_default();
    assert!(
        request.starts_with("PUT /v1/agent/service/register"),
        "{request}"
    );
    match answer {
        Err(MembershipError::Rejected(msg)) => {
            assert!(
                msg.contains(&format!("{}… (cut)", "a".repeat(499))),
                "{msg}"
            );
            assert!(!msg.contains('é'), "{msg}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // The same on a 500 (keep-alive reads the body to tell "not registered" apart).
    let body = format!("{}{}", "a".repeat(499), "é".repeat(100));
    let agent = stand_in(move |_| Reply::new(500, body.clone())).await;
    let r = provider(&agent).keep_alive(&MemberId::new("m1")).await;
    assert!(
        matches!(&r, Err(MembershipError::Unavailable(m)) if m.contains("… (cut)")),
        "{r:?}"
    );
}

#[tokio::test]
async fn a_malformed_health_entry_is_skipped_and_the_other_members_are_kept() {
    let agent = stand_in(mixed_health).await;
    let snapshot = provider(&agent)
        .members(None, Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("members: {e}"));
    assert_eq!(snapshot.index, 7);
    let mut members = snapshot.members;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m2"], "{members:?}");
    assert_eq!(members[0], member("m1"));
    // Null Tags: a member that hosts no kinds (a client).
    assert!(members[1].kinds.is_empty());
}

#[tokio::test]
async fn a_blocking_query_asks_consul_for_at_most_ten_minutes_however_long_the_wait() {
    let mut agent = stand_in(|_| Reply::new(200, "[]").header("X-Consul-Index", "3")).await;
    let p = ConsulMembership::new(
        "c",
        ConsulConfig {
            request_timeout: Duration::MAX,
            ..config(&agent)
        },
    )
    .unwrap_or_else(|e| panic!("provider: {e}"));
    let snapshot = p
        .members(Some(2), Duration::MAX)
        .await
        .unwrap_or_else(|e| panic!("members: {e}"));
    assert_eq!(snapshot.index, 3);
    let request = agent.requests.recv().await.unwrap_or_default();
    assert!(request.contains("&index=2&wait=600s"), "{request}");
}

#[tokio::test]
async fn an_index_that_is_not_a_u64_is_an_error_and_zero_counts_as_one() {
    for (index, want) in [
        ("0", Some(1)),
        ("18446744073709551615", Some(u64::MAX)),
        ("18446744073709551616", None),
        ("-1", None),
        ("seven", None),
        ("", None),
    ] {
        let agent = stand_in(move |_| Reply::new(200, "[]").header("X-Consul-Index", index)).await;
        let r = provider(&agent)
            .members(Some(u64::MAX), Duration::from_secs(1))
            .await;
        match (want, r) {
            (Some(want), Ok(s)) => assert_eq!(s.index, want, "{index:?}"),
            (None, Err(MembershipError::Unavailable(m))) => {
                assert!(m.contains("X-Consul-Index"), "{index:?}: {m}");
            }
            (want, r) => panic!("{index:?}: wanted {want:?}, got {r:?}"),
        }
    }
    let agent = stand_in(|_| Reply::new(200, "[]")).await;
    let r = provider(&agent).members(None, Duration::from_secs(1)).await;
    assert!(matches!(r, Err(MembershipError::Unavailable(_))), "{r:?}");
}
