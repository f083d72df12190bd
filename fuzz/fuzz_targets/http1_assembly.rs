//! The HTTP/1 assembly (connection table, streams, pairing) fed arbitrary sequences of data in
//! both directions, capture gaps, opens, closes and sweeps; the invariants are checked by
//! `tracer_fuzz::checker`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    tracer_fuzz::checker::run(input);
});
