//! One HTTP/2 connection: its two directions' frames ([`Half`]) and its streams, each an
//! exchange from its request header block to the end of its response.
//!
//! Which end we are: the direction of the first request header block (`:method`; or, when the
//! pseudo-headers refer to unknown table entries, the first header block of an odd stream):
//! written means we are the client, read the server. A stream ends, and its exchange is
//! reported, at the response's `END_STREAM` (trailers, or the last DATA frame), a `RST_STREAM` in
//! either direction, a GOAWAY whose last stream id is below it, or the connection's end.
//!
//! On a client connection the response can be reported before the request that caused it: over
//! loopback the server answers while the writing thread is still on its way out of `write`, and
//! the reading thread's event may be sent first. So what is read for a stream not seen yet
//! (a response head, DATA, trailers, `RST_STREAM`, and whatever follows on a stream with
//! something kept back) is kept back ([`MAX_PARKED`] events at most) and handled after the
//! connection's next write that opens that stream; a write that began after the read
//! returned cannot have caused it, so what is still kept back then is given up (counted as an
//! orphan: it answers a request sent before the agent saw the connection).
//!
//! Bounds: [`MAX_STREAMS`] open streams per connection (more: the oldest is given up,
//! counted); [`MAX_PARKED`] events kept back; a header block in progress holds at most
//! `frames::MAX_BLOCK` bytes per direction.
//! A loss (a sequence gap or `REC_LOST`) desynchronises that direction's decoder; streams are
//! still paired by their ids, and literal fields are still read.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
};

use super::{
    Grpc, Http2Info, Http2Stats,
    fields::{self, Decoded},
    frames::{FrameEvent, Half, Start},
    messages::Messages,
    records::Records,
};
use crate::protocol::{Chunk, Direction, Exchange, ExchangeSink, Role, http::Version, seq::Seq};

/// Open streams kept per connection (a client's usual concurrency limit is 100); past it the
/// oldest stream is given up.
pub const MAX_STREAMS: usize = 256;

/// Events read for streams not seen yet, kept back per connection until the write that opens
/// them is reported; past it the oldest is given up.
pub const MAX_PARKED: usize = 64;

/// What one open stream costs, for the connection table's memory budget: the stream, its
/// exchange and the head bytes it keeps (a typical head).
pub const STREAM_COST: usize = size_of::<Stream<()>>() + size_of::<Exchange<()>>() + 512;

/// Where a connection reports: the trace side, and the counters.
pub struct Report<'a, S> {
    pub sink: &'a mut S,
    pub stats: &'a mut Http2Stats,
}

/// An exchange in progress.
struct Stream<T> {
    x: Box<Exchange<T>>,
    /// A final (non-1xx) response head was seen: later header blocks are trailers.
    responded: bool,
    /// gRPC messages of the request and of the response.
    messages: [Messages; 2],
}

/// What an HTTP/1 connection hands over when it continues as HTTP/2 (h2c upgrade).
pub struct Upgrade<T> {
    pub pid: u32,
    pub peer: Option<SocketAddr>,
    pub last_ns: u64,
    pub role: Option<Role>,
    pub seq: Seq,
    /// The connection was followed from its start.
    pub opened: bool,
    /// The request that asked for the upgrade: its response comes as stream 1.
    pub pending: Option<Box<Exchange<T>>>,
}

pub struct Conn<S: ExchangeSink> {
    pid: u32,
    role: Option<Role>,
    /// The other end of the socket, when known.
    pub peer: Option<SocketAddr>,
    /// Kernel time of the last activity.
    pub last_ns: u64,
    /// Followed from its start: the decoders start with the empty table.
    opened: bool,
    seq: Seq,
    halves: [Half; 2],
    /// By stream id: ids grow, so the first is the oldest.
    streams: BTreeMap<u32, Stream<S::Started>>,
    /// Read for streams not seen yet, oldest first: the event and when its read returned.
    parked: VecDeque<(FrameEvent, u64)>,
    /// Where each direction's frames are, for events the kernel could not walk
    /// (`FLAG_H2_RAW`), by `Direction as usize`.
    pub raw: [super::raw::RawWalker; 2],
}

/// The role of the end that sends requests in `dir`.
fn role_sending(dir: Direction) -> Role {
    match dir {
        Direction::Ingress => Role::Server,
        Direction::Egress => Role::Client,
    }
}

impl<S: ExchangeSink> Conn<S> {
    #[must_use]
    pub fn new(pid: u32, now_ns: u64) -> Self {
        Self {
            pid,
            role: None,
            peer: None,
            last_ns: now_ns,
            opened: false,
            seq: Seq::default(),
            halves: [Half::default(), Half::default()],
            streams: BTreeMap::new(),
            parked: VecDeque::new(),
            raw: Default::default(),
        }
    }

    /// An HTTP/1 connection continues as HTTP/2: its request waiting for the upgrade becomes
    /// stream 1.
    #[must_use]
    pub fn upgraded(u: Upgrade<S::Started>) -> Self {
        let mut c = Self {
            role: u.role,
            peer: u.peer,
            opened: u.opened,
            seq: u.seq,
            ..Self::new(u.pid, u.last_ns)
        };
        if let Some(mut x) = u.pending {
            x.request.version = Version::Http2;
            x.http2 = Some(Box::new(Http2Info {
                stream: 1,
                ..Http2Info::default()
            }));
            c.streams.insert(
                1,
                Stream {
                    x,
                    responded: false,
                    messages: [Messages::default(); 2],
                },
            );
        }
        c
    }

    /// The socket was just opened (accept/connect).
    pub fn opened(&mut self) {
        self.opened = true;
        self.seq.opened();
    }

    /// Memory held beyond the connection itself.
    #[must_use]
    pub fn footprint(&self) -> usize {
        self.streams.len() * STREAM_COST
            + self.parked.len() * PARKED_COST
            + self.halves[0].footprint()
            + self.halves[1].footprint()
    }

    /// Feeds one chunk of frame records. `seq` is the event's sequence number in its socket
    /// and direction, when the kernel gave one.
    pub fn feed(
        &mut self,
        dir: Direction,
        tid: u32,
        seq: Option<u32>,
        chunk: &Chunk<'_>,
        to: &mut Report<'_, S>,
    ) {
        let mut events = Vec::new();
        let start = if self.opened {
            Start::Known
        } else if self.halves[1 - dir as usize].started_midway() {
            Start::No
        } else {
            Start::IfSettings
        };
        let half = &mut self.halves[dir as usize];
        if let Some(seq) = seq {
            let lost = self.seq.check(dir, seq);
            if lost > 0 {
                to.stats.lost_events += lost;
                half.lost(&mut events, to.stats);
            }
        }
        for r in Records::new(chunk.data) {
            if let Ok(rec) = r {
                half.record(rec, start, chunk.start_ns, &mut events, to.stats);
            } else {
                // The trace log's summary of the chunk shows the error.
                to.stats.malformed_records += 1;
                half.lost(&mut events, to.stats);
            }
        }
        to.stats.hpack += half.take_stats();
        self.last_ns = self.last_ns.max(chunk.end_ns);
        for ev in events {
            if dir == Direction::Ingress && self.may_answer_unseen(&ev) {
                self.park(ev, chunk.end_ns, to);
            } else {
                self.on_event(dir, tid, ev, chunk.end_ns, to);
            }
        }
        if dir == Direction::Egress {
            self.unpark(chunk.start_ns, to);
        }
    }

    /// Whether a read event may answer a request whose write is not reported yet: it is for a
    /// stream not seen, on a connection where we may be the client, and not a request itself.
    fn may_answer_unseen(&self, ev: &FrameEvent) -> bool {
        if self.role == Some(Role::Server) {
            return false;
        }
        match ev {
            FrameEvent::Headers {
                stream,
                fields,
                cut,
                ..
            } => {
                if self.streams.contains_key(stream) {
                    return false;
                }
                // The rest of an answer whose start is kept back waits with it.
                if self.parked.iter().any(|(e, _)| e.stream() == *stream) {
                    return true;
                }
                let d = fields::decode(fields, *cut);
                d.method.is_none()
                    && (d.status.is_some() || d.is_trailers() || self.role == Some(Role::Client))
            }
            FrameEvent::Data { stream, .. } | FrameEvent::Reset { stream, .. } => {
                !self.streams.contains_key(stream)
            }
            FrameEvent::GoAway { .. } => false,
        }
    }

    fn park(&mut self, ev: FrameEvent, end_ns: u64, to: &mut Report<'_, S>) {
        if self.parked.len() >= MAX_PARKED
            && let Some((old, _)) = self.parked.pop_front()
        {
            give_up(&old, to.stats);
        }
        self.parked.push_back((ev, end_ns));
    }

    /// After a write: what was kept back for the streams it opened is handled; what a write
    /// that began after its read returned did not open is given up.
    fn unpark(&mut self, write_start_ns: u64, to: &mut Report<'_, S>) {
        if self.parked.is_empty() {
            return;
        }
        for (ev, end_ns) in std::mem::take(&mut self.parked) {
            if self.streams.contains_key(&ev.stream()) {
                if matches!(ev, FrameEvent::Headers { .. }) {
                    to.stats.reordered += 1;
                }
                self.on_event(Direction::Ingress, 0, ev, end_ns, to);
            } else if end_ns < write_start_ns {
                give_up(&ev, to.stats);
            } else {
                self.parked.push_back((ev, end_ns));
            }
        }
    }

    fn on_event(
        &mut self,
        dir: Direction,
        tid: u32,
        ev: FrameEvent,
        end_ns: u64,
        to: &mut Report<'_, S>,
    ) {
        match ev {
            FrameEvent::Headers {
                stream,
                end_stream,
                fields,
                cut,
                start_ns,
            } => {
                let d = fields::decode(&fields, cut);
                if self.streams.contains_key(&stream) {
                    self.on_headers(dir, stream, end_stream, &d, start_ns, end_ns, to);
                } else {
                    // The request's END_STREAM leaves nothing to wait for on its side.
                    self.on_new_stream(dir, tid, stream, &d, start_ns, to);
                }
            }
            FrameEvent::Data {
                stream,
                len,
                end_stream,
                prefix,
            } => {
                let Some(s) = self.streams.get_mut(&stream) else {
                    return;
                };
                let response = dir != request_dir(s.x.role);
                s.messages[usize::from(response)].data(len, prefix);
                if end_stream && response {
                    self.finish(stream, end_ns, to);
                }
            }
            FrameEvent::Reset { stream, code } => {
                to.stats.resets += 1;
                if let Some(s) = self.streams.get_mut(&stream) {
                    info(&mut s.x).reset = Some(code.unwrap_or(u32::MAX));
                    self.finish(stream, end_ns, to);
                }
            }
            FrameEvent::GoAway { last } => {
                to.stats.goaways += 1;
                let Some(last) = last else {
                    return;
                };
                let excluded = self.streams.split_off(&last.saturating_add(1));
                for (id, mut s) in excluded {
                    info(&mut s.x).goaway = true;
                    self.streams.insert(id, s);
                    self.finish(id, end_ns, to);
                }
            }
        }
    }

    /// A header block on a stream whose request was seen: a response head, trailers, or the
    /// request's own trailers.
    #[expect(clippy::too_many_arguments, reason = "the block's parts")]
    fn on_headers(
        &mut self,
        dir: Direction,
        stream: u32,
        end_stream: bool,
        d: &Decoded,
        start_ns: u64,
        end_ns: u64,
        to: &mut Report<'_, S>,
    ) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let info = info(&mut s.x);
        info.unknown_fields = info.unknown_fields.saturating_add(d.unknown);
        if d.is_grpc() {
            let g = info.grpc.get_or_insert_with(Grpc::default);
            g.status = g.status.or(d.grpc_status);
            if g.message.is_none() {
                g.message.clone_from(&d.grpc_message);
            }
        }
        if dir == request_dir(s.x.role) {
            // Request trailers: nothing the span needs.
            return;
        }
        if !s.responded {
            if matches!(d.status, Some(100..=199)) {
                return;
            }
            s.responded = true;
            s.x.response = Some(d.response_head(start_ns));
        }
        if end_stream {
            self.finish(stream, end_ns, to);
        }
    }

    /// A header block on a stream not known: a request, or a block of a stream whose request
    /// was not seen.
    fn on_new_stream(
        &mut self,
        dir: Direction,
        tid: u32,
        stream: u32,
        d: &Decoded,
        start_ns: u64,
        to: &mut Report<'_, S>,
    ) {
        let sender = role_sending(dir);
        let request = if d.method.is_some() {
            true
        } else if d.status.is_some() || d.is_trailers() {
            false
        } else {
            // Pseudo-headers unknown: an odd stream is opened by the client.
            stream % 2 == 1 && self.role.is_none_or(|r| r == sender)
        };
        if !request || self.role.is_some_and(|r| r != sender) {
            to.stats.orphan_headers += 1;
            return;
        }
        self.role = Some(sender);
        let head = d.request_head(start_ns);
        let started = to.sink.request(sender, self.pid, tid, &head);
        to.stats.streams += 1;
        let mut info = Http2Info {
            stream,
            unknown_fields: d.unknown,
            ..Http2Info::default()
        };
        if d.is_grpc() {
            info.grpc = Some(Grpc::default());
        }
        if self.streams.len() >= MAX_STREAMS
            && let Some((&oldest, _)) = self.streams.first_key_value()
        {
            to.stats.streams_given_up += 1;
            self.finish(oldest, self.last_ns, to);
        }
        self.streams.insert(
            stream,
            Stream {
                x: Box::new(Exchange {
                    role: sender,
                    pid: self.pid,
                    request: head,
                    response: None,
                    peer: self.peer,
                    started,
                    http2: Some(Box::new(info)),
                }),
                responded: false,
                messages: [Messages::default(); 2],
            },
        );
    }

    /// Reports the exchange of `stream`.
    fn finish(&mut self, stream: u32, end_ns: u64, to: &mut Report<'_, S>) {
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        let mut x = s.x;
        if let Some(g) = info(&mut x).grpc.as_mut() {
            g.request_messages = s.messages[0].count;
            g.response_messages = s.messages[1].count;
            g.counts_estimated = s.messages.iter().any(|m| m.estimated);
        }
        to.stats.exchanges += 1;
        to.sink.finish(*x, end_ns);
    }

    /// Ends every exchange: those without a response end without one.
    pub fn close(mut self, to: &mut Report<'_, S>) {
        for (ev, _) in std::mem::take(&mut self.parked) {
            give_up(&ev, to.stats);
        }
        let last = self.last_ns;
        while let Some((&id, _)) = self.streams.first_key_value() {
            self.finish(id, last, to);
        }
    }
}

/// What one event kept back costs, for the memory budget (its decoded fields are extra).
const PARKED_COST: usize = size_of::<(FrameEvent, u64)>() + 256;

/// An event kept back that no request claimed: a header block of it is an orphan.
fn give_up(ev: &FrameEvent, stats: &mut Http2Stats) {
    if matches!(ev, FrameEvent::Headers { .. }) {
        stats.orphan_headers += 1;
    }
}

/// The direction requests flow in for an end of this role.
fn request_dir(role: Role) -> Direction {
    match role {
        Role::Server => Direction::Ingress,
        Role::Client => Direction::Egress,
    }
}

/// The exchange's HTTP/2 part (every HTTP/2 exchange has one).
fn info<T>(x: &mut Exchange<T>) -> &mut Http2Info {
    x.http2.get_or_insert_with(Box::default)
}
