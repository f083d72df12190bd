//! Root: process selection. `--port` traces only the process listening on that port, `--exe` only
//! processes with that executable name; everything else on the host stays untraced.
//!
//! Absence is proved with a sentinel: after the unselected service's request, one more request
//! goes to the selected service; spans leave in order, so once the sentinel's span arrived, a span
//! of the unselected service would have arrived too.

use std::time::Duration;

use tracer_tests::expect::{has, of_pid};
use tracer_tests::harness::{Agent, Receiver, Service, free_port, get, random_hex, root_test};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `GET /hello` with a fresh B3 context to `svc`; returns the trace id.
fn traced_get(svc: &Service, label: &str) -> String {
    let (t, s) = (random_hex(16), random_hex(8));
    let b3 = [
        ("x-b3-traceid", t.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    let r = get(svc.port(), "/hello", &b3);
    assert_eq!(r.status, 200, "{label}: GET /hello on {}", svc.url());
    t
}

/// Sends one request to `selected` and one to `other`, then the sentinel to `selected`, and checks
/// that exactly the two requests to `selected` were traced, from its process.
fn only_selected_is_traced(rx: &Receiver, selected: &Service, other: &Service, how: &str) {
    let first = traced_get(selected, &format!("{how}: selected service"));
    let unselected = traced_get(other, &format!("{how}: unselected service"));
    let sentinel = traced_get(selected, &format!("{how}: sentinel"));
    let spans = rx.wait_for_named(
        &format!("{how}: SERVER spans of the two requests to the selected service"),
        |s| has(s, "SERVER", &first) && has(s, "SERVER", &sentinel),
        WAIT,
    );
    check!(
        &spans,
        !spans.iter().any(|s| s.trace_id == unselected),
        "{how}: the request to the unselected service (pid {}, trace {unselected}) must not be traced",
        other.pid()
    );
    check!(
        &spans,
        !spans.iter().any(|s| of_pid(s, other.pid())),
        "{how}: no span may come from the unselected service (pid {})",
        other.pid()
    );
    // Only this test's traces count: another test run on the host may own a selected process too.
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| [&first, &unselected, &sentinel].contains(&&s.trace_id))
        .collect();
    check!(
        &spans,
        ours.iter()
            .all(|s| of_pid(s, selected.pid()) && s.kind == "SERVER"),
        "{how}: the spans of this test must be SERVER spans of the selected service (pid {})",
        selected.pid()
    );
    check_eq!(
        &spans,
        ours.len(),
        2,
        "{how}: number of spans of this test's traces"
    );
}

#[test]
fn port_selects_the_listener_on_that_port() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    // Two instances of the same program: only the port tells them apart.
    let a = Service::python(free_port(), None, &[]);
    let b = Service::python(free_port(), None, &[]);
    let port = a.port().to_string();
    let _agent = Agent::start_for(&rx, "grpc", &[], &["--port", &port]);
    only_selected_is_traced(&rx, &a, &b, &format!("--port {port}"));
}

#[test]
fn exe_selects_processes_by_executable_name() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let go = Service::go(free_port(), None, &[]);
    let py = Service::python(free_port(), None, &[]);
    // The harness builds the Go service as `go-demo-svc` (it fits the kernel's 15-byte comm).
    let _agent = Agent::start_for(&rx, "grpc", &[], &["--exe", "go-demo-svc"]);
    only_selected_is_traced(&rx, &go, &py, "--exe go-demo-svc");
}
