//! Size updates, eviction, the cap and the memory budget, malformed blocks, and which bytes a
//! field or an entry shares.

use super::{
    super::{
        CAP, DecodeError, Decoder, HuffmanError,
        table::{ENTRY_MEMORY, ENTRY_OVERHEAD},
    },
    CUSTOM, NO_CACHE, decode, decoder_256,
    encoder::{Indexing, Repr, encode},
    error, example, fill, pairs, table, text,
};

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
