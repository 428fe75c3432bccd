//! The context a grain runs in: [`GrainContext`] — its identity and member, the
//! cluster handle for calls to other grains, and the headers and deadline of the call
//! being handled.
//!
//! This is the one module that names the cluster handle from below it: a grain calls
//! other grains through `ctx.cluster()`, so the context holds a `Cluster`.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::call::CallOptions;
use crate::cluster::Cluster;
use crate::identity::{ClusterIdentity, MemberId};

/// Where and for whom a grain call runs.
pub struct GrainContext {
    pub(crate) identity: ClusterIdentity,
    pub(crate) member: MemberId,
    pub(crate) cluster: Cluster,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) deadline: Option<tokio::time::Instant>,
    /// The SERVER span of the call being handled, when this member records spans.
    pub(crate) trace: Option<opentelemetry::Context>,
}

impl fmt::Debug for GrainContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainContext")
            .field("identity", &self.identity)
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl GrainContext {
    /// The context of a new activation of `identity` on the member `cluster` belongs to.
    pub(crate) fn new(identity: ClusterIdentity, cluster: Cluster) -> Self {
        Self {
            identity,
            member: cluster.member().id.clone(),
            cluster,
            headers: HashMap::new(),
            deadline: None,
            trace: None,
        }
    }

    /// The context of a new activation of `identity` on this same member.
    pub(crate) fn for_identity(&self, identity: ClusterIdentity) -> Self {
        Self {
            identity,
            member: self.member.clone(),
            cluster: self.cluster.clone(),
            headers: HashMap::new(),
            deadline: None,
            trace: None,
        }
    }

    /// The grain's identity.
    pub fn identity(&self) -> &ClusterIdentity {
        &self.identity
    }

    /// The member this activation lives on.
    pub fn member(&self) -> &MemberId {
        &self.member
    }

    /// The cluster, to call other grains from inside a grain.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The headers of the call being handled (e.g. `traceparent`); empty in the
    /// lifecycle hooks.
    pub fn headers(&self) -> &HashMap<String, String> {
        &self.headers
    }

    /// What is left of the deadline of the call being handled (the caller's, carried
    /// on the wire); `None` in the lifecycle hooks. The call is cancelled when it runs
    /// out.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Options for a call made while handling this one: the cluster's defaults, with
    /// the timeout cut to what is left of this call's deadline, so a nested call never
    /// outlives the call that made it, and the trace context of this call, so the
    /// nested call continues its trace (as a child of this call's SERVER span when
    /// this member records spans; else with the context this call arrived with).
    pub fn call_options(&self) -> CallOptions {
        let mut options = self.cluster.call_defaults().clone();
        if let Some(left) = self.remaining()
            && left < options.timeout
        {
            options = options.with_timeout(left);
        }
        let context = self
            .cluster
            .nested_headers(self.trace.as_ref(), &self.headers);
        options.headers.extend(context);
        options
    }
}
