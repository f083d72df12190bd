//! The primitives (RFC 7541 §5): integers, string literals and their limits, the Huffman code.

use bytes::Bytes;

use super::{
    super::{Cursor, DecodeError, Decoder, HuffmanError, MAX_STRING, huffman},
    decode,
    encoder::{Indexing, Repr, encode, integer},
    error, hex,
};

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
