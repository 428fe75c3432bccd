//! The W3C trace-context headers of a grain call (`grain_telemetry::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| grain_telemetry::fuzzing::trace_context(data));
