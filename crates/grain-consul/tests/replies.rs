//! The provider against a stand-in for Consul: no reply, however odd, makes it panic;
//! a bad health entry costs only that entry.

mod support;

use std::time::Duration;

use grain::MemberId;
use grain::membership::{MembershipError, MembershipProvider};
use support::{Reply, member, mixed_health, provider, stand_in};

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
