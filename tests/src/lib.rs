//! Test support for the tracer: a real OTLP receiver that also takes Zipkin ([`otlp`],
//! [`zipkin`]), helpers to start the demo services, the agent and a raw HTTP/1.1 client
//! ([`harness`]), and the mesh scenario with Envoy sidecars and an OTLP collector hop ([`mesh`],
//! [`envoy`], [`tree`]), and the gRPC and h2c services, clients and h2load ([`grpc`], [`h2c`]). The root
//! integration tests live in `tests/tests/`; the demo services (Go, Python, Node, no tracing
//! library) in `tests/services/`.

pub mod early_answer;
pub mod envoy;
pub mod expect;
pub mod grpc;
pub mod h2c;
pub mod harness;
pub mod http;
pub mod kube_api;
pub mod mesh;
pub mod observe;
pub mod otlp;
mod process;
pub mod tree;
pub mod zipkin;
