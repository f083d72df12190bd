//! The encoder against the official generated types, and the HTTP transport against a loopback
//! server that answers what the test tells it to (headers, gzip, retries, partial success).

use std::{
    io::Read as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    common::v1::any_value::Value,
    trace::v1::{span::SpanKind as PbKind, status::StatusCode},
};
use prost::Message as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::mpsc,
};

use super::{OtlpExporter, proto};
use crate::{
    config::{BatchConfig, OtlpCompression, OtlpConfig, OtlpProtocol},
    export::queue::span_queue,
    metrics::Metrics,
    trace::{
        ids::{SpanId, TraceId},
        span::{AttrValue, Resource, Span, SpanKind, Status},
    },
};

fn resource(name: &str, pid: u32) -> Arc<Resource> {
    Arc::new(Resource {
        service_name: name.into(),
        pid,
        attributes: vec![
            ("service.name".into(), AttrValue::from(name)),
            ("process.pid".into(), AttrValue::Int(i64::from(pid))),
        ],
    })
}

fn span(resource: &Arc<Resource>, id: u8, parent: Option<u8>, kind: SpanKind) -> Span {
    Span {
        trace_id: TraceId([0xab; 16]),
        span_id: SpanId([id; 8]),
        parent_span_id: parent.map(|p| SpanId([p; 8])),
        kind,
        name: "GET".into(),
        start_unix_nanos: 1_700_000_000_123_456_789,
        end_unix_nanos: 1_700_000_000_223_456_789,
        attributes: vec![
            ("http.request.method", AttrValue::Static("GET")),
            ("url.path", AttrValue::from("/ü/a-long-path".repeat(20))),
            ("http.response.status_code", AttrValue::Int(503)),
            ("server.port", AttrValue::Int(-1)),
            ("tracer.truncated", AttrValue::Bool(true)),
        ],
        status: if id.is_multiple_of(2) {
            Status::Error("HTTP 503".into())
        } else {
            Status::Unset
        },
        resource: resource.clone(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn decode(bytes: &[u8]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest::decode(bytes).expect("the official types decode our request")
}

#[test]
fn request_decodes_with_the_official_types_field_by_field() {
    let (a, b) = (resource("svc-a", 10), resource("svc-b", 20));
    let spans = [
        span(&a, 1, Some(9), SpanKind::Server),
        span(&a, 2, Some(1), SpanKind::Client),
        span(&b, 3, None, SpanKind::Server),
    ];
    let mut buf = Vec::new();
    proto::encode_request(
        &mut buf,
        &proto::SCOPE,
        [(&*a, &spans[..2]), (&*b, &spans[2..])],
    );
    let req = decode(&buf);
    assert_eq!(req.resource_spans.len(), 2);
    let names: Vec<String> = req
        .resource_spans
        .iter()
        .map(|rs| {
            let attrs = &rs.resource.as_ref().unwrap().attributes;
            match attrs[0].value.as_ref().unwrap().value.as_ref().unwrap() {
                Value::StringValue(s) => s.clone(),
                other => panic!("service.name is {other:?}"),
            }
        })
        .collect();
    assert_eq!(names, ["svc-a", "svc-b"]);
    let pid = &req.resource_spans[1].resource.as_ref().unwrap().attributes[1];
    assert_eq!(pid.key, "process.pid");
    assert_eq!(pid.value.as_ref().unwrap().value, Some(Value::IntValue(20)));

    let ss = &req.resource_spans[0].scope_spans[0];
    let scope = ss.scope.as_ref().unwrap();
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("tracer-agent", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(ss.spans.len(), 2);
    let (server, client) = (&ss.spans[0], &ss.spans[1]);
    assert_eq!(hex(&server.trace_id), "ab".repeat(16));
    assert_eq!(hex(&server.span_id), "01".repeat(8));
    assert_eq!(hex(&server.parent_span_id), "09".repeat(8));
    assert_eq!(server.kind, PbKind::Server as i32);
    assert_eq!(client.kind, PbKind::Client as i32);
    assert_eq!(server.name, "GET");
    assert_eq!(server.start_time_unix_nano, 1_700_000_000_123_456_789);
    assert_eq!(server.end_time_unix_nano, 1_700_000_000_223_456_789);
    // Sampled; the SERVER span's parent is remote, the CLIENT span's is not.
    assert_eq!(server.flags, 0x301);
    assert_eq!(client.flags, 0x101);
    let values: Vec<(&str, Option<&Value>)> = server
        .attributes
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_ref().unwrap().value.as_ref()))
        .collect();
    assert_eq!(
        values,
        [
            (
                "http.request.method",
                Some(&Value::StringValue("GET".into()))
            ),
            (
                "url.path",
                Some(&Value::StringValue("/ü/a-long-path".repeat(20)))
            ),
            ("http.response.status_code", Some(&Value::IntValue(503))),
            ("server.port", Some(&Value::IntValue(-1))),
            ("tracer.truncated", Some(&Value::BoolValue(true))),
        ]
    );
    assert!(server.status.is_none(), "an unset status is left out");
    let status = client.status.as_ref().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "HTTP 503");
    let root = &req.resource_spans[1].scope_spans[0].spans[0];
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.flags, 0x101);
}

#[test]
fn sizes_are_exact_for_every_varint_length() {
    // Attribute and path lengths around the 1/2/3-byte varint boundaries.
    let r = resource("s", 1);
    for len in [0, 1, 100, 127, 128, 129, 16_383, 16_384, 70_000] {
        let mut s = span(&r, 1, None, SpanKind::Server);
        s.attributes = vec![("url.path", AttrValue::from("x".repeat(len)))];
        s.status = Status::Error("e".repeat(len));
        let spans = vec![s; 3];
        let mut buf = Vec::new();
        proto::encode_request(&mut buf, &proto::SCOPE, [(&*r, spans.as_slice())]);
        let req = decode(&buf);
        let got = &req.resource_spans[0].scope_spans[0].spans;
        assert_eq!(got.len(), 3, "length {len}");
        assert_eq!(
            got[2].status.as_ref().unwrap().message.len(),
            len,
            "length {len}"
        );
    }
}

#[test]
fn rejected_spans_are_read_from_a_partial_success() {
    let answer = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 7,
            error_message: "too old".into(),
        }),
    };
    assert_eq!(proto::rejected_spans(&answer.encode_to_vec()), 7);
    assert_eq!(
        proto::rejected_spans(&ExportTraceServiceResponse::default().encode_to_vec()),
        0
    );
    // Garbage and truncation are no rejection, never a panic.
    assert_eq!(proto::rejected_spans(b"\x0a\xff\xff"), 0);
    assert_eq!(proto::rejected_spans(&[0xff; 12]), 0);
    assert_eq!(proto::rejected_spans(b"<html>"), 0);
}

/// One request as the loopback server saw it.
struct Seen {
    head: String,
    body: Vec<u8>,
}

/// Answers each request with the next of `answers` (status, body), recording what came in.
async fn server(answers: Vec<(u16, Vec<u8>)>) -> (String, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut answers = answers.into_iter();
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            // One request per connection is enough for these tests: answer and close.
            let mut data = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                data.extend_from_slice(&chunk[..n]);
                if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while data.len() < end + 4 + len {
                        let n = sock.read(&mut chunk).await.unwrap();
                        data.extend_from_slice(&chunk[..n]);
                    }
                    break (head, data[end + 4..end + 4 + len].to_vec());
                }
            };
            let (status, reply) = answers.next().unwrap_or((200, Vec::new()));
            let _ = tx.send(Seen { head, body });
            let mut out = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                reply.len()
            )
            .into_bytes();
            out.extend_from_slice(&reply);
            sock.write_all(&out).await.unwrap();
        }
    });
    (url, rx)
}

fn exporter(url: String, compression: OtlpCompression) -> (OtlpExporter, &'static Metrics) {
    let metrics: &'static Metrics = Box::leak(Box::default());
    let config = OtlpConfig {
        endpoint: url,
        protocol: OtlpProtocol::HttpProtobuf,
        headers: vec![
            ("x-api-key".into(), "secret value".into()),
            ("X-Tenant".into(), "t1".into()),
        ],
        compression,
        timeout: Duration::from_secs(5),
        tls: None,
    };
    let batch = BatchConfig {
        schedule_delay: Duration::from_millis(10),
        max_queue: 100,
        max_batch: 10,
        export_timeout: Duration::from_secs(10),
    };
    let stopping = Arc::new(AtomicBool::new(false));
    (
        OtlpExporter::new(config, batch, metrics, stopping).unwrap(),
        metrics,
    )
}

/// Sends `n` spans through a fresh exporter and waits until it has drained and stopped.
async fn export(exporter: OtlpExporter, n: u8) {
    let r = resource("svc", 1);
    let (tx, rx) = span_queue(100);
    let spans = (0..n)
        .map(|i| span(&r, i + 1, None, SpanKind::Server))
        .collect();
    assert_eq!(tx.send(spans), 0);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), exporter.run(rx))
        .await
        .expect("the exporter stops once its queue is closed and drained");
}

#[tokio::test]
async fn http_sends_headers_and_gzip_and_retries_what_is_retryable() {
    let (url, mut seen) = server(vec![(503, Vec::new()), (429, Vec::new())]).await;
    let (exp, metrics) = exporter(url, OtlpCompression::Gzip);
    export(exp, 3).await;
    let mut requests = Vec::new();
    while let Ok(s) = seen.try_recv() {
        requests.push(s);
    }
    assert_eq!(requests.len(), 3, "503 and 429 are retried, then 200");
    for r in &requests {
        assert!(r.head.starts_with("post /v1/traces http/1.1"), "{}", r.head);
        assert!(r.head.contains("\r\nx-api-key: secret value"), "{}", r.head);
        assert!(r.head.contains("\r\nx-tenant: t1"), "{}", r.head);
        assert!(r.head.contains("\r\ncontent-encoding: gzip"), "{}", r.head);
        assert!(
            r.head.contains("\r\ncontent-type: application/x-protobuf"),
            "{}",
            r.head
        );
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_end(&mut plain)
            .expect("the body is gzip");
        let req = decode(&plain);
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 3);
    }
    assert_eq!(metrics.spans_exported.load(Relaxed), 3);
    assert_eq!(metrics.export_retries.load(Relaxed), 2);
    assert_eq!(metrics.spans_export_failed.load(Relaxed), 0);
}

#[tokio::test]
async fn http_drops_at_once_what_the_collector_refuses() {
    let (url, mut seen) = server(vec![(400, Vec::new())]).await;
    let (exp, metrics) = exporter(url, OtlpCompression::None);
    export(exp, 2).await;
    let first = seen.try_recv().expect("one request");
    assert!(!first.head.contains("content-encoding"), "{}", first.head);
    assert_eq!(decode(&first.body).resource_spans.len(), 1);
    assert!(seen.try_recv().is_err(), "a 400 is not retried");
    assert_eq!(metrics.spans_export_failed.load(Relaxed), 2);
    assert_eq!(metrics.spans_exported.load(Relaxed), 0);
    assert_eq!(metrics.export_retries.load(Relaxed), 0);
}

#[tokio::test]
async fn http_counts_the_spans_a_partial_success_rejected() {
    let answer = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "one too old".into(),
        }),
    };
    let (url, _seen) = server(vec![(200, answer.encode_to_vec())]).await;
    let (exp, metrics) = exporter(url, OtlpCompression::None);
    export(exp, 4).await;
    assert_eq!(metrics.spans_exported.load(Relaxed), 3);
    assert_eq!(metrics.spans_export_failed.load(Relaxed), 1);
}
