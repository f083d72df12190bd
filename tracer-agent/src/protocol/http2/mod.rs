//! HTTP/2 (RFC 9113) from the frame records the kernel captures (`tracer_common::h2`):
//! [`records`] parses a chunk's records, [`frames`] follows each direction's frames and header
//! blocks (decoded by [`hpack`]), [`fields`] reads a decoded block as an HTTP head, [`messages`]
//! counts gRPC messages in DATA frames, and [`conn`] turns a connection's streams into
//! exchanges, gRPC included.

pub mod conn;
pub mod fields;
pub mod frames;
pub mod hpack;
pub mod messages;
pub mod records;
#[cfg(test)]
mod tests;

pub use conn::{Conn, Report};

use self::hpack::HpackStats;
use super::http::Text;

/// What the HTTP/2 assembly could not follow exactly, and what it saw, over all connections.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http2Stats {
    /// Requests seen (streams opened by a request header block).
    pub streams: u64,
    /// Exchanges reported (ended by the response's end, a reset, a GOAWAY or the connection's end).
    pub exchanges: u64,
    /// What the HPACK decoders counted: references to unknown entries, desyncs (a loss, a
    /// block cut by the capture or the bound, a `PUSH_PROMISE`, a block refused), errors.
    pub hpack: HpackStats,
    /// Streams given up because a connection had [`conn::MAX_STREAMS`] open.
    pub streams_given_up: u64,
    /// Chunks whose records could not be parsed (the rest of the chunk counts as lost).
    pub malformed_records: u64,
    /// `RST_STREAM` frames seen.
    pub resets: u64,
    /// GOAWAY frames seen.
    pub goaways: u64,
    /// HTTP/1 connections that continued as HTTP/2 (`Upgrade: h2c`).
    pub upgrades: u64,
    /// Data events lost on the way (sequence gaps).
    pub lost_events: u64,
    /// Header blocks longer than [`frames::MAX_BLOCK`], decoded as far as it goes.
    pub oversized_blocks: u64,
    /// Header blocks of streams whose request was not seen (it began before the agent, or was
    /// lost), or requests flowing against the connection's role.
    pub orphan_headers: u64,
    /// Response header blocks reported before the write of their request, put back in order.
    pub reordered: u64,
}

/// What an HTTP/2 exchange carries beyond its heads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Http2Info {
    pub stream: u32,
    /// Fields of the exchange's header blocks that referred to unknown table entries: the
    /// method, path or status may be among them (then `_OTHER`, empty, or 0).
    pub unknown_fields: u32,
    /// The stream was reset (`RST_STREAM`) with this error code.
    pub reset: Option<u32>,
    /// The stream ended because of a GOAWAY that excluded it.
    pub goaway: bool,
    /// The exchange is a gRPC call.
    pub grpc: Option<Grpc>,
}

/// A gRPC call's outcome and size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grpc {
    /// `grpc-status` of the trailers (or of a trailers-only response).
    pub status: Option<u32>,
    /// `grpc-message`, as sent (percent-encoded).
    pub message: Option<Text>,
    pub request_messages: u64,
    pub response_messages: u64,
    /// Some message starts were not captured: the counts are estimates.
    pub counts_estimated: bool,
}
