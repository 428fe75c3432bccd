//! Retries: why an attempt is sent again ([`retry_reason`]), and the per-member counts
//! by reason ([`RetryCounts`], what [`crate::Cluster::retries`] answers).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::CallError;

/// Why an attempt is retried, or `None` when it must not be: only when it provably did
/// not run, or — for an idempotent method — when it may have run.
pub(crate) fn retry_reason(e: &CallError, idempotent: bool) -> Option<RetryReason> {
    match e {
        CallError::NoMemberHostsKind { .. } => Some(RetryReason::NoMember),
        CallError::WrongOwner { .. } => Some(RetryReason::WrongOwner),
        CallError::ShuttingDown { .. } => Some(RetryReason::ShuttingDown),
        CallError::MemberUnavailable {
            maybe_ran: false, ..
        } => Some(RetryReason::NotDelivered),
        CallError::MemberUnavailable {
            maybe_ran: true, ..
        } if idempotent => Some(RetryReason::MaybeRan),
        CallError::Timeout { .. } if idempotent => Some(RetryReason::AttemptTimeout),
        _ => None,
    }
}

/// Why a call was sent again (the discriminant indexes [`RetryCounters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RetryReason {
    NoMember,
    WrongOwner,
    ShuttingDown,
    NotDelivered,
    MaybeRan,
    AttemptTimeout,
}

impl RetryReason {
    pub(crate) const ALL: [RetryReason; 6] = [
        RetryReason::NoMember,
        RetryReason::WrongOwner,
        RetryReason::ShuttingDown,
        RetryReason::NotDelivered,
        RetryReason::MaybeRan,
        RetryReason::AttemptTimeout,
    ];

    /// The metric attribute and the name in [`RetryCounts`].
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RetryReason::NoMember => "no_member",
            RetryReason::WrongOwner => "wrong_owner",
            RetryReason::ShuttingDown => "shutting_down",
            RetryReason::NotDelivered => "not_delivered",
            RetryReason::MaybeRan => "maybe_ran",
            RetryReason::AttemptTimeout => "attempt_timeout",
        }
    }
}

/// Counts of retries by reason, kept by each member for its own calls.
#[derive(Default)]
pub(crate) struct RetryCounters(pub(crate) [AtomicU64; 6]);

impl RetryCounters {
    pub(crate) fn count(&self, reason: RetryReason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// How many times this member's calls were sent again, by reason, since it started
/// ([`Cluster::retries`]). Reasons: `no_member` (no member hosted the kind),
/// `wrong_owner` (the member asked said it does not own the identity), `shutting_down`
/// (the owner was leaving and refused the call), `not_delivered` (the call never
/// reached the owner), `maybe_ran` (an idempotent call whose link broke or whose owner
/// left after it was written), `attempt_timeout` (an idempotent call's attempt timed
/// out before its deadline).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryCounts {
    pub(crate) counts: Vec<(&'static str, u64)>,
}

impl RetryCounts {
    /// Every reason with its count, zeros included, in a fixed order.
    pub fn by_reason(&self) -> &[(&'static str, u64)] {
        &self.counts
    }

    /// The count of `reason` (0 for an unknown reason).
    pub fn get(&self, reason: &str) -> u64 {
        self.counts
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// All retries.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grain::Code;
    use crate::identity::MemberId;
    use std::time::Duration;

    fn maybe_ran() -> CallError {
        CallError::MemberUnavailable {
            member: MemberId::new("m"),
            reason: "the link broke".into(),
            maybe_ran: true,
        }
    }

    fn timeout() -> CallError {
        CallError::Timeout {
            target: "K/a M".into(),
            after: Duration::from_millis(5),
        }
    }

    #[test]
    fn a_call_that_may_have_run_is_retried_only_when_its_method_is_idempotent() {
        for e in [maybe_ran(), timeout()] {
            assert_eq!(retry_reason(&e, false), None, "{e}");
        }
        assert_eq!(
            retry_reason(&maybe_ran(), true),
            Some(RetryReason::MaybeRan)
        );
        assert_eq!(
            retry_reason(&timeout(), true),
            Some(RetryReason::AttemptTimeout)
        );
    }

    #[test]
    fn a_call_that_provably_did_not_run_is_retried_whatever_its_method() {
        let not_run = CallError::MemberUnavailable {
            member: MemberId::new("m"),
            reason: "connection refused".into(),
            maybe_ran: false,
        };
        for idempotent in [false, true] {
            assert_eq!(
                retry_reason(&not_run, idempotent),
                Some(RetryReason::NotDelivered)
            );
            let app = CallError::Application {
                code: Code::Internal,
                message: "boom".into(),
            };
            assert_eq!(retry_reason(&app, idempotent), None);
        }
    }
}
