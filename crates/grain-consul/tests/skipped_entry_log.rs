//! What the provider logs about health entries it skips. Alone in its test binary:
//! it installs a thread-local log subscriber, and a callsite first hit on another
//! thread without one would cache "not interested" and lose the lines.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use grain::membership::MembershipProvider;
use support::{mixed_health, provider, stand_in};
use tracing_subscriber::fmt::MakeWriter;

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Logs {
    type Writer = Logs;

    fn make_writer(&self) -> Logs {
        self.clone()
    }
}

// Single-threaded, so everything the provider logs goes to this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_skipped_entry_is_logged_once_with_its_id_and_problem_while_it_lasts() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let agent = stand_in(mixed_health).await;
    let p = provider(&agent);
    for _ in 0..3 {
        p.members(None, Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("members: {e}"));
    }
    let text = logs.text();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
    // m3, m4, the string entry and m5: one line each, after three snapshots.
    assert_eq!(lines.len(), 4, "{text}");
    for (id, problem) in [
        ("m3", "Meta is null"),
        ("m4", r#"Tags "x""#),
        ("(no ID)", "Service is absent"),
        ("m5", "Port 0"),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("id={id} ")) && l.contains(problem)),
            "no warning for {id} ({problem}): {text}"
        );
    }
}
