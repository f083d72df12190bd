//! Property tests: header blocks from the test encoder ([`super::encoder`]) and from an
//! independent one (the `loona-hpack` crate) decode to what was encoded, with the same dynamic
//! table; a decoder started mid-way or that lost blocks never gives a wrong name or value;
//! arbitrary bytes never panic and stay within the footprint bound.

use bytes::Bytes;
use proptest::{collection::vec, prelude::*};

use super::{
    super::{Decoder, Field, HpackStats},
    encoder::{Indexing, Intent, Model, Repr, encode},
};

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b":path".to_vec()),
        Just(b":method".to_vec()),
        Just(b":authority".to_vec()),
        Just(b"content-type".to_vec()),
        Just(b"x-b3-traceid".to_vec()),
        Just(b"grpc-timeout".to_vec()),
        Just(b"x-custom".to_vec()),
        "[a-z-]{1,12}".prop_map(String::into_bytes),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"GET".to_vec()),
        Just(b"/".to_vec()),
        Just(b"application/grpc".to_vec()),
        Just(Vec::new()),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        vec(any::<u8>(), 0..400),
    ]
}

fn indexing() -> impl Strategy<Value = Indexing> {
    prop_oneof![
        3 => Just(Indexing::Incremental),
        1 => Just(Indexing::Without),
        1 => Just(Indexing::Never),
    ]
}

/// Table sizes a peer may announce; `beyond_cap` adds sizes over the decoder's cap.
fn size(beyond_cap: bool) -> BoxedStrategy<usize> {
    let within = prop_oneof![Just(0), Just(64), Just(256), Just(4096), 0..6000usize];
    if beyond_cap {
        prop_oneof![4 => within, 1 => Just(100_000), 1 => Just(u32::MAX as usize)].boxed()
    } else {
        within.boxed()
    }
}

fn intent(beyond_cap: bool) -> impl Strategy<Value = Intent> {
    prop_oneof![
        12 => (name(), value(), indexing(), any::<bool>(), any::<bool>()).prop_map(
            |(name, value, indexing, huffman, use_index)| Intent::Field {
                name,
                value,
                indexing,
                huffman,
                use_index,
            }
        ),
        1 => size(beyond_cap).prop_map(Intent::SizeUpdate),
    ]
}

fn blocks(beyond_cap: bool) -> impl Strategy<Value = Vec<Vec<Intent>>> {
    vec(vec(intent(beyond_cap), 0..14), 1..10)
}

/// What the decoder must produce for one field: its name and value, and whether it was a
/// literal (whose value is always known).
struct Expected {
    name: Vec<u8>,
    value: Vec<u8>,
    literal: bool,
}

fn encode_block(model: &mut Model, intents: &[Intent]) -> (Bytes, Vec<Expected>) {
    let mut reprs = Vec::new();
    let mut expected = Vec::new();
    for intent in intents {
        let (repr, field) = model.encode(intent);
        if let Some((name, value)) = field {
            expected.push(Expected {
                name,
                value,
                literal: matches!(repr, Repr::Literal { .. }),
            });
        }
        reprs.push(repr);
    }
    (encode(&reprs), expected)
}

fn decode(d: &mut Decoder, block: &Bytes) -> Result<Vec<Field>, TestCaseError> {
    let mut fields = Vec::new();
    d.decode(block, |f| fields.push(f))
        .map_err(|e| TestCaseError::fail(format!("decoding {block:x?}: {e}")))?;
    Ok(fields)
}

proptest! {
    #[test]
    fn encoded_blocks_decode_to_their_fields_and_table(blocks in blocks(false)) {
        let mut model = Model::new();
        let mut d = Decoder::new();
        for intents in &blocks {
            let (block, expected) = encode_block(&mut model, intents);
            let fields = decode(&mut d, &block)?;
            prop_assert_eq!(fields.len(), expected.len());
            for (f, e) in fields.iter().zip(&expected) {
                prop_assert_eq!(f.name.as_deref(), Some(&e.name[..]));
                prop_assert_eq!(f.value.as_deref(), Some(&e.value[..]));
            }
            let want: Vec<(Option<&[u8]>, &[u8])> = model
                .entries
                .iter()
                .map(|(n, v)| (Some(&n[..]), &v[..]))
                .collect();
            prop_assert_eq!(d.table.entries(), want);
            prop_assert_eq!(d.table.size(), model.size());
            prop_assert!(d.is_synced());
            prop_assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
        }
        prop_assert_eq!(d.take_stats(), HpackStats::default());
    }

    #[test]
    fn midway_and_desynced_decoders_are_never_wrong(
        blocks in blocks(true),
        start in 0usize..6,
        midway_at_start in any::<bool>(),
        lost in vec(any::<bool>(), 10),
    ) {
        let mut model = Model::new();
        let mut d = if start > 0 || midway_at_start { Decoder::midway() } else { Decoder::new() };
        for (i, intents) in blocks.iter().enumerate() {
            let (block, expected) = encode_block(&mut model, intents);
            if i < start {
                continue;
            }
            if i > start && lost[i] {
                d.desync();
                continue;
            }
            let synced = d.is_synced();
            let fields = decode(&mut d, &block)?;
            prop_assert_eq!(fields.len(), expected.len());
            for (f, e) in fields.iter().zip(&expected) {
                if let Some(name) = &f.name {
                    prop_assert_eq!(&name[..], &e.name[..], "wrong name");
                }
                if let Some(value) = &f.value {
                    prop_assert_eq!(&value[..], &e.value[..], "wrong value");
                }
                prop_assert!(!e.literal || f.value.is_some(), "literal value unknown");
                prop_assert!(!synced || (f.name.is_some() && f.value.is_some()),
                    "unknown field in a synced decoder");
            }
            prop_assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
        }
    }

    #[test]
    fn blocks_of_an_independent_encoder_decode_to_their_fields(
        lists in vec(vec((name(), value()), 0..14), 1..10),
        start in 1usize..6,
    ) {
        let mut encoder = loona_hpack::Encoder::new();
        let mut d = Decoder::new();
        let mut late = Decoder::midway();
        for (i, list) in lists.iter().enumerate() {
            let block = Bytes::from(encoder.encode(list.iter().map(|(n, v)| (&n[..], &v[..]))));
            let fields = decode(&mut d, &block)?;
            prop_assert_eq!(fields.len(), list.len());
            for (f, (name, value)) in fields.iter().zip(list) {
                prop_assert_eq!(f.name.as_deref(), Some(&name[..]));
                prop_assert_eq!(f.value.as_deref(), Some(&value[..]));
            }
            prop_assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
            if i < start {
                continue;
            }
            // The same blocks seen from the `start`th on.
            for (f, (name, value)) in decode(&mut late, &block)?.iter().zip(list) {
                prop_assert!(f.name.as_deref().is_none_or(|n| n == &name[..]), "wrong name");
                prop_assert!(f.value.as_deref().is_none_or(|v| v == &value[..]), "wrong value");
            }
        }
        prop_assert_eq!(d.take_stats(), HpackStats::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        blocks in vec((vec(any::<u8>(), 0..80), 0u8..8), 1..12),
    ) {
        let mut d = Decoder::new();
        for (block, action) in blocks {
            match action {
                0 => d = Decoder::midway(),
                1 => d.desync(),
                _ => {}
            }
            let mut count = 0usize;
            let _ = d.decode(&Bytes::from(block), |_| count += 1);
            prop_assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
        }
    }
}
