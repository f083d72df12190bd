//! HTTP/1.x heads: what starts a message, parsing a head (httparse, with a lenient fallback for
//! heads it refuses), and the body rules of RFC 9112 section 6.3.

use std::sync::LazyLock;

use bytes::{Bytes, BytesMut};
use tracer_common::http::message_starts;

use crate::protocol::http::{ContextHeaders, Head, StartLine, Text, Version};

/// How the body of a message is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
    UntilClose,
    /// Framing unknown (truncated head): the message ends when the next one starts.
    Unknown,
}

// The HTTP/1.x framing rules, on the version-independent head.
impl Head {
    /// The body rule HTTP/1.1 gives a request (RFC 9112 section 6.3).
    #[must_use]
    pub fn request_body(&self) -> Body {
        if self.truncated || self.malformed {
            Body::Unknown
        } else if self.chunked {
            Body::Chunked
        } else {
            Body::Length(self.content_length.unwrap_or(0))
        }
    }

    /// The body rule for a response, given whether the request was a HEAD.
    #[must_use]
    pub fn response_body(&self, answers_head: bool) -> Body {
        let StartLine::Response { status } = self.start else {
            return self.request_body();
        };
        if answers_head || (100..200).contains(&status) || status == 204 || status == 304 {
            Body::None
        } else if self.truncated || self.malformed {
            Body::Unknown
        } else if self.chunked {
            Body::Chunked
        } else if let Some(n) = self.content_length {
            Body::Length(n)
        } else {
            Body::UntilClose
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Where the blank line that ends a head begins in `hay`. Every head is searched for it: the
/// vectorised searcher is built once, not per call.
pub fn find_head_end(hay: &[u8]) -> Option<usize> {
    static HEAD_END: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    HEAD_END.find(hay)
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::rfind(hay, needle)
}

/// A request line with a known method, or a status line (the table the kernel classifies
/// sockets with).
#[must_use]
pub fn starts_like_http(data: &[u8]) -> bool {
    message_starts().any(|s| data.starts_with(s))
}

/// Too short to tell, but the beginning of a request or status line.
pub fn could_start_http(data: &[u8]) -> bool {
    !data.is_empty() && message_starts().any(|s| data.len() < s.len() && s.starts_with(data))
}

/// Parses a complete head, or (when `truncated`) as much of one as was captured. The head's
/// fields are slices of `bytes`. A head httparse refuses is read leniently and comes back
/// `malformed`.
pub fn parse_head(bytes: Bytes, truncated: bool, start_ns: u64) -> Head {
    if !truncated {
        let mut head = parse_with_httparse(&bytes).unwrap_or_else(|| parse_lenient(&bytes));
        head.start_ns = start_ns;
        return head;
    }
    // Keep whole header lines only and close the head, so httparse can read them.
    let cut = find_last(&bytes, b"\r\n").map_or(0, |p| p + 2);
    let mut v = BytesMut::with_capacity(cut + 2);
    v.extend_from_slice(&bytes[..cut]);
    v.extend_from_slice(b"\r\n");
    let complete = v.freeze();
    let mut head = parse_with_httparse(&complete).unwrap_or_else(|| {
        // A capture that ends inside the start line still tells the method and target.
        let whole_lines = if find(&bytes, b"\r\n").is_some() {
            complete
        } else {
            bytes
        };
        parse_lenient(&whole_lines)
    });
    head.truncated = truncated;
    head.start_ns = start_ns;
    head
}

fn parse_with_httparse(bytes: &Bytes) -> Option<Head> {
    use std::mem::MaybeUninit;
    // Most heads fit the array on the stack; only a head with more headers pays for the heap.
    // Uninitialised: httparse writes each slot it returns, and zeroing 2 KiB per head showed
    // in the profile.
    let mut small = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 64];
    let mut large = Vec::new();
    let config = httparse::ParserConfig::default();
    for capacity in [64, 512] {
        let headers: &mut [MaybeUninit<httparse::Header<'_>>] = if capacity == small.len() {
            &mut small
        } else {
            large.resize_with(capacity, MaybeUninit::uninit);
            &mut large
        };
        let parsed = if bytes.starts_with(b"HTTP/") {
            let mut res = httparse::Response::new(&mut []);
            match config.parse_response_with_uninit_headers(&mut res, bytes, headers) {
                Ok(httparse::Status::Complete(_)) => Some(build_head(
                    bytes,
                    StartLine::Response { status: res.code? },
                    version(res.version?),
                    res.headers.iter().map(|h| (h.name, h.value)),
                )),
                Err(httparse::Error::TooManyHeaders) => continue,
                _ => None,
            }
        } else {
            let mut req = httparse::Request::new(&mut []);
            match config.parse_request_with_uninit_headers(&mut req, bytes, headers) {
                Ok(httparse::Status::Complete(_)) => Some(build_head(
                    bytes,
                    StartLine::Request {
                        method: Text::str_of(bytes, req.method?),
                        target: Text::str_of(bytes, req.path?),
                    },
                    version(req.version?),
                    req.headers.iter().map(|h| (h.name, h.value)),
                )),
                Err(httparse::Error::TooManyHeaders) => continue,
                _ => None,
            }
        };
        return parsed;
    }
    None
}

fn version(minor: u8) -> Version {
    if minor == 0 {
        Version::Http10
    } else {
        Version::Http11
    }
}

/// A header value as text, without the whitespace around it: a slice of the head when it is
/// UTF-8.
fn value_text(whole: &Bytes, raw: &[u8]) -> Text {
    match std::str::from_utf8(raw) {
        Ok(v) => Text::str_of(whole, v.trim()),
        Err(_) => Text::from(String::from_utf8_lossy(raw).trim().to_owned()),
    }
}

/// The head from its start line and headers; `whole` holds every slice they point into.
fn build_head<'a>(
    whole: &Bytes,
    start: StartLine,
    version: Version,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Head {
    let mut head = Head {
        start,
        version,
        host: None,
        user_agent: None,
        content_length: None,
        chunked: false,
        context: ContextHeaders::default(),
        truncated: false,
        malformed: false,
        start_ns: 0,
        kernel: None,
    };
    for (name, raw) in headers {
        // Credentials never leave this function: only the headers below are read at all.
        if name.eq_ignore_ascii_case("host") {
            head.host.get_or_insert_with(|| value_text(whole, raw));
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent
                .get_or_insert_with(|| value_text(whole, raw));
        } else if name.eq_ignore_ascii_case("content-length") {
            // Read in place: a number needs no text of its own.
            head.content_length = std::str::from_utf8(raw)
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = raw
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else {
            head.context.offer(whole, name, raw);
        }
    }
    // A chunked message ignores Content-Length (RFC 9112 6.3).
    if head.chunked {
        head.content_length = None;
    }
    head
}

/// Best effort for heads httparse refuses (a stray line without a colon, bad characters):
/// the start line's words and every header line that is well formed. Servers such as Python's
/// accept such requests, and the trace context in them must not be lost.
fn parse_lenient(bytes: &Bytes) -> Head {
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let mut words = lines.next().unwrap_or_default().split(|b| *b == b' ');
    let mut word = || Text::slice_of(bytes, words.next().unwrap_or_default());
    let (a, b, c) = (word(), word(), word());
    let (start, version_word) = if a.starts_with("HTTP/") {
        let status = StartLine::Response {
            status: b.parse().unwrap_or(0),
        };
        (status, a)
    } else {
        (
            StartLine::Request {
                method: a,
                target: b,
            },
            c,
        )
    };
    let version = if &*version_word == "HTTP/1.0" {
        Version::Http10
    } else {
        Version::Http11
    };
    let headers = lines.take_while(|l| !l.is_empty()).filter_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        let is_token = !name.is_empty() && name.bytes().all(|c| c.is_ascii_graphic());
        is_token.then(|| (name, &line[colon + 1..]))
    });
    let mut head = build_head(bytes, start, version, headers);
    head.malformed = true;
    head
}
