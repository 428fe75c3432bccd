//! How a node process learns it should stop: SIGINT (Ctrl-C), SIGTERM, or — for the
//! children of `fizzbuzz up` — its parent going away. Shared by the mains (`cli`) and
//! the launcher, which sets the parent's pid on every child.

/// `FIZZBUZZ_PARENT_PID` (set by `fizzbuzz up` for its children): stop when the parent
/// with this process id is gone (this process was re-parented), however it died.
pub const ENV_PARENT_PID: &str = "FIZZBUZZ_PARENT_PID";

/// Resolves when the parent named by `FIZZBUZZ_PARENT_PID` is gone; never without it.
async fn parent_gone() {
    let expected = std::env::var(ENV_PARENT_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    let Some(expected) = expected else {
        return std::future::pending().await;
    };
    loop {
        if nix::unistd::getppid().as_raw() != expected {
            tracing::warn!("the parent process {expected} went away; stopping");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM — and, for children of `fizzbuzz up`, when
/// the parent goes away.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let parent_gone = parent_gone();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = parent_gone => {}
            }
        }
        Err(_) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = parent_gone => {}
            }
        }
    }
}
