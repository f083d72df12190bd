//! HTTP semantics, whatever the framing: what a message head tells the tracer (RFC 9110). The
//! HTTP/1.x framing that finds heads in a byte stream is in [`http1`](super::http1); HTTP/2
//! fills the same [`Head`] from its header blocks (`http2::fields`).
//!
//! A head keeps one copy of its bytes ([`Bytes`]); its fields are slices of it ([`Text`]), not
//! strings of their own. Credential headers are never kept.

use std::{borrow::Borrow, fmt, ops::Deref};

use bytes::Bytes;
use tracer_common::http as names;

use crate::kernel::write::ids::KernelIds;

/// Text from a captured head: a slice of the head's bytes, valid UTF-8 (bytes that are not
/// become U+FFFD, in a copy of their own).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// The part `part` of `whole` (a subslice of it, as the parsers return them).
    #[must_use]
    pub fn slice_of(whole: &Bytes, part: &[u8]) -> Self {
        let bytes = if part.is_empty() {
            Bytes::new()
        } else {
            whole.slice_ref(part)
        };
        Self::from_bytes(bytes)
    }

    /// The text `part` of `whole` (a subslice of it), already known to be UTF-8.
    #[must_use]
    pub fn str_of(whole: &Bytes, part: &str) -> Self {
        if part.is_empty() {
            Self(Bytes::new())
        } else {
            Self(whole.slice_ref(part.as_bytes()))
        }
    }

    /// The text `part` of this text (a subslice of it, as `split_once` and friends return
    /// them), sharing its bytes.
    #[must_use]
    pub fn sub(&self, part: &str) -> Self {
        Self::str_of(&self.0, part)
    }

    fn from_bytes(bytes: Bytes) -> Self {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Self(bytes),
            Err(_) => Self(Bytes::from(
                String::from_utf8_lossy(&bytes).into_owned().into_bytes(),
            )),
        }
    }

    /// Text known at compile time.
    #[must_use]
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or produces UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Bytes::from(s.into_bytes()))
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: Text, target: Text },
    Response { status: u16 },
}

impl fmt::Display for StartLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request { method, target } => write!(f, "{method} {target}"),
            Self::Response { status } => write!(f, "{status}"),
        }
    }
}

/// The protocol version a message was sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
    Http2,
}

impl Version {
    /// As `network.protocol.version` writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "1.0",
            Self::Http11 => "1.1",
            Self::Http2 => "2",
        }
    }
}

/// The parts of a message head the tracer uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub start: StartLine,
    pub version: Version,
    pub host: Option<Text>,
    pub user_agent: Option<Text>,
    pub content_length: Option<u64>,
    pub chunked: bool,
    pub context: ContextHeaders,
    /// The capture ended before the head did.
    pub truncated: bool,
    /// The head could not be parsed as HTTP; only the start line is known.
    pub malformed: bool,
    pub start_ns: u64,
    /// What the kernel chose or wrote for this request (write side), if anything.
    pub kernel: Option<KernelIds>,
}

impl Head {
    #[must_use]
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
}

/// The trace-context headers a propagator may need, gathered once per request head: where each
/// value lies in the head's bytes, which it shares (one reference for all of them, and none for
/// a head without any). A value is checked for UTF-8 when it is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextHeaders {
    bytes: Bytes,
    /// `(start, end)` in `bytes` of each header's value, indexed like [`CONTEXT_NAMES`].
    at: [Option<(u32, u32)>; 6],
}

/// The context headers, in the order of `ContextHeaders::at`.
const CONTEXT_NAMES: [&str; 6] = [
    names::B3_TRACE_ID,
    names::B3_SPAN_ID,
    names::B3_SAMPLED,
    names::B3_FLAGS,
    names::B3_SINGLE,
    names::TRACEPARENT,
];

/// The bounds of a context value in `whole` as the kernel's head scanner sees them: the whole
/// field value around `start..end` (the parser may already have dropped its spaces and tabs),
/// less at most `CONTEXT_OWS_MAX` spaces and tabs at each end. A value with more keeps them and
/// is refused as malformed, by both.
fn trim_ows(whole: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    start -= whole[..start].iter().rev().take_while(|b| ows(b)).count();
    end += whole[end..].iter().take_while(|b| ows(b)).count();
    let max = names::CONTEXT_OWS_MAX;
    start += whole[start..end]
        .iter()
        .take(max)
        .take_while(|b| ows(b))
        .count();
    end -= whole[start..end]
        .iter()
        .rev()
        .take(max)
        .take_while(|b| ows(b))
        .count();
    (start, end)
}

impl ContextHeaders {
    /// Records `name: value` if it is one of the context headers (first occurrence wins);
    /// `value` is a slice of `whole`, the head's bytes.
    pub fn offer(&mut self, whole: &Bytes, name: &str, value: &[u8]) {
        let Some(slot) = CONTEXT_NAMES
            .iter()
            .position(|n| name.eq_ignore_ascii_case(n))
        else {
            return;
        };
        if self.at[slot].is_some() {
            return;
        }
        let offset = (value.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
        if offset > whole.len() || whole.len() - offset < value.len() {
            debug_assert!(false, "a context value outside its head");
            return;
        }
        let (start, end) = trim_ows(whole, offset, offset + value.len());
        let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(end)) else {
            return;
        };
        if self.bytes.is_empty() {
            self.bytes = whole.clone();
        }
        self.at[slot] = Some((start, end));
    }

    /// A value that is not UTF-8 reads as U+FFFD, which no rule accepts: the header is present
    /// and malformed, as the kernel's scanner sees it, not absent.
    fn get(&self, slot: usize) -> Option<&str> {
        let (start, end) = self.at[slot]?;
        let raw = self.bytes.get(start as usize..end as usize)?;
        Some(std::str::from_utf8(raw).unwrap_or("\u{fffd}"))
    }

    #[must_use]
    pub fn b3_trace_id(&self) -> Option<&str> {
        self.get(0)
    }

    #[must_use]
    pub fn b3_span_id(&self) -> Option<&str> {
        self.get(1)
    }

    #[must_use]
    pub fn b3_sampled(&self) -> Option<&str> {
        self.get(2)
    }

    #[must_use]
    pub fn b3_flags(&self) -> Option<&str> {
        self.get(3)
    }

    #[must_use]
    pub fn b3(&self) -> Option<&str> {
        self.get(4)
    }

    #[must_use]
    pub fn traceparent(&self) -> Option<&str> {
        self.get(5)
    }

    /// Headers from `name, value` pairs, as a head with them would give (tests).
    #[cfg(test)]
    #[must_use]
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let mut text = String::new();
        let mut spans = Vec::new();
        for (name, value) in pairs {
            spans.push((*name, text.len(), value.len()));
            text.push_str(value);
            // Lines apart, as in a head: trimming never reaches into the next value.
            text.push('\n');
        }
        let whole = Bytes::from(text);
        let mut h = Self::default();
        for (name, at, len) in spans {
            h.offer(&whole, name, &whole[at..at + len]);
        }
        h
    }
}
