//! Export trouble, for a human: what a failure means ("403: the license key was
//! rejected"), logged at most once per kind of failure per minute, with the recovery
//! logged once too. Shared by the three signals' exporters; never shows a header value.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_sdk::error::OTelSdkResult;

/// How often the same kind of failure is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What an export failure of `signal` (`metrics`, `traces`, `logs`) means, for a human:
/// the kind (for rate limiting) and the explanation.
pub(crate) fn explain(error: &str, signal: &str, new_relic: bool) -> (&'static str, String) {
    let status = error
        .rsplit("status code: ")
        .next()
        .filter(|_| error.contains("status code: "))
        .and_then(|s| s.trim().get(..3))
        .and_then(|s| s.parse::<u16>().ok());
    let key = if new_relic {
        "the license key"
    } else {
        "the api key or token"
    };
    match status {
        Some(401) => ("401", "401: the backend wants credentials; none were accepted (set NEW_RELIC_LICENSE_KEY or an api-key header)".to_string()),
        Some(403) => ("403", format!("403: {key} was rejected")),
        Some(404) => ("404", format!("404: nothing answers at this path; the {signal} URL usually ends in /v1/{signal}")),
        Some(413) => ("413", "413: the payload is too large for the backend".into()),
        Some(429) => ("429", "429: the backend is rate-limiting us; retried after its Retry-After, then dropped".into()),
        Some(s) if (500..600).contains(&s) => ("5xx", format!("{s}: the backend failed; retried, then dropped")),
        Some(s) => ("other", format!("{s}: the backend refused the export")),
        None if error.contains("network error") => (
            "network",
            "cannot reach the endpoint (connection refused, DNS or TLS failure); retried, then dropped".into(),
        ),
        None if error.to_ascii_lowercase().contains("timed out") || error.to_ascii_lowercase().contains("timeout") => {
            ("timeout", "the export timed out".into())
        }
        None => ("other", "the export failed".into()),
    }
}

#[derive(Default)]
struct LogState {
    last_logged: HashMap<&'static str, Instant>,
    failing: bool,
}

impl LogState {
    /// Whether `kind` may be logged now (and if so, notes that it was).
    fn due(&mut self, kind: &'static str) -> bool {
        let now = Instant::now();
        let due = self
            .last_logged
            .get(kind)
            .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
        if due {
            self.last_logged.insert(kind, now);
        }
        due
    }
}

/// The export outcomes of one signal's exporter, logged as they change.
pub(crate) struct FailureLog {
    signal: &'static str,
    endpoint: String,
    new_relic: bool,
    state: Mutex<LogState>,
}

impl std::fmt::Debug for FailureLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLog")
            .field("signal", &self.signal)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl FailureLog {
    /// For `signal` exported to `endpoint` (already redacted).
    pub(crate) fn new(signal: &'static str, endpoint: String, new_relic: bool) -> Self {
        FailureLog {
            signal,
            endpoint,
            new_relic,
            state: Mutex::new(LogState::default()),
        }
    }

    /// Notes the outcome of one export, logging a failure (or a recovery) when due.
    pub(crate) fn record(&self, result: &OTelSdkResult) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        match result {
            Ok(()) => {
                // Rate-limited like the failures, so a flapping endpoint stays quiet.
                if state.failing {
                    state.failing = false;
                    if state.due("recovered") {
                        tracing::info!(
                            endpoint = %self.endpoint,
                            "{} export works again",
                            self.signal
                        );
                    }
                }
            }
            Err(e) => {
                state.failing = true;
                let (kind, meaning) = explain(&e.to_string(), self.signal, self.new_relic);
                if state.due(kind) {
                    tracing::warn!(
                        endpoint = %self.endpoint,
                        "{signal} export failed: {meaning}; these {signal} are dropped and the \
                         cluster carries on (logged at most once a minute)",
                        signal = self.signal,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_explained_by_status() {
        let table: &[(&str, bool, &str, &str)] = &[
            (
                "HTTP export failed with status code: 403",
                true,
                "403",
                "the license key was rejected",
            ),
            (
                "HTTP export failed with status code: 403",
                false,
                "403",
                "the api key or token was rejected",
            ),
            (
                "HTTP export failed with status code: 401",
                true,
                "401",
                "credentials",
            ),
            (
                "HTTP export failed with status code: 404",
                true,
                "404",
                "/v1/metrics",
            ),
            (
                "HTTP export failed with status code: 413",
                true,
                "413",
                "too large",
            ),
            (
                "HTTP export failed with status code: 429",
                true,
                "429",
                "rate-limiting",
            ),
            (
                "HTTP export failed with status code: 503",
                true,
                "5xx",
                "503",
            ),
            (
                "HTTP export failed: network error",
                true,
                "network",
                "cannot reach",
            ),
        ];
        for (error, nr, kind, says) in table {
            let (k, meaning) = explain(error, "metrics", *nr);
            assert_eq!(k, *kind, "{error}");
            assert!(meaning.contains(says), "{error}: {meaning}");
        }
    }

    #[test]
    fn a_404_names_the_path_of_its_signal() {
        for signal in ["traces", "logs"] {
            let (_, meaning) = explain("HTTP export failed with status code: 404", signal, false);
            assert!(meaning.contains(&format!("/v1/{signal}")), "{meaning}");
        }
    }

    #[test]
    fn the_same_kind_is_due_once_a_minute_and_other_kinds_independently() {
        let mut state = LogState::default();
        assert!(state.due("403"));
        assert!(!state.due("403"));
        assert!(state.due("network"));
    }
}
