//! The handshake metadata of `Remote/Open`, checked by both ends (`grain::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        if let Err(e) = grain::fuzzing::init() {
            panic!("{e}");
        }
    },
    |data: &[u8]| grain::fuzzing::handshake(data)
);
