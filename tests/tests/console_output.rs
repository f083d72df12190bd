//! Root: the console exporter, used when no OTLP endpoint is set: `--stdout json` prints one JSON
//! object per span per line on stdout, and the default prints each trace as a tree.

use std::time::{Duration, Instant};

use serde_json::Value;
use tracer_tests::expect::padded;
use tracer_tests::harness::{Agent, Service, free_port, get, random_hex, root_test};

const WAIT: Duration = Duration::from_secs(20);

/// The keys `--stdout json` documents, exactly (sorted).
const JSON_KEYS: [&str; 9] = [
    "attributes",
    "end_unix_nanos",
    "kind",
    "name",
    "parent_span_id",
    "resource",
    "span_id",
    "start_unix_nanos",
    "trace_id",
];

/// Polls the agent's stdout until `done` holds for its lines; returns them.
fn wait_stdout(agent: &Agent, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = agent.stdout_lines();
        if done(&lines) {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what} on the agent's stdout; stdout was:\n{}\nfull agent output:\n{}",
            lines.join("\n"),
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every stdout line parsed as JSON; a line that is not a JSON object fails the test (stdout
/// must carry spans only, logs belong on stderr).
fn json_spans(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!(
                "every stdout line must be one JSON object, got {l:?}; stdout:\n{}",
                lines.join("\n")
            ),
        })
        .collect()
}

fn is_hex_id(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && s.bytes().any(|b| b != b'0')
}

/// Checks one JSON span of a `GET <path>` SERVER request with the given ids.
fn check_json_span(span: &Value, trace_id: Option<&str>, parent: &str, path: &str, all: &str) {
    let mut keys: Vec<&str> = span
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys, JSON_KEYS,
        "{path}: the JSON span must have exactly the documented keys; got {span}\nall spans:\n{all}"
    );
    let str_of = |k: &str| {
        span[k]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {k} must be a string: {span}"))
    };
    let t = str_of("trace_id");
    match trace_id {
        Some(expected) => assert_eq!(
            t, expected,
            "{path}: trace_id (64-bit B3 id left-padded to 32 hex): {span}"
        ),
        None => assert!(
            is_hex_id(t, 32),
            "{path}: a fresh 32-hex non-zero trace_id: {span}"
        ),
    }
    assert!(
        is_hex_id(str_of("span_id"), 16),
        "{path}: span_id must be 16 hex, non-zero: {span}"
    );
    assert_eq!(
        str_of("parent_span_id"),
        parent,
        "{path}: parent_span_id (\"\" = none): {span}"
    );
    assert_eq!(str_of("kind"), "SERVER", "{path}: kind: {span}");
    assert_eq!(str_of("name"), "GET", "{path}: name is the method: {span}");
    let (start, end) = (
        span["start_unix_nanos"].as_u64(),
        span["end_unix_nanos"].as_u64(),
    );
    assert!(
        matches!((start, end), (Some(s), Some(e)) if s > 0 && s < e),
        "{path}: start_unix_nanos < end_unix_nanos, both integers: {span}"
    );
    assert_eq!(
        span["attributes"]["url.path"], path,
        "{path}: attributes.url.path: {span}"
    );
    assert_eq!(
        span["attributes"]["http.response.status_code"], 200,
        "{path}: attributes.http.response.status_code (an integer): {span}"
    );
    assert!(
        span["resource"]["service.name"].is_string(),
        "{path}: the resource must carry service.name: {span}"
    );
}

#[test]
fn stdout_json_lines() {
    let _serial = root_test();
    let svc = Service::python(free_port(), None, &[]);
    let pid = svc.pid().to_string();
    let metrics = format!("127.0.0.1:{}", free_port());
    // No --otlp-endpoint: the console exporter is the default.
    let agent = Agent::start([
        "--stdout",
        "json",
        "--pid",
        &pid,
        "--metrics-addr",
        &metrics,
    ]);

    // Distinct paths (not queries) tell the two spans apart, since url.path is asserted anyway.
    let (t64, s) = (random_hex(8), random_hex(8));
    let b3 = [
        ("x-b3-traceid", t64.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    assert_eq!(
        get(svc.port(), "/status/200", &b3).status,
        200,
        "B3 request"
    );
    assert_eq!(
        get(svc.port(), "/hello", &[]).status,
        200,
        "no-context request"
    );

    let path_of = |v: &Value| v["attributes"]["url.path"].as_str().map(str::to_owned);
    let lines = wait_stdout(
        &agent,
        "two JSON span lines (/status/200 and /hello)",
        |lines| {
            let spans: Vec<Value> = lines
                .iter()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            ["/status/200", "/hello"]
                .iter()
                .all(|p| spans.iter().any(|v| path_of(v).as_deref() == Some(*p)))
        },
    );
    let spans = json_spans(&lines);
    let all = lines.join("\n");
    assert_eq!(
        spans.len(),
        2,
        "exactly one span per request; stdout:\n{all}"
    );
    let by_path = |p: &str| {
        spans
            .iter()
            .find(|v| path_of(v).as_deref() == Some(p))
            .expect("found above")
    };
    check_json_span(
        by_path("/status/200"),
        Some(&padded(&t64)),
        &s,
        "/status/200",
        &all,
    );
    check_json_span(by_path("/hello"), None, "", "/hello", &all);
    assert_ne!(
        by_path("/hello")["trace_id"],
        by_path("/status/200")["trace_id"],
        "the no-context request needs a trace of its own; stdout:\n{all}"
    );
}

#[test]
fn stdout_tree_is_the_default() {
    let _serial = root_test();
    let svc = Service::python(free_port(), None, &[]);
    let pid = svc.pid().to_string();
    // Nothing but --pid: console exporter, tree format (and the default metrics address).
    let agent = Agent::start(["--pid", &pid]);

    let (t64, s) = (random_hex(8), random_hex(8));
    // A path no other test uses, so the SERVER line found is this request's.
    let path = "/status/202";
    let b3 = [
        ("x-b3-traceid", t64.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    assert_eq!(get(svc.port(), path, &b3).status, 202, "GET {path}");

    // The tree printer holds a trace until it settles (about a second), then prints it at once.
    let trace_line = format!("trace {}", padded(&t64));
    let lines = wait_stdout(&agent, &format!("the tree of {trace_line}"), |lines| {
        lines.iter().any(|l| l.starts_with(&trace_line))
    });
    let all = lines.join("\n");
    let start = lines
        .iter()
        .position(|l| l.starts_with(&trace_line))
        .expect("found above");
    // The span lines of this trace follow its header, up to the next trace.
    let tree: Vec<&String> = lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("trace "))
        .collect();
    assert!(
        tree.iter()
            .any(|l| l.contains("SERVER") && l.contains(&format!("GET {path} -> 202"))),
        "the tree of {trace_line} must have a SERVER line with `GET {path} -> 202`; stdout:\n{all}"
    );
    assert!(
        tree.iter().any(|l| l.contains(&format!("parent {s}"))),
        "the tree must show the incoming parent span {s} (not traced here); stdout:\n{all}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("agent ready")),
        "logs belong on stderr, not stdout; stdout:\n{all}"
    );
}
