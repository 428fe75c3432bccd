//! The current view of the cluster, as this member sees it: one [`PlacementTable`]
//! swapped atomically (`ArcSwap`, so a call reads one consistent topology) plus a watch
//! channel that wakes whoever waits for a change (retries, `wait_for_kinds`).
//!
//! The membership driver applies each member list the provider reports; this module
//! decides what the new view is: the rule about this member's own place in it
//! ([`place_self`]: listed unless fenced), and the members placement routes around
//! because a connection to them was refused (suspected, see `suspicion.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::identity::{Member, MemberId, Topology, TopologyDiff};
use crate::placement::PlacementTable;

/// This member's rule for its place in its own view: listed **unless fenced**. A
/// member is always in its own view — so local calls keep working while the provider
/// is unreachable or has not listed it yet — except while the provider, answering,
/// says it is not passing (its check went critical while it was frozen or cut off):
/// then others have moved its identities, and it must not act as their owner until it
/// is listed again.
pub(crate) fn place_self(mut members: Vec<Member>, me: &Member, fenced: bool) -> Vec<Member> {
    members.retain(|m| m.id != me.id);
    if !fenced {
        members.push(me.clone());
    }
    members
}

/// The members placement may choose: the listed ones, except suspected members (a
/// caller saw the stream break and a connection refused: nothing listens there any
/// more). A suspected member keeps only the kinds no other member hosts, so an identity
/// with nowhere else to go still goes to it (and fails as not delivered, as before).
fn placeable(listed: &Topology, suspects: &HashMap<MemberId, u64>) -> Vec<Member> {
    let is_suspect = |m: &Member| suspects.get(&m.id) == Some(&m.incarnation);
    let healthy: Vec<&Member> = listed.members().iter().filter(|m| !is_suspect(m)).collect();
    let mut out: Vec<Member> = healthy.iter().map(|m| (*m).clone()).collect();
    for m in listed.members().iter().filter(|m| is_suspect(m)) {
        let sole: Vec<String> = m
            .kinds
            .iter()
            .filter(|k| !healthy.iter().any(|h| h.hosts(k)))
            .cloned()
            .collect();
        if !sole.is_empty() {
            out.push(Member {
                kinds: sole,
                ..m.clone()
            });
        }
    }
    out
}

/// What the view is computed from.
struct State {
    /// The members as the provider last listed them (this member placed by its rule).
    listed: Topology,
    /// Suspected members: id → the incarnation suspected.
    suspects: HashMap<MemberId, u64>,
    /// This member is not passing at the provider and hosts nothing.
    fenced: bool,
    /// The provider's list before this member was placed (kept to re-place it).
    reported: Vec<Member>,
}

/// The current topology and its placement table.
pub(crate) struct TopologyView {
    me: Member,
    current: ArcSwap<PlacementTable>,
    changes: watch::Sender<Arc<PlacementTable>>,
    state: Mutex<State>,
}

impl TopologyView {
    /// A view holding only `me` (version 1).
    pub(crate) fn new(me: Member) -> Self {
        let listed = Topology::new(1, [me.clone()]);
        let table = Arc::new(PlacementTable::new(listed.clone()));
        let (changes, _) = watch::channel(table.clone());
        Self {
            me,
            current: ArcSwap::new(table),
            changes,
            state: Mutex::new(State {
                listed,
                suspects: HashMap::new(),
                fenced: false,
                reported: Vec::new(),
            }),
        }
    }

    /// The current table (a cheap guard; hold it only briefly).
    pub(crate) fn load(&self) -> Guard<Arc<PlacementTable>> {
        self.current.load()
    }

    /// The current table, as an owned handle.
    pub(crate) fn load_full(&self) -> Arc<PlacementTable> {
        self.current.load_full()
    }

    /// A receiver that sees every new table.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<PlacementTable>> {
        self.changes.subscribe()
    }

    /// The members as the provider last listed them (no suspicion applied).
    pub(crate) fn listed(&self) -> Topology {
        self.state.lock().listed.clone()
    }

    /// Installs `members` (as the provider lists them) as the new topology. Returns who
    /// joined and left the listed members, or `None` when they did not change.
    pub(crate) fn apply(&self, members: Vec<Member>) -> Option<TopologyDiff> {
        let mut state = self.state.lock();
        state.reported = members;
        self.relist(&mut state)
    }

    /// Adds (or updates) `members` without removing anyone: used while a restarted
    /// membership store is being refilled.
    pub(crate) fn apply_union(&self, members: Vec<Member>) -> Option<TopologyDiff> {
        let mut state = self.state.lock();
        let mut all: Vec<Member> = state
            .listed
            .members()
            .iter()
            .filter(|m| m.id != self.me.id && !members.iter().any(|n| n.id == m.id))
            .cloned()
            .collect();
        all.extend(members);
        state.reported = all;
        self.relist(&mut state)
    }

    /// Fences this member (`true`: it hosts nothing until listed again) or lifts the
    /// fence. Returns true when that changed anything.
    pub(crate) fn set_fenced(&self, fenced: bool) -> bool {
        let mut state = self.state.lock();
        if state.fenced == fenced {
            return false;
        }
        state.fenced = fenced;
        self.relist(&mut state);
        true
    }

    /// True while this member is fenced.
    pub(crate) fn is_fenced(&self) -> bool {
        self.state.lock().fenced
    }

    /// Suspects `member` (this incarnation): placement routes around it. Returns true
    /// when it was not suspected before and is listed.
    pub(crate) fn suspect(&self, member: &Member) -> bool {
        let mut state = self.state.lock();
        let listed = state
            .listed
            .member(&member.id)
            .is_some_and(|m| m.incarnation == member.incarnation);
        if !listed || member.id == self.me.id {
            return false;
        }
        if state.suspects.insert(member.id.clone(), member.incarnation) == Some(member.incarnation)
        {
            return false;
        }
        self.publish(&state);
        true
    }

    /// Ends the suspicion of `id` (it answered again). True when it was suspected.
    pub(crate) fn clear_suspicion(&self, id: &MemberId) -> bool {
        let mut state = self.state.lock();
        if state.suspects.remove(id).is_none() {
            return false;
        }
        self.publish(&state);
        true
    }

    /// The members suspected now.
    pub(crate) fn suspects(&self) -> Vec<Member> {
        let state = self.state.lock();
        state
            .listed
            .members()
            .iter()
            .filter(|m| state.suspects.get(&m.id) == Some(&m.incarnation))
            .cloned()
            .collect()
    }

    /// Recomputes the listed members from the last report; publishes and returns the
    /// diff when they changed.
    fn relist(&self, state: &mut State) -> Option<TopologyDiff> {
        let members = place_self(state.reported.clone(), &self.me, state.fenced);
        let next = Topology::new(state.listed.version() + 1, members);
        if next.same_members(&state.listed) {
            return None;
        }
        let diff = next.diff(&state.listed);
        state.listed = next;
        // A suspicion ends when its member leaves (or comes back as a new incarnation).
        let listed = &state.listed;
        state
            .suspects
            .retain(|id, inc| listed.member(id).is_some_and(|m| m.incarnation == *inc));
        self.publish(state);
        Some(diff)
    }

    /// Builds and installs the table placement uses.
    fn publish(&self, state: &State) {
        let version = self.current.load().topology().version() + 1;
        let effective = if state.suspects.is_empty() {
            Topology::new(version, state.listed.members().iter().cloned())
        } else {
            Topology::new(version, placeable(&state.listed, &state.suspects))
        };
        let table = Arc::new(PlacementTable::new(effective));
        self.current.store(table.clone());
        self.changes.send_replace(table);
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
