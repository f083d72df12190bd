//! The HTTP/2 assembly (connection table, frame records, header blocks, HPACK, streams, h2c
//! switches) fed arbitrary record sequences in both directions, losses (sequence gaps), opens,
//! closes and sweeps; the invariants are checked by `tracer_fuzz::checker`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer_fuzz::checker::{Protocol, run_with};

fuzz_target!(|input: &[u8]| {
    run_with(input, Protocol::Http2);
});
