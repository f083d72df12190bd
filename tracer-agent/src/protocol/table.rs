//! The connection table: one entry per traced socket (process, fd), holding the protocol state
//! of the connection. Every connection speaks HTTP/1.x today (the kernel only reports sockets
//! whose first bytes are HTTP/1.x); HTTP/2 will be a second kind of entry.
//!
//! The table is bounded: the least recently active connection is flushed when it is full, and
//! idle connections are flushed by `sweep`.

use std::net::SocketAddr;

use super::{
    Chunk, Direction, ExchangeSink,
    http1::{Conn, Http1Stats, Report},
};
use crate::idhash::IdMap;

#[derive(Clone, Copy, Debug, Default)]
pub struct ConnStats {
    pub opened: u64,
    pub evicted: u64,
    pub idle_closed: u64,
    pub http1: Http1Stats,
}

/// A data event, as the connection table needs it.
pub struct DataIn<'a> {
    pub pid: u32,
    pub tid: u32,
    pub fd: u32,
    pub direction: Direction,
    /// The peer end of the socket, when the kernel saw it.
    pub peer: Option<SocketAddr>,
    pub chunk: Chunk<'a>,
}

pub struct ConnTable<S: ExchangeSink> {
    conns: IdMap<(u32, u32), Conn<S>>,
    capacity: usize,
    pub stats: ConnStats,
}

impl<S: ExchangeSink> ConnTable<S> {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            conns: IdMap::default(),
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
        sink: &mut S,
    ) {
        self.on_close(pid, fd, sink);
        let Self {
            conns,
            capacity,
            stats,
        } = self;
        entry(conns, stats, *capacity, (pid, fd), ts_ns, sink).peer = peer;
    }

    pub fn on_data(&mut self, ev: &DataIn<'_>, sink: &mut S) {
        let Self {
            conns,
            capacity,
            stats,
        } = self;
        let conn = entry(
            conns,
            stats,
            *capacity,
            (ev.pid, ev.fd),
            ev.chunk.end_ns,
            sink,
        );
        if ev.peer.is_some() {
            conn.peer = ev.peer;
        }
        let mut to = Report {
            sink,
            stats: &mut stats.http1,
        };
        conn.feed(ev.direction, ev.tid, &ev.chunk, &mut to);
    }

    pub fn on_close(&mut self, pid: u32, fd: u32, sink: &mut S) {
        if let Some(conn) = self.conns.remove(&(pid, fd)) {
            flush(conn, sink, &mut self.stats.http1);
        }
    }

    /// Flushes connections with no activity since `idle_before_ns` (kernel time).
    pub fn sweep(&mut self, idle_before_ns: u64, sink: &mut S) {
        let idle: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| c.last_ns < idle_before_ns)
            .map(|(k, _)| *k)
            .collect();
        for k in idle {
            if let Some(conn) = self.conns.remove(&k) {
                self.stats.idle_closed += 1;
                flush(conn, sink, &mut self.stats.http1);
            }
        }
    }

    /// Flushes every connection (shutdown).
    pub fn drain(&mut self, sink: &mut S) {
        for (_, conn) in std::mem::take(&mut self.conns) {
            flush(conn, sink, &mut self.stats.http1);
        }
    }
}

/// Ends a connection: what it still holds goes to the sink.
fn flush<S: ExchangeSink>(conn: Conn<S>, sink: &mut S, stats: &mut Http1Stats) {
    conn.close(&mut Report { sink, stats });
}

/// The connection for `key`, created if new; when the table is full the least recently
/// active connection is flushed to make room.
fn entry<'a, S: ExchangeSink>(
    conns: &'a mut IdMap<(u32, u32), Conn<S>>,
    stats: &mut ConnStats,
    capacity: usize,
    key: (u32, u32),
    now_ns: u64,
    sink: &mut S,
) -> &'a mut Conn<S> {
    if !conns.contains_key(&key) {
        if conns.len() >= capacity {
            let oldest = conns.iter().min_by_key(|(_, c)| c.last_ns).map(|(k, _)| *k);
            if let Some(conn) = oldest.and_then(|k| conns.remove(&k)) {
                stats.evicted += 1;
                flush(conn, sink, &mut stats.http1);
            }
        }
        stats.opened += 1;
    }
    conns.entry(key).or_insert_with(|| Conn::new(key.0, now_ns))
}

#[cfg(test)]
mod tests;
