//! The links map: at most one [`PeerLink`] per member of the topology, opened on first
//! use and closed when the member leaves.
//!
//! Rule: a link is opened only for a member of the *current* topology, and that check
//! happens under the same lock as the removal of members that left. The membership
//! driver stores a new topology first and then removes the links of those who left
//! (under the lock), so either the opener sees the member gone, or its new link is in
//! the map when the removal runs. A link opened for a member that already left would
//! never be closed.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::client::LinkConfig;
use super::client::PeerLink;
use crate::identity::{Member, MemberId};
use crate::topology::TopologyView;

/// The links of one member to its peers.
pub(crate) struct Links {
    config: LinkConfig,
    map: Mutex<HashMap<MemberId, Arc<PeerLink>>>,
    /// Test seam: runs after a caller decided to open a link and before it takes the
    /// lock, so a test can make a member leave exactly there.
    #[cfg(test)]
    before_lock: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Links {
    /// No links yet; each is made with `config` when first needed.
    pub(crate) fn new(config: LinkConfig) -> Self {
        Self {
            config,
            map: Mutex::new(HashMap::new()),
            #[cfg(test)]
            before_lock: Mutex::new(None),
        }
    }

    /// The link to `member`, opened if needed, or `None` when `member` (this very
    /// incarnation) is not in `view`'s current topology.
    ///
    /// Cost on the hot path: one lock and one binary search; the check happens under
    /// the lock (see the module's rule).
    pub(crate) fn get(&self, member: &Member, view: &TopologyView) -> Option<Arc<PeerLink>> {
        #[cfg(test)]
        if let Some(hook) = self.before_lock.lock().take() {
            hook();
        }
        let mut links = self.map.lock();
        let listed = {
            let table = view.load();
            let found = table.topology().member(&member.id);
            found.is_some_and(|m| m.same_incarnation(member))
        };
        if !listed {
            return None;
        }
        if let Some(l) = links.get(&member.id) {
            if l.member().same_incarnation(member) {
                return Some(l.clone());
            }
            l.close();
        }
        let link = Arc::new(PeerLink::spawn(self.config.clone(), member.clone()));
        links.insert(member.id.clone(), link.clone());
        Some(link)
    }

    /// Closes the links of members that left (called after the new topology was
    /// stored). A link to a newer incarnation of the same id stays.
    pub(crate) fn close_left(&self, left: &[Member]) {
        let mut links = self.map.lock();
        for m in left {
            if links
                .get(&m.id)
                .is_some_and(|l| l.member().same_incarnation(m))
                && let Some(l) = links.remove(&m.id)
            {
                l.close();
            }
        }
    }

    /// Closes every link (shutdown).
    pub(crate) fn close_all(&self) {
        let links: Vec<_> = self.map.lock().drain().map(|(_, l)| l).collect();
        for l in links {
            l.close();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().len()
    }

    #[cfg(test)]
    fn before_lock(&self, hook: impl FnOnce() + Send + 'static) {
        *self.before_lock.lock() = Some(Box::new(hook));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::call::Backoff;
    use crate::metrics::Metrics;
    use crate::remote::Dialer;
    use crate::suspicion::Suspicion;

    fn member(id: &str) -> Member {
        Member {
            id: MemberId::new(id),
            address: "127.0.0.1:9".into(),
            kinds: vec!["K".into()],
            incarnation: 1,
        }
    }

    fn links(me: &Member, view: &Arc<TopologyView>) -> Links {
        let dialer = Arc::new(Dialer {
            cluster: "test".into(),
            member_id: me.id.clone(),
            address: me.address.clone(),
            max_message_bytes: 4 << 20,
            connect_timeout: Duration::from_secs(1),
            tls: None,
        });
        let timeout = Duration::from_millis(100);
        let suspicion = Arc::new(Suspicion::new(view.clone(), timeout, dialer.clone()));
        Links::new(LinkConfig {
            metrics: Arc::new(Metrics::new(None, me)),
            dialer,
            queue: 8,
            queue_bytes: 1 << 20,
            max_batch: 8,
            max_batch_bytes: 1 << 20,
            reconnect: Backoff::default(),
            suspicion,
        })
    }

    #[tokio::test]
    async fn a_member_that_leaves_while_its_link_is_being_opened_gets_no_link() {
        let me = member("me");
        let peer = member("peer");
        let view = Arc::new(TopologyView::new(me.clone()));
        assert!(view.apply(vec![peer.clone()]).is_some());
        let links = Arc::new(links(&me, &view));
        // The peer leaves between the caller's decision to open a link and its taking
        // the lock: the new topology is stored, then the links of those who left are
        // closed — in the order the membership driver does it.
        let (hook_view, hook_links) = (view.clone(), links.clone());
        links.before_lock(move || {
            if let Some(diff) = hook_view.apply(Vec::new()) {
                hook_links.close_left(&diff.left);
            }
        });
        let link = links.get(&peer, &view);
        assert!(
            link.is_none(),
            "a link was opened to a member that had already left"
        );
        assert_eq!(
            links.len(),
            0,
            "a link to a departed member stayed in the map"
        );
    }

    #[tokio::test]
    async fn a_link_opened_before_the_member_leaves_is_closed_by_the_removal() {
        let me = member("me");
        let peer = member("peer");
        let view = Arc::new(TopologyView::new(me.clone()));
        view.apply(vec![peer.clone()]);
        let links = links(&me, &view);
        let first = links.get(&peer, &view);
        assert!(first.is_some());
        assert!(
            links
                .get(&peer, &view)
                .is_some_and(|l| first.as_ref().is_some_and(|f| Arc::ptr_eq(f, &l)))
        );
        if let Some(diff) = view.apply(Vec::new()) {
            links.close_left(&diff.left);
        }
        assert_eq!(links.len(), 0);
        assert!(links.get(&peer, &view).is_none());
    }
}
