//! The Huffman code of HPACK string literals (RFC 7541 §5.2; the code table is Appendix B).
//!
//! The code is canonical: codes of one length are consecutive numbers, in the order of their
//! symbols, and each length's first code follows from the previous length's last one. Decoding
//! therefore needs, per code length, only the first code, one past the last, and where that
//! length's symbols start in a list sorted by code; [`CANONICAL`] is built from [`CODES`] at
//! compile time, and a unit test checks that the table has that shape.

use thiserror::Error;

/// Why a Huffman-coded string was refused (RFC 7541 §5.2).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum HuffmanError {
    #[error("the EOS symbol inside a Huffman-coded string")]
    Eos,
    #[error("Huffman padding longer than 7 bits")]
    PaddingTooLong,
    #[error("Huffman padding that is not the leading ones of the EOS code")]
    PaddingNotOnes,
}

/// The code of each symbol, 0 to 255 and EOS (256): `(code, length in bits)`, the code in the
/// low bits (RFC 7541 Appendix B).
#[expect(
    clippy::unreadable_literal,
    reason = "the codes as Appendix B prints them (in hex)"
)]
pub(super) const CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30),
];

/// The symbol that ends a Huffman-coded string (never valid inside one).
const EOS: u16 = 256;
const MIN_LEN: usize = 5;
const MAX_LEN: usize = 30;

/// Decoding tables of the canonical code, indexed by code length.
pub(super) struct Canonical {
    /// The first code of each length.
    pub(super) first: [u32; MAX_LEN + 1],
    /// One past the last code of each length (equal to `first` for an unused length).
    pub(super) limit: [u32; MAX_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    pub(super) offset: [u16; MAX_LEN + 1],
    /// The symbols sorted by length, then code.
    pub(super) symbols: [u16; 257],
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "symbol numbers and counts are below 257"
)]
const fn canonical() -> Canonical {
    let mut c = Canonical {
        first: [0; MAX_LEN + 1],
        limit: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut placed = 0;
    let mut len = 1;
    while len <= MAX_LEN {
        c.offset[len] = placed as u16;
        let mut first = u32::MAX;
        let mut count = 0;
        let mut sym = 0;
        while sym < CODES.len() {
            if CODES[sym].1 as usize == len {
                if CODES[sym].0 < first {
                    first = CODES[sym].0;
                }
                c.symbols[placed] = sym as u16;
                placed += 1;
                count += 1;
            }
            sym += 1;
        }
        if count > 0 {
            c.first[len] = first;
            c.limit[len] = first + count;
        }
        len += 1;
    }
    c
}

pub(super) const CANONICAL: Canonical = canonical();

/// Decodes the Huffman-coded `src`, giving each symbol to `out`.
pub(super) fn decode(src: &[u8], mut out: impl FnMut(u8)) -> Result<(), HuffmanError> {
    // The bits not decoded yet, in the low `bits` bits of `acc`. A complete code is at most 30
    // bits, so fewer than 30 remain after each inner loop and 38 at most are held.
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    for &byte in src {
        acc = (acc << 8) | u64::from(byte);
        bits += 8;
        while let Some((sym, len)) = next_symbol(acc, bits) {
            if sym == EOS {
                return Err(HuffmanError::Eos);
            }
            #[expect(clippy::cast_possible_truncation, reason = "not EOS: below 256")]
            out(sym as u8);
            bits -= len;
            acc &= (1 << bits) - 1;
        }
    }
    if bits > 7 {
        return Err(HuffmanError::PaddingTooLong);
    }
    if acc != (1 << bits) - 1 {
        return Err(HuffmanError::PaddingNotOnes);
    }
    Ok(())
}

/// The symbol whose code starts the `bits` bits held in `acc`, and its length; `None` when
/// they are a prefix of a longer code.
fn next_symbol(acc: u64, bits: usize) -> Option<(u16, usize)> {
    let c = &CANONICAL;
    for len in MIN_LEN..=bits.min(MAX_LEN) {
        #[expect(clippy::cast_possible_truncation, reason = "at most 30 bits")]
        let code = (acc >> (bits - len)) as u32;
        if code < c.limit[len] && code >= c.first[len] {
            let at = usize::from(c.offset[len]) + (code - c.first[len]) as usize;
            return Some((c.symbols[at], len));
        }
    }
    None
}

/// Huffman-encodes `src` (tests only: the agent never encodes).
#[cfg(test)]
pub(super) fn encode(src: &[u8], out: &mut Vec<u8>) {
    let mut acc: u64 = 0;
    let mut bits = 0;
    for &b in src {
        let (code, len) = CODES[usize::from(b)];
        acc = (acc << len) | u64::from(code);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            #[expect(clippy::cast_possible_truncation, reason = "one byte")]
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        // Pad with the most significant bits of EOS (all ones).
        #[expect(clippy::cast_possible_truncation, reason = "one byte")]
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
}
