//! A `RequestBatch` from a caller, served by a running member (`grain::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Err(e) = grain::fuzzing::init() {
            panic!("{e}");
        }
    },
    |data: &[u8]| grain::fuzzing::request_batch(data)
);
