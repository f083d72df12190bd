//! Root: a server that peeks at a connection's first bytes (`MSG_PEEK`, as Envoy's listener
//! inspectors do) before reading them. The peek consumes nothing: the request must be assembled
//! from the read alone, not from the peeked bytes followed by the same bytes again.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use tracer_tests::harness::{Agent, HttpConn, Receiver, Service, free_port, random_hex, root_test};
use tracer_tests::observe::{counter, scrape};

#[test]
fn peeked_bytes_are_not_captured_twice() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::python(free_port(), None, &[("PEEK", "16")]);
    let metrics_port = free_port();
    let _agent = Agent::start(vec![
        "--otlp-endpoint".to_owned(),
        rx.grpc_endpoint(),
        "--metrics-addr".to_owned(),
        format!("127.0.0.1:{metrics_port}"),
        "--pid".to_owned(),
        svc.pid().to_string(),
    ]);
    let (t, s) = (random_hex(16), random_hex(8));
    let headers = [
        ("x-b3-traceid", t.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    let r = HttpConn::connect(svc.port()).request("GET", "/status/201?peeked=1", &headers, None);
    assert_eq!(r.status, 201);
    let spans = rx.wait_for_named(
        &format!("SERVER span of trace {t}"),
        |spans| spans.iter().any(|x| x.kind == "SERVER" && x.trace_id == t),
        Duration::from_secs(20),
    );
    let span = spans
        .iter()
        .find(|x| x.kind == "SERVER" && x.trace_id == t)
        .expect("waited for it");
    assert_eq!(span.parent_span_id, s);
    assert_eq!(span.attr_str("url.path"), Some("/status/201"));
    assert_eq!(span.attr_str("url.query"), Some("peeked=1"));
    assert_eq!(span.attr_i64("http.response.status_code"), Some(201));
    assert_eq!(span.attr_str("network.protocol.version"), Some("1.1"));
    // A positive control that comes after it: a head httparse refuses (a header line without a
    // colon) on a second connection. Once the counter shows that one, it includes the first
    // request's head, which must not have been refused: made of the peek and the read together
    // ("GET /status/201?GET /status/201?peeked=1 ...") it would have been.
    let mut raw = TcpStream::connect(("127.0.0.1", svc.port())).expect("connect");
    raw.write_all(b"GET /malformed HTTP/1.1\r\nHost: x\r\nthis line has no colon\r\n\r\n")
        .expect("send a malformed head");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = raw.read(&mut [0u8; 512]);
    // A connection's parse counters join the agent's totals when it ends.
    drop(raw);
    let deadline = Instant::now() + Duration::from_secs(20);
    let malformed = loop {
        let v = counter(&scrape(metrics_port), "tracer_http_malformed_heads_total").unwrap_or(0);
        if v > 0 || Instant::now() >= deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        malformed, 1,
        "only the deliberately malformed head may count; 0: the control was not seen, 2: the peeked bytes were taken for part of the first head"
    );
}
