//! Root: the write side (`sk_msg`) on this kernel, with real services and the real agent.
//!
//! - rewrite: the span id an app forwards is replaced by its CLIENT span's id (and the parent
//!   id by its SERVER span's), so the downstream SERVER span is the CLIENT span's child;
//! - inject: an app that forwards nothing gets B3 (or W3C) headers, so the downstream joins the
//!   trace under the CLIENT span; read-only leaves two separate traces;
//! - bodies arrive byte-identical, keep-alive and pipelined requests get their own ids, and a
//!   head split over two sends is left as the app wrote it.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::expect::{of_pid, only, padded};
use tracer_tests::harness::{
    Agent, Lang, Receiver, Span, free_port, get, python_script, random_hex, root_test,
};
use tracer_tests::http::HttpConn;
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// What the back service's `/headers` saw, as JSON.
fn received(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("/headers answer is not JSON ({e}): {body:?}"))
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or_default()
}

/// The SERVER and CLIENT spans of the front service and the back SERVER span, in `trace`.
fn hop_spans(rx: &Receiver, trace: &str, front: u32, back: u32) -> (Vec<Span>, [Span; 3]) {
    let spans = rx.wait_for_named(
        &format!("front SERVER + CLIENT and back SERVER spans of trace {trace}"),
        |s| {
            let n = |kind: &str, pid: u32| {
                s.iter()
                    .filter(|x| x.trace_id == trace && x.kind == kind && of_pid(x, pid))
                    .count()
            };
            n("SERVER", front) >= 1 && n("CLIENT", front) >= 1 && n("SERVER", back) >= 1
        },
        WAIT,
    );
    let pick = |kind: &str, pid: u32| {
        only(&spans, &format!("{kind} span of pid {pid}"), |x| {
            x.trace_id == trace && x.kind == kind && of_pid(x, pid)
        })
        .clone()
    };
    let three = [
        pick("SERVER", front),
        pick("CLIENT", front),
        pick("SERVER", back),
    ];
    (spans, three)
}

#[test]
fn rewrite_makes_the_downstream_span_a_child_of_the_client_span() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let front = Lang::Python.start(free_port(), Some(&back.url()), &[]);
    let _agent = Agent::start_for(
        &rx,
        "grpc",
        &[front.pid(), back.pid()],
        &["--write-mode", "rewrite"],
    );

    // B3 multi, as a sidecar sends it (64-bit trace id, with a parent id).
    let (trace, incoming) = (random_hex(8), random_hex(8));
    let r = get(
        front.port(),
        "/call/headers",
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &incoming),
            ("x-b3-parentspanid", "1111111111111111"),
            ("x-b3-sampled", "1"),
        ],
    );
    check_eq!(&[], r.status, 200, "front /call/headers");
    let seen = received(&r.body);
    let (spans, [server, client, down]) = hop_spans(&rx, &padded(&trace), front.pid(), back.pid());
    check_eq!(
        &spans,
        server.parent_span_id,
        incoming,
        "front SERVER parent"
    );
    check_eq!(
        &spans,
        client.parent_span_id,
        server.span_id,
        "CLIENT parent = SERVER"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-spanid"),
        client.span_id,
        "x-b3-spanid on the wire = the CLIENT span id"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-parentspanid"),
        server.span_id,
        "x-b3-parentspanid on the wire = the SERVER span id"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-traceid"),
        trace,
        "trace id kept as sent (64-bit)"
    );
    check_eq!(&spans, field(&seen, "x-b3-sampled"), "1", "decision kept");
    check_eq!(
        &spans,
        down.parent_span_id,
        client.span_id,
        "back SERVER parent = front CLIENT: strictly nested"
    );

    // W3C traceparent: the parent-id field becomes the CLIENT span id, flags kept.
    let (t128, s2) = (random_hex(16), random_hex(8));
    let r = get(
        front.port(),
        "/call/headers",
        &[("traceparent", &format!("00-{t128}-{s2}-01"))],
    );
    check_eq!(&[], r.status, 200, "front /call/headers (W3C)");
    let seen = received(&r.body);
    let (spans, [server, client, down]) = hop_spans(&rx, &t128, front.pid(), back.pid());
    check_eq!(
        &spans,
        server.parent_span_id,
        s2,
        "front SERVER parent (W3C)"
    );
    check_eq!(
        &spans,
        field(&seen, "traceparent"),
        format!("00-{t128}-{}-01", client.span_id),
        "traceparent on the wire"
    );
    check_eq!(
        &spans,
        down.parent_span_id,
        client.span_id,
        "back SERVER parent = front CLIENT (W3C)"
    );
}

/// front (forwards no headers) -> back /headers, through an agent in `mode`.
fn no_forward(mode: &str, extra: &[&str]) -> (Vec<Span>, [Span; 2], Vec<Span>, Value) {
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let front = Lang::Python.start(free_port(), Some(&back.url()), &[("FORWARD", "none")]);
    let mut args = vec!["--write-mode", mode];
    args.extend_from_slice(extra);
    let _agent = Agent::start_for(&rx, "grpc", &[front.pid(), back.pid()], &args);
    let (trace, incoming) = (random_hex(16), random_hex(8));
    let r = get(
        front.port(),
        "/call/headers",
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &incoming),
            ("x-b3-sampled", "1"),
        ],
    );
    assert_eq!(r.status, 200, "front /call/headers in {mode} mode");
    let seen = received(&r.body);
    let spans = rx.wait_for_named(
        "front SERVER + CLIENT spans and a back SERVER span",
        |s| {
            s.iter()
                .any(|x| x.kind == "CLIENT" && x.trace_id == trace && of_pid(x, front.pid()))
                && s.iter()
                    .any(|x| x.kind == "SERVER" && of_pid(x, back.pid()))
        },
        WAIT,
    );
    let server = only(&spans, "front SERVER", |x| {
        x.kind == "SERVER" && x.trace_id == trace && of_pid(x, front.pid())
    })
    .clone();
    let client = only(&spans, "front CLIENT", |x| {
        x.kind == "CLIENT" && x.trace_id == trace && of_pid(x, front.pid())
    })
    .clone();
    check_eq!(
        &spans,
        server.parent_span_id,
        incoming,
        "{mode}: SERVER parent"
    );
    check_eq!(
        &spans,
        client.parent_span_id,
        server.span_id,
        "{mode}: CLIENT parent (same thread)"
    );
    let back_spans: Vec<Span> = spans
        .iter()
        .filter(|x| x.kind == "SERVER" && of_pid(x, back.pid()))
        .cloned()
        .collect();
    (spans, [server, client], back_spans, seen)
}

#[test]
fn inject_joins_an_app_that_forwards_nothing_and_read_only_does_not() {
    let _serial = root_test();
    // Read-only: the back service's request carries nothing; it starts a trace of its own.
    let (spans, [server, _], back, seen) = no_forward("read-only", &[]);
    check!(
        &spans,
        seen.get("x-b3-traceid").is_none() && seen.get("traceparent").is_none(),
        "read-only: nothing is added to the request: {seen}"
    );
    check!(
        &spans,
        back.iter().all(|b| b.trace_id != server.trace_id),
        "read-only: the back SERVER span is in another trace"
    );

    // Inject (B3 multi, the default format).
    let (spans, [server, client], back, seen) = no_forward("inject", &[]);
    let down = only(&back, "back SERVER (inject)", |_| true);
    check_eq!(
        &spans,
        field(&seen, "x-b3-traceid"),
        server.trace_id,
        "injected x-b3-traceid (128-bit, as received)"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-spanid"),
        client.span_id,
        "injected x-b3-spanid = CLIENT"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-parentspanid"),
        server.span_id,
        "injected x-b3-parentspanid = SERVER"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-sampled"),
        "1",
        "injected decision"
    );
    check_eq!(&spans, down.trace_id, server.trace_id, "inject: same trace");
    check_eq!(
        &spans,
        down.parent_span_id,
        client.span_id,
        "inject: back SERVER under the CLIENT span"
    );

    // The single b3 header and W3C traceparent formats.
    let (spans, [server, client], _, seen) = no_forward("inject", &["--inject-format", "b3"]);
    check_eq!(
        &spans,
        field(&seen, "b3"),
        format!(
            "{}-{}-1-{}",
            server.trace_id, client.span_id, server.span_id
        ),
        "injected b3"
    );
    let (spans, [server, client], _, seen) =
        no_forward("inject", &["--inject-format", "tracecontext"]);
    check_eq!(
        &spans,
        field(&seen, "traceparent"),
        format!("00-{}-{}-01", server.trace_id, client.span_id),
        "injected traceparent"
    );
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario per block, each with its own assertions, in the order they run"
)]
fn bodies_keepalive_pipelining_and_split_heads_survive_the_write_side() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let go = std::env::temp_dir().join(format!("wire-client-go-{}", random_hex(4)));
    let mut client = python_script("wire_client.py")
        .arg(back.port().to_string())
        .arg(&go)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the wire client");
    let pid = client.id();
    let _agent = Agent::start_for(&rx, "grpc", &[pid], &["--write-mode", "rewrite"]);
    // The client connects only now, so its socket passes the connect hook as a selected one.
    std::fs::write(&go, b"go").expect("writing the go file");
    let deadline = Instant::now() + WAIT;
    while client.try_wait().expect("wire client").is_none() {
        assert!(Instant::now() < deadline, "the wire client did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&go);
    let mut out = String::new();
    client
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("reading the wire client");
    let r: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("wire client output is not JSON ({e}): {out}"));
    let sha = field(&r, "body_sha256");
    assert_eq!(
        field(&r, "one_send"),
        sha,
        "body sent with its head arrived intact"
    );
    assert_eq!(
        field(&r, "later_sends"),
        sha,
        "body sent after its head (starting like a request) arrived intact"
    );

    let original = "a2fb4a1d1a96d312";
    let mut ids: Vec<String> = Vec::new();
    for (what, seen) in r["keepalive"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| ("keep-alive", v))
        .chain(
            r["pipelined"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| ("pipelined", v)),
        )
    {
        let id = field(seen, "x-b3-spanid");
        assert!(
            id.len() == 16 && id != original,
            "{what} request: span id rewritten: {seen}"
        );
        assert_eq!(
            field(seen, "x-b3-traceid"),
            "463ac35c9f6413ad",
            "{what}: trace kept"
        );
        ids.push(id.to_owned());
    }
    assert_eq!(
        ids.len(),
        4,
        "two keep-alive and two pipelined answers: {r}"
    );
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        4,
        "every request has its own CLIENT span id: {ids:?}"
    );
    assert_eq!(
        field(&r["split"], "x-b3-spanid"),
        original,
        "a head split over two sends is left as the app wrote it: {}",
        r["split"]
    );

    assert_eq!(
        field(&r["garbage"], "x-b3-spanid"),
        format!("zz{}", &original[2..]),
        "a span id that is not hex is left as the app wrote it: {}",
        r["garbage"]
    );

    // The agent reports exactly those ids as the client's CLIENT spans.
    let spans = rx.wait_for_named(
        "the wire client's CLIENT spans",
        |s| {
            let mine: Vec<&Span> = s
                .iter()
                .filter(|x| x.kind == "CLIENT" && of_pid(x, pid))
                .collect();
            ids.iter().all(|id| mine.iter().any(|x| &x.span_id == id))
        },
        WAIT,
    );
    let garbage = |x: &Span| x.attr_str("url.query") == Some("garbage=1");
    check!(
        &spans,
        spans
            .iter()
            .filter(|x| x.kind == "CLIENT" && of_pid(x, pid) && !garbage(x))
            .all(|x| x.trace_id == padded("463ac35c9f6413ad")),
        "all CLIENT spans in the trace the client sent"
    );
    // The context with the non-hex span id is no context to the read side either: its CLIENT
    // span starts a trace of its own.
    let spans = rx.wait_for_named(
        "the CLIENT span of the request with the non-hex span id",
        |s| s.iter().any(|x| of_pid(x, pid) && garbage(x)),
        WAIT,
    );
    let g = spans
        .iter()
        .find(|x| of_pid(x, pid) && garbage(x))
        .expect("waited for");
    check!(
        &spans,
        g.trace_id != padded("463ac35c9f6413ad") && g.parent_span_id.is_empty(),
        "the request with the non-hex span id is a new trace without parent"
    );
}

#[test]
fn inject_follows_a_go_handler_goroutine() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let front = Lang::Go.start(free_port(), Some(&back.url()), &[]);
    let agent = Agent::start_for(
        &rx,
        "grpc",
        &[front.pid(), back.pid()],
        &["--write-mode", "inject"],
    );
    check!(
        &[],
        agent.output().contains("goroutine tracking attached"),
        "the agent attached its goroutine probes to the Go service:\n{}",
        agent.output()
    );
    // /gocall: the handler starts a goroutine that calls the back service with no headers.
    // First one request, then two more on the same keep-alive connection, the third sent while
    // the second's handler runs: Go's server then reads its first byte alone ("G", then
    // "ET /gocall..."), and the kernel must still see a request there.
    let mut conn = HttpConn::connect(front.port());
    let ids: Vec<(String, String)> = (0..3).map(|_| (random_hex(16), random_hex(8))).collect();
    let request = |conn: &HttpConn, (trace, incoming): &(String, String)| {
        conn.format_request(
            "GET",
            "/gocall/headers",
            &[
                ("x-b3-traceid", trace),
                ("x-b3-spanid", incoming),
                ("x-b3-sampled", "1"),
            ],
            None,
        )
    };
    let first = request(&conn, &ids[0]);
    conn.send_raw(&["GET"], &first);
    let mut answers = vec![conn.read_response()];
    // The second request follows the first before its answer, in its own send.
    let second = request(&conn, &ids[1]);
    let third = request(&conn, &ids[2]);
    conn.send_raw(&["GET"], &second);
    std::thread::sleep(Duration::from_millis(1));
    conn.send_raw(&["GET"], &third);
    answers.push(conn.read_response());
    answers.push(conn.read_response());
    for (i, (r, (trace, incoming))) in answers.iter().zip(&ids).enumerate() {
        let round = ["first", "pipelined 1", "pipelined 2"][i];
        check_eq!(&[], r.status, 200, "Go /gocall/headers, {round} request");
        check_go_hop(
            &rx,
            &r.body,
            trace,
            incoming,
            (front.pid(), back.pid()),
            round,
        );
    }
}

/// A Go service started after the agent, in inject mode by executable name: the next process
/// scan attaches the goroutine probes to its executable, and a call made from a goroutine its
/// handler starts gets the handler's context.
#[test]
fn inject_follows_goroutines_of_a_go_service_started_after_the_agent() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let mut agent = Agent::start_for(
        &rx,
        "grpc",
        &[back.pid()],
        &["--exe", "go-demo-svc", "--write-mode", "inject"],
    );
    check!(
        &[],
        !agent.output().contains("goroutine tracking attached"),
        "no Go service runs yet, so nothing is attached:\n{}",
        agent.output()
    );
    let front = Lang::Go.start(free_port(), Some(&back.url()), &[]);
    agent.wait_line("goroutine tracking attached to", Duration::from_secs(10));
    check!(
        &[],
        agent
            .output()
            .contains("(a process started in inject mode)"),
        "the probes were attached by the rescan, not at start-up:\n{}",
        agent.output()
    );
    let (trace, incoming) = (random_hex(16), random_hex(8));
    let r = HttpConn::connect(front.port()).request(
        "GET",
        "/gocall/headers",
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &incoming),
            ("x-b3-sampled", "1"),
        ],
        None,
    );
    check_eq!(&[], r.status, 200, "Go /gocall/headers");
    check_go_hop(
        &rx,
        &r.body,
        &trace,
        &incoming,
        (front.pid(), back.pid()),
        "Go service started after the agent",
    );
}

fn check_go_hop(
    rx: &Receiver,
    body: &[u8],
    trace: &str,
    incoming: &str,
    (front, back): (u32, u32),
    round: &str,
) {
    let seen = received(body);
    let (spans, [server, client, down]) = hop_spans(rx, trace, front, back);
    check_eq!(
        &spans,
        server.parent_span_id,
        incoming,
        "{round}: Go SERVER parent"
    );
    check_eq!(
        &spans,
        client.parent_span_id,
        server.span_id,
        "{round}: Go CLIENT (made in another goroutine) parent = Go SERVER"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-spanid"),
        client.span_id,
        "{round}: injected x-b3-spanid = Go CLIENT"
    );
    check_eq!(
        &spans,
        field(&seen, "x-b3-parentspanid"),
        server.span_id,
        "{round}: injected x-b3-parentspanid = Go SERVER"
    );
    check_eq!(
        &spans,
        down.parent_span_id,
        client.span_id,
        "{round}: back SERVER under the Go CLIENT span"
    );
}
