//! Receiver tests (no root): real OTLP exporters from `opentelemetry-otlp` send to it over both
//! protocols, so the flattening is checked against what an actual exporter puts on the wire.

use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{SpanExporter as OtlpExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prost::Message as _;

use super::{Receiver, Span};
use crate::http::HttpConn;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const T: Duration = Duration::from_secs(10);

fn span(
    trace: &str,
    span: &str,
    parent: &str,
    kind: SpanKind,
    status: Status,
    attrs: Vec<KeyValue>,
) -> SpanData {
    let id = |s: &str| u64::from_str_radix(s, 16).unwrap();
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_hex(trace).unwrap(),
            SpanId::from(id(span)),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: if parent.is_empty() {
            SpanId::INVALID
        } else {
            SpanId::from(id(parent))
        },
        parent_span_is_remote: true,
        span_kind: kind,
        name: "GET".into(),
        start_time: start,
        end_time: start + Duration::from_millis(5),
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: InstrumentationScope::builder("unit").build(),
    }
}

fn batch(service: &str) -> (Resource, Vec<SpanData>) {
    let resource = Resource::builder_empty()
        .with_attributes([
            KeyValue::new("service.name", service.to_owned()),
            KeyValue::new("process.pid", 4242_i64),
        ])
        .build();
    let server = span(
        TRACE,
        "00f067aa0ba902b7",
        "a2fb4a1d1a96d312",
        SpanKind::Server,
        Status::error("boom"),
        vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("url.path", "/status/500"),
            KeyValue::new("http.response.status_code", 500_i64),
            KeyValue::new("tracer.capture.truncated", true),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("marker", "raw-marker-value"),
        ],
    );
    let client = span(
        TRACE,
        "1111111111111111",
        "",
        SpanKind::Client,
        Status::Unset,
        vec![],
    );
    (resource, vec![server, client])
}

fn check(spans: &[Span], service: &str) {
    let mine: Vec<&Span> = spans
        .iter()
        .filter(|s| s.service_name() == service)
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "expected 2 spans of {service}, got:\n{}",
        super::dump(spans)
    );
    let server = mine
        .iter()
        .find(|s| s.kind == "SERVER")
        .expect("a SERVER span");
    assert_eq!(server.trace_id, TRACE);
    assert_eq!(server.span_id, "00f067aa0ba902b7");
    assert_eq!(server.parent_span_id, "a2fb4a1d1a96d312");
    assert_eq!(server.name, "GET");
    assert_eq!(server.status_code, "ERROR");
    assert_eq!(server.status_message, "boom");
    assert_eq!(server.start_unix_nanos, 1_700_000_000_123_456_789);
    assert_eq!(server.end_unix_nanos, 1_700_000_000_128_456_789);
    assert_eq!(server.attr_str("url.path"), Some("/status/500"));
    assert_eq!(server.attr_i64("http.response.status_code"), Some(500));
    assert_eq!(
        server.attributes["tracer.capture.truncated"],
        serde_json::json!(true)
    );
    assert_eq!(server.attributes["ratio"], serde_json::json!(0.5));
    assert_eq!(server.resource["process.pid"], serde_json::json!(4242));
    assert_eq!(server.scope_name, "unit");
    let client = mine
        .iter()
        .find(|s| s.kind == "CLIENT")
        .expect("a CLIENT span");
    assert_eq!(client.parent_span_id, "", "a root span has an empty parent");
    assert_eq!(client.status_code, "UNSET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_grpc_and_http_protobuf_from_the_otlp_exporter() {
    let rx = Receiver::start().await;

    let mut grpc = OtlpExporter::builder()
        .with_tonic()
        .with_endpoint(rx.grpc_endpoint())
        .build()
        .unwrap();
    let (resource, spans) = batch("via-grpc");
    grpc.set_resource(&resource);
    grpc.export(spans).await.expect("gRPC export accepted");

    // Built with the whole workspace (`cargo xtask test`), reqwest carries the agent's
    // `rustls-no-provider` feature (the agent hands it a ring configuration of its own) and
    // panics building a client while the process has no default provider.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut http = OtlpExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", rx.http_endpoint()))
        .build()
        .unwrap();
    let (resource, spans) = batch("via-http");
    http.set_resource(&resource);
    http.export(spans).await.expect("HTTP export accepted");

    let spans = tokio::task::spawn_blocking(move || {
        let spans = rx.wait_for(|s| s.len() >= 4, T);
        assert!(
            rx.raw_contains(b"raw-marker-value"),
            "raw bytes keep attribute values"
        );
        assert!(!rx.raw_contains(b"never-sent-value"));
        assert_eq!(rx.export_count(), 2);
        spans
    })
    .await
    .unwrap();
    check(&spans, "via-grpc");
    check(&spans, "via-http");
}

#[test]
fn accepts_chunked_http_bodies_and_rejects_other_paths() {
    let rx = Receiver::start_blocking();
    let port: u16 = rx
        .http_endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (resource, spans) = batch("via-chunked");
    let body = opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope(
        spans,
        &(&resource).into(),
    );
    let body = super::ExportTraceServiceRequest {
        resource_spans: body,
    }
    .encode_to_vec();
    let (a, b) = body.split_at(body.len() / 2);
    let mut conn = HttpConn::connect(port);
    let headers = [("Content-Type", "application/x-protobuf")];
    let resp = conn.request_chunked("POST", "/v1/traces", &headers, &[a, b]);
    assert_eq!(resp.status, 200, "{}", resp.text());
    check(&rx.wait_for(|s| s.len() >= 2, T), "via-chunked");
    // Same connection, keep-alive: an unknown path is a 404, not a hang.
    assert_eq!(conn.request("GET", "/", &[], None).status, 404);
}

#[test]
#[should_panic(expected = "timed out after")]
fn wait_for_panics_with_a_dump() {
    let rx = Receiver::start_blocking();
    rx.wait_for_named(
        "a span that never comes",
        |s| !s.is_empty(),
        Duration::from_millis(200),
    );
}
