//! From captured bytes to request/response exchanges, per connection and protocol.
//!
//! - [`table`]: the bounded table of traced connections (process, fd), fed one [`Chunk`] per
//!   syscall; each connection speaks one protocol.
//! - [`http1`]: HTTP/1.x framing (heads, bodies, pipelining) and its connection state.
//! - [`http2`]: HTTP/2 from the frame records the kernel captures: streams, HPACK, gRPC.
//! - [`http`]: the HTTP semantics every version shares ([`http::Head`]).
//! - [`seq`]: the event numbering that tells both of a loss.
//!
//! What a protocol finds goes to the trace side through [`ExchangeSink`]: each request when it
//! is seen (so that a SERVER request is known before the CLIENT requests it causes), each
//! exchange when it ends. The protocols know nothing of traces or spans.

pub mod http;
pub mod http1;
pub mod http2;
pub mod seq;
pub mod table;

use std::net::SocketAddr;

use crate::kernel::write::ids::KernelIds;

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

/// Which way bytes moved, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Read by the process.
    Ingress,
    /// Written by the process.
    Egress,
}

/// Which end of a connection the traced process is, learnt from its first request head: read
/// means the process serves, written means it is the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A request and what is known of its response, when the exchange ends.
#[derive(Debug)]
pub struct Exchange<T> {
    pub role: Role,
    pub pid: u32,
    pub request: http::Head,
    pub response: Option<http::Head>,
    /// The other end of the socket.
    pub peer: Option<SocketAddr>,
    /// What the sink returned for the request when it was seen.
    pub started: T,
    /// HTTP/2 only: the stream, what was unknown, gRPC, resets.
    pub http2: Option<Box<http2::Http2Info>>,
}

/// The trace side, as the protocols see it.
pub trait ExchangeSink {
    /// What the sink keeps with a request until its exchange ends.
    type Started;

    /// Thread `tid` of process `pid` read (server) or wrote (client) a request head. Called in
    /// capture order.
    fn request(&mut self, role: Role, pid: u32, tid: u32, head: &http::Head) -> Self::Started;

    /// The exchange ended at `end_ns` (kernel time): its response was complete, the connection
    /// closed, or the agent gave up on it. `response` is `None` when none was seen.
    fn finish(&mut self, exchange: Exchange<Self::Started>, end_ns: u64);
}
