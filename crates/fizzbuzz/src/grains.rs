//! The two grains of the original sample, and the diagnostic probe (`--probe`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use grain::{GrainContext, GrainError};

use crate::proto::{
    BuzzRequest, BuzzResponse, BuzzService, FizzRequest, FizzResponse, FizzService, ProbeService,
    WhereRequest, WhereResponse,
};

/// `SayFizz`: `"Fizz"` when the number is a multiple of 3, `""` otherwise.
#[derive(Debug, Default)]
pub struct FizzGrain;

impl FizzService for FizzGrain {
    async fn say_fizz(
        &mut self,
        _ctx: &GrainContext,
        request: FizzRequest,
    ) -> Result<FizzResponse, GrainError> {
        tracing::debug!(number = request.number, "SayFizz");
        let message = if request.number % 3 == 0 { "Fizz" } else { "" };
        Ok(FizzResponse {
            number: request.number,
            message: message.into(),
        })
    }
}

/// `SayBuzz`: the incoming message, with `"Buzz"` appended when the number is a
/// multiple of 5.
#[derive(Debug, Default)]
pub struct BuzzGrain;

impl BuzzService for BuzzGrain {
    async fn say_buzz(
        &mut self,
        _ctx: &GrainContext,
        request: BuzzRequest,
    ) -> Result<BuzzResponse, GrainError> {
        tracing::debug!(number = request.number, "SayBuzz");
        let mut message = request.message;
        if request.number % 5 == 0 {
            message.push_str("Buzz");
        }
        Ok(BuzzResponse {
            number: request.number,
            message,
        })
    }
}

/// Activations of [`ProbeGrain`] this process has started: part of each one's id.
static PROBE_ACTIVATIONS: AtomicU64 = AtomicU64::new(0);

/// `Where`: which member and which activation answer for an identity, and how many
/// calls that activation has answered. FizzBuzz grains keep no state, so their answers
/// cannot show two activations of one identity answering (or a stale one coming back);
/// this grain's can. Diagnostic: hosted only with `--probe`.
#[derive(Debug, Default)]
pub struct ProbeGrain {
    /// `<member>/<n>/<start, µs since the epoch>`: unique per activation (`n` counts
    /// this process's activations, the start time tells a restarted process apart).
    activation_id: String,
    /// Calls answered by this activation.
    count: u64,
}

impl ProbeService for ProbeGrain {
    async fn activated(&mut self, ctx: &GrainContext) -> Result<(), GrainError> {
        let n = PROBE_ACTIVATIONS.fetch_add(1, Ordering::Relaxed) + 1;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        self.activation_id = format!("{}/{n}/{started}", ctx.member());
        self.count = 0;
        Ok(())
    }

    async fn r#where(
        &mut self,
        ctx: &GrainContext,
        _request: WhereRequest,
    ) -> Result<WhereResponse, GrainError> {
        self.count += 1;
        Ok(WhereResponse {
            member_id: ctx.member().to_string(),
            activation_id: self.activation_id.clone(),
            count: self.count,
        })
    }
}
