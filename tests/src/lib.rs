//! Test support for the tracer: a real OTLP receiver ([`otlp`]) and helpers to start the demo
//! services, the agent and a raw HTTP/1.1 client ([`harness`]). The root integration tests live in
//! `tests/tests/`; the demo services (Go, Python, Node, no tracing library) in `tests/services/`.

pub mod expect;
pub mod harness;
pub mod http;
pub mod otlp;
mod process;
