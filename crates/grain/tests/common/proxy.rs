//! A loopback TCP proxy in front of one member, for tests that break the network under
//! a link: it can cut every connection, cut new ones after a lifetime, "refuse" new
//! ones (accept and close at once), or die (its address then refuses connections, as
//! if the member's process were gone).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// The proxy. Dropping it kills it.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    forwarding: Arc<AtomicBool>,
    lifetime: Arc<Mutex<Option<Duration>>>,
    accepted: watch::Sender<usize>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept_loop: JoinHandle<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Proxy {
    /// Listens on a free loopback port; forwards nowhere until [`Proxy::forward_to`].
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let forwarding = Arc::new(AtomicBool::new(true));
        let lifetime: Arc<Mutex<Option<Duration>>> = Arc::default();
        let accepted = watch::Sender::new(0);
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept_loop = tokio::spawn({
            let (upstream, forwarding, lifetime, accepted, connections) = (
                upstream.clone(),
                forwarding.clone(),
                lifetime.clone(),
                accepted.clone(),
                connections.clone(),
            );
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let to = *lock(&upstream);
                    let forward = forwarding.load(Ordering::SeqCst);
                    accepted.send_modify(|n| *n += 1);
                    let (true, Some(to)) = (forward, to) else {
                        drop(inbound); // refused: accepted and closed at once
                        continue;
                    };
                    let lives = *lock(&lifetime);
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(to).await {
                            let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                            match lives {
                                Some(d) => drop(tokio::time::timeout(d, copy).await),
                                None => drop(copy.await),
                            }
                        }
                    });
                    lock(&connections).push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            upstream,
            forwarding,
            lifetime,
            accepted,
            connections,
            accept_loop,
        }
    }

    /// Forwards new connections to `to`.
    pub fn forward_to(&self, to: SocketAddr) {
        *lock(&self.upstream) = Some(to);
    }

    /// Drops every open connection (both sides see them close).
    pub fn cut(&self) {
        for c in lock(&self.connections).drain(..) {
            c.abort();
        }
    }

    /// New connections are cut after `lifetime` (`None`: they live on).
    pub fn cut_after(&self, lifetime: Option<Duration>) {
        *lock(&self.lifetime) = lifetime;
    }

    /// New connections are accepted and closed at once (`true`), or forwarded again.
    pub fn refuse(&self, refuse: bool) {
        self.forwarding.store(!refuse, Ordering::SeqCst);
    }

    /// Closes the listening socket and every connection: the address now refuses
    /// connections, as if the member's process had died.
    pub fn kill(&self) {
        self.accept_loop.abort();
        self.cut();
    }

    /// [`Proxy::kill`], returning once the listening socket is closed (its port can be
    /// bound again).
    pub async fn kill_and_wait(&mut self) {
        self.kill();
        // An aborted task's future, which owns the listener, is dropped before its
        // handle reports the cancellation.
        let _ = (&mut self.accept_loop).await;
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        *self.accepted.borrow()
    }

    /// Sees every new accepted connection.
    pub fn accepted_changes(&self) -> watch::Receiver<usize> {
        self.accepted.subscribe()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that accepts connections and never says a word: what a probe meets where a
/// process accepts but does not complete the handshake. Dropping it closes it.
pub struct Silent {
    accepted: watch::Sender<usize>,
    accept_loop: AbortHandle,
}

impl Silent {
    /// Listens on `addr`, holding every connection open without reading or writing.
    pub async fn listen(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot bind {addr}: {e}"));
        let accepted = watch::Sender::new(0);
        let accept_loop = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((inbound, _)) = listener.accept().await {
                    held.push(inbound);
                    accepted.send_modify(|n| *n += 1);
                }
            }
        })
        .abort_handle();
        Self {
            accepted,
            accept_loop,
        }
    }

    /// Sees every new accepted connection.
    pub fn accepted_changes(&self) -> watch::Receiver<usize> {
        self.accepted.subscribe()
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}
