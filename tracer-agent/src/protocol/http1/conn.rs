//! One HTTP/1.x connection: the two directions' streams and the requests waiting for their
//! responses.
//!
//! Which end of the socket we are is learnt from the first request head: read means we are the
//! server, written means we are the client. Responses pair with requests in order (HTTP/1.1
//! pipelining answers in order); interim 1xx responses are skipped.
//!
//! Order alone cannot survive a lost event: one response missing would shift every later pair
//! of a keep-alive connection that lives for hours. So each data event carries its socket's
//! sequence number for its direction, and a jump is a loss. The direction's stream then
//! resynchronises at the next message start, and if responses may have been lost, the next
//! response head goes to the newest request that started before it (a client that does not
//! pipeline sends a request only once the previous response is in): the older requests waiting
//! are given up, counted, and the pairs after them are exact again.
//!
//! Bounds: [`MAX_PENDING`] requests waiting for a response per connection (more are given up,
//! counted, and pairing restarts as after a loss); a head in progress holds at most
//! `stream::MAX_HEAD` bytes per direction.

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
        http2::conn::Upgrade,
        seq::Seq,
    },
};

/// Requests waiting for their response on one connection (a pipelining depth no real client
/// reaches); past it the oldest are given up.
pub const MAX_PENDING: usize = 1024;

/// What one waiting request costs, for the connection table's memory budget: the exchange and
/// the head bytes it keeps (a typical head; a head is at most the capture size).
pub const PENDING_COST: usize = size_of::<Exchange<()>>() + 512;

/// What the HTTP/1 assembly could not follow exactly, over all connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http1Stats {
    /// Response heads with no request waiting for them.
    pub orphan_responses: u64,
    /// Responses reported before the write of their request, put back in order.
    pub reordered_responses: u64,
    /// Requests given up without their response: it was in events that were lost, or more
    /// than [`MAX_PENDING`] requests were waiting. Their spans end without a status.
    pub abandoned_requests: u64,
    /// Times a connection had more than [`MAX_PENDING`] requests waiting.
    pub pending_full: u64,
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
    /// Requests whose final response head has not arrived, oldest first: whether it is a HEAD
    /// request, and when it started. In step with the `exchanges` that have no response.
    awaiting: VecDeque<Awaiting>,
    /// Boxed: a deque keeps its capacity (four slots at least once used), and an idle
    /// keep-alive connection must not keep four exchanges' worth of memory (3 KiB) for its life.
    exchanges: VecDeque<Box<Exchange<S::Started>>>,
    /// An interim (1xx) response head was seen; its end is not a real response end.
    interim: bool,
    /// Kernel time of the last activity.
    pub last_ns: u64,
    /// A response read before any request waits for it (see `Conn::feed`); boxed, as few
    /// connections ever hold one and every entry pays for the space.
    parked: Option<Box<Parked>>,
    seq: Seq,
    resync: Resync,
}

/// Responses may have been lost: the next final response head answers the newest request that
/// started before it. One flag for the body rule, one for the pairing, since the body rule runs
/// as heads are found and the pairing once the chunk is done.
#[derive(Clone, Copy, Debug, Default)]
struct Resync {
    rule: bool,
    pair: bool,
}

impl Resync {
    fn set(&mut self, on: bool) {
        *self = Self { rule: on, pair: on };
    }
}

#[derive(Clone, Copy, Debug)]
struct Awaiting {
    head_request: bool,
    start_ns: u64,
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
            seq: Seq::default(),
            resync: Resync::default(),
        }
    }

    /// The socket was just opened (accept/connect): its events are numbered from 0.
    pub fn opened(&mut self) {
        self.seq.opened();
    }

    /// Memory held beyond the table entry itself: waiting requests, heads in progress and a
    /// response kept back.
    #[must_use]
    pub fn footprint(&self) -> usize {
        self.exchanges.len() * PENDING_COST
            + self.ingress.buffered()
            + self.egress.buffered()
            + self.parked.as_ref().map_or(0, |p| p.bytes.len())
    }

    /// `lost` events of `dir` never arrived: the stream resynchronises, and the requests that
    /// may have lost their response are settled by the next response head.
    fn on_lost(&mut self, dir: Direction, lost: u64, to: &mut Report<'_, S>) {
        to.stats.streams.lost_events += lost;
        let mut out = Vec::new();
        match dir {
            Direction::Ingress => self.ingress.lost(&mut out),
            Direction::Egress => self.egress.lost(&mut out),
        }
        self.process(dir, 0, out, to);
        if Some(dir) == self.request_dir() {
            // A response kept back for the next write answered a request that was lost.
            if self.parked.take().is_some() {
                to.stats.orphan_responses += 1;
            }
        } else if !self.awaiting.is_empty() {
            self.resync.set(true);
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
    ///
    /// `seq` is the event's sequence number in its socket and direction, when the kernel gave one.
    pub fn feed(
        &mut self,
        dir: Direction,
        tid: u32,
        seq: Option<u32>,
        chunk: &Chunk<'_>,
        to: &mut Report<'_, S>,
    ) {
        if let Some(seq) = seq {
            let lost = self.seq.check(dir, seq);
            if lost > 0 {
                self.on_lost(dir, lost, to);
            }
        }
        if dir == Direction::Ingress {
            if self.parked.is_none() && self.is_early_response(chunk) {
                self.parked = Some(Box::new(Parked::keep(tid, chunk)));
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
        let resync = &mut self.resync.rule;
        let mut rule = |h: &Head| body_rule(h, awaiting, resync);
        match dir {
            Direction::Ingress => self.ingress.feed(chunk, &mut rule, &mut out),
            Direction::Egress => self.egress.feed(chunk, &mut rule, &mut out),
        }
        self.last_ns = self.last_ns.max(chunk.end_ns);
        self.process(dir, tid, out, to);
        if self.exchanges.len() > MAX_PENDING {
            self.give_up_pending(to);
        }
    }

    /// More requests wait than any client pipelines: the oldest are given up, and pairing
    /// restarts as after a loss.
    fn give_up_pending(&mut self, to: &mut Report<'_, S>) {
        to.stats.pending_full += 1;
        let end = self.last_ns;
        while self.exchanges.len() > 1 {
            let x = self.exchanges.pop_front().expect("more than one");
            if x.response.is_none() {
                to.stats.abandoned_requests += 1;
                self.awaiting.pop_front();
            }
            to.sink.finish(*x, end);
        }
        self.resync.set(!self.awaiting.is_empty());
    }

    /// After a loss, a final response head answers the newest waiting request that started
    /// before it; the requests waiting before that one lost their responses and are given up.
    fn resync(&mut self, head: Head, to: &mut Report<'_, S>) {
        self.resync.pair = false;
        let answered = self
            .exchanges
            .iter()
            .rposition(|x| x.response.is_none() && x.request.start_ns <= head.start_ns);
        let Some(i) = answered else {
            to.stats.orphan_responses += 1;
            return;
        };
        for _ in 0..i {
            let x = self.exchanges.pop_front().expect("i exchanges precede");
            if x.response.is_none() {
                to.stats.abandoned_requests += 1;
            }
            to.sink.finish(*x, head.start_ns);
        }
        self.exchanges[0].response = Some(head);
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
                    if self.resync.pair {
                        self.resync(*head, to);
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
                        to.sink.finish(*x, end_ns);
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
        let role = self.role.unwrap_or(Role::Server);
        let started = to.sink.request(role, self.pid, tid, &head);
        self.exchanges.push_back(Box::new(Exchange {
            role,
            pid: self.pid,
            request: head,
            response: None,
            peer: self.peer,
            started,
            http2: None,
        }));
    }

    /// The connection continues as HTTP/2 (`Upgrade: h2c` answered 101, then the client
    /// preface): the newest request still waiting for its response asked for the upgrade, and
    /// is answered on stream 1; everything else ends here. Its HTTP/2 part starts with the empty
    /// HPACK tables when the upgrade request was seen.
    pub fn upgrade(mut self, to: &mut Report<'_, S>) -> Upgrade<S::Started> {
        self.unpark(to);
        let pending = self
            .exchanges
            .iter()
            .rposition(|x| x.response.is_none())
            .and_then(|i| self.exchanges.remove(i));
        let up = Upgrade {
            pid: self.pid,
            peer: self.peer,
            last_ns: self.last_ns,
            role: self.role,
            seq: self.seq,
            opened: self.seq.followed_from_start() || pending.is_some(),
            pending,
        };
        self.close(to);
        up
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
            to.sink.finish(*x, last);
        }
        for s in [self.ingress.stats, self.egress.stats] {
            to.stats.streams.skipped_bytes += s.skipped_bytes;
            to.stats.streams.malformed_heads += s.malformed_heads;
            to.stats.streams.lost_sync += s.lost_sync;
            to.stats.streams.oversized_heads += s.oversized_heads;
        }
    }
}

fn body_rule(head: &Head, awaiting: &mut VecDeque<Awaiting>, resync: &mut bool) -> Body {
    match &head.start {
        StartLine::Request { method, .. } => {
            awaiting.push_back(Awaiting {
                head_request: &**method == "HEAD",
                start_ns: head.start_ns,
            });
            head.request_body()
        }
        StartLine::Response { status } => {
            if *status >= 200 && std::mem::take(resync) {
                // The same choice as `Conn::resync`.
                match awaiting.iter().rposition(|a| a.start_ns <= head.start_ns) {
                    Some(i) => drop(awaiting.drain(..i)),
                    // An orphan: it answers none of the requests waiting.
                    None => return head.response_body(false),
                }
            }
            let answers_head = awaiting.front().is_some_and(|a| a.head_request);
            if *status >= 200 {
                awaiting.pop_front();
            }
            head.response_body(answers_head)
        }
    }
}
