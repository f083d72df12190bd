//! The HTTP/1.x and trace-context facts both sides need: which bytes start a message, and the
//! names of the context headers. The kernel classifies sockets and scans heads with them, the
//! agent parses and reads context with them; one table, so the two cannot disagree.

// The kernel programs call these: there, everything must be inlined.
#![expect(clippy::inline_always, reason = "called by the kernel programs")]

/// The request methods of RFC 9110 (and PATCH, RFC 5789): the ones a socket is taken for HTTP
/// by, and the ones a span names as themselves (others become `_OTHER`).
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// How a status line starts.
pub const STATUS_LINE_START: &str = "HTTP/1.";

/// How many distinct message starts there are: one per method, and the status line.
pub const START_COUNT: usize = METHODS.len() + 1;

/// `s` with a space after it, as the first bytes of a request line.
const fn method_start(s: &str) -> [u8; 8] {
    let mut out = [0u8; 8];
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        out[i] = b[i];
        i += 1;
    }
    out[i] = b' ';
    out
}

/// Length of the `i`-th message start (method and space, or the status-line prefix).
const fn start_len(i: usize) -> usize {
    if i < METHODS.len() {
        METHODS[i].len() + 1
    } else {
        STATUS_LINE_START.len()
    }
}

/// The `i`-th message start, zero-padded to 8 bytes.
const fn start_bytes(i: usize) -> [u8; 8] {
    if i < METHODS.len() {
        method_start(METHODS[i])
    } else {
        let mut out = [0u8; 8];
        let b = STATUS_LINE_START.as_bytes();
        let mut j = 0;
        while j < b.len() {
            out[j] = b[j];
            j += 1;
        }
        out
    }
}

/// Each message start as a little-endian word and the mask of the bytes that count: eight bytes
/// are compared against all of them with one AND and one compare each, no loop over bytes (the
/// kernel runs this on the first read of every unclassified socket).
const START_WORDS: [(u64, u64); START_COUNT] = {
    let mut out = [(0u64, 0u64); START_COUNT];
    let mut i = 0;
    while i < START_COUNT {
        let bytes = start_bytes(i);
        let len = start_len(i);
        assert!(len <= 8, "a message start must fit in one word");
        let mask = if len == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * len)) - 1
        };
        out[i] = (u64::from_le_bytes(bytes), mask);
        i += 1;
    }
    out
};

/// The message starts as byte strings (method and space, or `HTTP/1.`), for prefix tests on
/// buffers of any length.
pub fn message_starts() -> impl Iterator<Item = &'static [u8]> {
    START_BYTES
        .iter()
        .enumerate()
        .map(|(i, b)| &b[..start_len(i)])
}

const START_BYTES: [[u8; 8]; START_COUNT] = {
    let mut out = [[0u8; 8]; START_COUNT];
    let mut i = 0;
    while i < START_COUNT {
        out[i] = start_bytes(i);
        i += 1;
    }
    out
};

/// Whether the word `w` matches one of the message starts `first..last`.
#[inline(always)]
fn matches_start(w: u64, first: usize, last: usize) -> bool {
    let mut hit = false;
    let mut i = first;
    while i < last {
        let (word, mask) = START_WORDS[i];
        hit |= w & mask == word;
        i += 1;
    }
    hit
}

/// The first eight bytes of a message start a request line with a known method.
#[inline(always)]
#[must_use]
pub fn is_request_start(b: &[u8; 8]) -> bool {
    matches_start(u64::from_le_bytes(*b), 0, METHODS.len())
}

/// The first eight bytes of a message start a request line or a status line.
#[inline(always)]
#[must_use]
pub fn is_message_start(b: &[u8; 8]) -> bool {
    matches_start(u64::from_le_bytes(*b), 0, START_COUNT)
}

/// Trace-context header names, lowercase (header names compare case-insensitively).
pub const B3_TRACE_ID: &str = "x-b3-traceid";
pub const B3_SPAN_ID: &str = "x-b3-spanid";
pub const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
pub const B3_SAMPLED: &str = "x-b3-sampled";
pub const B3_FLAGS: &str = "x-b3-flags";
/// The single B3 header: `{trace}-{span}-{sampling}-{parent}`.
pub const B3_SINGLE: &str = "b3";
pub const TRACEPARENT: &str = "traceparent";
/// Framing headers the kernel's head scan needs to step over a body.
pub const CONTENT_LENGTH: &str = "content-length";
pub const TRANSFER_ENCODING: &str = "transfer-encoding";

/// Spaces and tabs (OWS) dropped from each end of a trace-context header's value, by the kernel
/// and the agent alike; a value with more keeps the rest and is refused as malformed.
pub const CONTEXT_OWS_MAX: usize = 8;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{format, vec::Vec};

    use super::*;

    fn first8(s: &[u8]) -> [u8; 8] {
        let mut b = [0u8; 8];
        let n = s.len().min(8);
        b[..n].copy_from_slice(&s[..n]);
        b
    }

    #[test]
    fn words_agree_with_the_method_table() {
        for m in METHODS {
            let line = format!("{m} /path HTTP/1.1\r\n");
            assert!(is_request_start(&first8(line.as_bytes())), "{m}");
            assert!(is_message_start(&first8(line.as_bytes())), "{m}");
            // The method without its space is not a request line (e.g. a GETX method).
            let glued = format!("{m}X /");
            assert!(!is_request_start(&first8(glued.as_bytes())), "{glued}");
        }
        assert!(is_message_start(&first8(b"HTTP/1.1 200 OK")));
        assert!(!is_request_start(&first8(b"HTTP/1.1 200 OK")));
        for other in [
            &b"PRI * HTTP/2.0"[..],
            b"HTTP/2 200",
            b"get / HTTP/1.1",
            b"\x16\x03\x01\x02\x00\x01",
            b"SSH-2.0-OpenSSH",
        ] {
            assert!(!is_message_start(&first8(other)), "{other:?}");
        }
        let starts: Vec<&[u8]> = message_starts().collect();
        assert_eq!(starts.len(), START_COUNT);
        assert!(starts.contains(&&b"OPTIONS "[..]));
        assert!(starts.contains(&&b"HTTP/1."[..]));
    }
}
