//! Root: SERVER spans of Go, Python and Node servers for every kind of incoming trace context.
//!
//! Each test traces two instances of one service: `plain` (service.name must fall back to the
//! executable name) and `named` (`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` set).

use std::time::Duration;

use tracer_tests::expect::{ServerSpan, has, only, padded};
use tracer_tests::harness::{
    Agent, HttpConn, Lang, Receiver, Service, Span, free_port, random_hex, root_test,
};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// One request and the SERVER span it must produce.
struct Case {
    label: &'static str,
    headers: Vec<(&'static str, String)>,
    method: &'static str,
    path: &'static str,
    body: Option<&'static [u8]>,
    chunked_body: bool,
    status: u16,
    trace_id: String,
    parent: String,
    source: &'static str,
    named: bool,
}

impl Case {
    fn new(
        label: &'static str,
        headers: Vec<(&'static str, String)>,
        trace_id: String,
        parent: &str,
        source: &'static str,
    ) -> Self {
        Self {
            label,
            headers,
            method: "GET",
            path: "/hello",
            body: None,
            chunked_body: false,
            status: 200,
            trace_id,
            parent: parent.to_owned(),
            source,
            named: false,
        }
    }

    fn path(mut self, method: &'static str, path: &'static str, status: u16) -> Self {
        (self.method, self.path, self.status) = (method, path, status);
        self
    }
}

/// B3 multi-header context with a fresh 128-bit trace id.
fn b3multi(label: &'static str) -> Case {
    let (t, s) = (random_hex(16), random_hex(8));
    let headers = vec![
        ("x-b3-traceid", t.clone()),
        ("x-b3-spanid", s.clone()),
        ("x-b3-sampled", "1".into()),
    ];
    Case::new(label, headers, t, &s, "b3multi")
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();

    let (t64, s) = (random_hex(8), random_hex(8));
    let headers = vec![
        ("x-b3-traceid", t64.clone()),
        ("x-b3-spanid", s.clone()),
        ("x-b3-sampled", "1".into()),
    ];
    cases.push(Case::new(
        "B3 multi, 64-bit trace id",
        headers,
        padded(&t64),
        &s,
        "b3multi",
    ));

    let (t, s, p) = (random_hex(16), random_hex(8), random_hex(8));
    let headers = vec![
        ("x-b3-traceid", t.clone()),
        ("x-b3-spanid", s.clone()),
        ("x-b3-parentspanid", p),
        ("x-b3-sampled", "1".into()),
    ];
    cases.push(Case::new(
        "B3 multi, 128-bit trace id",
        headers,
        t,
        &s,
        "b3multi",
    ));

    let (t, s) = (random_hex(16), random_hex(8));
    cases.push(Case::new(
        "B3 single",
        vec![("b3", format!("{t}-{s}-1"))],
        t,
        &s,
        "b3",
    ));

    let (t64, s, p) = (random_hex(8), random_hex(8), random_hex(8));
    let b3 = format!("{t64}-{s}-1-{p}");
    cases.push(Case::new(
        "B3 single, 64-bit with parent",
        vec![("b3", b3)],
        padded(&t64),
        &s,
        "b3",
    ));

    let (t, s) = (random_hex(16), random_hex(8));
    let tp = format!("00-{t}-{s}-01");
    cases.push(Case::new(
        "W3C traceparent",
        vec![("traceparent", tp)],
        t,
        &s,
        "tracecontext",
    ));

    cases.push(b3multi("GET /status/500").path("GET", "/status/500", 500));
    cases.push(b3multi("GET /status/404").path("GET", "/status/404", 404));
    let mut c = b3multi("POST /echo with Content-Length").path("POST", "/echo", 200);
    c.body = Some(b"posted body");
    cases.push(c);
    let mut c = b3multi("POST /echo with a chunked body").path("POST", "/echo", 200);
    (c.body, c.chunked_body) = (Some(b"chunked request body".as_slice()), true);
    cases.push(c);
    cases.push(b3multi("GET /chunked (chunked response)").path("GET", "/chunked", 200));
    let mut c = b3multi("GET /hello on the named instance");
    c.named = true;
    cases.push(c);
    cases
}

fn server_spans(lang: Lang) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let plain = lang.start(free_port(), None, &[]);
    let named_name = format!("{lang:?}-named-svc").to_lowercase();
    let named = lang.start(
        free_port(),
        None,
        &[
            ("OTEL_SERVICE_NAME", &named_name),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=tracer-test",
            ),
        ],
    );
    let _agent = Agent::start_for(&rx, "grpc", &[plain.pid(), named.pid()], &[]);

    let cases = cases();
    for c in &cases {
        send(if c.named { &named } else { &plain }, c);
    }
    // No context at all: the span is found by a unique query string.
    let probe = format!("probe={}", random_hex(8));
    let r = HttpConn::connect(plain.port()).request("GET", &format!("/hello?{probe}"), &[], None);
    assert_eq!(r.status, 200, "GET /hello?{probe} on {lang:?}");

    let spans = rx.wait_for_named(
        &format!(
            "{lang:?}: a SERVER span for each of {} requests",
            cases.len() + 1
        ),
        |s| {
            cases.iter().all(|c| has(s, "SERVER", &c.trace_id))
                && s.iter().any(|x| x.attr_str("url.query") == Some(&probe))
        },
        WAIT,
    );

    for c in &cases {
        let svc = if c.named { &named } else { &plain };
        let label = format!("{lang:?} {}", c.label);
        let span = only(
            &spans,
            &format!("SERVER span of trace {} ({label})", c.trace_id),
            |s| s.kind == "SERVER" && s.trace_id == c.trace_id,
        );
        let expected = ServerSpan {
            trace_id: &c.trace_id,
            parent: &c.parent,
            method: c.method,
            path: c.path,
            status: i64::from(c.status),
            source: c.source,
            pid: svc.pid(),
            port: svc.port(),
        };
        expected.check(&spans, span, &label);
        if c.named {
            check_eq!(
                &spans,
                span.service_name(),
                named_name.as_str(),
                "{label}: service.name from OTEL_SERVICE_NAME"
            );
            check_eq!(
                &spans,
                span.resource
                    .get("deployment.environment.name")
                    .and_then(|v| v.as_str()),
                Some("tracer-test"),
                "{label}: the other OTEL_RESOURCE_ATTRIBUTES belong to the resource"
            );
        } else {
            check!(
                &spans,
                lang.is_exe_name(span.service_name()),
                "{label}: service.name must fall back to the executable name: {span}"
            );
        }
    }

    check_no_context(&spans, lang, &probe, &cases, &plain);
}

/// The request without context: a fresh, valid, non-zero trace id and no parent.
fn check_no_context(spans: &[Span], lang: Lang, probe: &str, cases: &[Case], plain: &Service) {
    let label = format!("{lang:?} no context");
    let span = only(spans, &format!("SERVER span with url.query {probe}"), |s| {
        s.attr_str("url.query") == Some(probe)
    });
    let t = &span.trace_id;
    check!(
        spans,
        t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) && t != &"0".repeat(32),
        "{label}: a fresh valid trace id: {span}"
    );
    check!(
        spans,
        cases.iter().all(|c| &c.trace_id != t),
        "{label}: the trace id must be new: {span}"
    );
    let expected = ServerSpan {
        trace_id: t,
        parent: "",
        method: "GET",
        path: "/hello",
        status: 200,
        source: "none",
        pid: plain.pid(),
        port: plain.port(),
    };
    expected.check(spans, span, &label);
}

fn send(svc: &Service, c: &Case) {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut conn = HttpConn::connect(svc.port());
    let r = if c.chunked_body {
        let body = c.body.unwrap_or_default();
        let (a, b) = body.split_at(body.len() / 2);
        conn.request_chunked(c.method, c.path, &headers, &[a, b])
    } else {
        conn.request(c.method, c.path, &headers, c.body)
    };
    assert_eq!(
        r.status,
        c.status,
        "{}: response status from {}",
        c.label,
        svc.url()
    );
    if let Some(body) = c.body {
        assert_eq!(r.body, body, "{}: /echo must return the body", c.label);
    }
    if c.path == "/chunked" {
        assert!(
            r.chunked && r.chunks > 1,
            "{}: expected a chunked response in several chunks: {r:?}",
            c.label
        );
    }
}

#[test]
fn go_server_spans() {
    server_spans(Lang::Go);
}

#[test]
fn python_server_spans() {
    server_spans(Lang::Python);
}

#[test]
fn node_server_spans() {
    server_spans(Lang::Node);
}
