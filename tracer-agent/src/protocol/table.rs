//! The connection table: one entry per traced socket (process, fd), holding the protocol state
//! of the connection: HTTP/1.x, or HTTP/2 when the kernel hands over frame records
//! (`DataIn::frames`). An HTTP/1 connection whose next event is frames switched to HTTP/2
//! (`Upgrade: h2c`): its state carries over, the upgrade request becoming stream 1.
//!
//! Bounded whatever the traffic, and every bound is counted when hit:
//! - at most `capacity` connections (`--max-connections`): a new one flushes the least recently
//!   active (`evicted`), in O(1) from the table's recency order;
//! - at most [`BUFFER_BUDGET`] bytes held by all connections together beyond their entries
//!   (waiting requests, heads in progress, responses kept back): past it, least recently active
//!   connections are flushed until it holds (`evicted_memory`);
//! - per connection, what `http1::conn` bounds (requests waiting, head bytes) and what
//!   `http2::conn` bounds (open streams, header-block bytes);
//! - connections idle for the idle timeout are flushed by `sweep` (`idle_closed`), oldest first,
//!   in time proportional to the number flushed; those of processes that exited go at the next
//!   `sweep_exited` (`exited_closed`).

use std::{hash::BuildHasherDefault, net::SocketAddr};

use lru::LruCache;

use super::{
    Chunk, Direction, ExchangeSink, http1,
    http1::Http1Stats,
    http2::{self, Http2Stats},
};
use crate::idhash::{IdHasher, IdMap};

/// What all connections together may hold beyond their table entries.
pub const BUFFER_BUDGET: usize = 32 << 20;

#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub opened: u64,
    /// Flushed to make room for a new connection (the table was full).
    pub evicted: u64,
    /// Flushed because the connections together held more than [`BUFFER_BUDGET`].
    pub evicted_memory: u64,
    pub idle_closed: u64,
    /// Flushed because their process exited.
    pub exited_closed: u64,
    pub http1: Http1Stats,
    pub http2: Http2Stats,
}

/// A data event, as the connection table needs it.
pub struct DataIn<'a> {
    pub pid: u32,
    pub tid: u32,
    pub fd: u32,
    pub direction: Direction,
    /// The peer end of the socket, when the kernel saw it.
    pub peer: Option<SocketAddr>,
    /// The event's number among its socket's events in its direction (a jump is a loss).
    pub seq: Option<u32>,
    /// The chunk's data is HTTP/2 frame records (`tracer_common::h2`), not the bytes moved.
    pub frames: bool,
    pub chunk: Chunk<'a>,
}

/// A connection's protocol state.
#[expect(
    clippy::large_enum_variant,
    reason = "most connections are HTTP/1: boxing it would cost each an allocation"
)]
enum Conn<S: ExchangeSink> {
    Http1(http1::Conn<S>),
    /// Boxed: few connections speak HTTP/2, and every entry pays for the largest variant.
    Http2(Box<http2::Conn<S>>),
}

impl<S: ExchangeSink> Conn<S> {
    fn new(pid: u32, now_ns: u64, frames: bool) -> Self {
        if frames {
            Self::Http2(Box::new(http2::Conn::new(pid, now_ns)))
        } else {
            Self::Http1(http1::Conn::new(pid, now_ns))
        }
    }

    fn last_ns(&self) -> u64 {
        match self {
            Self::Http1(c) => c.last_ns,
            Self::Http2(c) => c.last_ns,
        }
    }

    fn set_peer(&mut self, peer: Option<SocketAddr>) {
        match self {
            Self::Http1(c) => c.peer = peer,
            Self::Http2(c) => c.peer = peer,
        }
    }

    fn opened(&mut self) {
        match self {
            Self::Http1(c) => c.opened(),
            Self::Http2(c) => c.opened(),
        }
    }

    fn footprint(&self) -> usize {
        match self {
            Self::Http1(c) => c.footprint(),
            Self::Http2(c) => size_of::<http2::Conn<S>>() + c.footprint(),
        }
    }

    fn close(self, sink: &mut S, stats: &mut ConnStats) {
        match self {
            Self::Http1(c) => c.close(&mut http1::Report {
                sink,
                stats: &mut stats.http1,
            }),
            Self::Http2(c) => c.close(&mut http2::Report {
                sink,
                stats: &mut stats.http2,
            }),
        }
    }
}

type Conns<S> = LruCache<(u32, u32), Conn<S>, BuildHasherDefault<IdHasher>>;

pub struct ConnTable<S: ExchangeSink> {
    /// Most recently active first.
    conns: Conns<S>,
    capacity: usize,
    /// The sum of the connections' `footprint`s.
    buffered: usize,
    budget: usize,
    pub stats: ConnStats,
}

impl<S: ExchangeSink> ConnTable<S> {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_budget(capacity, BUFFER_BUDGET)
    }

    #[must_use]
    pub fn with_budget(capacity: usize, budget: usize) -> Self {
        Self {
            conns: LruCache::unbounded_with_hasher(BuildHasherDefault::default()),
            capacity: capacity.max(1),
            buffered: 0,
            budget,
            stats: ConnStats::default(),
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Bytes the connections hold beyond their entries.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// accept/connect returned a socket: any older connection on that fd is over.
    pub fn on_connect(
        &mut self,
        pid: u32,
        fd: u32,
        peer: Option<SocketAddr>,
        ts_ns: u64,
        sink: &mut S,
    ) {
        self.on_close(pid, fd, sink);
        self.ensure((pid, fd), ts_ns, false, sink);
        if let Some(conn) = self.conns.get_mut(&(pid, fd)) {
            conn.set_peer(peer);
            conn.opened();
        }
    }

    pub fn on_data(&mut self, ev: &DataIn<'_>, sink: &mut S) {
        let key = (ev.pid, ev.fd);
        self.ensure(key, ev.chunk.end_ns, ev.frames, sink);
        self.switch(key, ev.frames, sink);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if ev.peer.is_some() {
            conn.set_peer(ev.peer);
        }
        let before = conn.footprint();
        match conn {
            Conn::Http1(c) => c.feed(
                ev.direction,
                ev.tid,
                ev.seq,
                &ev.chunk,
                &mut http1::Report {
                    sink,
                    stats: &mut self.stats.http1,
                },
            ),
            Conn::Http2(c) => c.feed(
                ev.direction,
                ev.tid,
                ev.seq,
                &ev.chunk,
                &mut http2::Report {
                    sink,
                    stats: &mut self.stats.http2,
                },
            ),
        }
        let after = conn.footprint();
        self.buffered = (self.buffered + after).saturating_sub(before);
        while self.buffered > self.budget && self.conns.len() > 1 {
            self.stats.evicted_memory += 1;
            self.flush_lru(sink);
        }
    }

    pub fn on_close(&mut self, pid: u32, fd: u32, sink: &mut S) {
        if let Some(conn) = self.conns.pop(&(pid, fd)) {
            self.flush(conn, sink);
        }
    }

    /// Flushes connections with no activity since `idle_before_ns` (kernel time), least
    /// recently active first.
    pub fn sweep(&mut self, idle_before_ns: u64, sink: &mut S) {
        while self
            .conns
            .peek_lru()
            .is_some_and(|(_, c)| c.last_ns() < idle_before_ns)
        {
            self.stats.idle_closed += 1;
            self.flush_lru(sink);
        }
    }

    /// Flushes the connections of processes for which `alive` is false (asked once per
    /// process).
    pub fn sweep_exited(&mut self, mut alive: impl FnMut(u32) -> bool, sink: &mut S) {
        let mut verdicts: IdMap<u32, bool> = IdMap::default();
        let gone: Vec<(u32, u32)> = self
            .conns
            .iter()
            .map(|(k, _)| *k)
            .filter(|(pid, _)| !*verdicts.entry(*pid).or_insert_with(|| alive(*pid)))
            .collect();
        for key in gone {
            if let Some(conn) = self.conns.pop(&key) {
                self.stats.exited_closed += 1;
                self.flush(conn, sink);
            }
        }
    }

    /// Flushes every connection (shutdown).
    pub fn drain(&mut self, sink: &mut S) {
        while let Some((_, conn)) = self.conns.pop_lru() {
            self.flush(conn, sink);
        }
    }

    fn flush_lru(&mut self, sink: &mut S) {
        if let Some((_, conn)) = self.conns.pop_lru() {
            self.flush(conn, sink);
        }
    }

    /// Ends a connection: what it still holds goes to the sink.
    fn flush(&mut self, conn: Conn<S>, sink: &mut S) {
        self.buffered = self.buffered.saturating_sub(conn.footprint());
        conn.close(sink, &mut self.stats);
    }

    /// A connection known as HTTP/1 whose event is frames continues as HTTP/2 (the kernel saw
    /// the client preface on it: an h2c upgrade, or the socket's first bytes after
    /// accept/connect); one known as HTTP/2 whose event is not frames is a new connection on a
    /// reused descriptor whose close was not seen.
    fn switch(&mut self, key: (u32, u32), frames: bool, sink: &mut S) {
        let mismatch = self.conns.peek(&key).is_some_and(|c| match c {
            Conn::Http1(_) => frames,
            Conn::Http2(_) => !frames,
        });
        if !mismatch {
            return;
        }
        let Some(conn) = self.conns.pop(&key) else {
            return;
        };
        self.buffered = self.buffered.saturating_sub(conn.footprint());
        let next = match conn {
            Conn::Http1(c) => {
                let up = c.upgrade(&mut http1::Report {
                    sink,
                    stats: &mut self.stats.http1,
                });
                if up.pending.is_some() {
                    self.stats.http2.upgrades += 1;
                }
                Conn::Http2(Box::new(http2::Conn::upgraded(up)))
            }
            c @ Conn::Http2(_) => {
                let now = c.last_ns();
                c.close(sink, &mut self.stats);
                Conn::new(key.0, now, false)
            }
        };
        self.buffered += next.footprint();
        self.conns.push(key, next);
    }

    /// Creates the connection for `key` if it is new; when the table is full the least recently
    /// active connection is flushed to make room. (The caller's lookup makes it the most
    /// recently active.)
    fn ensure(&mut self, key: (u32, u32), now_ns: u64, frames: bool, sink: &mut S) {
        if !self.conns.contains(&key) {
            if self.conns.len() >= self.capacity {
                self.stats.evicted += 1;
                self.flush_lru(sink);
            }
            self.stats.opened += 1;
            self.conns.push(key, Conn::new(key.0, now_ns, frames));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
