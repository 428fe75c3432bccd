//! HTTP requests to the dev agent: paths, query strings, headers, JSON bodies
//! (`grain_consul::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| grain_consul::fuzzing::agent_requests(data));
