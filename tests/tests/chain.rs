//! Root: a two-hop chain. The front service answers GET /call/<path> by calling the back service,
//! forwarding the incoming B3/W3C headers unchanged (as mesh docs require of apps). Expected:
//! front SERVER (parent = incoming span id), front CLIENT (parent = front SERVER), back SERVER
//! (same trace, parent = the span id the front app forwarded, i.e. the incoming one).

use std::time::Duration;

use tracer_tests::expect::{ServerSpan, has, of_pid, only, padded};
use tracer_tests::harness::{
    Agent, Lang, Receiver, Service, Span, free_port, get, random_hex, root_test,
};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// One request sent to the front service.
struct Req {
    label: &'static str,
    /// The trace id the spans must carry (64-bit ids padded).
    trace: String,
    /// The span id sent in the request.
    incoming: String,
    /// Expected `tracer.context.source`.
    source: &'static str,
    /// Path on the back service ("/hello" or "/status/404").
    back_path: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
}

fn chain(front_lang: Lang, back_lang: Lang) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = back_lang.start(free_port(), None, &[]);
    let front = front_lang.start(free_port(), Some(&back.url()), &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[front.pid(), back.pid()], &[]);

    // A 64-bit B3 id, as Envoy sends by default, and a W3C context on a second request (which a Go
    // or Node client sends on its pooled keep-alive connection to the back service).
    let (t64, s1) = (random_hex(8), random_hex(8));
    let (t128, s2) = (random_hex(16), random_hex(8));
    let (t404, s3) = (random_hex(16), random_hex(8));
    let requests = [
        Req {
            label: "B3 multi 64-bit",
            trace: padded(&t64),
            incoming: s1.clone(),
            source: "b3multi",
            back_path: "/hello",
            status: 200,
            headers: vec![
                ("x-b3-traceid", t64.clone()),
                ("x-b3-spanid", s1),
                ("x-b3-sampled", "1".into()),
            ],
        },
        Req {
            label: "W3C traceparent",
            trace: t128.clone(),
            incoming: s2.clone(),
            source: "tracecontext",
            back_path: "/hello",
            status: 200,
            headers: vec![("traceparent", format!("00-{t128}-{s2}-01"))],
        },
        // CLIENT >= 400 is an error, SERVER 4xx is not: the same 404 gives both.
        Req {
            label: "B3 multi 128-bit, downstream 404",
            trace: t404.clone(),
            incoming: s3.clone(),
            source: "b3multi",
            back_path: "/status/404",
            status: 404,
            headers: vec![
                ("x-b3-traceid", t404),
                ("x-b3-spanid", s3),
                ("x-b3-sampled", "1".into()),
            ],
        },
    ];
    for req in &requests {
        let headers: Vec<(&str, &str)> =
            req.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let path = format!("/call{}", req.back_path);
        let r = get(front.port(), &path, &headers);
        let label = req.label;
        assert_eq!(
            r.status,
            req.status,
            "{label}: GET {path} through {front_lang:?} to {back_lang:?}: {}",
            r.text()
        );
    }

    let spans = rx.wait_for_named(
        &format!("{front_lang:?} SERVER + CLIENT and {back_lang:?} SERVER spans for every trace"),
        |s| {
            requests.iter().all(|r| {
                has(s, "CLIENT", &r.trace)
                    && s.iter()
                        .filter(|x| x.kind == "SERVER" && x.trace_id == r.trace)
                        .count()
                        >= 2
            })
        },
        WAIT,
    );

    for req in &requests {
        check_hop(&spans, req, (front_lang, &front), (back_lang, &back));
    }
}

/// The three spans of one request through the chain.
fn check_hop(
    spans: &[Span],
    req: &Req,
    (front_lang, front): (Lang, &Service),
    (back_lang, back): (Lang, &Service),
) {
    let Req {
        label,
        trace,
        incoming,
        source,
        back_path,
        status,
        ..
    } = req;
    let status = i64::from(*status);
    let label = format!("{front_lang:?} -> {back_lang:?}, {label}");
    let in_trace = |s: &Span| &s.trace_id == trace;
    let front_server = only(
        spans,
        &format!("{front_lang:?} SERVER span ({label})"),
        |s| in_trace(s) && s.kind == "SERVER" && of_pid(s, front.pid()),
    );
    ServerSpan {
        trace_id: trace,
        parent: incoming,
        method: "GET",
        path: &format!("/call{back_path}"),
        status,
        source,
        pid: front.pid(),
        port: front.port(),
    }
    .check(spans, front_server, &format!("{label}: front SERVER"));

    let client = only(
        spans,
        &format!("{front_lang:?} CLIENT span ({label})"),
        |s| in_trace(s) && s.kind == "CLIENT",
    );
    check_client(
        spans,
        &label,
        client,
        front_server,
        (front.pid(), back),
        (back_path, status),
    );

    let back_server = only(
        spans,
        &format!("{back_lang:?} SERVER span ({label})"),
        |s| in_trace(s) && s.kind == "SERVER" && of_pid(s, back.pid()),
    );
    // Read-only mode: the app forwarded the incoming span id unchanged, so that is the parent.
    ServerSpan {
        trace_id: trace,
        parent: incoming,
        method: "GET",
        path: back_path,
        status,
        source,
        pid: back.pid(),
        port: back.port(),
    }
    .check(spans, back_server, &format!("{label}: back SERVER"));
    check!(
        spans,
        back_lang.is_exe_name(back_server.service_name()),
        "{label}: back service.name: {back_server}"
    );
    check!(
        spans,
        front_lang.is_exe_name(client.service_name()),
        "{label}: CLIENT service.name: {client}"
    );
    let ids = [&front_server.span_id, &client.span_id, &back_server.span_id];
    check!(
        spans,
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{label}: three distinct span ids"
    );
}

/// The front service's CLIENT span: child of its SERVER span, describing the call to `back`.
fn check_client(
    spans: &[Span],
    label: &str,
    client: &Span,
    front_server: &Span,
    (front_pid, back): (u32, &Service),
    (path, status): (&str, i64),
) {
    check!(
        spans,
        of_pid(client, front_pid),
        "{label}: the CLIENT span belongs to the front process {}: {client}",
        front_pid
    );
    check_eq!(
        spans,
        client.parent_span_id,
        front_server.span_id,
        "{label}: CLIENT parent = the front SERVER span"
    );
    check_eq!(spans, client.name.as_str(), "GET", "{label}: CLIENT name");
    check_eq!(
        spans,
        client.attr_str("http.request.method"),
        Some("GET"),
        "{label}: CLIENT http.request.method"
    );
    check_eq!(
        spans,
        client.attr_str("url.path"),
        Some(path),
        "{label}: CLIENT url.path"
    );
    check_eq!(
        spans,
        client.attr_i64("http.response.status_code"),
        Some(status),
        "{label}: CLIENT http.response.status_code"
    );
    check_eq!(
        spans,
        client.attr_i64("server.port"),
        Some(i64::from(back.port())),
        "{label}: CLIENT server.port"
    );
    check_eq!(
        spans,
        client.attr_str("url.full"),
        Some(format!("{}{path}", back.url()).as_str()),
        "{label}: CLIENT url.full"
    );
    check_eq!(
        spans,
        client.status_code == "ERROR",
        status >= 400,
        "{label}: CLIENT status ERROR exactly for >= 400 ({})",
        client.status_code
    );
    check!(
        spans,
        front_server.start_unix_nanos <= client.start_unix_nanos
            && client.end_unix_nanos <= front_server.end_unix_nanos,
        "{label}: the CLIENT span must lie within its SERVER span: {front_server} / {client}"
    );
}

#[test]
fn go_calls_python() {
    chain(Lang::Go, Lang::Python);
}

#[test]
fn python_calls_node() {
    chain(Lang::Python, Lang::Node);
}

#[test]
fn node_calls_go() {
    chain(Lang::Node, Lang::Go);
}
