//! HTTP/2: header compression ([`hpack`]).
pub mod hpack;
