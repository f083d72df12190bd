//! One direction of an HTTP/1.x connection: message heads and ends found in the bytes each
//! syscall moved.
//!
//! Each syscall arrives as a [`Chunk`]: the captured prefix of the bytes moved, how many bytes
//! after it were not captured (the gap), and the last bytes of the syscall's buffer. Heads
//! split over several syscalls are joined; bodies are skipped by length (Content-Length), by
//! decoding chunked framing, or, once a gap hides the chunk framing, by looking for the
//! terminating `0\r\n\r\n` in the tails. A head larger than what was captured is parsed as
//! far as it goes and marked truncated.
//!
//! A head found whole in one chunk is copied once, out of the ring buffer, into the [`Bytes`]
//! its fields slice; a head split over chunks is gathered in a buffer that becomes those bytes
//! without another copy.
//!
//! The stream reports heads and message ends as [`Output`]s; how a body is delimited can depend
//! on the other direction (a response to HEAD has none), so the caller decides it.

use bytes::{Bytes, BytesMut};

use super::{
    chunked::{ChunkDecoder, Decoded, Roll},
    parse::{Body, could_start_http, find_head_end, parse_head, starts_like_http},
};
use crate::{
    kernel::write::ids::KernelIds,
    protocol::{Chunk, http::Head},
};

/// Heads longer than this are cut and parsed as truncated: the most a direction of a connection
/// buffers while a head arrives in pieces (a slow or drip-fed client). Larger heads are rare
/// (Envoy's own limit is 60 KiB) and what the agent reads sits in their first lines.
pub const MAX_HEAD: usize = 16 * 1024;

/// A head cut by lost events is reported only if this much of it was seen.
const MIN_REPORTED_HEAD: usize = 16;

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
    /// Heads cut at [`MAX_HEAD`] bytes (parsed as truncated).
    pub oversized_heads: u64,
    /// Kernel events that never arrived (ring buffer full), seen as a jump in their socket's
    /// sequence numbers: the stream resynchronised at the next message start. Counted by the
    /// connection as it finds them.
    pub lost_events: u64,
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    /// A head has started; its bytes so far are in `HalfStream::head`.
    Head {
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
    /// The part of a head seen in earlier chunks (empty while a head fits in one chunk).
    head: BytesMut,
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
        let State::Head { start_ns, kernel } = self.state else {
            return None;
        };
        let before = self.head.len();
        let fresh = &data[..data.len().min(MAX_HEAD.saturating_sub(before))];
        if before == 0 && starts_like_http(fresh) {
            // The usual case: the whole head is in this chunk, and is copied just once.
            if let Some(pos) = find_head_end(fresh) {
                let end = pos + 4;
                let bytes = Bytes::copy_from_slice(&fresh[..end]);
                self.complete(bytes, start_ns, kernel, end_ns, rule, out);
                return Some((&data[end..], gap));
            }
        }
        self.head.extend_from_slice(fresh);
        if !starts_like_http(&self.head) && !could_start_http(&self.head) {
            // The tentative start was not one after all.
            self.stats.skipped_bytes += self.head.len() as u64 + gap;
            self.head = BytesMut::new();
            self.state = State::Idle;
            return None;
        }
        let search_from = before.saturating_sub(3);
        if let Some(pos) = find_head_end(&self.head[search_from..]) {
            let end = search_from + pos + 4;
            // The bytes after the head are fed again from `data`.
            let bytes = self.head.split_to(end).freeze();
            // Hand the buffer back rather than keep its capacity for the connection's life.
            self.head = BytesMut::new();
            self.complete(bytes, start_ns, kernel, end_ns, rule, out);
            return Some((&data[end - before..], gap));
        }
        if gap == 0 && self.head.len() < MAX_HEAD {
            return None;
        }
        if self.head.len() >= MAX_HEAD {
            self.stats.oversized_heads += 1;
        }
        // The rest of the head is not visible: use what we have.
        let bytes = std::mem::take(&mut self.head).freeze();
        let mut head = self.parse(bytes, true, start_ns);
        head.kernel = kernel;
        rule(&head);
        out.push(Output::Head(Box::new(head)));
        self.state = State::Body(BodyState::Unknown);
        self.last_ns = end_ns;
        None
    }

    /// Parses a head, counting the ones httparse refused.
    fn parse(&mut self, bytes: Bytes, truncated: bool, start_ns: u64) -> Head {
        let head = parse_head(bytes, truncated, start_ns);
        if head.malformed {
            self.stats.malformed_heads += 1;
        }
        head
    }

    /// A complete head: parsed, reported, and its body rule decides what follows.
    fn complete(
        &mut self,
        bytes: Bytes,
        start_ns: u64,
        kernel: Option<KernelIds>,
        end_ns: u64,
        rule: &mut dyn FnMut(&Head) -> Body,
        out: &mut Vec<Output>,
    ) {
        let mut head = self.parse(bytes, false, start_ns);
        head.kernel = kernel;
        self.start_body(head, rule, end_ns, out);
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

    /// Kernel events of this direction were lost before the next chunk: a head in
    /// progress is reported as far as it went (truncated), a body's end can no longer be found
    /// by its framing and comes with the next message start, and bytes that start no message
    /// are skipped until one does.
    pub fn lost(&mut self, out: &mut Vec<Output>) {
        match std::mem::take(&mut self.state) {
            State::Idle => {}
            // Not even a request line: nothing worth reporting.
            State::Head { .. } if self.head.len() < MIN_REPORTED_HEAD => {
                self.stats.skipped_bytes += self.head.len() as u64;
                self.head = BytesMut::new();
            }
            State::Head { start_ns, kernel } => {
                let bytes = std::mem::take(&mut self.head).freeze();
                let mut head = self.parse(bytes, true, start_ns);
                head.kernel = kernel;
                out.push(Output::Head(Box::new(head)));
                self.state = State::Body(BodyState::Unknown);
            }
            State::Body(_) => self.state = State::Body(BodyState::Unknown),
        }
    }

    /// Bytes held for a head that is still arriving.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.head.capacity()
    }

    /// The connection closed: a message delimited by close (or of unknown length) ends at the
    /// last byte seen; a head cut short is reported as truncated.
    pub fn close(&mut self, out: &mut Vec<Output>) {
        match std::mem::take(&mut self.state) {
            State::Idle => {}
            State::Head { start_ns, kernel } => {
                let bytes = std::mem::take(&mut self.head).freeze();
                let mut head = self.parse(bytes, true, start_ns);
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

#[cfg(test)]
mod tests;
