//! The vocabulary of the cluster: who a grain is ([`ClusterIdentity`]), who a member is
//! ([`Member`]), and what the cluster looks like at one moment ([`Topology`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The name of a grain kind, e.g. `FizzService`.
pub type KindName = Arc<str>;

/// Which grain: a kind plus an identity within that kind (`FizzService/grain1`).
///
/// A cluster identity names one *virtual* actor: it always exists, and is activated on
/// the member that owns it when a call arrives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterIdentity {
    kind: KindName,
    identity: Arc<str>,
}

impl ClusterIdentity {
    /// A grain of `kind` named `identity`.
    pub fn new(kind: impl Into<KindName>, identity: impl Into<Arc<str>>) -> Self {
        Self {
            kind: kind.into(),
            identity: identity.into(),
        }
    }

    /// The grain kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The grain kind, shared.
    pub(crate) fn kind_arc(&self) -> &KindName {
        &self.kind
    }

    /// The identity within the kind.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

impl fmt::Display for ClusterIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.identity)
    }
}

/// A member's id, unique within the cluster for the life of one process.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(Arc<str>);

impl MemberId {
    /// Wraps an id as given.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// A fresh random id with a readable prefix, e.g. `fizz-3f9c2a1b7d4e8f60`.
    pub fn random(prefix: &str) -> Self {
        let n: u64 = rand::random();
        Self::new(format!("{prefix}-{n:016x}"))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One process in the cluster, as the membership provider knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Unique id of this member.
    pub id: MemberId,
    /// Where its gRPC endpoint is reachable, `host:port`.
    pub address: String,
    /// The grain kinds it hosts (may be empty: a pure client).
    pub kinds: Vec<String>,
    /// Bumped each time the same id registers anew (a restart under a fixed id).
    pub incarnation: u64,
}

impl Member {
    /// True when this member hosts grains of `kind`.
    pub fn hosts(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind)
    }

    /// True when `other` is the same process: same id, incarnation and address (the
    /// kinds it is placed for may differ, e.g. while it is suspected).
    pub fn same_incarnation(&self, other: &Member) -> bool {
        self.id == other.id
            && self.incarnation == other.incarnation
            && self.address == other.address
    }
}

/// The members of the cluster at one moment, sorted by id, with a local version that
/// grows each time the set changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    version: u64,
    members: Arc<[Member]>,
}

/// What changed between two topologies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopologyDiff {
    /// Members present now and not before (a new incarnation counts as joined).
    pub joined: Vec<Member>,
    /// Members present before and not now (an old incarnation counts as left).
    pub left: Vec<Member>,
}

impl TopologyDiff {
    /// True when nothing joined or left.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

impl Topology {
    /// A topology of `members` at `version`. Duplicate ids keep the highest incarnation.
    pub fn new(version: u64, members: impl IntoIterator<Item = Member>) -> Self {
        let mut by_id: HashMap<MemberId, Member> = HashMap::new();
        for m in members {
            match by_id.get(&m.id) {
                Some(old) if old.incarnation >= m.incarnation => {}
                _ => {
                    by_id.insert(m.id.clone(), m);
                }
            }
        }
        let mut members: Vec<Member> = by_id.into_values().collect();
        members.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            version,
            members: members.into(),
        }
    }

    /// The version: larger is newer.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with `id`, if present.
    pub fn member(&self, id: &MemberId) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.id.cmp(id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// True when some member hosts `kind`.
    pub fn hosts(&self, kind: &str) -> bool {
        self.members.iter().any(|m| m.hosts(kind))
    }

    /// True when both hold the same members (same ids, incarnations, addresses, kinds).
    pub fn same_members(&self, other: &Topology) -> bool {
        self.members == other.members
    }

    /// What changed from `before` to `self`.
    pub fn diff(&self, before: &Topology) -> TopologyDiff {
        let mut diff = TopologyDiff::default();
        for m in self.members.iter() {
            if before.member(&m.id) != Some(m) {
                diff.joined.push(m.clone());
            }
        }
        for m in before.members.iter() {
            if self.member(&m.id) != Some(m) {
                diff.left.push(m.clone());
            }
        }
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, incarnation: u64) -> Member {
        Member {
            id: MemberId::new(id),
            address: format!("{id}:1"),
            kinds: vec!["K".into()],
            incarnation,
        }
    }

    #[test]
    fn topology_sorts_members_and_keeps_newest_incarnation() {
        let t = Topology::new(
            1,
            [
                member("b", 1),
                member("a", 1),
                member("b", 3),
                member("b", 2),
            ],
        );
        let ids: Vec<_> = t
            .members()
            .iter()
            .map(|m| (m.id.as_str(), m.incarnation))
            .collect();
        assert_eq!(ids, vec![("a", 1), ("b", 3)]);
    }

    #[test]
    fn diff_reports_joined_and_left_and_counts_new_incarnation_as_both() {
        let before = Topology::new(1, [member("a", 1), member("b", 1)]);
        let after = Topology::new(2, [member("b", 2), member("c", 1)]);
        let d = after.diff(&before);
        let joined: Vec<_> = d
            .joined
            .iter()
            .map(|m| (m.id.as_str(), m.incarnation))
            .collect();
        let left: Vec<_> = d
            .left
            .iter()
            .map(|m| (m.id.as_str(), m.incarnation))
            .collect();
        assert_eq!(joined, vec![("b", 2), ("c", 1)]);
        assert_eq!(left, vec![("a", 1), ("b", 1)]);
        assert!(after.diff(&after).is_empty());
    }

    #[test]
    fn cluster_identity_displays_as_kind_slash_identity() {
        assert_eq!(
            ClusterIdentity::new("FizzService", "grain1").to_string(),
            "FizzService/grain1"
        );
    }
}
