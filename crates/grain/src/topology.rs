//! The current view of the cluster, as this member sees it: one [`PlacementTable`]
//! swapped atomically (`ArcSwap`, so a call reads one consistent topology) plus a watch
//! channel that wakes whoever waits for a change (retries, `wait_for_kinds`).
//!
//! The membership driver applies each member list the provider reports; this module
//! decides what the new view is, including the rule about this member's own place in
//! it ([`place_self`]).

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;

use crate::identity::{Member, Topology, TopologyDiff};
use crate::placement::PlacementTable;

/// This member's rule for its place in its own view: **always listed**, so local calls
/// keep working while the provider is unreachable or has not listed it yet.
///
/// (The failure-handling work changes this rule: a member the provider reports as not
/// passing will stop acting as an owner.)
pub(crate) fn place_self(mut members: Vec<Member>, me: &Member) -> Vec<Member> {
    members.retain(|m| m.id != me.id);
    members.push(me.clone());
    members
}

/// The current topology and its placement table.
pub(crate) struct TopologyView {
    me: Member,
    current: ArcSwap<PlacementTable>,
    changes: watch::Sender<Arc<PlacementTable>>,
}

impl TopologyView {
    /// A view holding only `me` (version 1).
    pub(crate) fn new(me: Member) -> Self {
        let table = Arc::new(PlacementTable::new(Topology::new(1, [me.clone()])));
        let (changes, _) = watch::channel(table.clone());
        Self {
            me,
            current: ArcSwap::new(table),
            changes,
        }
    }

    /// The current table (a cheap guard; hold it only briefly).
    pub(crate) fn load(&self) -> Guard<Arc<PlacementTable>> {
        self.current.load()
    }

    /// A receiver that sees every new table.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<PlacementTable>> {
        self.changes.subscribe()
    }

    /// Installs `members` (as the provider lists them) as the new topology. Returns who
    /// joined and left, or `None` when the member set did not change.
    pub(crate) fn apply(&self, members: Vec<Member>) -> Option<TopologyDiff> {
        let members = place_self(members, &self.me);
        let current = self.current.load_full();
        let next = Topology::new(current.topology().version() + 1, members);
        if next.same_members(current.topology()) {
            return None;
        }
        let diff = next.diff(current.topology());
        let table = Arc::new(PlacementTable::new(next));
        self.current.store(table.clone());
        self.changes.send_replace(table);
        Some(diff)
    }

    /// Adds (or updates) `members` without removing anyone: used while a restarted
    /// membership store is being refilled.
    pub(crate) fn apply_union(&self, members: Vec<Member>) -> Option<TopologyDiff> {
        let current = self.current.load_full();
        let mut all: Vec<Member> = current
            .topology()
            .members()
            .iter()
            .filter(|m| !members.iter().any(|n| n.id == m.id))
            .cloned()
            .collect();
        all.extend(members);
        self.apply(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::MemberId;

    fn member(id: &str) -> Member {
        Member {
            id: MemberId::new(id),
            address: format!("{id}:1"),
            kinds: vec!["K".into()],
            incarnation: 1,
        }
    }

    #[test]
    fn this_member_is_always_in_its_own_view() {
        let view = TopologyView::new(member("me"));
        let diff = view.apply(vec![member("a")]);
        assert!(diff.is_some_and(|d| d.joined.len() == 1 && d.left.is_empty()));
        let ids: Vec<String> = view
            .load()
            .topology()
            .members()
            .iter()
            .map(|m| m.id.to_string())
            .collect();
        assert!(ids.contains(&"me".to_string()) && ids.contains(&"a".to_string()));
        // An empty list from the provider still leaves this member in the view.
        let diff = view.apply(Vec::new());
        assert!(diff.is_some_and(|d| d.left.len() == 1));
        assert!(
            view.load()
                .topology()
                .member(&MemberId::new("me"))
                .is_some()
        );
    }

    #[test]
    fn the_same_members_make_no_new_version_and_wake_nobody() {
        let view = TopologyView::new(member("me"));
        let mut changes = view.subscribe();
        assert!(view.apply(vec![member("a")]).is_some());
        assert!(changes.has_changed().unwrap_or(false));
        changes.mark_unchanged();
        let version = view.load().topology().version();
        assert!(view.apply(vec![member("a")]).is_none());
        assert_eq!(view.load().topology().version(), version);
        assert!(!changes.has_changed().unwrap_or(true));
    }

    #[test]
    fn a_union_adds_without_removing() {
        let view = TopologyView::new(member("me"));
        view.apply(vec![member("a"), member("b")]);
        let diff = view.apply_union(vec![member("c")]);
        assert!(diff.is_some_and(|d| d.left.is_empty() && d.joined.len() == 1));
        assert_eq!(view.load().topology().members().len(), 4);
    }
}
