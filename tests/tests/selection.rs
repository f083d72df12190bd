//! Root: process selection. `--port` traces only the process listening on that port, `--exe` only
//! processes with that executable name; everything else on the host stays untraced.
//!
//! Absence is proved with a sentinel and the agent's own accounting, not with a sleep nor the
//! order of exports. After the unselected service's request has been answered, one more request
//! goes to the selected service, and the test waits for that sentinel's span. What guarantees
//! that a span of the unselected request, had the filter let it through, is in the receiver then:
//! 1. Its events would have been reserved in the BPF ring buffer before the sentinel's: the
//!    request was answered (its server's syscalls done) before the sentinel was even sent. The
//!    ring buffer is one buffer for every CPU, read in reservation order (a record reserved but
//!    not yet committed stops the reader), so the agent read them before the sentinel's.
//!    (The one window left: the server's thread preempted between handing its answer to the
//!    socket and the syscall's exit event, for longer than the test's next round trip.)
//! 2. The agent builds a span, and counts it in `tracer_spans_built_total`, as soon as it reads
//!    the response: the sentinel's span was built, so the unselected one was built before it.
//! 3. The test then waits until `tracer_spans_exported_total` reaches `tracer_spans_built_total`
//!    as read after the sentinel arrived: every span built by then was accepted by the receiver,
//!    in whatever batches and order they left.

use std::time::{Duration, Instant};

use tracer_tests::expect::{has, of_pid};
use tracer_tests::harness::{Agent, Receiver, Service, free_port, get_traced, root_test};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

/// Sends `GET /hello` with a fresh B3 context to `svc`; returns the trace id.
fn traced_get(svc: &Service, label: &str) -> String {
    let (t, r) = get_traced(svc.port(), "/hello");
    assert_eq!(r.status, 200, "{label}: GET /hello on {}", svc.url());
    t
}

/// Waits until the agent has exported every span it had built when called (see the module doc).
fn wait_exported(agent: &Agent, how: &str) {
    let built = agent.counter("tracer_spans_built_total");
    let deadline = Instant::now() + WAIT;
    loop {
        let exported = agent.counter("tracer_spans_exported_total");
        if exported >= built {
            return;
        }
        let dropped = agent.counter("tracer_dropped_spans_export_failed_total")
            + agent.counter("tracer_dropped_spans_queue_full_total");
        assert!(
            dropped == 0 && Instant::now() < deadline,
            "{how}: {built} spans built, only {exported} exported ({dropped} dropped): the absence \
             of the unselected service's span cannot be proven\n{}",
            agent.metrics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one request to `selected` and one to `other`, then the sentinel to `selected`, and checks
/// that exactly the two requests to `selected` were traced, from its process.
fn only_selected_is_traced(
    rx: &Receiver,
    agent: &Agent,
    selected: &Service,
    other: &Service,
    how: &str,
) {
    let first = traced_get(selected, &format!("{how}: selected service"));
    let unselected = traced_get(other, &format!("{how}: unselected service"));
    let sentinel = traced_get(selected, &format!("{how}: sentinel"));
    rx.wait_for_named(
        &format!("{how}: SERVER spans of the two requests to the selected service"),
        |s| has(s, "SERVER", &first) && has(s, "SERVER", &sentinel),
        WAIT,
    );
    wait_exported(agent, how);
    let spans = rx.spans();
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
    let agent = Agent::start_for(&rx, "grpc", &[], &["--port", &port]);
    only_selected_is_traced(&rx, &agent, &a, &b, &format!("--port {port}"));
}

#[test]
fn exe_selects_processes_by_executable_name() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let go = Service::go(free_port(), None, &[]);
    let py = Service::python(free_port(), None, &[]);
    // The harness builds the Go service as `go-demo-svc` (it fits the kernel's 15-byte comm).
    let agent = Agent::start_for(&rx, "grpc", &[], &["--exe", "go-demo-svc"]);
    only_selected_is_traced(&rx, &agent, &go, &py, "--exe go-demo-svc");
}
