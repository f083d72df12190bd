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
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0], lowercase_only)? << 4) | nibble(pair[1], lowercase_only)?;
    }
    Some(())
}

fn nibble(c: u8, lowercase_only: bool) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if !lowercase_only => Some(c - b'A' + 10),
        _ => None,
    }
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
