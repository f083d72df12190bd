//! Root: a request head much larger than `--capture-size`. The kernel side copies only the first
//! bytes of each read; the agent must still build the span from what it saw (the context headers
//! come first), flag it as truncated, and stay in step for the next request on the connection.

use std::time::Duration;

use tracer_tests::expect::{ServerSpan, only};
use tracer_tests::harness::{Agent, HttpConn, Receiver, Service, free_port, random_hex, root_test};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);
const CAPTURE: &str = "256";

#[test]
fn large_head_is_truncated_and_the_connection_stays_in_sync() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::python(free_port(), None, &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[svc.pid()], &["--capture-size", CAPTURE]);

    // Request line, Host, User-Agent and the B3 headers fit in the first ~160 bytes; then about
    // 3.3 KB of filler, far beyond the 256 captured bytes.
    let (t1, s1) = (random_hex(16), random_hex(8));
    let filler: Vec<(String, String)> = (0..60)
        .map(|i| (format!("x-filler-{i}"), random_hex(20)))
        .collect();
    let mut headers = vec![
        ("x-b3-traceid", t1.as_str()),
        ("x-b3-spanid", s1.as_str()),
        ("x-b3-sampled", "1"),
    ];
    headers.extend(filler.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let mut conn = HttpConn::connect(svc.port());
    let head_len = conn.format_request("GET", "/hello", &headers, None).len();
    assert!(head_len > 3000, "the big head is {head_len} bytes");
    let r = conn.request("GET", "/hello", &headers, None);
    assert_eq!(r.status, 200, "GET /hello with a {head_len}-byte head");

    // Then a small request on the same keep-alive connection.
    let (t2, s2) = (random_hex(16), random_hex(8));
    let small = [
        ("x-b3-traceid", t2.as_str()),
        ("x-b3-spanid", s2.as_str()),
        ("x-b3-sampled", "1"),
    ];
    let r = conn.request("GET", "/status/404", &small, None);
    assert_eq!(r.status, 404, "GET /status/404 after the big head");

    let spans = rx.wait_for_named(
        "SERVER spans of the big-head request and of the one after it",
        |s| {
            [&t1, &t2]
                .iter()
                .all(|t| s.iter().any(|x| x.kind == "SERVER" && &&x.trace_id == t))
        },
        WAIT,
    );
    let big = only(&spans, "SERVER span of the big-head request", |s| {
        s.kind == "SERVER" && s.trace_id == t1
    });
    let expected = |trace_id, parent, path, status| ServerSpan {
        trace_id,
        parent,
        method: "GET",
        path,
        status,
        source: "b3multi",
        pid: svc.pid(),
        port: svc.port(),
    };
    expected(&t1, &s1, "/hello", 200).check(&spans, big, "big head");
    check_eq!(
        &spans,
        big.attributes.get("tracer.capture.truncated"),
        Some(&serde_json::Value::Bool(true)),
        "big head ({head_len} bytes, capture size {CAPTURE}): tracer.capture.truncated"
    );

    let next = only(
        &spans,
        "SERVER span of the request after the big head",
        |s| s.kind == "SERVER" && s.trace_id == t2,
    );
    expected(&t2, &s2, "/status/404", 404).check(&spans, next, "request after the big head");
    check!(
        &spans,
        !next.attributes.contains_key("tracer.capture.truncated"),
        "the small request after the big head fits the capture and must not be flagged truncated: {next}"
    );
    let servers = spans.iter().filter(|s| s.kind == "SERVER").count();
    check_eq!(
        &spans,
        servers,
        2,
        "SERVER spans (one per request, none from the filler bytes)"
    );
}
