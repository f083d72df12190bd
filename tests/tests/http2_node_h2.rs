//! Root: HTTP/2 over clear text (h2c, prior knowledge) with Node's http2 module. One connection
//! carries concurrent streams: plain requests, gRPC-shaped calls (unary, server streaming with
//! five messages, an UNAVAILABLE status in the trailers) and a call the service forwards to a
//! second service over an HTTP/2 connection of its own. Every request carries its own B3 ids:
//! each SERVER span must have the sender's trace id and parent, its path and status; the gRPC
//! ones their `rpc.*` attributes, status and message counts; the forwarded call a CLIENT span
//! under the SERVER span that caused it, and a SERVER span downstream in the same trace.

use std::{process::Command, time::Duration};

use tracer_tests::check_eq;
use tracer_tests::expect::{ServerSpan, of_pid, only, padded};
use tracer_tests::harness::{
    Agent, Receiver, Service, free_port, random_hex, root_test, services_dir,
};
use tracer_tests::otlp::Span;

const WAIT: Duration = Duration::from_secs(30);

/// One call the client makes: path, gRPC-shaped or not, extra headers.
struct Call {
    path: &'static str,
    grpc: bool,
    extra: &'static [(&'static str, &'static str)],
    trace: String,
    span: String,
}

fn call(path: &'static str, grpc: bool, extra: &'static [(&'static str, &'static str)]) -> Call {
    Call {
        path,
        grpc,
        extra,
        trace: random_hex(16),
        span: random_hex(8),
    }
}

/// Makes every call concurrently on one HTTP/2 connection (node h2.js client); what it got.
fn make_calls(port: u16, calls: &[Call]) -> Vec<serde_json::Value> {
    let json: Vec<serde_json::Value> = calls
        .iter()
        .map(|c| {
            let mut headers = serde_json::Map::new();
            headers.insert("x-b3-traceid".into(), c.trace.clone().into());
            headers.insert("x-b3-spanid".into(), c.span.clone().into());
            headers.insert("x-b3-sampled".into(), "1".into());
            for (k, v) in c.extra {
                headers.insert((*k).into(), (*v).into());
            }
            serde_json::json!({ "path": c.path, "grpc": c.grpc, "headers": headers })
        })
        .collect();
    let out = Command::new("node")
        .arg(services_dir().join("node/h2.js"))
        .args(["client", &port.to_string()])
        .arg(serde_json::Value::from(json).to_string())
        .output()
        .expect("running node h2.js client");
    assert!(
        out.status.success(),
        "the HTTP/2 client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints its results as JSON")
}

#[test]
fn node_h2c_streams_become_joined_spans() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let downstream = Service::node_h2(free_port(), None);
    let svc = Service::node_h2(free_port(), Some(&downstream.url()));
    let _agent = Agent::start_for(&rx, "grpc", &[svc.pid(), downstream.pid()], &[]);

    let calls = [
        call("/hello", false, &[]),
        call("/hello", false, &[]),
        call("/hello", false, &[]),
        call("/demo.Greeter/SayHello", true, &[]),
        call("/demo.Greeter/Watch", true, &[("x-messages", "5")]),
        call("/demo.Greeter/Fail", true, &[("x-grpc-status", "14")]),
        call("/call/hello", false, &[]),
    ];
    let got = make_calls(svc.port(), &calls);
    // Positive control: the calls themselves went as planned.
    let grpc_status: Vec<Option<&str>> = got.iter().map(|r| r["grpcStatus"].as_str()).collect();
    assert_eq!(
        grpc_status,
        [None, None, None, Some("0"), Some("0"), Some("14"), None],
        "{got:?}"
    );
    assert_eq!(got[4]["messages"], 5, "{got:?}");
    assert!(got.iter().all(|r| r["status"] == 200), "{got:?}");

    let forwarded = &calls[6];
    let spans = rx.wait_for_named(
        "a SERVER span per call, the forwarded call's CLIENT span and its downstream SERVER span",
        |spans| {
            calls.iter().all(|c| {
                spans.iter().any(|s| {
                    s.kind == "SERVER" && s.trace_id == padded(&c.trace) && of_pid(s, svc.pid())
                })
            }) && spans
                .iter()
                .any(|s| s.kind == "CLIENT" && s.trace_id == padded(&forwarded.trace))
                && spans.iter().any(|s| {
                    s.kind == "SERVER"
                        && s.trace_id == padded(&forwarded.trace)
                        && of_pid(s, downstream.pid())
                })
        },
        WAIT,
    );
    let ids = Ids {
        svc: svc.pid(),
        port: svc.port(),
        downstream: downstream.pid(),
    };
    for c in calls.iter().filter(|c| c.path == "/hello") {
        check_plain(&spans, c, &ids);
    }
    for (c, method, code, responses) in [
        (&calls[3], "SayHello", 0, 1),
        (&calls[4], "Watch", 0, 5),
        (&calls[5], "Fail", 14, 1),
    ] {
        check_grpc(&spans, c, &ids, (method, code, responses));
    }
    check_forwarded(&spans, forwarded, &ids);
}

/// The traced processes.
struct Ids {
    svc: u32,
    port: u16,
    downstream: u32,
}

fn server_of<'a>(spans: &'a [Span], c: &Call, ids: &Ids) -> &'a Span {
    only(spans, &format!("SERVER span of {}", c.path), |s| {
        s.kind == "SERVER" && s.trace_id == padded(&c.trace) && of_pid(s, ids.svc)
    })
}

fn check_plain(spans: &[Span], c: &Call, ids: &Ids) {
    let s = server_of(spans, c, ids);
    ServerSpan {
        trace_id: &padded(&c.trace),
        parent: &c.span,
        method: "GET",
        path: "/hello",
        status: 200,
        source: "b3multi",
        pid: ids.svc,
        port: ids.port,
    }
    .check(spans, s, "h2c GET /hello");
    check_eq!(
        spans,
        s.attr_str("network.protocol.name"),
        Some("http"),
        "protocol"
    );
    check_eq!(
        spans,
        s.attr_str("network.protocol.version"),
        Some("2"),
        "version"
    );
}

/// A gRPC call's SERVER span: (method, status code, response messages).
fn check_grpc(spans: &[Span], c: &Call, ids: &Ids, (method, code, responses): (&str, i64, i64)) {
    let s = server_of(spans, c, ids);
    let label = c.path;
    check_eq!(
        spans,
        s.parent_span_id.as_str(),
        c.span.as_str(),
        "{label}: parent"
    );
    check_eq!(spans, s.name.as_str(), &c.path[1..], "{label}: span name");
    check_eq!(
        spans,
        s.attr_str("rpc.system"),
        Some("grpc"),
        "{label}: rpc.system"
    );
    check_eq!(
        spans,
        s.attr_str("rpc.service"),
        Some("demo.Greeter"),
        "{label}: rpc.service"
    );
    check_eq!(
        spans,
        s.attr_str("rpc.method"),
        Some(method),
        "{label}: rpc.method"
    );
    check_eq!(
        spans,
        s.attr_i64("rpc.grpc.status_code"),
        Some(code),
        "{label}: status"
    );
    check_eq!(
        spans,
        s.attr_i64("tracer.grpc.request.message_count"),
        Some(1),
        "{label}: request messages"
    );
    check_eq!(
        spans,
        s.attr_i64("tracer.grpc.response.message_count"),
        Some(responses),
        "{label}: response messages"
    );
    // UNAVAILABLE is a server error; OK is not.
    check_eq!(
        spans,
        s.status_code == "ERROR",
        code == 14,
        "{label}: span status"
    );
}

fn check_forwarded(spans: &[Span], c: &Call, ids: &Ids) {
    let server = server_of(spans, c, ids);
    let client = only(spans, "CLIENT span of the forwarded call", |s| {
        s.kind == "CLIENT" && s.trace_id == padded(&c.trace)
    });
    check_eq!(
        spans,
        client.parent_span_id.as_str(),
        server.span_id.as_str(),
        "CLIENT parent"
    );
    check_eq!(
        spans,
        client.attr_str("url.path"),
        Some("/hello"),
        "CLIENT url.path"
    );
    check_eq!(
        spans,
        client.attr_i64("http.response.status_code"),
        Some(200),
        "CLIENT status"
    );
    assert!(
        of_pid(client, ids.svc),
        "the CLIENT span is the forwarding service's"
    );
    let down = only(spans, "downstream SERVER span", |s| {
        s.kind == "SERVER" && s.trace_id == padded(&c.trace) && of_pid(s, ids.downstream)
    });
    // The app forwarded the caller's span id unchanged (read-only mode): the downstream SERVER
    // span is its child.
    check_eq!(
        spans,
        down.parent_span_id.as_str(),
        c.span.as_str(),
        "downstream parent"
    );
}
