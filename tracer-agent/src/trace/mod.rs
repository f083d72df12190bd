//! Joining requests into traces and turning exchanges into spans.
//!
//! - [`context`]: the trace context a request carries (B3 multi, B3 single, W3C), with [`ids`].
//! - [`sampler`]: the local decision for requests that carry none (the rule the kernel shares).
//! - [`tracker`]: the join, which trace a request belongs to and which span is its parent.
//! - [`semconv`]: an exchange as a [`span::Span`] with OpenTelemetry's HTTP attributes, with
//!   [`redact`] taking credentials out of query strings, and [`rpc`] for gRPC calls.
//! - [`sink`]: the protocols' [`ExchangeSink`](crate::protocol::ExchangeSink), putting it all
//!   together; [`clock`]: kernel timestamps to Unix time.

pub mod clock;
pub mod context;
#[cfg(test)]
pub mod context_cases;
pub mod ids;
pub mod redact;
pub mod rpc;
pub mod sampler;
pub mod semconv;
pub mod sink;
pub mod span;
pub mod tracker;
