//! One HTTP/1.x connection: the two directions' streams and the requests waiting for their
//! responses.
//!
//! Which end of the socket we are is learnt from the first request head: read means we are the
//! server, written means we are the client. Responses pair with requests in order (HTTP/1.1
//! pipelining answers in order); interim 1xx responses are skipped.

use std::{collections::VecDeque, net::SocketAddr};

use bytes::Bytes;

use super::{
    parse::Body,
    stream::{HalfStream, Output, StreamStats},
};
use crate::{
    kernel::write::ids::KernelIds,
    protocol::{
        Chunk, Direction, Exchange, ExchangeSink, Role,
        http::{Head, StartLine},
    },
};

/// Requests one connection keeps waiting for their responses. Beyond it (responses not
/// captured, or a client pipelining without end) the oldest ends without its response, and is
/// counted in [`Http1Stats::abandoned_requests`]: a keep-alive connection must not grow without
/// bound.
pub const MAX_PENDING: usize = 64;

/// What the HTTP/1 assembly could not follow exactly, over all connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http1Stats {
    /// Response heads with no request waiting for them.
    pub orphan_responses: u64,
    /// Requests ended without a response because their connection had [`MAX_PENDING`] newer
    /// ones waiting.
    pub abandoned_requests: u64,
    /// Responses reported before the write of their request, put back in order.
    pub reordered_responses: u64,
    pub streams: StreamStats,
}

/// Where a connection reports: the trace side, and the counters of what it could not follow.
pub struct Report<'a, S> {
    pub sink: &'a mut S,
    pub stats: &'a mut Http1Stats,
}

pub struct Conn<S: ExchangeSink> {
    pid: u32,
    role: Option<Role>,
    /// The other end of the socket, when known.
    pub peer: Option<SocketAddr>,
    ingress: HalfStream,
    egress: HalfStream,
    /// Requests whose final response head has not arrived: true for HEAD requests.
    awaiting: VecDeque<bool>,
    exchanges: VecDeque<Exchange<S::Started>>,
    /// An interim (1xx) response head was seen; its end is not a real response end.
    interim: bool,
    /// Kernel time of the last activity.
    pub last_ns: u64,
    /// A response read before any request waits for it (see `Conn::feed`).
    parked: Option<Parked>,
}

/// A read kept back until the connection's next write: one copy of its bytes (data, then
/// tail), outliving the ring-buffer record they came in.
struct Parked {
    tid: u32,
    bytes: Bytes,
    data_len: usize,
    kernel: Vec<KernelIds>,
    gap: u64,
    start_ns: u64,
    end_ns: u64,
}

impl Parked {
    fn keep(tid: u32, chunk: &Chunk<'_>) -> Self {
        Self {
            tid,
            bytes: Bytes::from([chunk.data, chunk.tail].concat()),
            data_len: chunk.data.len(),
            kernel: chunk.kernel.to_vec(),
            gap: chunk.gap,
            start_ns: chunk.start_ns,
            end_ns: chunk.end_ns,
        }
    }

    /// The chunk as it was read.
    fn chunk(&self) -> Chunk<'_> {
        let (data, tail) = self.bytes.split_at(self.data_len);
        Chunk {
            data,
            tail,
            kernel: &self.kernel,
            gap: self.gap,
            start_ns: self.start_ns,
            end_ns: self.end_ns,
        }
    }
}

impl<S: ExchangeSink> Conn<S> {
    #[must_use]
    pub fn new(pid: u32, now_ns: u64) -> Self {
        Self {
            pid,
            role: None,
            peer: None,
            ingress: HalfStream::default(),
            egress: HalfStream::default(),
            awaiting: VecDeque::new(),
            exchanges: VecDeque::new(),
            interim: false,
            last_ns: now_ns,
            parked: None,
        }
    }

    /// The direction requests flow in, once the role is known.
    fn request_dir(&self) -> Option<Direction> {
        self.role.map(|r| match r {
            Role::Server => Direction::Ingress,
            Role::Client => Direction::Egress,
        })
    }

    /// Feeds one chunk. On a client connection the response can be reported before the request
    /// that caused it: over loopback the server answers while the writing thread is still on
    /// its way out of `write`, and the reading thread's event may be sent first. So a response
    /// head that no request waits for is kept back until the connection's next write (or next
    /// read, or close), and then fed after it if that write began before the read returned.
    /// Reads keep their order among themselves.
    pub fn feed(&mut self, dir: Direction, tid: u32, chunk: &Chunk<'_>, to: &mut Report<'_, S>) {
        if dir == Direction::Ingress {
            if self.parked.is_none() && self.is_early_response(chunk) {
                self.parked = Some(Parked::keep(tid, chunk));
                self.last_ns = self.last_ns.max(chunk.end_ns);
                return;
            }
            self.unpark(to);
        } else if self
            .parked
            .as_ref()
            .is_some_and(|p| p.end_ns < chunk.start_ns)
        {
            // A read that returned before this write began cannot answer it: it answers a
            // request not seen (the agent started mid-connection). Paired with this one, it
            // would end the exchange before its request started.
            self.unpark(to);
        }
        self.feed_now(dir, tid, chunk, to);
        if dir == Direction::Egress {
            if self.parked.is_some() {
                to.stats.reordered_responses += 1;
            }
            self.unpark(to);
        }
    }

    /// A read that starts like a response on a connection that is not a server's and has no
    /// request waiting for a response.
    fn is_early_response(&self, chunk: &Chunk<'_>) -> bool {
        self.role != Some(Role::Server)
            && chunk.data.starts_with(b"HTTP/")
            && !self.exchanges.iter().any(|x| x.response.is_none())
    }

    fn unpark(&mut self, to: &mut Report<'_, S>) {
        if let Some(p) = self.parked.take() {
            self.feed_now(Direction::Ingress, p.tid, &p.chunk(), to);
        }
    }

    fn feed_now(&mut self, dir: Direction, tid: u32, chunk: &Chunk<'_>, to: &mut Report<'_, S>) {
        let mut out = Vec::new();
        let awaiting = &mut self.awaiting;
        let mut rule = |h: &Head| body_rule(h, awaiting);
        match dir {
            Direction::Ingress => self.ingress.feed(chunk, &mut rule, &mut out),
            Direction::Egress => self.egress.feed(chunk, &mut rule, &mut out),
        }
        self.last_ns = self.last_ns.max(chunk.end_ns);
        self.process(dir, tid, out, to);
    }

    fn process(&mut self, dir: Direction, tid: u32, out: Vec<Output>, to: &mut Report<'_, S>) {
        for o in out {
            match o {
                Output::Head(head) if head.is_request() => {
                    self.on_request(dir, tid, *head, to);
                }
                Output::Head(head) => {
                    if Some(dir) == self.request_dir() {
                        continue;
                    }
                    if let StartLine::Response { status: 100..=199 } = head.start {
                        self.interim = true;
                        continue;
                    }
                    match self.exchanges.iter_mut().find(|x| x.response.is_none()) {
                        Some(x) => x.response = Some(*head),
                        None => to.stats.orphan_responses += 1,
                    }
                }
                Output::End { end_ns } => {
                    if Some(dir) == self.request_dir() || self.role.is_none() {
                        continue;
                    }
                    if self.interim {
                        self.interim = false;
                        continue;
                    }
                    if self.exchanges.front().is_some_and(|x| x.response.is_some()) {
                        let x = self.exchanges.pop_front().expect("front exists");
                        to.sink.finish(x, end_ns);
                    }
                }
            }
        }
    }

    fn on_request(&mut self, dir: Direction, tid: u32, head: Head, to: &mut Report<'_, S>) {
        if self.role.is_none() {
            self.role = Some(match dir {
                Direction::Ingress => Role::Server,
                Direction::Egress => Role::Client,
            });
        }
        if Some(dir) != self.request_dir() {
            // A request head flowing the wrong way (not HTTP/1 as we know it): keep pairing sane.
            self.awaiting.pop_back();
            return;
        }
        // A response of unknown length ends when the next request starts.
        let mut ended = Vec::new();
        let (response_stream, response_dir) = match dir {
            Direction::Ingress => (&mut self.egress, Direction::Egress),
            Direction::Egress => (&mut self.ingress, Direction::Ingress),
        };
        if response_stream.end_unknown(&mut ended) {
            self.process(response_dir, tid, ended, to);
        }
        if self.exchanges.len() >= MAX_PENDING
            && let Some(oldest) = self.exchanges.pop_front()
        {
            to.stats.abandoned_requests += 1;
            to.sink.finish(oldest, self.last_ns);
        }
        let role = self.role.unwrap_or(Role::Server);
        let started = to.sink.request(role, self.pid, tid, &head);
        self.exchanges.push_back(Exchange {
            role,
            pid: self.pid,
            request: head,
            response: None,
            peer: self.peer,
            started,
        });
    }

    /// Flushes everything: messages cut by the close end at the last byte seen, requests
    /// without a response end without one.
    pub fn close(mut self, to: &mut Report<'_, S>) {
        self.unpark(to);
        for dir in [Direction::Ingress, Direction::Egress] {
            let mut out = Vec::new();
            match dir {
                Direction::Ingress => self.ingress.close(&mut out),
                Direction::Egress => self.egress.close(&mut out),
            }
            self.process(dir, 0, out, to);
        }
        let last = self.last_ns;
        for x in self.exchanges.drain(..) {
            to.sink.finish(x, last);
        }
        for s in [self.ingress.stats, self.egress.stats] {
            to.stats.streams.skipped_bytes += s.skipped_bytes;
            to.stats.streams.malformed_heads += s.malformed_heads;
            to.stats.streams.lost_sync += s.lost_sync;
        }
    }
}

fn body_rule(head: &Head, awaiting: &mut VecDeque<bool>) -> Body {
    match &head.start {
        StartLine::Request { method, .. } => {
            if awaiting.len() >= MAX_PENDING {
                awaiting.pop_front();
            }
            awaiting.push_back(&**method == "HEAD");
            head.request_body()
        }
        StartLine::Response { status } => {
            let answers_head = awaiting.front().copied().unwrap_or(false);
            if *status >= 200 {
                awaiting.pop_front();
            }
            head.response_body(answers_head)
        }
    }
}
