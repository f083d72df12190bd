//! Root: hostile or broken input on a traced server. Garbage bytes and malformed heads must not
//! crash the agent, and malformed trace context must be ignored (a fresh root trace), never
//! trusted: a bad header must not merge unrelated requests into one trace.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use tracer_tests::expect::{ServerSpan, only, padded};
use tracer_tests::harness::{
    Agent, HttpConn, Receiver, Service, Span, free_port, get, random_hex, root_test,
};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// Writes `bytes` on a fresh connection, closes our side and drains whatever the server answers.
fn send_garbage(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).expect("write garbage");
    let _ = s.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
}

/// The first bytes of a TLS 1.2 `ClientHello`: record header, handshake header, version, random.
fn client_hello_prefix() -> Vec<u8> {
    let mut b = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    b.extend(std::iter::repeat_n(0xab, 32));
    b.extend([0x20, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2b, 0x00, 0x00, 0x0a]);
    b
}

/// A malformed context: its headers, and the values it carries that must not become ids.
struct Malformed {
    label: &'static str,
    headers: Vec<(&'static str, String)>,
    /// Trace ids a buggy parser could derive from the headers.
    not_trace: Vec<String>,
}

fn malformed_cases() -> Vec<Malformed> {
    // Every case carries a valid span id where one fits: a parser that accepted the broken
    // trace id would make it the parent, which the empty-parent check catches.
    let s = random_hex(8);
    let b3multi = |label, trace: String| {
        let headers = vec![
            ("x-b3-traceid", trace.clone()),
            ("x-b3-spanid", s.clone()),
            ("x-b3-sampled", "1".to_owned()),
        ];
        Malformed {
            label,
            headers,
            not_trace: vec![padded(&trace), padded(&trace.to_lowercase())],
        }
    };
    let t15 = random_hex(8)[..15].to_owned();
    let upper = random_hex(16).to_uppercase();
    vec![
        b3multi("x-b3-traceid of 15 hex digits", t15),
        b3multi("non-hex x-b3-traceid", "zz".repeat(16)),
        b3multi("all-zero x-b3-traceid", "0".repeat(32)),
        Malformed {
            label: "b3 single `abc-def`",
            headers: vec![("b3", "abc-def".to_owned())],
            not_trace: vec![padded("abc"), padded("def")],
        },
        Malformed {
            label: "traceparent in uppercase hex",
            headers: vec![("traceparent", format!("00-{upper}-{}-01", s.to_uppercase()))],
            not_trace: vec![upper.to_lowercase()],
        },
    ]
}

#[test]
fn garbage_and_malformed_context_are_survived_and_ignored() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::python(free_port(), None, &[]);
    let mut agent = Agent::start_for(&rx, "grpc", &[svc.pid()], &[]);

    // (a) Not HTTP at all.
    let random: Vec<u8> = (0..4).flat_map(|_| random_bytes(256)).collect();
    send_garbage(svc.port(), &random);
    send_garbage(svc.port(), &client_hello_prefix());

    // (b) Malformed context, one request each, told apart by a unique query.
    let cases = malformed_cases();
    let probes: Vec<String> = cases
        .iter()
        .map(|_| format!("case={}", random_hex(8)))
        .collect();
    for (c, probe) in cases.iter().zip(&probes) {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = get(svc.port(), &format!("/hello?{probe}"), &headers);
        assert_eq!(r.status, 200, "{}: GET /hello?{probe}", c.label);
    }

    // (c) A header line without a colon; the server may reject it (400) or skip it.
    let mut conn = HttpConn::connect(svc.port());
    let mut raw = conn.format_request("GET", "/hello?case=nocolon", &[], None);
    let end = raw.len() - 2; // before the blank line that ends the head
    raw.splice(
        end..end,
        b"this header line has no colon\r\n".iter().copied(),
    );
    conn.send_raw(&["GET"], &raw);
    let r = conn.read_response();
    assert!(
        matches!(r.status, 200 | 400),
        "a head with a colon-less line: expected 200 or 400, got {r:?}"
    );

    // Then a normal request must be traced correctly: on the same connection if the server kept
    // it open (the agent must find the next head after the one it could not parse).
    if r.status != 200 || r.header("connection") == Some("close") {
        conn = HttpConn::connect(svc.port());
    }
    let (t, s) = (random_hex(16), random_hex(8));
    let b3 = [
        ("x-b3-traceid", t.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    let r = conn.request("GET", "/status/201", &b3, None);
    assert_eq!(r.status, 201, "final request");

    let spans = rx.wait_for_named(
        "a SERVER span for each malformed-context request and for the final request",
        |sp| {
            sp.iter().any(|x| x.kind == "SERVER" && x.trace_id == t)
                && probes
                    .iter()
                    .all(|p| sp.iter().any(|x| x.attr_str("url.query") == Some(p)))
        },
        WAIT,
    );
    for (c, probe) in cases.iter().zip(&probes) {
        check_fresh_root(&spans, c, probe, &svc);
    }
    let mut ids: Vec<&str> = probes
        .iter()
        .map(|p| {
            only(&spans, p, |x| x.attr_str("url.query") == Some(p))
                .trace_id
                .as_str()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    check_eq!(
        &spans,
        ids.len(),
        cases.len(),
        "each malformed request needs a trace of its own"
    );

    let last = only(&spans, "SERVER span of the final request", |x| {
        x.kind == "SERVER" && x.trace_id == t
    });
    ServerSpan {
        trace_id: &t,
        parent: &s,
        method: "GET",
        path: "/status/201",
        status: 201,
        source: "b3multi",
        pid: svc.pid(),
        port: svc.port(),
    }
    .check(&spans, last, "normal request after the bad input");

    assert!(
        agent.is_running(),
        "the agent died on bad input; output:\n{}",
        agent.output()
    );
    let status = agent.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM after bad input must exit 0 (got {status:?}); output:\n{}",
        agent.output()
    );
}

/// The span of a malformed-context request: a new valid trace id, no parent, source "none".
fn check_fresh_root(spans: &[Span], c: &Malformed, probe: &str, svc: &Service) {
    let span = only(
        spans,
        &format!("SERVER span of {} ({probe})", c.label),
        |x| x.attr_str("url.query") == Some(probe),
    );
    let t = span.trace_id.as_str();
    check!(
        spans,
        t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()) && t != "0".repeat(32),
        "{}: the trace id must be 32 hex digits, not zero: {span}",
        c.label
    );
    check!(
        spans,
        !c.not_trace.iter().any(|bad| bad == t),
        "{}: the trace id must not come from the malformed header {:?}: {span}",
        c.label,
        c.headers
    );
    ServerSpan {
        trace_id: t,
        parent: "",
        method: "GET",
        path: "/hello",
        status: 200,
        source: "none",
        pid: svc.pid(),
        port: svc.port(),
    }
    .check(spans, span, c.label);
}

fn random_bytes(n: usize) -> Vec<u8> {
    let hex = random_hex(n);
    (0..n)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}
