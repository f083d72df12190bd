//! The HPACK decoder (`tracer-agent/src/protocol/http2/hpack.rs`) on arbitrary header blocks,
//! several per connection direction, with blocks lost and the connection picked up again
//! mid-way. The input is a list of operations, each an opcode byte (`op % 4`):
//! - 0 and 3: a block (a 2-byte little-endian length, then that many bytes, fewer at the end of
//!   the input) that both decoders see;
//! - 1: a block that only the reference decoder sees: lost for the other, which is told so
//!   ([`Decoder::desync`]);
//! - 2: the other decoder starts again as one that picks the connection up here
//!   ([`Decoder::midway`]).
//!
//! The reference decoder follows the stream from its start and sees every block; the other is
//! the one under test. Checked: no panic; both within [`Decoder::MAX_FOOTPRINT`] after every
//! operation; no string over [`MAX_STRING`]; a decoder that says it is in sync gives every name
//! and value; and wherever the reference was in sync and both decoded a block, the other gave
//! the reference's names and values or `None`, never another one.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracer_fuzz::protocol::http2::hpack::{Decoder, Field, MAX_STRING};

/// Decodes `block`: the fields, or `None` on an error. Checks what holds for any decoder.
fn decode(d: &mut Decoder, block: &Bytes) -> Option<Vec<Field>> {
    let synced = d.is_synced();
    let mut fields = Vec::new();
    let result = d.decode(block, |f| fields.push(f));
    for f in &fields {
        for s in [&f.name, &f.value].into_iter().flatten() {
            assert!(s.len() <= MAX_STRING, "a string of {} bytes", s.len());
        }
        if synced {
            assert!(
                f.name.is_some() && f.value.is_some(),
                "an unknown field from a decoder in sync: {f:?}"
            );
        }
    }
    assert!(
        d.footprint() <= Decoder::MAX_FOOTPRINT,
        "footprint {} over {}",
        d.footprint(),
        Decoder::MAX_FOOTPRINT
    );
    result.ok().map(|()| fields)
}

fuzz_target!(|input: &[u8]| {
    let mut reference = Decoder::new();
    let mut decoder = Decoder::new();
    let mut rest = input;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        if op % 4 == 2 {
            decoder = Decoder::midway();
            continue;
        }
        let len = match rest {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => 0,
        };
        let from = rest.len().min(2);
        let to = (from + len).min(rest.len());
        let block = Bytes::copy_from_slice(&rest[from..to]);
        rest = &rest[to..];

        let reference_synced = reference.is_synced();
        let want = decode(&mut reference, &block);
        if op % 4 == 1 {
            decoder.desync();
            assert!(
                decoder.footprint() <= Decoder::MAX_FOOTPRINT,
                "footprint after desync"
            );
            continue;
        }
        let got = decode(&mut decoder, &block);
        let (Some(want), Some(got)) = (want, got) else {
            continue;
        };
        assert_eq!(got.len(), want.len(), "the two decoders parsed differently");
        if !reference_synced {
            continue;
        }
        for (g, w) in got.iter().zip(&want) {
            if let Some(name) = &g.name {
                assert_eq!(Some(name), w.name.as_ref(), "a wrong name");
            }
            if let Some(value) = &g.value {
                assert_eq!(Some(value), w.value.as_ref(), "a wrong value");
            }
        }
    }
    let _ = (reference.take_stats(), decoder.take_stats());
});
