//! Decoder tests: the RFC 7541 examples (Appendix C), decoding from mid-way and after a lost
//! block, size updates, eviction, the cap, malformed blocks; property tests in [`props`].

mod encoder;
mod props;

use bytes::Bytes;

use self::encoder::{Indexing, Repr, encode, integer};
use super::{
    CAP, Cursor, DecodeError, Decoder, Field, HpackStats, HuffmanError, MAX_STRING, huffman,
    table::{ENTRY_MEMORY, ENTRY_OVERHEAD},
};

fn hex(s: &str) -> Bytes {
    let s: String = s.split_whitespace().collect();
    assert!(s.len().is_multiple_of(2), "odd hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect::<Vec<_>>()
        .into()
}

/// The examples of RFC 7541 Appendix C: the header block of each numbered section.
const EXAMPLES: &str = include_str!("rfc7541_examples.txt");

/// The block of example `section` (e.g. `C.3.1`).
fn example(section: &str) -> Bytes {
    EXAMPLES
        .lines()
        .find_map(|l| l.strip_prefix(section)?.strip_prefix(' '))
        .map_or_else(|| panic!("no example {section}"), hex)
}

/// The three blocks of `section` (e.g. `C.3`).
fn examples(section: &str) -> [Bytes; 3] {
    [1, 2, 3].map(|n| example(&format!("{section}.{n}")))
}

fn decode(d: &mut Decoder, block: &Bytes) -> Vec<Field> {
    let mut fields = Vec::new();
    d.decode(block, |f| fields.push(f)).unwrap_or_else(|e| {
        panic!(
            "decoding {:x?}.. ({} bytes): {e}",
            &block[..block.len().min(64)],
            block.len()
        )
    });
    fields
}

/// The fields, as `(name, value)` text with `?` for what is unknown.
fn text(fields: &[Field]) -> Vec<(String, String)> {
    let s = |b: &Option<Bytes>| {
        b.as_ref().map_or_else(
            || "?".to_owned(),
            |b| String::from_utf8_lossy(b).into_owned(),
        )
    };
    fields.iter().map(|f| (s(&f.name), s(&f.value))).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// The dynamic table, newest first, with `?` for unknown names; and its size.
fn table(d: &Decoder) -> (Vec<(String, String)>, usize) {
    let entries = d
        .table
        .entries()
        .into_iter()
        .map(|(n, v)| {
            (
                n.map_or_else(
                    || "?".to_owned(),
                    |n| String::from_utf8_lossy(n).into_owned(),
                ),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    (entries, d.table.size())
}

fn error(d: &mut Decoder, block: &[u8]) -> (DecodeError, Vec<Field>) {
    let mut fields = Vec::new();
    let e = d
        .decode(&Bytes::copy_from_slice(block), |f| fields.push(f))
        .expect_err("a malformed block was accepted");
    (e, fields)
}

// --- Primitives -----------------------------------------------------------------------------

#[test]
fn huffman_code_is_canonical_and_complete() {
    let c = &huffman::CANONICAL;
    let mut kraft = 0u64;
    let mut next_first = 0u32;
    for len in 1..=30 {
        let count = c.limit[len] - c.first[len];
        if count > 0 {
            assert_eq!(c.first[len], next_first, "first code of length {len}");
        }
        for k in 0..count {
            let sym = c.symbols[usize::from(c.offset[len]) + k as usize];
            assert_eq!(
                huffman::CODES[usize::from(sym)],
                (c.first[len] + k, u8::try_from(len).expect("small")),
                "symbol {sym}"
            );
        }
        kraft += u64::from(count) << (30 - len);
        next_first = (next_first + count) << 1;
    }
    assert_eq!(kraft, 1 << 30, "the code is not complete");
}

/// The Huffman code of the bytes 0 to 255, as the Python `hpack` package encodes them (an
/// implementation independent of this one).
const ALL_BYTES_HUFFMAN: &str = "ffc7fffd8fffffe2fffffe3fffffe4fffffe5fffffe6fffffe7fffffe8ffffeafffffff3fffffa7fffffabffffffdfffffebfffffecfffffedfffffeefffffefffffff0ffffff1ffffff2fffffffbfffffcffffffd3fffffd7fffffdbfffffdffffffe3fffffe7fffffebfffffed4fe3f9ffaffcabf1febfafefe7fdfd2cbb00089969b71d79fb9f7fff20ffbff3ff50ddbd7f061c58f265cd9f469d5af66dddbf871e5f9cff7ff7fffc3ff9ffe45fff4719242cb34e6e9d68a6a3d7dac426defe3cfaf7fffbfe7ffbffdffffffcfffe6ffff4bfff9ffffa3fffd3ffff53fffd5ffffb3fffeb7fffdaffffb7ffff73fffeeffffdeffffebffffbfffffd9ffffdbfffebffffe0ffffeeffffc3ffff8bffff1ffffe4fffee7fffb1ffff97fffd9ffffcdffff9fffffbffffdafffeeffff4ffffb7fffee7fffe8ffffd3fffdeffffd5fffeeffffbdffffe1fffdfffff7fffff5ffffecffff07fff87fffe0ffff17fffedffff87ffff77fffeffffeaffff8bfffe3ffff93ffff87fffcbffff37ffff1fffff83ffffe1fffebfffe3ffff3fffff2ffffa3ffffd9fffff17ffffc7fffff27ffffdefffffbffffff2fffff8fffffb7fff97fff8fffffe6fffffc1fffff87ffffe7fffffc5ffffe5fffe4ffff2fffffd1fffff4ffffffefffffe3fffffc9fffff97fffb3ffffcffffb7fffcdffff4ffff9ffffd1ffffcffffeaffffafffffddffffeffffff4fffff5fffffabffffa7ffffd7fffff9bffffecfffffb7fffff3fffffe8fffffd3fffffabfffff5fffffff7ffffecfffffdbfffffbbfffff7ffffff0fffffbbf";

#[test]
fn huffman_matches_an_independent_encoder_on_every_byte() {
    let all: Vec<u8> = (0..=255).collect();
    let mut coded = Vec::new();
    huffman::encode(&all, &mut coded);
    assert_eq!(&coded[..], &hex(ALL_BYTES_HUFFMAN)[..], "encoding");
    let mut decoded = Vec::new();
    huffman::decode(&hex(ALL_BYTES_HUFFMAN), |b| decoded.push(b)).expect("valid code");
    assert_eq!(decoded, all, "decoding");
}

#[test]
fn huffman_refuses_eos_and_bad_padding() {
    let mut out = Vec::new();
    // EOS: 30 ones, then two bits of padding.
    assert_eq!(
        huffman::decode(&[0xff, 0xff, 0xff, 0xff], |b| out.push(b)),
        Err(HuffmanError::Eos)
    );
    // 'a' (00011), then 11 bits of ones as padding: more than 7.
    assert_eq!(
        huffman::decode(&[0x1f, 0xff], |b| out.push(b)),
        Err(HuffmanError::PaddingTooLong)
    );
    // 'a' then padding 000.
    assert_eq!(
        huffman::decode(&[0x18], |b| out.push(b)),
        Err(HuffmanError::PaddingNotOnes)
    );
    // 'a' then padding 111: valid.
    out.clear();
    assert_eq!(huffman::decode(&[0x1f], |b| out.push(b)), Ok(()));
    assert_eq!(out, b"a");
    // A whole byte of ones is more than 7 bits of padding.
    out.clear();
    assert_eq!(
        huffman::decode(&[0xff], |b| out.push(b)),
        Err(HuffmanError::PaddingTooLong)
    );
    // Nothing at all is the empty string.
    out.clear();
    assert_eq!(huffman::decode(&[], |b| out.push(b)), Ok(()));
    assert!(out.is_empty());
}

fn read_integer(bytes: &[u8], prefix: u8) -> Result<usize, DecodeError> {
    let block = Bytes::copy_from_slice(bytes);
    let mut c = Cursor {
        block: &block,
        pos: 0,
    };
    let v = c.integer(prefix)?;
    assert_eq!(c.pos, bytes.len(), "bytes left after the integer");
    Ok(v)
}

#[test]
fn integers_of_rfc_c1_and_the_limits() {
    // C.1.1: 10 in a 5-bit prefix (the other bits of the byte ignored).
    assert_eq!(read_integer(&[0b1110_1010], 5), Ok(10));
    // C.1.2: 1337 in a 5-bit prefix.
    assert_eq!(read_integer(&[0x1f, 0x9a, 0x0a], 5), Ok(1337));
    // The prefix's maximum itself needs a continuation byte of 0.
    assert_eq!(read_integer(&[0x7f, 0x00], 7), Ok(127));
    let mut max = Vec::new();
    integer(&mut max, 7, 0, u32::MAX as usize);
    assert_eq!(read_integer(&max, 7), Ok(u32::MAX as usize));
    let mut over = Vec::new();
    integer(&mut over, 7, 0, u32::MAX as usize + 1);
    assert_eq!(read_integer(&over, 7), Err(DecodeError::IntegerOverflow));
    // Zero-valued continuation bytes cannot go on for ever.
    assert_eq!(
        read_integer(&[0x7f, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 7),
        Err(DecodeError::IntegerOverflow)
    );
    assert_eq!(
        read_integer(&[0x7f, 0x80, 0x80], 7),
        Err(DecodeError::Truncated("an integer"))
    );
    assert_eq!(
        read_integer(&[], 7),
        Err(DecodeError::Truncated("an integer"))
    );
}

// --- RFC 7541 Appendix C --------------------------------------------------------------------

#[test]
fn rfc_c2_single_representations() {
    // C.2.1: literal with indexing.
    let mut d = Decoder::new();
    let f = decode(&mut d, &example("C.2.1"));
    assert_eq!(text(&f), pairs(&[("custom-key", "custom-header")]));
    assert_eq!(table(&d), (pairs(&[("custom-key", "custom-header")]), 55));
    // C.2.2: literal without indexing.
    let mut d = Decoder::new();
    let f = decode(&mut d, &example("C.2.2"));
    assert_eq!(text(&f), pairs(&[(":path", "/sample/path")]));
    assert_eq!(table(&d), (vec![], 0));
    // C.2.3: literal never indexed.
    let mut d = Decoder::new();
    let f = decode(&mut d, &example("C.2.3"));
    assert_eq!(text(&f), pairs(&[("password", "secret")]));
    assert_eq!(table(&d), (vec![], 0));
    // C.2.4: indexed.
    let mut d = Decoder::new();
    let f = decode(&mut d, &example("C.2.4"));
    assert_eq!(text(&f), pairs(&[(":method", "GET")]));
    assert_eq!(table(&d), (vec![], 0));
}

const AUTHORITY: (&str, &str) = (":authority", "www.example.com");
const NO_CACHE: (&str, &str) = ("cache-control", "no-cache");
const CUSTOM: (&str, &str) = ("custom-key", "custom-value");

/// The three requests of C.3/C.4: their fields, and the table after each.
fn check_requests(section: &str) {
    let blocks = examples(section);
    let mut d = Decoder::new();
    let get = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        AUTHORITY,
    ];
    assert_eq!(text(&decode(&mut d, &blocks[0])), pairs(&get));
    assert_eq!(table(&d), (pairs(&[AUTHORITY]), 57));
    let second = [&get[..], &[NO_CACHE]].concat();
    assert_eq!(text(&decode(&mut d, &blocks[1])), pairs(&second));
    assert_eq!(table(&d), (pairs(&[NO_CACHE, AUTHORITY]), 110));
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        AUTHORITY,
        CUSTOM,
    ];
    assert_eq!(text(&decode(&mut d, &blocks[2])), pairs(&third));
    assert_eq!(table(&d), (pairs(&[CUSTOM, NO_CACHE, AUTHORITY]), 164));
    assert_eq!(d.take_stats(), HpackStats::default());
}

#[test]
fn rfc_c3_requests_without_huffman() {
    check_requests("C.3");
}

#[test]
fn rfc_c4_requests_with_huffman() {
    check_requests("C.4");
}

const PRIVATE: (&str, &str) = ("cache-control", "private");
const DATE_21: (&str, &str) = ("date", "Mon, 21 Oct 2013 20:13:21 GMT");
const DATE_22: (&str, &str) = ("date", "Mon, 21 Oct 2013 20:13:22 GMT");
const LOCATION: (&str, &str) = ("location", "https://www.example.com");
const COOKIE: (&str, &str) = (
    "set-cookie",
    "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
);

/// A decoder whose table holds at most 256 bytes, as in C.5/C.6 (here through a size update).
fn decoder_256() -> Decoder {
    let mut d = Decoder::new();
    assert!(decode(&mut d, &hex("3fe1 01")).is_empty());
    d
}

/// The three responses of C.5/C.6, with evictions from a 256-byte table.
fn check_responses(section: &str) {
    let blocks = examples(section);
    let mut d = decoder_256();
    let first = [(":status", "302"), PRIVATE, DATE_21, LOCATION];
    assert_eq!(text(&decode(&mut d, &blocks[0])), pairs(&first));
    assert_eq!(
        table(&d),
        (
            pairs(&[LOCATION, DATE_21, PRIVATE, (":status", "302")]),
            222
        )
    );
    let second = [(":status", "307"), PRIVATE, DATE_21, LOCATION];
    assert_eq!(text(&decode(&mut d, &blocks[1])), pairs(&second));
    assert_eq!(
        table(&d),
        (
            pairs(&[(":status", "307"), LOCATION, DATE_21, PRIVATE]),
            222
        )
    );
    let third = [
        (":status", "200"),
        PRIVATE,
        DATE_22,
        LOCATION,
        ("content-encoding", "gzip"),
        COOKIE,
    ];
    assert_eq!(text(&decode(&mut d, &blocks[2])), pairs(&third));
    assert_eq!(
        table(&d),
        (pairs(&[COOKIE, ("content-encoding", "gzip"), DATE_22]), 215)
    );
    assert_eq!(d.take_stats(), HpackStats::default());
}

#[test]
fn rfc_c5_responses_without_huffman() {
    check_responses("C.5");
}

#[test]
fn rfc_c6_responses_with_huffman() {
    check_responses("C.6");
}

// --- Mid-way and lost blocks ----------------------------------------------------------------

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

// --- Size updates, eviction, the cap --------------------------------------------------------

#[test]
fn size_update_evicts_and_references_beyond_are_errors() {
    let mut d = Decoder::new();
    for n in 1..=3 {
        decode(&mut d, &example(&format!("C.3.{n}")));
    }
    // 110 bytes keep custom-key (54) and cache-control (53), not :authority (57).
    assert!(decode(&mut d, &encode(&[Repr::SizeUpdate(110)])).is_empty());
    assert_eq!(table(&d), (pairs(&[CUSTOM, NO_CACHE]), 107));
    assert!(d.is_synced());
    let (e, _) = error(&mut d, &encode(&[Repr::Indexed(64)]));
    assert_eq!(
        e,
        DecodeError::IndexOutOfRange {
            index: 64,
            entries: 63
        }
    );
    assert_eq!(
        e.to_string(),
        "HPACK index 64 beyond the table's 63 entries (61 static + dynamic)"
    );
}

#[test]
fn an_entry_larger_than_the_table_empties_it() {
    let mut d = decoder_256();
    decode(&mut d, &example("C.5.1"));
    let big = encode(&[Repr::Literal {
        indexing: Indexing::Incremental,
        name: Err(b"x-big".to_vec()),
        value: vec![b'a'; 256],
        huffman: false,
    }]);
    assert_eq!(decode(&mut d, &big).len(), 1);
    assert_eq!(table(&d), (vec![], 0));
    assert!(d.is_synced());
    let (e, _) = error(&mut d, &encode(&[Repr::Indexed(62)]));
    assert!(matches!(e, DecodeError::IndexOutOfRange { index: 62, .. }));
}

#[test]
fn size_update_to_zero_resyncs_a_midway_decoder() {
    let mut d = Decoder::midway();
    assert_eq!(
        text(&decode(&mut d, &encode(&[Repr::Indexed(70)]))),
        pairs(&[("?", "?")])
    );
    assert!(
        decode(
            &mut d,
            &encode(&[Repr::SizeUpdate(0), Repr::SizeUpdate(4096)])
        )
        .is_empty()
    );
    assert!(d.is_synced());
    let (e, _) = error(&mut d, &encode(&[Repr::Indexed(62)]));
    assert!(matches!(e, DecodeError::IndexOutOfRange { index: 62, .. }));
    let stats = d.take_stats();
    assert_eq!((stats.resyncs, stats.unknown_refs), (1, 1));
}

/// Fills a table with `n` literals of `size` bytes each (name `x-NNNN`, 6 bytes).
fn fill(d: &mut Decoder, n: usize, size: usize) {
    for i in 0..n {
        let block = encode(&[Repr::Literal {
            indexing: Indexing::Incremental,
            name: Err(format!("x-{i:04}").into_bytes()),
            value: vec![b'v'; size - 32 - 6],
            huffman: false,
        }]);
        decode(d, &block);
    }
}

#[test]
fn a_midway_decoder_that_learns_the_size_resyncs_once_the_table_is_full() {
    let mut d = Decoder::midway();
    // The maximum is known (4096) but older entries may remain until an eviction: 40 entries
    // of 100 bytes leave 96 bytes, room for older ones.
    decode(&mut d, &encode(&[Repr::SizeUpdate(4096)]));
    fill(&mut d, 40, 100);
    assert!(!d.is_synced());
    assert_eq!(
        text(&decode(&mut d, &encode(&[Repr::Indexed(62 + 40)]))),
        pairs(&[("?", "?")])
    );
    // One more evicts the oldest entry seen, so every older one was evicted before it.
    fill(&mut d, 1, 100);
    assert!(d.is_synced());
    assert_eq!(d.table.len(), 40);
    let (e, _) = error(&mut d, &encode(&[Repr::Indexed(62 + 40)]));
    assert!(matches!(e, DecodeError::IndexOutOfRange { .. }));
}

#[test]
fn a_midway_decoder_without_a_size_update_stays_unsure() {
    let mut d = Decoder::midway();
    fill(&mut d, 100, 100);
    assert!(!d.is_synced());
    // The peer's table may be larger than the 4096 bytes kept here: the older ones are unknown.
    assert_eq!(d.table.len(), 40);
    assert_eq!(
        text(&decode(
            &mut d,
            &encode(&[Repr::Indexed(62 + 39), Repr::Indexed(62 + 40)])
        )),
        pairs(&[("x-0060", &"v".repeat(62)), ("?", "?")])
    );
}

#[test]
fn size_updates_beyond_the_cap_keep_the_cap_and_the_rest_is_unknown() {
    let mut d = Decoder::new();
    decode(&mut d, &encode(&[Repr::SizeUpdate(u32::MAX as usize)]));
    // 100 entries of 1000 bytes (by HPACK's count): as many as the cap's memory holds are kept.
    fill(&mut d, 100, 1000);
    let kept = CAP / (1000 - ENTRY_OVERHEAD + ENTRY_MEMORY);
    assert_eq!(d.table.len(), kept);
    assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
    let oldest_kept = 62 + kept - 1;
    assert_eq!(
        text(&decode(
            &mut d,
            &encode(&[Repr::Indexed(oldest_kept), Repr::Indexed(oldest_kept + 1)])
        )),
        pairs(&[
            (&*format!("x-{:04}", 100 - kept), &*"v".repeat(1000 - 38)),
            ("?", "?")
        ])
    );
    let stats = d.take_stats();
    assert_eq!((stats.capped_size_updates, stats.unknown_refs), (1, 1));
    // A size update within the cap makes the table exact again (what it evicts is certain).
    decode(&mut d, &encode(&[Repr::SizeUpdate(2000)]));
    assert!(d.is_synced());
    assert_eq!(d.table.len(), 2);
}

#[test]
fn many_tiny_entries_stay_within_the_memory_budget() {
    let mut d = Decoder::new();
    decode(&mut d, &encode(&[Repr::SizeUpdate(CAP)]));
    // 2000 entries of 38 bytes fit in 64 KiB by HPACK's count, not in 64 KiB of memory.
    fill(&mut d, 2000, 38);
    let kept = CAP / (38 - ENTRY_OVERHEAD + ENTRY_MEMORY);
    assert_eq!(d.table.len(), kept);
    assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
    // The peer still has the older ones: unknown, not an error.
    assert!(!d.is_synced());
    assert_eq!(
        text(&decode(&mut d, &encode(&[Repr::Indexed(62 + kept)]))),
        pairs(&[("?", "?")])
    );
}

#[test]
fn footprint_follows_the_table() {
    let mut d = Decoder::new();
    let empty = d.footprint();
    assert!(empty >= size_of::<Decoder>());
    fill(&mut d, 10, 100);
    assert!(
        d.footprint() >= empty + 1000,
        "{} vs {empty}",
        d.footprint()
    );
    assert!(d.footprint() <= Decoder::MAX_FOOTPRINT);
}

// --- Malformed blocks -----------------------------------------------------------------------

#[test]
fn malformed_blocks_are_errors_with_clear_messages() {
    let cases: [(&[u8], DecodeError, &str); 8] = [
        (
            &[0x80],
            DecodeError::IndexZero,
            "HPACK index 0 (indexes start at 1)",
        ),
        (
            &[0xbe],
            DecodeError::IndexOutOfRange {
                index: 62,
                entries: 61,
            },
            "HPACK index 62 beyond the table's 61 entries (61 static + dynamic)",
        ),
        (
            &[0xff],
            DecodeError::Truncated("an integer"),
            "HPACK header block ends inside an integer",
        ),
        (
            &[0x40, 0x85, 0x1f],
            DecodeError::Truncated("a string"),
            "HPACK header block ends inside a string",
        ),
        (
            &[0x00, 0x01, b'a', 0x81, 0x18],
            DecodeError::Huffman(HuffmanError::PaddingNotOnes),
            "HPACK Huffman-coded string: Huffman padding that is not the leading ones of the EOS code",
        ),
        (
            &[0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xff],
            DecodeError::Huffman(HuffmanError::Eos),
            "HPACK Huffman-coded string: the EOS symbol inside a Huffman-coded string",
        ),
        (
            &[0x3f, 0xff, 0xff, 0xff, 0xff, 0x7f],
            DecodeError::IntegerOverflow,
            "HPACK integer over 2^32 - 1 or longer than 5 continuation bytes",
        ),
        (
            &[0x40, 0x7f, 0x82, 0x7f],
            DecodeError::StringTooLong { len: 16_385 },
            "HPACK string of 16385 bytes, over the 16384-byte limit",
        ),
    ];
    for (block, want, message) in cases {
        let mut d = Decoder::new();
        let (e, fields) = error(&mut d, block);
        assert_eq!(e, want, "block {block:x?}");
        assert_eq!(e.to_string(), message);
        assert!(fields.is_empty());
        let stats = d.take_stats();
        assert_eq!((stats.errors, stats.desyncs), (1, 1), "block {block:x?}");
        assert_eq!(
            stats.oversize_strings,
            u64::from(matches!(want, DecodeError::StringTooLong { .. }))
        );
    }
}

#[test]
fn strings_up_to_the_limit_are_accepted_and_huffman_output_is_limited_too() {
    let mut d = Decoder::new();
    let exact = encode(&[Repr::Literal {
        indexing: Indexing::Without,
        name: Err(b"x".to_vec()),
        value: vec![b'0'; MAX_STRING],
        huffman: false,
    }]);
    assert_eq!(
        decode(&mut d, &exact)[0].value.as_ref().map(Bytes::len),
        Some(MAX_STRING)
    );
    // '0' is 5 bits: 16384 coded bytes hold 26214 of them.
    let mut coded = Vec::new();
    huffman::encode(&vec![b'0'; 26_214], &mut coded);
    assert!(coded.len() <= MAX_STRING);
    let mut block = vec![0x00, 0x01, b'x'];
    integer(&mut block, 7, 0x80, coded.len());
    block.extend_from_slice(&coded);
    let (e, _) = error(&mut d, &block);
    assert_eq!(e, DecodeError::StringTooLong { len: 26_214 });
}

#[test]
fn huffman_strings_decode_on_both_sides_of_the_stack_buffer() {
    // '0' has the shortest code (5 bits): 256 of them are the most the 256-byte stack buffer
    // takes (160 coded bytes); 'z' (7 bits) and 0xff (26 bits) fill it less.
    let mut d = Decoder::new();
    for (sym, longest) in [(b'0', MAX_STRING), (b'z', MAX_STRING), (0xff, 5000)] {
        for n in (0..=300).chain([longest]) {
            let value = vec![sym; n];
            let block = encode(&[Repr::Literal {
                indexing: Indexing::Without,
                name: Ok(1),
                value: value.clone(),
                huffman: true,
            }]);
            let f = decode(&mut d, &block);
            assert_eq!(f[0].value.as_deref(), Some(&value[..]), "{n} x {sym:#x}");
        }
    }
}

#[test]
fn plain_literal_values_share_the_block_and_the_table_holds_copies() {
    let mut d = Decoder::new();
    let block = example("C.3.1");
    let f = decode(&mut d, &block);
    // A literal with incremental indexing: the field shares the block, the entry does not (the
    // table must not keep the block alive).
    let value = f[3].value.as_ref().expect("literal value");
    assert!(block.as_ptr_range().contains(&value.as_ptr()));
    let entry = d.table.entries()[0].1.as_ptr();
    assert!(!block.as_ptr_range().contains(&entry));
    // A field that refers to the entry shares it.
    let f = decode(&mut d, &encode(&[Repr::Indexed(62)]));
    assert_eq!(f[0].value.as_ref().map(|v| v.as_ptr()), Some(entry));
}
