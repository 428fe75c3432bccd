//! A `ResponseBatch` from a callee, turned into call outcomes (`grain::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| grain::fuzzing::response_batch(data));
