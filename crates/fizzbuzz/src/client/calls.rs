//! One number through the cluster: `SayFizz(n)`, then `SayBuzz(n, answer)`, timed.

use std::sync::Arc;
use std::time::Duration;

use grain::{CallError, CallOptions, Cluster};
use tokio::time::Instant;

use crate::proto::{BuzzRequest, BuzzServiceClient, FizzRequest, FizzServiceClient};

/// What became of one number.
pub(super) struct Outcome {
    /// The number.
    pub(super) number: i64,
    /// How long `SayFizz` took, when it answered.
    pub(super) fizz: Option<Duration>,
    /// How long `SayBuzz` took, when it answered.
    pub(super) buzz: Option<Duration>,
    /// The final message (empty: print the number), or why it failed.
    pub(super) result: Result<String, String>,
}

/// Calls `SayFizz(number)` then `SayBuzz(number, answer)` on `identity`.
pub(super) async fn one_number(
    cluster: Cluster,
    identity: Arc<str>,
    number: i64,
    options: Arc<CallOptions>,
) -> Outcome {
    let started = Instant::now();
    let fizz = FizzServiceClient::new(&cluster, identity.clone())
        .say_fizz_with(
            FizzRequest {
                number,
                message: String::new(),
            },
            &options,
        )
        .await;
    let fizz_took = started.elapsed();
    let fizz = match fizz {
        Ok(f) => f,
        Err(e) => return failed(number, None, "SayFizz", &identity, e),
    };
    let started = Instant::now();
    let buzz = BuzzServiceClient::new(&cluster, identity.clone())
        .say_buzz_with(
            BuzzRequest {
                number,
                message: fizz.message,
            },
            &options,
        )
        .await;
    let buzz_took = started.elapsed();
    match buzz {
        Ok(b) => Outcome {
            number,
            fizz: Some(fizz_took),
            buzz: Some(buzz_took),
            result: Ok(b.message),
        },
        Err(e) => failed(number, Some(fizz_took), "SayBuzz", &identity, e),
    }
}

fn failed(
    number: i64,
    fizz: Option<Duration>,
    method: &str,
    identity: &str,
    e: CallError,
) -> Outcome {
    Outcome {
        number,
        fizz,
        buzz: None,
        result: Err(format!(
            "number {number}: {method} on {identity} failed: {e}"
        )),
    }
}
