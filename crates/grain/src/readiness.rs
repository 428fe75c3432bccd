//! Whether this member is ready to take calls, as a health check asks: listed by its
//! membership provider (so others can find it), not fenced, and not draining. One
//! watch channel, moved by the membership driver and by shutdown.

use parking_lot::Mutex;
use tokio::sync::watch;

/// What readiness is computed from.
#[derive(Default)]
struct Flags {
    listed: bool,
    fenced: bool,
    draining: bool,
}

impl Flags {
    fn ready(&self) -> bool {
        self.listed && !self.fenced && !self.draining
    }
}

/// This member's readiness and its watchers.
pub(crate) struct Readiness {
    flags: Mutex<Flags>,
    ready: watch::Sender<bool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            flags: Mutex::new(Flags::default()),
            ready: watch::channel(false).0,
        }
    }
}

impl Readiness {
    fn update(&self, change: impl FnOnce(&mut Flags)) {
        let mut flags = self.flags.lock();
        change(&mut flags);
        let ready = flags.ready();
        self.ready
            .send_if_modified(|r| std::mem::replace(r, ready) != ready);
    }

    /// The provider lists this member (as passing), or no longer does (fenced).
    pub(crate) fn set_listed(&self, listed: bool) {
        self.update(|f| {
            f.listed |= listed;
            f.fenced = !listed;
        });
    }

    /// This member is leaving: never ready again.
    pub(crate) fn drain(&self) {
        self.update(|f| f.draining = true);
    }

    /// A receiver that sees every change (its current value included).
    pub(crate) fn subscribe(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_listed_until_fenced_or_draining() {
        let r = Readiness::default();
        let rx = r.subscribe();
        assert!(!*rx.borrow(), "not ready before the provider lists it");
        r.set_listed(true);
        assert!(*rx.borrow());
        r.set_listed(false);
        assert!(!*rx.borrow(), "fenced");
        r.set_listed(true);
        assert!(*rx.borrow(), "listed again");
        r.drain();
        assert!(!*rx.borrow(), "draining");
        r.set_listed(true);
        assert!(!*rx.borrow(), "a draining member stays not ready");
    }
}
