//! HTTP/1.x message assembly from what the kernel captured of each syscall.
//!
//! A [`HalfStream`] is one direction of one connection. Each syscall arrives as a [`Chunk`]: the
//! captured prefix of the bytes moved, how many bytes after it were not captured (the gap),
//! and the last bytes of the syscall's buffer. Heads split over several syscalls are joined;
//! bodies are skipped by length (Content-Length), by decoding chunked framing, or, once a gap
//! hides the chunk framing, by looking for the terminating `0\r\n\r\n` in the tails. A head
//! larger than what was captured is parsed as far as it goes and marked truncated.
//!
//! The stream reports heads and message ends as [`Output`]s; how a body is delimited can depend
//! on the other direction (a response to HEAD has none), so the caller decides it.

use std::fmt;

use crate::{context::ContextHeaders, tracker::KernelIds};

/// Heads longer than this are cut and parsed as truncated.
const MAX_HEAD: usize = 64 * 1024;
/// Bytes of the stream's end remembered to find a chunked terminator across syscalls.
const ROLL_LEN: usize = 16;

/// What one syscall moved, as far as it was captured.
#[derive(Clone, Copy, Debug)]
pub struct Chunk<'a> {
    pub data: &'a [u8],
    /// Bytes moved after `data` that were not captured.
    pub gap: u64,
    /// Last bytes of the syscall's buffer, when `gap > 0`.
    pub tail: &'a [u8],
    /// When the first byte of the chunk was seen (request start).
    pub start_ns: u64,
    /// When the chunk was complete (message end).
    pub end_ns: u64,
    /// Ids the kernel chose for the heads that start in this chunk, in order.
    pub kernel: &'a [KernelIds],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, target: String },
    Response { status: u16 },
}

/// The parts of a message head the tracer uses. Credential headers are never kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub start: StartLine,
    pub minor_version: u8,
    pub host: Option<String>,
    pub user_agent: Option<String>,
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

/// What is left of a chunk after one step of the state machine; `None` once it is used up.
type Rest<'a> = Option<(&'a [u8], u64)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    Head(Box<Head>),
    End { end_ns: u64 },
}

/// Counters of what could not be followed exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Bytes that did not belong to any message we could see the start of.
    pub skipped_bytes: u64,
    /// Heads that httparse rejected.
    pub malformed_heads: u64,
    /// Times the chunked framing was lost in a capture gap (tail detection took over).
    pub lost_sync: u64,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Head {
        buf: Vec<u8>,
        start_ns: u64,
        kernel: Option<KernelIds>,
    },
    Body(BodyState),
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(ChunkDecoder),
    /// Chunked framing lost: wait for the terminator in the stream's last bytes.
    TailScan(Roll),
    UntilClose,
    Unknown,
}

/// One direction of a connection.
#[derive(Debug, Default)]
pub struct HalfStream {
    state: State,
    last_ns: u64,
    pub stats: StreamStats,
}

impl HalfStream {
    /// Feeds one chunk. `rule` decides the body of each head found; outputs are appended.
    pub fn feed(
        &mut self,
        chunk: &Chunk<'_>,
        rule: &mut dyn FnMut(&Head) -> Body,
        out: &mut Vec<Output>,
    ) {
        let mut rest = Some((chunk.data, chunk.gap));
        let mut kernel = chunk.kernel.iter();
        // A head that began in an earlier chunk with no ids (Go reads a request's first byte
        // alone) takes the ids the kernel put on the chunk that completes its request line.
        if let State::Head {
            kernel: pending @ None,
            ..
        } = &mut self.state
        {
            *pending = kernel.next().copied();
        }
        while let Some((data, gap)) = rest {
            rest = match self.state {
                State::Idle => self.on_idle(data, gap, chunk.start_ns, &mut kernel),
                State::Head { .. } => self.on_head(data, gap, chunk.end_ns, rule, out),
                State::Body(_) => self.on_body(data, gap, chunk, out),
            };
        }
    }

    /// Between messages: only the start of a request or status line begins one.
    fn on_idle<'a>(
        &mut self,
        data: &'a [u8],
        gap: u64,
        start_ns: u64,
        kernel: &mut std::slice::Iter<'_, KernelIds>,
    ) -> Rest<'a> {
        if data.is_empty() {
            self.stats.skipped_bytes += gap;
            return None;
        }
        // A lone first byte is normal: Go's server reads one byte ahead while a handler runs,
        // so "G" and "ET / HTTP/1.1..." come in separate reads.
        if !(starts_like_http(data) || gap == 0 && could_start_http(data)) {
            self.stats.skipped_bytes += data.len() as u64 + gap;
            return None;
        }
        self.state = State::Head {
            buf: Vec::new(),
            start_ns,
            kernel: kernel.next().copied(),
        };
        Some((data, gap))
    }

    /// Collecting a head until its blank line, or until a capture gap hides the rest.
    fn on_head<'a>(
        &mut self,
        data: &'a [u8],
        gap: u64,
        end_ns: u64,
        rule: &mut dyn FnMut(&Head) -> Body,
        out: &mut Vec<Output>,
    ) -> Rest<'a> {
        let State::Head {
            buf,
            start_ns,
            kernel,
        } = &mut self.state
        else {
            return None;
        };
        let start_ns = *start_ns;
        let kernel = *kernel;
        let before = buf.len();
        let room = MAX_HEAD.saturating_sub(before);
        buf.extend_from_slice(&data[..data.len().min(room)]);
        if !starts_like_http(buf) && !could_start_http(buf) {
            // The tentative start was not one after all.
            self.stats.skipped_bytes += buf.len() as u64 + gap;
            self.state = State::Idle;
            return None;
        }
        let search_from = before.saturating_sub(3);
        if let Some(pos) = find(&buf[search_from..], b"\r\n\r\n") {
            let end = search_from + pos + 4;
            let mut head = parse_head(&buf[..end], false, start_ns, &mut self.stats);
            head.kernel = kernel;
            self.start_body(head, rule, end_ns, out);
            return Some((&data[end - before..], gap));
        }
        if gap == 0 && buf.len() < MAX_HEAD {
            return None;
        }
        // The rest of the head is not visible: use what we have.
        let mut head = parse_head(buf, true, start_ns, &mut self.stats);
        head.kernel = kernel;
        rule(&head);
        out.push(Output::Head(Box::new(head)));
        self.state = State::Body(BodyState::Unknown);
        self.last_ns = end_ns;
        None
    }

    /// Skipping a body by its framing.
    fn on_body<'a>(
        &mut self,
        data: &'a [u8],
        gap: u64,
        chunk: &Chunk<'_>,
        out: &mut Vec<Output>,
    ) -> Rest<'a> {
        let State::Body(body) = &mut self.state else {
            return None;
        };
        let new_message = !data.is_empty() && starts_like_http(data);
        match body {
            BodyState::Length(remaining) => {
                let visible = data.len() as u64;
                if *remaining > visible + gap {
                    *remaining -= visible + gap;
                    self.last_ns = chunk.end_ns;
                    return None;
                }
                let rest = if *remaining <= visible {
                    (
                        &data[usize::try_from(*remaining).unwrap_or(data.len())..],
                        gap,
                    )
                } else {
                    (&data[data.len()..], gap - (*remaining - visible))
                };
                self.finish(chunk.end_ns, out);
                Some(rest)
            }
            BodyState::Chunked(dec) => match dec.feed(data) {
                Decoded::Done(used) => {
                    self.finish(chunk.end_ns, out);
                    Some((&data[used..], gap))
                }
                Decoded::More if gap == 0 || dec.skip(gap) => {
                    self.last_ns = chunk.end_ns;
                    None
                }
                Decoded::More => {
                    self.last_ns = chunk.end_ns;
                    self.lose_sync(chunk.tail, chunk.end_ns, out);
                    None
                }
                Decoded::Invalid => {
                    self.lose_sync(if gap > 0 { chunk.tail } else { data }, chunk.end_ns, out);
                    None
                }
            },
            // The terminator was never seen (it hid in a gap without a tail), or the length is
            // unknown: a new message start is proof the old one ended.
            BodyState::TailScan(_) | BodyState::Unknown if new_message => {
                let end = self.last_ns;
                self.finish(end, out);
                Some((data, gap))
            }
            BodyState::TailScan(roll) => {
                if gap > 0 {
                    roll.clear();
                    roll.push(chunk.tail);
                } else {
                    roll.push(data);
                }
                if roll.ends_chunked() {
                    self.finish(chunk.end_ns, out);
                } else {
                    self.last_ns = chunk.end_ns;
                }
                None
            }
            BodyState::UntilClose | BodyState::Unknown => {
                self.last_ns = chunk.end_ns;
                None
            }
        }
    }

    /// Chunked framing is lost: from now on the end is found from the stream's last bytes.
    fn lose_sync(&mut self, last_bytes: &[u8], end_ns: u64, out: &mut Vec<Output>) {
        self.stats.lost_sync += 1;
        let mut roll = Roll::default();
        roll.push(last_bytes);
        if roll.ends_chunked() {
            self.finish(end_ns, out);
        } else {
            self.state = State::Body(BodyState::TailScan(roll));
        }
    }

    fn start_body(
        &mut self,
        head: Head,
        rule: &mut dyn FnMut(&Head) -> Body,
        end_ns: u64,
        out: &mut Vec<Output>,
    ) {
        let body = rule(&head);
        out.push(Output::Head(Box::new(head)));
        self.last_ns = end_ns;
        self.state = match body {
            Body::None | Body::Length(0) => {
                out.push(Output::End { end_ns });
                State::Idle
            }
            Body::Length(n) => State::Body(BodyState::Length(n)),
            Body::Chunked => State::Body(BodyState::Chunked(ChunkDecoder::default())),
            Body::UntilClose => State::Body(BodyState::UntilClose),
            Body::Unknown => State::Body(BodyState::Unknown),
        };
    }

    fn finish(&mut self, end_ns: u64, out: &mut Vec<Output>) {
        out.push(Output::End { end_ns });
        self.state = State::Idle;
    }

    /// Ends a message whose end cannot be seen in this direction (unknown framing, or chunked
    /// framing lost in a capture gap) because the other direction moved on. Returns whether a
    /// message was ended.
    pub fn end_unknown(&mut self, out: &mut Vec<Output>) -> bool {
        if matches!(
            self.state,
            State::Body(BodyState::Unknown | BodyState::TailScan(_))
        ) {
            let end = self.last_ns;
            self.finish(end, out);
            return true;
        }
        false
    }

    /// The connection closed: a message delimited by close (or of unknown length) ends at the
    /// last byte seen; a head cut short is reported as truncated.
    pub fn close(&mut self, out: &mut Vec<Output>) {
        match std::mem::take(&mut self.state) {
            State::Idle => {}
            State::Head {
                buf,
                start_ns,
                kernel,
            } => {
                let mut head = parse_head(&buf, true, start_ns, &mut self.stats);
                head.kernel = kernel;
                out.push(Output::Head(Box::new(head)));
                out.push(Output::End {
                    end_ns: self.last_ns.max(start_ns),
                });
            }
            State::Body(_) => out.push(Output::End {
                end_ns: self.last_ns,
            }),
        }
    }
}

/// The last bytes of a stream, to spot the chunked terminator across syscalls.
#[derive(Debug, Default)]
struct Roll {
    buf: Vec<u8>,
}

impl Roll {
    fn push(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&bytes[bytes.len().saturating_sub(ROLL_LEN)..]);
        let excess = self.buf.len().saturating_sub(ROLL_LEN);
        self.buf.drain(..excess);
    }

    fn clear(&mut self) {
        self.buf.clear();
    }

    fn ends_chunked(&self) -> bool {
        self.buf.ends_with(b"\n0\r\n\r\n") || self.buf == b"0\r\n\r\n"
    }
}

#[derive(Debug, Default)]
enum ChunkState {
    /// Reading the hex size line (extensions allowed).
    #[default]
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty line.
    Trailer,
}

/// Incremental chunked-body decoder that never needs the data bytes themselves.
#[derive(Debug, Default)]
struct ChunkDecoder {
    state: ChunkState,
    line: Vec<u8>,
    size: u64,
    size_digits: u32,
    in_ext: bool,
}

enum Decoded {
    Done(usize),
    More,
    Invalid,
}

impl ChunkDecoder {
    fn feed(&mut self, data: &[u8]) -> Decoded {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                ChunkState::Size => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            if self.size_digits == 0 {
                                return Decoded::Invalid;
                            }
                            self.state = if self.size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(self.size)
                            };
                            self.size = 0;
                            self.size_digits = 0;
                            self.in_ext = false;
                        }
                        b'\r' => {}
                        b';' => self.in_ext = true,
                        _ if self.in_ext => {}
                        _ => {
                            let Some(d) = (b as char).to_digit(16) else {
                                return Decoded::Invalid;
                            };
                            self.size_digits += 1;
                            if self.size_digits > 15 {
                                return Decoded::Invalid;
                            }
                            self.size = self.size * 16 + u64::from(d);
                        }
                    }
                }
                ChunkState::Data(n) => {
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(data.len() - i);
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Decoded::Invalid,
                    }
                }
                ChunkState::Trailer => {
                    let b = data[i];
                    i += 1;
                    if b == b'\n' {
                        let empty = self.line.is_empty() || self.line == b"\r";
                        self.line.clear();
                        if empty {
                            return Decoded::Done(i);
                        }
                    } else if self.line.len() < 1024 {
                        self.line.push(b);
                    }
                }
            }
        }
        Decoded::More
    }

    /// Skips uncaptured bytes; false if they hide framing (size lines) we needed.
    fn skip(&mut self, gap: u64) -> bool {
        match self.state {
            ChunkState::Data(n) if gap <= n => {
                self.state = if gap == n {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data(n - gap)
                };
                true
            }
            _ => false,
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

const STARTS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"PATCH ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
    b"HTTP/1.",
];

/// A request line with a known method, or a status line.
#[must_use]
pub fn starts_like_http(data: &[u8]) -> bool {
    STARTS.iter().any(|s| data.starts_with(s))
}

/// Too short to tell, but the beginning of a request or status line.
fn could_start_http(data: &[u8]) -> bool {
    !data.is_empty()
        && STARTS
            .iter()
            .any(|s| data.len() < s.len() && s.starts_with(data))
}

/// Parses a complete head, or (when `truncated`) as much of one as was captured.
fn parse_head(bytes: &[u8], truncated: bool, start_ns: u64, stats: &mut StreamStats) -> Head {
    let owned;
    let complete: &[u8] = if truncated {
        // Keep whole header lines only and close the head, so httparse can read them.
        let cut = find_last(bytes, b"\r\n").map_or(0, |p| p + 2);
        let mut v = bytes[..cut].to_vec();
        v.extend_from_slice(b"\r\n");
        owned = v;
        &owned
    } else {
        bytes
    };
    if let Some(mut head) = parse_with_httparse(complete) {
        head.truncated = truncated;
        head.start_ns = start_ns;
        head
    } else {
        stats.malformed_heads += 1;
        // A capture that ends inside the start line still tells the method and target.
        let whole_lines = if find(bytes, b"\r\n").is_some() {
            complete
        } else {
            bytes
        };
        let mut head = parse_lenient(whole_lines);
        head.truncated = truncated;
        head.start_ns = start_ns;
        head
    }
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn parse_with_httparse(bytes: &[u8]) -> Option<Head> {
    // Most heads fit the array on the stack; only a head with more headers pays for the heap.
    let mut small = [httparse::EMPTY_HEADER; 64];
    let mut large = Vec::new();
    for capacity in [64, 512] {
        let headers: &mut [httparse::Header<'_>] = if capacity == small.len() {
            &mut small
        } else {
            large.resize(capacity, httparse::EMPTY_HEADER);
            &mut large
        };
        let parsed = if bytes.starts_with(b"HTTP/") {
            let mut res = httparse::Response::new(headers);
            match res.parse(bytes) {
                Ok(httparse::Status::Complete(_)) => Some(build_head(
                    StartLine::Response { status: res.code? },
                    res.version?,
                    res.headers.iter().map(|h| (h.name, h.value)),
                )),
                Err(httparse::Error::TooManyHeaders) => continue,
                _ => None,
            }
        } else {
            let mut req = httparse::Request::new(headers);
            match req.parse(bytes) {
                Ok(httparse::Status::Complete(_)) => Some(build_head(
                    StartLine::Request {
                        method: req.method?.to_owned(),
                        target: req.path?.to_owned(),
                    },
                    req.version?,
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

fn build_head<'a>(
    start: StartLine,
    minor_version: u8,
    headers: impl Iterator<Item = (&'a str, &'a [u8])>,
) -> Head {
    let mut head = Head {
        start,
        minor_version,
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
        let value = || String::from_utf8_lossy(raw).trim().to_owned();
        if name.eq_ignore_ascii_case("host") {
            head.host.get_or_insert_with(value);
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent.get_or_insert_with(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value()
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if let Ok(v) = std::str::from_utf8(raw) {
            head.context.offer(name, v);
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
fn parse_lenient(bytes: &[u8]) -> Head {
    let mut lines = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut words = first.split(' ');
    let (a, b, c) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let (start, version) = if a.starts_with("HTTP/") {
        let status = StartLine::Response {
            status: b.parse().unwrap_or(0),
        };
        (status, a)
    } else {
        let request = StartLine::Request {
            method: a.to_owned(),
            target: b.to_owned(),
        };
        (request, c)
    };
    let minor_version = u8::from(version != "HTTP/1.0");
    let headers = lines.take_while(|l| !l.is_empty()).filter_map(|line| {
        let colon = line.iter().position(|b| *b == b':')?;
        let name = std::str::from_utf8(&line[..colon]).ok()?;
        let is_token = !name.is_empty() && name.bytes().all(|c| c.is_ascii_graphic());
        is_token.then(|| (name, &line[colon + 1..]))
    });
    let mut head = build_head(start, minor_version, headers);
    head.malformed = true;
    head
}

impl fmt::Display for StartLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request { method, target } => write!(f, "{method} {target}"),
            Self::Response { status } => write!(f, "{status}"),
        }
    }
}

#[cfg(test)]
mod tests;
