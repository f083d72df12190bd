//! HTTP/2: header compression ([`hpack`]), and the frames of events the kernel could not walk
//! ([`raw`]).
pub mod hpack;
pub mod raw;
