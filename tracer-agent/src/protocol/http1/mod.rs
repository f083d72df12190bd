//! HTTP/1.x over a byte stream: [`stream`] finds heads and message ends in one direction's
//! captured chunks ([`parse`] for heads and body rules, [`chunked`] for chunked bodies), and
//! [`conn`] pairs the requests and responses of a connection into exchanges.

pub mod chunked;
pub mod conn;
pub mod parse;
#[cfg(test)]
mod props;
pub mod stream;

pub use conn::{Conn, Http1Stats, Report};
