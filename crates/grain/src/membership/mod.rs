//! Membership: how members find each other.
//!
//! A [`MembershipProvider`] is the contract between the runtime and a discovery service
//! (Consul in `grain-consul`, or [`InMemoryMembership`] for tests and single-process
//! use). The runtime drives it: it registers its own member, keeps it alive every
//! [`MembershipProvider::keep_alive_interval`], watches the member set with blocking
//! queries, and deregisters on graceful shutdown. Providers never need to know about
//! activations, placement or transport.
//!
//! Every provider must pass the conformance suite in `testkit` (feature `testkit`).

pub(crate) mod driver;
mod memory;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::time::Duration;

use async_trait::async_trait;

pub use memory::InMemoryMembership;

use crate::identity::{Member, MemberId};

/// The live members at one moment, as a provider reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberSnapshot {
    /// An opaque index that changes whenever the member set may have changed. Always
    /// at least 1. It may go *backwards* (e.g. the backing store restarted); callers
    /// treat that as "start over" (see [`MembershipProvider::members`]).
    pub index: u64,
    /// The members currently considered alive (their keep-alive is fresh), in no
    /// particular order.
    pub members: Vec<Member>,
}

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The provider does not know this member (never registered, deregistered, reaped
    /// after missing keep-alives for too long, or the backing store lost its state).
    /// The caller registers again.
    #[error("member {0} is not registered with the membership provider")]
    NotRegistered(MemberId),
    /// The backing service could not be reached or answered with a server error. The
    /// caller keeps its last known topology and tries again later.
    #[error("membership provider unavailable: {0}")]
    Unavailable(String),
    /// The backing service refused the request (e.g. missing or wrong ACL token, invalid
    /// input). Retrying the same request will not help until configuration changes.
    #[error("membership provider refused the request: {0}")]
    Rejected(String),
}

/// The contract every membership provider fulfils.
///
/// Promises, checked by the conformance suite:
/// - After `register(m)` returns `Ok`, `members` lists `m` (same id, address, kinds and
///   incarnation) until `deregister(m.id)` or until keep-alives stop.
/// - A member whose keep-alives stop is no longer listed within its time-to-live plus
///   one second (the TTL is the provider's own configuration).
/// - `keep_alive(id)` for an id the provider does not know returns
///   [`MembershipError::NotRegistered`].
/// - `members(Some(i), wait)` blocks while the index is still `i`, returns early (well
///   before `wait`) when the member set changes, and returns within `wait` plus one
///   second in any case. `members(None, _)` answers at once.
/// - Registering an id again replaces the earlier registration (a new incarnation).
/// - Methods never panic on backend errors; they return [`MembershipError`].
#[async_trait]
pub trait MembershipProvider: Send + Sync + 'static {
    /// Adds `member`, alive, or replaces an earlier registration with the same id.
    ///
    /// Errors: [`MembershipError::Unavailable`] (try again later) or
    /// [`MembershipError::Rejected`] (fix the configuration).
    async fn register(&self, member: &Member) -> Result<(), MembershipError>;

    /// Says that `member` is still alive. Called every [`Self::keep_alive_interval`].
    ///
    /// Errors: [`MembershipError::NotRegistered`] (register again),
    /// [`MembershipError::Unavailable`], [`MembershipError::Rejected`].
    async fn keep_alive(&self, member: &MemberId) -> Result<(), MembershipError>;

    /// The live members. With `after = Some(index)` this is a blocking query: it waits up
    /// to `wait` for the index to move past `index`.
    ///
    /// Errors: [`MembershipError::Unavailable`], [`MembershipError::Rejected`].
    async fn members(
        &self,
        after: Option<u64>,
        wait: Duration,
    ) -> Result<MemberSnapshot, MembershipError>;

    /// Removes `member`. Removing an unknown member is not an error.
    ///
    /// Errors: [`MembershipError::Unavailable`], [`MembershipError::Rejected`].
    async fn deregister(&self, member: &MemberId) -> Result<(), MembershipError>;

    /// How often the runtime calls [`Self::keep_alive`]; well under the time-to-live.
    fn keep_alive_interval(&self) -> Duration;
}
