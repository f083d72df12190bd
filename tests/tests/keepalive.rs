//! Root: many requests on one connection. Each request carries its own B3 trace id, so a request
//! paired with the wrong response (or a lost one) shows up as a wrong path, method or status.

use std::time::Duration;

use tracer_tests::check_eq;
use tracer_tests::expect::{ServerSpan, only};
use tracer_tests::harness::{Agent, HttpConn, Lang, Receiver, free_port, random_hex, root_test};

const WAIT: Duration = Duration::from_secs(30);

/// (method, path, status) of request `i`: a mix of plain, body-carrying and chunked responses.
fn request_kind(i: usize) -> (&'static str, &'static str) {
    match i % 3 {
        0 => ("GET", "/hello"),
        1 => ("POST", "/echo"),
        _ => ("GET", "/chunked"),
    }
}

fn hundred_requests_on_one_connection(lang: Lang) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = lang.start(free_port(), None, &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[svc.pid()], &[]);

    let mut conn = HttpConn::connect(svc.port());
    let mut sent = Vec::new();
    for i in 0..100 {
        let (t, s) = (random_hex(16), random_hex(8));
        let (method, path) = request_kind(i);
        let body = format!("request {i}");
        let headers = [
            ("x-b3-traceid", t.as_str()),
            ("x-b3-spanid", s.as_str()),
            ("x-b3-sampled", "1"),
        ];
        let r = conn.request(
            method,
            path,
            &headers,
            (method == "POST").then_some(body.as_bytes()),
        );
        assert_eq!(
            r.status, 200,
            "{lang:?} keep-alive request {i}: {method} {path}"
        );
        sent.push((t, s));
    }

    let spans = rx.wait_for_named(
        &format!("{lang:?}: 100 SERVER spans, one per trace id"),
        |spans| {
            sent.iter()
                .all(|(t, _)| spans.iter().any(|s| s.kind == "SERVER" && &s.trace_id == t))
        },
        WAIT,
    );
    for (i, (t, s)) in sent.iter().enumerate() {
        let (method, path) = request_kind(i);
        let label = format!("{lang:?} keep-alive request {i} ({method} {path})");
        let span = only(
            &spans,
            &format!("SERVER span of trace {t} ({label})"),
            |x| x.kind == "SERVER" && &x.trace_id == t,
        );
        ServerSpan {
            trace_id: t,
            parent: s,
            method,
            path,
            status: 200,
            source: "b3multi",
            pid: svc.pid(),
            port: svc.port(),
        }
        .check(&spans, span, &label);
    }
    let servers = spans.iter().filter(|s| s.kind == "SERVER").count();
    check_eq!(&spans, servers, 100, "{lang:?}: number of SERVER spans");
}

/// Ten requests written at once; the server answers them in order on the same connection.
fn pipelined(lang: Lang) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = lang.start(free_port(), None, &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[svc.pid()], &[]);

    let codes: [u16; 10] = [200, 201, 202, 203, 206, 404, 409, 410, 500, 503];
    let mut conn = HttpConn::connect(svc.port());
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for code in codes {
        let (t, s) = (random_hex(16), random_hex(8));
        let headers = [
            ("x-b3-traceid", t.as_str()),
            ("x-b3-spanid", s.as_str()),
            ("x-b3-sampled", "1"),
        ];
        bytes.extend(conn.format_request("GET", &format!("/status/{code}"), &headers, None));
        sent.push((code, t, s));
    }
    conn.send_raw(&["GET"; 10], &bytes);
    for code in codes {
        assert_eq!(
            conn.read_response().status,
            code,
            "{lang:?}: pipelined response order"
        );
    }

    let spans = rx.wait_for_named(
        &format!("{lang:?}: 10 SERVER spans for pipelined requests"),
        |spans| {
            sent.iter()
                .all(|(_, t, _)| spans.iter().any(|s| s.kind == "SERVER" && &s.trace_id == t))
        },
        WAIT,
    );
    for (code, t, s) in &sent {
        let path = format!("/status/{code}");
        let label = format!("{lang:?} pipelined GET {path}");
        let span = only(
            &spans,
            &format!("SERVER span of trace {t} ({label})"),
            |x| x.kind == "SERVER" && &x.trace_id == t,
        );
        let status = i64::from(*code);
        ServerSpan {
            trace_id: t,
            parent: s,
            method: "GET",
            path: &path,
            status,
            source: "b3multi",
            pid: svc.pid(),
            port: svc.port(),
        }
        .check(&spans, span, &label);
    }
}

#[test]
fn python_hundred_requests_on_one_connection() {
    hundred_requests_on_one_connection(Lang::Python);
}

#[test]
fn go_hundred_requests_on_one_connection() {
    hundred_requests_on_one_connection(Lang::Go);
}

#[test]
fn node_hundred_requests_on_one_connection() {
    hundred_requests_on_one_connection(Lang::Node);
}

#[test]
fn python_pipelined_requests_are_not_mispaired() {
    pipelined(Lang::Python);
}

#[test]
fn go_pipelined_requests_are_not_mispaired() {
    pipelined(Lang::Go);
}

#[test]
fn node_pipelined_requests_are_not_mispaired() {
    pipelined(Lang::Node);
}
