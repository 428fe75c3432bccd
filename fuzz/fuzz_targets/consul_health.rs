//! Consul's health answer, decoded into members (`grain_consul::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| grain_consul::fuzzing::health_reply(data));
