//! Decoding from mid-way, after a lost block and after an error: `None` for what the decoder
//! cannot know, the right fields for the rest.

use super::{
    super::{DecodeError, Decoder, HpackStats},
    COOKIE, CUSTOM, DATE_22, NO_CACHE, decode,
    encoder::{Indexing, Repr, encode},
    error, example, examples, fill, pairs, table, text,
};

/// A decoder started on the second request of C.3/C.4 knows the literal fields and the
/// entries they insert, and nothing older.
fn check_midway_requests(section: &str) {
    let blocks = examples(section);
    let mut d = Decoder::midway();
    assert!(!d.is_synced());
    let second = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        ("?", "?"),
        NO_CACHE,
    ];
    assert_eq!(text(&decode(&mut d, &blocks[1])), pairs(&second));
    assert_eq!(table(&d), (pairs(&[NO_CACHE]), 53));
    // 0xbf is index 63: the :authority entry of the first request, never seen.
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        ("?", "?"),
        CUSTOM,
    ];
    assert_eq!(text(&decode(&mut d, &blocks[2])), pairs(&third));
    assert_eq!(table(&d), (pairs(&[CUSTOM, NO_CACHE]), 107));
    let stats = d.take_stats();
    assert_eq!(
        stats,
        HpackStats {
            unknown_refs: 2,
            ..HpackStats::default()
        }
    );
    // A fourth request that refers to the entries it saw inserted: known.
    let fourth = encode(&[Repr::Indexed(62), Repr::Indexed(63), Repr::Indexed(64)]);
    assert_eq!(
        text(&decode(&mut d, &fourth)),
        pairs(&[CUSTOM, NO_CACHE, ("?", "?")])
    );
}

#[test]
fn midway_requests_without_huffman() {
    check_midway_requests("C.3");
}

#[test]
fn midway_requests_with_huffman() {
    check_midway_requests("C.4");
}

#[test]
fn midway_responses_know_the_literal_values_of_unknown_names() {
    // C.6.3 seen alone: `61 96 ...` is a literal date whose name is index 33 (static), `c0` is
    // index 64 (unknown), `5a` a literal with the static name content-encoding.
    let mut d = Decoder::midway();
    let f = decode(&mut d, &example("C.6.3"));
    assert_eq!(
        text(&f),
        pairs(&[
            (":status", "200"),
            ("?", "?"),
            DATE_22,
            ("?", "?"),
            ("content-encoding", "gzip"),
            COOKIE,
        ])
    );
}

#[test]
fn literal_with_an_unknown_name_inserts_an_entry_of_unknown_name() {
    let mut d = Decoder::midway();
    let block = encode(&[
        Repr::Literal {
            indexing: Indexing::Incremental,
            name: Ok(62),
            value: b"v1".to_vec(),
            huffman: false,
        },
        Repr::Literal {
            indexing: Indexing::Incremental,
            name: Err(b"x-known".to_vec()),
            value: b"v2".to_vec(),
            huffman: true,
        },
    ]);
    assert_eq!(
        text(&decode(&mut d, &block)),
        pairs(&[("?", "v1"), ("x-known", "v2")])
    );
    // 62 is x-known, 63 the entry of unknown name; 64 is older than anything seen.
    let refs = encode(&[Repr::Indexed(63), Repr::Indexed(62), Repr::Indexed(64)]);
    assert_eq!(
        text(&decode(&mut d, &refs)),
        pairs(&[("?", "v1"), ("x-known", "v2"), ("?", "?")])
    );
    assert_eq!(
        table(&d),
        (pairs(&[("x-known", "v2"), ("?", "v1")]), 32 + 9 + 32 + 2)
    );
}

#[test]
fn an_entry_of_unknown_name_keeps_the_decoder_out_of_sync_until_evicted() {
    let mut d = Decoder::midway();
    let unnamed = encode(&[Repr::Literal {
        indexing: Indexing::Incremental,
        name: Ok(62),
        value: vec![b'v'; 4040],
        huffman: false,
    }]);
    decode(&mut d, &unnamed);
    // 4072 bytes of 4096: no room for anything older, but one entry's name is unknown.
    decode(&mut d, &encode(&[Repr::SizeUpdate(4096)]));
    assert!(!d.is_synced());
    let (e, _) = error(&mut d, &encode(&[Repr::Indexed(63)]));
    assert!(matches!(e, DecodeError::IndexOutOfRange { index: 63, .. }));
    decode(&mut d, &unnamed);
    decode(&mut d, &encode(&[Repr::SizeUpdate(4096)]));
    assert!(!d.is_synced());
    fill(&mut d, 1, 100);
    assert!(d.is_synced());
    assert_eq!(d.take_stats().resyncs, 1);
}

#[test]
fn desync_forgets_what_came_before_and_knows_what_comes_after() {
    let mut d = Decoder::new();
    decode(&mut d, &example("C.3.1"));
    // The second request is lost.
    d.desync();
    assert!(!d.is_synced());
    assert_eq!(table(&d), (vec![], 0));
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        ("?", "?"),
        CUSTOM,
    ];
    assert_eq!(text(&decode(&mut d, &example("C.3.3"))), pairs(&third));
    assert_eq!(
        text(&decode(
            &mut d,
            &encode(&[Repr::Indexed(62), Repr::Indexed(63)])
        )),
        pairs(&[CUSTOM, ("?", "?")])
    );
    let stats = d.take_stats();
    assert_eq!((stats.desyncs, stats.unknown_refs), (1, 2));
}

#[test]
fn an_error_desyncs_and_keeps_the_fields_before_it() {
    let mut d = Decoder::new();
    decode(&mut d, &example("C.3.1"));
    // A literal that inserts, then a string cut short.
    let mut block = encode(&[Repr::Literal {
        indexing: Indexing::Incremental,
        name: Err(b"x-a".to_vec()),
        value: b"1".to_vec(),
        huffman: false,
    }])
    .to_vec();
    block.extend_from_slice(&[0x40, 0x03, b'x', b'-']);
    let (e, fields) = error(&mut d, &block);
    assert_eq!(e, DecodeError::Truncated("a string"));
    assert_eq!(text(&fields), pairs(&[("x-a", "1")]));
    assert!(!d.is_synced());
    // The block's insertions before the error are at unknown positions now, like the older ones.
    assert_eq!(
        text(&decode(&mut d, &encode(&[Repr::Indexed(62)]))),
        pairs(&[("?", "?")])
    );
    let stats = d.take_stats();
    assert_eq!((stats.errors, stats.desyncs, stats.unknown_refs), (1, 1, 1));
}
