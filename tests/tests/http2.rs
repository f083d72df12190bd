//! Root: plain HTTP/2 in clear text (h2c, prior knowledge) from Node's built-in http2 module.
//! A front service answers GET /call/<path> by calling a back service over one kept h2c
//! session, forwarding the incoming B3/W3C headers unchanged: the same three spans as HTTP/1
//! (front SERVER under the caller's span, front CLIENT under it, back SERVER under the forwarded
//! span id) with `network.protocol.version` 2. h2load sends 1000 requests as up to 50 concurrent
//! streams on one connection: 1000 SERVER spans, each with its own stream's path and status.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tracer_tests::expect::{ServerSpan, of_pid, only, padded};
use tracer_tests::grpc::attr;
use tracer_tests::h2c::{h2c_get, h2load};
use tracer_tests::harness::{Agent, Receiver, Service, Span, free_port, random_hex, root_test};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// One GET sent to the front service.
struct Req {
    label: &'static str,
    trace: String,
    incoming: String,
    source: &'static str,
    /// The path on the back service.
    back_path: &'static str,
    status: u16,
    headers: Vec<(&'static str, String)>,
}

#[test]
fn h2c_get_gives_joined_server_and_client_spans() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Service::h2c_node(free_port(), None, &[]);
    let front = Service::h2c_node(free_port(), Some(&back.url()), &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[front.pid(), back.pid()], &[]);

    let (t1, s1) = (random_hex(16), random_hex(8));
    let (t2, s2) = (random_hex(8), random_hex(8));
    let (t3, s3) = (random_hex(16), random_hex(8));
    let requests = [
        Req {
            label: "200, B3 multi",
            trace: t1.clone(),
            incoming: s1.clone(),
            source: "b3multi",
            back_path: "/hello",
            status: 200,
            headers: vec![
                ("x-b3-traceid", t1),
                ("x-b3-spanid", s1),
                ("x-b3-sampled", "1".into()),
            ],
        },
        Req {
            label: "503, B3 single 64-bit",
            trace: padded(&t2),
            incoming: s2.clone(),
            source: "b3",
            back_path: "/status/503",
            status: 503,
            headers: vec![("b3", format!("{t2}-{s2}-1"))],
        },
        Req {
            label: "404, traceparent",
            trace: t3.clone(),
            incoming: s3.clone(),
            source: "tracecontext",
            back_path: "/status/404",
            status: 404,
            headers: vec![("traceparent", format!("00-{t3}-{s3}-01"))],
        },
    ];
    for req in &requests {
        let headers: Vec<(&str, &str)> =
            req.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = format!("{}/call{}", front.url(), req.back_path);
        let r = h2c_get(&url, &headers, 1);
        assert!(
            r.len() == 1 && r[0].status == req.status,
            "{}: GET {url}: {r:?}",
            req.label
        );
    }
    let spans = rx.wait_for_named(
        "front SERVER + CLIENT and back SERVER spans of every request",
        |s| {
            requests.iter().all(|r| {
                let n = |kind: &str, pid: u32| {
                    s.iter()
                        .filter(|x| x.trace_id == r.trace && x.kind == kind && of_pid(x, pid))
                        .count()
                };
                n("SERVER", front.pid()) >= 1
                    && n("CLIENT", front.pid()) >= 1
                    && n("SERVER", back.pid()) >= 1
            })
        },
        WAIT,
    );
    for req in &requests {
        check_hop(&spans, req, &front, &back);
    }
}

fn check_hop(spans: &[Span], req: &Req, front: &Service, back: &Service) {
    let label = req.label;
    let status = i64::from(req.status);
    let pick = |kind: &str, pid: u32, what: &str| {
        only(spans, &format!("{what} {kind} span ({label})"), |s| {
            s.trace_id == req.trace && s.kind == kind && of_pid(s, pid)
        })
    };
    let front_path = format!("/call{}", req.back_path);
    let front_server = pick("SERVER", front.pid(), "front");
    ServerSpan {
        trace_id: &req.trace,
        parent: &req.incoming,
        method: "GET",
        path: &front_path,
        status,
        source: req.source,
        pid: front.pid(),
        port: front.port(),
    }
    .check(spans, front_server, &format!("{label}: front SERVER"));
    let client = pick("CLIENT", front.pid(), "front");
    check_eq!(
        spans,
        client.parent_span_id,
        front_server.span_id,
        "{label}: CLIENT parent = the front SERVER span"
    );
    check_eq!(spans, client.name.as_str(), "GET", "{label}: CLIENT name");
    check_eq!(
        spans,
        client.attr_str(attr::HTTP_REQUEST_METHOD),
        Some("GET"),
        "{label}: CLIENT method"
    );
    check_eq!(
        spans,
        client.attr_str(attr::URL_PATH),
        Some(req.back_path),
        "{label}: CLIENT url.path"
    );
    check_eq!(
        spans,
        client.attr_i64(attr::HTTP_RESPONSE_STATUS_CODE),
        Some(status),
        "{label}: CLIENT status code"
    );
    check_eq!(
        spans,
        client.status_code == "ERROR",
        status >= 400,
        "{label}: CLIENT status ERROR exactly for 4xx and 5xx"
    );
    let back_server = pick("SERVER", back.pid(), "back");
    ServerSpan {
        trace_id: &req.trace,
        parent: &req.incoming,
        method: "GET",
        path: req.back_path,
        status,
        source: req.source,
        pid: back.pid(),
        port: back.port(),
    }
    .check(spans, back_server, &format!("{label}: back SERVER"));
    for (span, what) in [
        (front_server, "front SERVER"),
        (client, "front CLIENT"),
        (back_server, "back SERVER"),
    ] {
        check_eq!(
            spans,
            span.attr_str(attr::NETWORK_PROTOCOL_VERSION),
            Some("2"),
            "{label}: {what} {}",
            attr::NETWORK_PROTOCOL_VERSION
        );
    }
}

/// h2load: 1000 requests, up to 50 concurrent streams on one connection, alternating between two
/// paths with different statuses, all with one B3 context: 1000 SERVER spans of that trace, each
/// under the caller's span id, each with its own id, and each stream's path paired with its own
/// status (500 of each).
#[test]
fn h2load_1000_streams_on_one_connection_give_1000_spans() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::h2c_node(free_port(), None, &[]);
    let _agent = Agent::start_for(&rx, "grpc", &[svc.pid()], &[]);
    let (trace, incoming) = (random_hex(16), random_hex(8));
    let b3 = format!("{trace}-{incoming}-1");
    // h2load takes the URIs in turn.
    let hello = format!("{}/hello", svc.url());
    let not_found = format!("{}/status/404", svc.url());
    let load = h2load(&[&hello, &not_found], 1000, 50, &[("b3", &b3)]);
    assert_eq!(
        (load.errored, load.status_2xx, load.status_4xx),
        (0, 500, 500),
        "h2load's summary:\n{}",
        load.output
    );
    let spans = rx.wait_for_named(
        &format!("1000 SERVER spans of trace {trace}"),
        |s| s.iter().filter(|x| x.trace_id == trace).count() >= 1000,
        Duration::from_secs(30),
    );
    let ours: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace).collect();
    check_eq!(&spans, ours.len(), 1000, "spans of the h2load trace");
    let mut per_path: BTreeMap<(String, i64), usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for s in &ours {
        check!(
            &spans,
            s.kind == "SERVER"
                && of_pid(s, svc.pid())
                && s.parent_span_id == incoming
                && s.attr_str(attr::HTTP_REQUEST_METHOD) == Some("GET")
                && s.attr_str(attr::NETWORK_PROTOCOL_VERSION) == Some("2"),
            "a SERVER span of the service under the caller's span, GET over HTTP/2: {s}"
        );
        let path = s.attr_str(attr::URL_PATH).unwrap_or("(none)").to_owned();
        let status = s.attr_i64(attr::HTTP_RESPONSE_STATUS_CODE).unwrap_or(0);
        *per_path.entry((path, status)).or_default() += 1;
        ids.insert(s.span_id.clone());
    }
    let want = BTreeMap::from([
        (("/hello".to_owned(), 200), 500),
        (("/status/404".to_owned(), 404), 500),
    ]);
    check_eq!(&[], per_path, want, "(url.path, status) of the 1000 spans");
    check_eq!(&[], ids.len(), 1000, "distinct span ids");
}

/// `--write-mode rewrite` must leave h2c alone: 20 requests on the front's one kept session to the
/// back service, each with its own B3 ids, reach the back exactly as sent.
#[test]
fn rewrite_mode_leaves_h2c_untouched() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Service::h2c_node(free_port(), None, &[]);
    let front = Service::h2c_node(free_port(), Some(&back.url()), &[]);
    let _agent = Agent::start_for(
        &rx,
        "grpc",
        &[front.pid(), back.pid()],
        &["--write-mode", "rewrite"],
    );
    let (trace_prefix, span_prefix) = (random_hex(12), random_hex(4));
    let sent = [
        ("x-b3-traceid", format!("{trace_prefix}{{seq}}")),
        ("x-b3-spanid", format!("{span_prefix}{{seq}}")),
        ("x-b3-sampled", "1".to_owned()),
        (
            "traceparent",
            format!("00-{trace_prefix}{{seq}}-{span_prefix}{{seq}}-01"),
        ),
    ];
    let headers: Vec<(&str, &str)> = sent.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let responses = h2c_get(&format!("{}/call/headers", front.url()), &headers, 20);
    check_eq!(&[], responses.len(), 20, "responses: {responses:?}");
    for r in &responses {
        let seq = format!("{:08x}", r.request);
        let want: serde_json::Map<String, serde_json::Value> = sent
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.replace("{seq}", &seq).into()))
            .collect();
        let seen: serde_json::Value = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("request {}: not JSON ({e}): {r:?}", r.request));
        check_eq!(
            &[],
            (r.status, seen),
            (200, serde_json::Value::Object(want)),
            "request {}: what the back service received",
            r.request
        );
    }
}

/// A gRPC-shaped client connection set up before the agent, whose first call's answer (behind a
/// `WINDOW_UPDATE` and a PING, trailers included) is read while the write that asked for it has
/// not returned (`tracer_tests::early_answer`). Both calls get their CLIENT span with its
/// `grpc-status`: the second's only if the first answer was taken and decoded, since it refers
/// to the table entries the first added.
#[test]
fn an_answer_read_before_its_request_write_returns_on_a_connection_older_than_the_agent_is_joined()
{
    use tracer_tests::early_answer::{CALLS, EarlyAnswer, PATH};
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_guest-suite"));
    let mut early = EarlyAnswer::connect(bin).expect("the client and its connection");
    let agent = Agent::start_for(&rx, "grpc", &[early.pid()], &[]);
    early.run().expect("both calls");
    let pid = early.pid();
    let spans = rx.wait_for_named(
        "the CLIENT spans of both calls",
        |s| {
            CALLS
                .iter()
                .all(|(trace, _)| client(s, pid, trace).is_some())
        },
        WAIT,
    );
    drop(agent);
    for (i, (trace, span_id)) in CALLS.iter().enumerate() {
        let s = client(&spans, pid, trace).expect("waited for");
        let call = format!("call {}", i + 1);
        check_eq!(&spans, s.name, &PATH[1..], "{call}: name");
        check_eq!(
            &spans,
            s.parent_span_id,
            *span_id,
            "{call}: parent (the id it sent)"
        );
        check_eq!(
            &spans,
            s.attr_i64("rpc.grpc.status_code"),
            Some(0),
            "{call}: grpc-status"
        );
        check_eq!(
            &spans,
            s.attr_i64("http.response.status_code"),
            Some(200),
            "{call}: status"
        );
        check_eq!(
            &spans,
            s.attr_i64("tracer.http2.unknown_fields"),
            None,
            "{call}: every field decoded"
        );
    }
    drop(early);
}

/// The CLIENT span of process `pid` in the trace of 64-bit id `trace`.
fn client<'a>(s: &'a [Span], pid: u32, trace: &str) -> Option<&'a Span> {
    s.iter()
        .find(|x| x.kind == "CLIENT" && of_pid(x, pid) && x.trace_id == padded(trace))
}
