//! The two grains of the original sample.

use grain::{GrainContext, GrainError};

use crate::proto::{
    BuzzRequest, BuzzResponse, BuzzService, FizzRequest, FizzResponse, FizzService,
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
