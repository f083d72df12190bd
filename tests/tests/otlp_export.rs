//! Root: what reaches the collector over each OTLP protocol with the standard exporter
//! variables: the headers of `OTEL_EXPORTER_OTLP_HEADERS` on every request, gzip when
//! `OTEL_EXPORTER_OTLP_COMPRESSION=gzip`, and spans that decode with the official types, one
//! resource per traced process.

use std::time::Duration;

use tracer_tests::{
    harness::{Agent, Service, free_port, get, random_hex, root_test},
    otlp::Receiver,
};

const WAIT: Duration = Duration::from_secs(20);

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn export_with(protocol: &str) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let (a, b) = (
        Service::python(free_port(), None, &[("OTEL_SERVICE_NAME", "export-a")]),
        Service::python(free_port(), None, &[("OTEL_SERVICE_NAME", "export-b")]),
    );
    let endpoint = match protocol {
        "grpc" => rx.grpc_endpoint(),
        _ => rx.http_endpoint(),
    };
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let mut agent = Agent::start_with_env(
        [
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--metrics-addr",
            "off",
            "--pid",
            &pa,
            "--pid",
            &pb,
        ],
        &[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=k%20ey-1,x-tenant=t1",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ],
    );
    let mut traces = Vec::new();
    for svc in [&a, &b] {
        let (t, s) = (random_hex(16), random_hex(8));
        let b3 = [
            ("x-b3-traceid", t.as_str()),
            ("x-b3-spanid", s.as_str()),
            ("x-b3-sampled", "1"),
        ];
        assert_eq!(get(svc.port(), "/hello", &b3).status, 200);
        traces.push((t, s));
    }
    let spans = rx.wait_for_named(
        "a SERVER span for each of the two requests",
        |spans| {
            traces
                .iter()
                .all(|(t, _)| spans.iter().any(|s| &s.trace_id == t && s.kind == "SERVER"))
        },
        WAIT,
    );
    agent.stop();
    for ((t, parent), service) in traces.iter().zip(["export-a", "export-b"]) {
        let s = spans
            .iter()
            .find(|s| &s.trace_id == t && s.kind == "SERVER")
            .expect("waited for above");
        assert_eq!(&s.parent_span_id, parent, "{s}");
        assert_eq!(s.service_name(), service, "{s}");
        assert_eq!(s.name, "GET", "{s}");
        assert_eq!(s.attr_str("url.path"), Some("/hello"), "{s}");
        assert_eq!(s.attr_i64("http.response.status_code"), Some(200), "{s}");
        assert_eq!(s.scope_name, "tracer-agent", "{s}");
    }
    let requests = rx.export_headers();
    assert!(!requests.is_empty());
    for h in &requests {
        assert_eq!(header(h, "x-api-key"), Some("k ey-1"), "{protocol}: {h:?}");
        assert_eq!(header(h, "x-tenant"), Some("t1"), "{protocol}: {h:?}");
        let encoding = if protocol == "grpc" {
            "grpc-encoding"
        } else {
            "content-encoding"
        };
        assert_eq!(header(h, encoding), Some("gzip"), "{protocol}: {h:?}");
        assert!(
            header(h, "user-agent").is_some_and(|v| v.starts_with("tracer-agent/")),
            "{protocol}: {h:?}"
        );
    }
}

#[test]
fn grpc_export_carries_headers_and_gzip() {
    export_with("grpc");
}

#[test]
fn http_export_carries_headers_and_gzip() {
    export_with("http/protobuf");
}
