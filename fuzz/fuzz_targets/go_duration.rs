//! Go durations, as Consul and its clients write them (`grain_consul::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| grain_consul::fuzzing::go_duration(data));
