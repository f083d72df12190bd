//! Trace and span ids: random when the agent starts a span, parsed from hex when a request
//! carries them, printed as lowercase hex.

use std::fmt;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    #[must_use]
    pub fn random() -> Self {
        loop {
            let id = Self(rand::random());
            if id.0 != [0; 16] {
                return id;
            }
        }
    }

    /// Parses 16 or 32 hex digits; a 64-bit id is left-padded with zeros.
    #[must_use]
    pub fn from_hex(s: &str, allow_64bit: bool, lowercase_only: bool) -> Option<Self> {
        let mut out = [0u8; 16];
        match s.len() {
            32 => decode_hex(s, &mut out, lowercase_only)?,
            16 if allow_64bit => decode_hex(s, &mut out[8..], lowercase_only)?,
            _ => return None,
        }
        (out != [0; 16]).then_some(Self(out))
    }

    /// The low 64 bits, used by the ratio sampler.
    #[must_use]
    pub fn low_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(b)
    }
}

impl SpanId {
    #[must_use]
    pub fn random() -> Self {
        loop {
            let id = Self(rand::random());
            if id.0 != [0; 8] {
                return id;
            }
        }
    }

    #[must_use]
    pub fn from_hex(s: &str, lowercase_only: bool) -> Option<Self> {
        let mut out = [0u8; 8];
        if s.len() != 16 {
            return None;
        }
        decode_hex(s, &mut out, lowercase_only)?;
        (out != [0; 8]).then_some(Self(out))
    }
}

/// Decodes `s` (exactly twice as many hex digits as `out` has bytes) into `out`.
pub fn decode_hex(s: &str, out: &mut [u8], lowercase_only: bool) -> Option<()> {
    let bytes = s.as_bytes();
    if bytes.len() != out.len() * 2 {
        return None;
    }
    // One table lookup per digit and one test at the end: ids are decoded for every request,
    // and a branch per digit showed in the profile.
    let table = if lowercase_only { &HEX_LOWER } else { &HEX_ANY };
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (table[usize::from(pair[0])], table[usize::from(pair[1])]);
        bad |= high | low;
        *o = (high << 4) | (low & 0x0f);
    }
    (bad & 0xf0 == 0).then_some(())
}

/// The value of each hex digit, `0xff` for any other byte (uppercase too in the first).
static HEX_LOWER: [u8; 256] = hex_table(false);
static HEX_ANY: [u8; 256] = hex_table(true);

const fn hex_table(uppercase: bool) -> [u8; 256] {
    let mut t = [0xff; 256];
    let mut v = 0u8;
    while v < 16 {
        let digit = if v < 10 { b'0' + v } else { b'a' + v - 10 };
        t[digit as usize] = v;
        if uppercase && v >= 10 {
            t[(b'A' + v - 10) as usize] = v;
        }
        v += 1;
    }
    t
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_decode_and_every_other_byte_is_refused() {
        let mut out = [0u8; 2];
        assert_eq!(decode_hex("0aF9", &mut out, false), Some(()));
        assert_eq!(out, [0x0a, 0xf9]);
        assert_eq!(decode_hex("0aF9", &mut out, true), None, "uppercase");
        assert_eq!(decode_hex("0af", &mut out, false), None, "odd length");
        for b in 0..=255u8 {
            let digit = b.is_ascii_hexdigit();
            let lower = digit && !b.is_ascii_uppercase();
            let s = String::from_utf8(vec![b'0', b]).unwrap_or_default();
            if s.len() != 2 {
                continue;
            }
            let mut one = [0u8; 1];
            assert_eq!(decode_hex(&s, &mut one, false).is_some(), digit, "{b:#x}");
            if digit {
                assert_eq!(u32::from(one[0]), char::from(b).to_digit(16).unwrap());
            }
            assert_eq!(decode_hex(&s, &mut one, true).is_some(), lower, "{b:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ids_printed_as_hex_decode_to_themselves(
            trace in proptest::prelude::any::<[u8; 16]>(),
            span in proptest::prelude::any::<[u8; 8]>(),
            upper in proptest::prelude::any::<bool>(),
        ) {
            let (t, s) = (TraceId(trace).to_string(), SpanId(span).to_string());
            proptest::prop_assert_eq!(t.len(), 32);
            proptest::prop_assert_eq!(s.len(), 16);
            let case = |h: &str| if upper { h.to_ascii_uppercase() } else { h.to_owned() };
            // Zero ids are refused, every other decodes back, lowercase or not.
            proptest::prop_assert_eq!(
                TraceId::from_hex(&case(&t), false, false),
                (trace != [0; 16]).then_some(TraceId(trace))
            );
            proptest::prop_assert_eq!(
                SpanId::from_hex(&case(&s), false),
                (span != [0; 8]).then_some(SpanId(span))
            );
            // W3C wants lowercase: uppercase digits are refused there.
            let has_letters = t.bytes().any(|b| b.is_ascii_alphabetic());
            proptest::prop_assert_eq!(
                TraceId::from_hex(&case(&t), false, true).is_some(),
                trace != [0; 16] && !(upper && has_letters)
            );
            // A 64-bit B3 id is the low half of a 128-bit one, the high half zero.
            let low = &t[16..];
            let mut padded = [0u8; 16];
            padded[8..].copy_from_slice(&trace[8..]);
            proptest::prop_assert_eq!(
                TraceId::from_hex(low, true, false),
                (padded != [0; 16]).then_some(TraceId(padded))
            );
            proptest::prop_assert_eq!(TraceId::from_hex(low, false, false), None);
        }
    }
}
