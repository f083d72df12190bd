//! The examples of RFC 7541 Appendix C: the fields of each block and the dynamic table after it.

use super::{
    super::{Decoder, HpackStats},
    AUTHORITY, COOKIE, CUSTOM, DATE_21, DATE_22, LOCATION, NO_CACHE, PRIVATE, decode, decoder_256,
    example, examples, pairs, table, text,
};

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
