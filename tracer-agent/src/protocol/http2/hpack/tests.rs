//! Decoder tests, and what they share (helpers, the fields of the RFC 7541 examples):
//! - [`primitives`]: integers, strings, the Huffman code;
//! - [`rfc`]: the examples of RFC 7541 Appendix C, with the table after each block;
//! - [`sync`]: decoding from mid-way, after a lost block or an error;
//! - [`limits`]: size updates, eviction, the cap and the memory budget, malformed blocks;
//! - [`props`]: property tests, against the test encoder ([`encoder`]) and an independent one.

mod encoder;
mod limits;
mod primitives;
mod props;
mod rfc;
mod sync;

use bytes::Bytes;

use self::encoder::{Indexing, Repr, encode};
use super::{DecodeError, Decoder, Field};

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

const AUTHORITY: (&str, &str) = (":authority", "www.example.com");
const NO_CACHE: (&str, &str) = ("cache-control", "no-cache");
const CUSTOM: (&str, &str) = ("custom-key", "custom-value");
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
