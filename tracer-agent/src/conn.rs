//! The connection table: one entry per traced socket (process, fd), holding the HTTP assembly
//! of both directions and the requests waiting for their responses.
//!
//! Which side of the socket we are on is learnt from the first request head: read means we
//! are the server (SERVER spans), written means we are the client (CLIENT spans). Responses
//! pair with requests in order (HTTP/1.1 pipelining answers in order); interim 1xx responses
//! are skipped. The table is bounded: the least recently active connection is flushed when it
//! is full, and idle connections are flushed by `sweep`.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tracer_common::{AF_INET, AF_INET6, DIR_INGRESS, SockTuple};

use crate::{
    clock::Clock,
    http::{Body, Chunk, HalfStream, Head, Output, StartLine, StreamStats},
    process::ProcessCache,
    semconv::{Exchange, build_span},
    span::{Span, SpanKind},
    tracker::{KernelIds, Tracker},
};

/// What turns exchanges into spans; shared by all connections.
pub struct SpanFactory {
    pub tracker: Tracker,
    pub processes: ProcessCache,
    pub clock: Clock,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub opened: u64,
    pub evicted: u64,
    pub idle_closed: u64,
    /// Response heads with no request waiting for them.
    pub orphan_responses: u64,
    /// Responses reported before the write of their request, put back in order.
    pub reordered_responses: u64,
    /// Spans not exported because the trace was not sampled.
    pub unsampled: u64,
    pub streams: StreamStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

struct Conn {
    pid: u32,
    role: Option<SpanKind>,
    peer: Option<SocketAddr>,
    ingress: HalfStream,
    egress: HalfStream,
    /// Requests whose final response head has not arrived: true for HEAD requests.
    awaiting: VecDeque<bool>,
    exchanges: VecDeque<Exchange>,
    /// An interim (1xx) response head was seen; its end is not a real response end.
    interim: bool,
    last_ns: u64,
    /// A response read before any request waits for it (see `Conn::feed`).
    parked: Option<Parked>,
}

/// A read kept back until the connection's next write, owned.
struct Parked {
    tid: u32,
    data: Vec<u8>,
    gap: u64,
    tail: Vec<u8>,
    start_ns: u64,
    end_ns: u64,
    kernel: Vec<KernelIds>,
}

impl Conn {
    fn new(pid: u32, now_ns: u64) -> Self {
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

    fn request_dir(&self) -> Option<Dir> {
        self.role.map(|r| match r {
            SpanKind::Server => Dir::Ingress,
            SpanKind::Client => Dir::Egress,
        })
    }

    /// Feeds one chunk. On a client connection the response can be reported before the request
    /// that caused it: over loopback the server answers while the writing thread is still on
    /// its way out of `write`, and the reading thread's event may be sent first. So a response
    /// head that no request waits for is kept back until the connection's next write (or next
    /// read, or close), and then fed after it. Reads keep their order among themselves.
    fn feed(
        &mut self,
        dir: Dir,
        tid: u32,
        chunk: &Chunk<'_>,
        f: &mut SpanFactory,
        st: &mut ConnStats,
        spans: &mut Vec<Span>,
    ) {
        if dir == Dir::Ingress {
            if self.parked.is_none() && self.is_early_response(chunk) {
                self.parked = Some(Parked {
                    tid,
                    data: chunk.data.to_vec(),
                    gap: chunk.gap,
                    tail: chunk.tail.to_vec(),
                    start_ns: chunk.start_ns,
                    end_ns: chunk.end_ns,
                    kernel: chunk.kernel.to_vec(),
                });
                self.last_ns = self.last_ns.max(chunk.end_ns);
                return;
            }
            self.unpark(f, st, spans);
        }
        self.feed_now(dir, tid, chunk, f, st, spans);
        if dir == Dir::Egress {
            if self.parked.is_some() {
                st.reordered_responses += 1;
            }
            self.unpark(f, st, spans);
        }
    }

    /// A read that starts like a response on a connection that is not a server's and has no
    /// request waiting for a response.
    fn is_early_response(&self, chunk: &Chunk<'_>) -> bool {
        self.role != Some(SpanKind::Server)
            && chunk.data.starts_with(b"HTTP/")
            && !self.exchanges.iter().any(|x| x.response.is_none())
    }

    fn unpark(&mut self, f: &mut SpanFactory, st: &mut ConnStats, spans: &mut Vec<Span>) {
        if let Some(p) = self.parked.take() {
            let chunk = Chunk {
                data: &p.data,
                gap: p.gap,
                tail: &p.tail,
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                kernel: &p.kernel,
            };
            self.feed_now(Dir::Ingress, p.tid, &chunk, f, st, spans);
        }
    }

    fn feed_now(
        &mut self,
        dir: Dir,
        tid: u32,
        chunk: &Chunk<'_>,
        f: &mut SpanFactory,
        st: &mut ConnStats,
        spans: &mut Vec<Span>,
    ) {
        let mut out = Vec::new();
        let awaiting = &mut self.awaiting;
        let mut rule = |h: &Head| body_rule(h, awaiting);
        match dir {
            Dir::Ingress => self.ingress.feed(chunk, &mut rule, &mut out),
            Dir::Egress => self.egress.feed(chunk, &mut rule, &mut out),
        }
        self.last_ns = self.last_ns.max(chunk.end_ns);
        self.process(dir, tid, out, f, st, spans);
    }

    fn process(
        &mut self,
        dir: Dir,
        tid: u32,
        out: Vec<Output>,
        f: &mut SpanFactory,
        st: &mut ConnStats,
        spans: &mut Vec<Span>,
    ) {
        for o in out {
            match o {
                Output::Head(head) if head.is_request() => {
                    self.on_request(dir, tid, *head, f, st, spans);
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
                        None => st.orphan_responses += 1,
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
                        finish(&x, end_ns, f, st, spans);
                    }
                }
            }
        }
    }

    fn on_request(
        &mut self,
        dir: Dir,
        tid: u32,
        head: Head,
        f: &mut SpanFactory,
        st: &mut ConnStats,
        spans: &mut Vec<Span>,
    ) {
        if self.role.is_none() {
            self.role = Some(if dir == Dir::Ingress {
                SpanKind::Server
            } else {
                SpanKind::Client
            });
        }
        if Some(dir) != self.request_dir() {
            // A request head flowing the wrong way (not HTTP/1 as we know it): keep pairing sane.
            self.awaiting.pop_back();
            return;
        }
        // A response of unknown length ends when the next request starts.
        let mut ended = Vec::new();
        let response_stream = match dir {
            Dir::Ingress => &mut self.egress,
            Dir::Egress => &mut self.ingress,
        };
        if response_stream.end_unknown(&mut ended) {
            let other = if dir == Dir::Ingress {
                Dir::Egress
            } else {
                Dir::Ingress
            };
            self.process(other, tid, ended, f, st, spans);
        }
        let kind = self.role.unwrap_or(SpanKind::Server);
        let identity = match kind {
            SpanKind::Server => f.tracker.server_request(self.pid, tid, &head),
            SpanKind::Client => f.tracker.client_request(self.pid, tid, &head),
        };
        self.exchanges.push_back(Exchange {
            kind,
            identity,
            pid: self.pid,
            request: head,
            response: None,
            resource: f.processes.resource(self.pid),
            peer: self.peer,
        });
    }

    /// Flushes everything: messages cut by the close end at the last byte seen, requests
    /// without a response become incomplete spans.
    fn close(mut self, f: &mut SpanFactory, st: &mut ConnStats, spans: &mut Vec<Span>) {
        self.unpark(f, st, spans);
        let mut out = Vec::new();
        self.ingress.close(&mut out);
        self.process(Dir::Ingress, 0, out, f, st, spans);
        let mut out = Vec::new();
        self.egress.close(&mut out);
        self.process(Dir::Egress, 0, out, f, st, spans);
        let last = self.last_ns;
        for x in self.exchanges.drain(..) {
            finish(&x, last, f, st, spans);
        }
        for s in [self.ingress.stats, self.egress.stats] {
            st.streams.skipped_bytes += s.skipped_bytes;
            st.streams.malformed_heads += s.malformed_heads;
            st.streams.lost_sync += s.lost_sync;
        }
    }
}

fn body_rule(head: &Head, awaiting: &mut VecDeque<bool>) -> Body {
    match &head.start {
        StartLine::Request { method, .. } => {
            awaiting.push_back(method == "HEAD");
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

fn finish(
    x: &Exchange,
    end_ns: u64,
    f: &mut SpanFactory,
    st: &mut ConnStats,
    spans: &mut Vec<Span>,
) {
    if x.kind == SpanKind::Server {
        f.tracker.server_done(x.pid, x.identity.span_id);
    }
    if x.identity.sampled {
        spans.push(build_span(x, end_ns, f.clock));
    } else {
        st.unsampled += 1;
    }
}

/// Socket address from the kernel's family/port/16-byte address; v4-mapped IPv6 becomes IPv4.
#[must_use]
pub fn socket_addr(family: u16, port: u16, addr: &[u8; 16]) -> Option<SocketAddr> {
    let ip = match family {
        AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        AF_INET6 => {
            let v6 = Ipv6Addr::from(*addr);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A data event, as the connection table needs it.
pub struct DataIn<'a> {
    pub pid: u32,
    pub tid: u32,
    pub fd: u32,
    pub direction: u32,
    pub tuple: Option<SockTuple>,
    pub chunk: Chunk<'a>,
}

pub struct ConnTable {
    conns: HashMap<(u32, u32), Conn>,
    capacity: usize,
    pub stats: ConnStats,
}

impl ConnTable {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            conns: HashMap::new(),
            capacity: capacity.max(1),
            stats: ConnStats::default(),
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// accept/connect returned a socket: any older connection on that fd is over.
    pub fn on_connect(
        &mut self,
        pid: u32,
        fd: u32,
        peer: Option<SocketAddr>,
        ts_ns: u64,
        f: &mut SpanFactory,
        spans: &mut Vec<Span>,
    ) {
        self.on_close(pid, fd, f, spans);
        let conn = entry(
            &mut self.conns,
            &mut self.stats,
            self.capacity,
            (pid, fd),
            ts_ns,
            f,
            spans,
        );
        conn.peer = peer;
    }

    pub fn on_data(&mut self, ev: &DataIn<'_>, f: &mut SpanFactory, spans: &mut Vec<Span>) {
        let key = (ev.pid, ev.fd);
        let conn = entry(
            &mut self.conns,
            &mut self.stats,
            self.capacity,
            key,
            ev.chunk.end_ns,
            f,
            spans,
        );
        if let Some(t) = ev.tuple
            && let Some(peer) = socket_addr(t.family, t.dport, &t.daddr)
        {
            conn.peer = Some(peer);
        }
        let dir = if ev.direction == DIR_INGRESS {
            Dir::Ingress
        } else {
            Dir::Egress
        };
        conn.feed(dir, ev.tid, &ev.chunk, f, &mut self.stats, spans);
    }

    pub fn on_close(&mut self, pid: u32, fd: u32, f: &mut SpanFactory, spans: &mut Vec<Span>) {
        if let Some(conn) = self.conns.remove(&(pid, fd)) {
            conn.close(f, &mut self.stats, spans);
        }
    }

    /// Flushes connections with no activity since `idle_before_ns` (kernel time).
    pub fn sweep(&mut self, idle_before_ns: u64, f: &mut SpanFactory, spans: &mut Vec<Span>) {
        let idle: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_ns < idle_before_ns)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            if let Some(conn) = self.conns.remove(&k) {
                self.stats.idle_closed += 1;
                conn.close(f, &mut self.stats, spans);
            }
        }
    }

    /// Flushes every connection (shutdown).
    pub fn drain(&mut self, f: &mut SpanFactory, spans: &mut Vec<Span>) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            conn.close(f, &mut self.stats, spans);
        }
    }
}

/// The connection for `key`, created if new; when the table is full the least recently
/// active connection is flushed to make room.
fn entry<'a>(
    conns: &'a mut HashMap<(u32, u32), Conn>,
    stats: &mut ConnStats,
    capacity: usize,
    key: (u32, u32),
    now_ns: u64,
    f: &mut SpanFactory,
    spans: &mut Vec<Span>,
) -> &'a mut Conn {
    if !conns.contains_key(&key) {
        if conns.len() >= capacity {
            let oldest = conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k);
            if let Some(conn) = oldest.and_then(|k| conns.remove(&k)) {
                stats.evicted += 1;
                conn.close(f, stats, spans);
            }
        }
        stats.opened += 1;
    }
    conns.entry(key).or_insert_with(|| Conn::new(key.0, now_ns))
}

#[cfg(test)]
mod tests;
