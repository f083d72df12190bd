//! Root: the agent's end, and two agents at once, with the write side on.
//!
//! - SIGTERM: the spans still waiting in the batcher are exported before the agent exits, and
//!   every BPF program and link the agent held is gone afterwards (detached, not leaked).
//! - SIGKILL (no clean-up at all): the apps' connections keep working, a kept-alive one and new
//!   ones, with the responses they should get and their requests left as the apps wrote them;
//!   nothing of the dead agent keeps editing traffic (its `sk_msg`/`sock_ops` programs are
//!   freed: they only lived through the agent's descriptors and links, the agent pins nothing);
//!   and a new agent starts cleanly and edits again.
//! - Two agents, as in a rolling update (both editing): a request is never edited twice. The
//!   kernel guarantees it: a socket's `sk_msg` program comes from the one socket hash it joined
//!   first (joining a second hash with its own `sk_msg` program fails with EBUSY), and the
//!   cgroup runs the agents' `sock_ops` programs in attach order, so the OLDER agent edits the
//!   connections opened while both run; once it has gone, the newer one edits new connections.
//!
//! BPF objects are matched to an agent by its file descriptors (/proc/PID/fdinfo), never by
//! name: other agents may be running on this host.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tracer_tests::expect::of_pid;
use tracer_tests::harness::{
    Agent, Lang, Receiver, Service, free_port, get, random_hex, root_test,
};
use tracer_tests::observe::{BpfObject, bpf_objects_of, wait_bpf_gone};

const WAIT: Duration = Duration::from_secs(20);
/// How long the kernel may take to free the programs of an agent that exited.
const FREED: Duration = Duration::from_secs(10);
/// Program types of the write side: what edits traffic.
const WRITE_PROGRAMS: [&str; 3] = ["sk_msg", "sock_ops", "cgroup_sock_addr"];

fn ids(objects: &[BpfObject]) -> BTreeSet<u64> {
    objects.iter().map(|o| o.id).collect()
}

/// Every program and link `agent` holds, checked to include the write side.
fn held_by(agent: &Agent) -> (Vec<BpfObject>, Vec<BpfObject>) {
    let progs = bpf_objects_of("prog", agent.pid());
    let links = bpf_objects_of("link", agent.pid());
    for kind in WRITE_PROGRAMS {
        assert!(
            progs.iter().any(|p| p.kind == kind),
            "the agent (pid {}) holds no {kind} program: {progs:?}",
            agent.pid()
        );
    }
    assert!(
        !links.is_empty(),
        "the agent (pid {}) holds no BPF link",
        agent.pid()
    );
    (progs, links)
}

/// Waits until every program and link in `held` is gone from the kernel.
fn assert_detached(held: &(Vec<BpfObject>, Vec<BpfObject>), how: &str) {
    let progs = wait_bpf_gone("prog", &ids(&held.0), FREED);
    assert!(
        progs.is_empty(),
        "{how}: programs of the agent still loaded {FREED:?} after it exited: {progs:?}"
    );
    let links = wait_bpf_gone("link", &ids(&held.1), FREED);
    assert!(
        links.is_empty(),
        "{how}: links of the agent still present {FREED:?} after it exited: {links:?}"
    );
}

/// A B3 context as a sidecar sends it: (trace id, span id, headers).
fn b3() -> (String, String) {
    (random_hex(16), random_hex(8))
}

/// `GET /<call>/headers` on `front` with a fresh B3 context: (trace id, span id sent, what the
/// back service received, the response's `x-downstream-port`).
fn call(front: &Service, call: &str) -> (String, String, Value, String) {
    let (trace, span) = b3();
    let r = get(
        front.port(),
        &format!("/{call}/headers"),
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &span),
            ("x-b3-sampled", "1"),
        ],
    );
    assert_eq!(
        r.status,
        200,
        "/{call}/headers through the front service: {}",
        r.text()
    );
    let seen: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/headers answer is not JSON ({e}): {}", r.text()));
    assert_eq!(
        seen["x-b3-traceid"], trace,
        "/{call}: the back service got the trace id sent: {seen}"
    );
    let port = r.header("x-downstream-port").unwrap_or_default().to_owned();
    (trace, span, seen, port)
}

#[test]
fn sigterm_flushes_pending_spans_and_detaches_everything() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::python(free_port(), None, &[]);
    // Batches would leave only after a minute: at SIGTERM the spans are still in the agent.
    let mut agent = Agent::start_for_with_env(
        &rx,
        "grpc",
        &[svc.pid()],
        &["--write-mode", "rewrite"],
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    );
    let held = held_by(&agent);
    let traces: Vec<String> = (0..5)
        .map(|_| {
            let (trace, r) = tracer_tests::harness::get_traced(svc.port(), "/hello");
            assert_eq!(r.status, 200, "GET /hello");
            trace
        })
        .collect();
    assert_eq!(
        rx.export_count(),
        0,
        "nothing may have been exported before SIGTERM (schedule delay 60 s)"
    );
    let status = agent.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM must end the agent with 0 (got {status:?}); output:\n{}",
        agent.output()
    );
    // The agent exited only after its last export was answered: the spans are in the receiver.
    let spans = rx.spans();
    for t in &traces {
        assert!(
            spans.iter().any(|s| &s.trace_id == t && s.kind == "SERVER"),
            "the span of trace {t}, pending at SIGTERM, must be exported before exit; received:\n{}\nagent output:\n{}",
            tracer_tests::harness::dump(&spans),
            agent.output()
        );
    }
    assert_detached(&held, "SIGTERM");
}

#[test]
fn sigkill_leaves_connections_working_and_nothing_editing() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let back = Lang::Python.start(free_port(), None, &[]);
    let front = Lang::Python.start(free_port(), Some(&back.url()), &[]);
    let pids = [front.pid(), back.pid()];
    let mut agent = Agent::start_for(&rx, "grpc", &pids, &["--write-mode", "rewrite"]);
    let held = held_by(&agent);

    // The kept-alive connection is opened while the agent edits: its requests are rewritten.
    let (_, sent, seen, kept_port) = call(&front, "callkept");
    assert!(
        !kept_port.is_empty(),
        "the front service names its kept connection"
    );
    assert_ne!(
        seen["x-b3-spanid"], sent,
        "with the agent running, the span id on the kept connection is rewritten: {seen}"
    );
    let (_, sent, seen, _) = call(&front, "call");
    assert_ne!(
        seen["x-b3-spanid"], sent,
        "with the agent running, a new connection's span id is rewritten: {seen}"
    );

    let status = agent.kill();
    assert!(
        status.is_some_and(|s| !s.success()),
        "the agent must die of SIGKILL: {status:?}"
    );
    assert_detached(&held, "SIGKILL");

    for i in 0..3 {
        let (_, sent, seen, port) = call(&front, "callkept");
        assert_eq!(
            port, kept_port,
            "request {i} after SIGKILL must go over the same kept-alive connection"
        );
        assert_eq!(
            seen["x-b3-spanid"], sent,
            "request {i} on the kept connection after SIGKILL: nothing may edit it any more: {seen}"
        );
        let (_, sent, seen, _) = call(&front, "call");
        assert_eq!(
            seen["x-b3-spanid"], sent,
            "request {i} on a new connection after SIGKILL: nothing may edit it: {seen}"
        );
    }
    let r = get(back.port(), "/hello", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello\n"),
        "the back service answers as before"
    );

    // A new agent starts cleanly on the same node and traces and edits again.
    let rx2 = Receiver::start_blocking();
    let agent2 = Agent::start_for(&rx2, "grpc", &pids, &["--write-mode", "rewrite"]);
    let output = agent2.output();
    assert!(
        !output.contains("ERROR"),
        "the new agent must start without errors after a SIGKILLed one:\n{output}"
    );
    let (trace, sent, seen, _) = call(&front, "call");
    assert_ne!(
        seen["x-b3-spanid"], sent,
        "the new agent edits new connections again: {seen}"
    );
    let spans = rx2.wait_for_named(
        "the new agent's CLIENT span of the front service",
        |s| {
            s.iter()
                .any(|x| x.trace_id == trace && x.kind == "CLIENT" && of_pid(x, front.pid()))
        },
        WAIT,
    );
    let client = spans
        .iter()
        .find(|x| x.trace_id == trace && x.kind == "CLIENT")
        .expect("waited for");
    assert_eq!(
        seen["x-b3-spanid"], client.span_id,
        "the rewritten span id is the new agent's CLIENT span"
    );
}

/// The header lines the back service received through `front`'s `/call/header-list` with a
/// fresh B3 context: (trace id, [(name, value)]).
fn header_list(front: &Service) -> (String, Vec<(String, String)>) {
    let (trace, span) = b3();
    let r = get(
        front.port(),
        "/call/header-list",
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &span),
            ("x-b3-sampled", "1"),
        ],
    );
    assert_eq!(r.status, 200, "/call/header-list: {}", r.text());
    let list: Vec<(String, String)> = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/header-list answer is not a JSON list ({e}): {}", r.text()));
    (trace, list)
}

/// The one value of `name` in `list`; panics if it occurs twice (edited twice) or never.
fn single<'a>(list: &'a [(String, String)], name: &str, what: &str) -> &'a str {
    let values: Vec<&str> = list
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        values.len(),
        1,
        "{what}: the request must carry exactly one {name} (two would mean two agents edited it): {list:?}"
    );
    values[0]
}

/// The front service's CLIENT span of `trace` as exported by the agent behind `rx`, if any.
fn client_span_id(rx: &Receiver, trace: &str, front: u32) -> Option<String> {
    rx.spans_of_trace(trace)
        .into_iter()
        .find(|s| s.kind == "CLIENT" && of_pid(s, front))
        .map(|s| s.span_id)
}

/// Old and new agent in `mode` on the same services; `env` for the front service.
fn rolling_update(mode: &str, env: &[(&str, &str)], edits: &str) {
    let (rx_old, rx_new) = (Receiver::start_blocking(), Receiver::start_blocking());
    let back = Lang::Python.start(free_port(), None, &[]);
    let front = Lang::Python.start(free_port(), Some(&back.url()), env);
    let pids = [front.pid(), back.pid()];
    let mut old = Agent::start_for(&rx_old, "grpc", &pids, &["--write-mode", mode]);
    let new = Agent::start_for(&rx_new, "grpc", &pids, &["--write-mode", mode]);

    for i in 0..3 {
        let what = format!("{mode}: request {i} with both agents running");
        let (trace, list) = header_list(&front);
        let on_wire = single(&list, "x-b3-spanid", &what).to_owned();
        single(&list, "x-b3-traceid", &what);
        single(&list, "x-b3-sampled", &what);
        let spans = rx_old.wait_for_named(
            &format!("{what}: the older agent's CLIENT span"),
            |_| client_span_id(&rx_old, &trace, front.pid()).is_some(),
            WAIT,
        );
        assert_eq!(
            Some(on_wire),
            client_span_id(&rx_old, &trace, front.pid()),
            "{what}: the span id on the wire is the older agent's CLIENT span (it edits);\n{}",
            tracer_tests::harness::dump(&spans)
        );
    }
    let poke = || {
        let _ = get(back.port(), "/hello", &[]);
    };
    assert!(
        wait_counted(&old, edits, 3, poke) >= 3,
        "{mode}: the older agent counted its edits ({edits})"
    );
    assert_eq!(
        wait_counted(&new, edits, 0, poke),
        0,
        "{mode}: the newer agent must not edit any request while the older one runs ({edits})"
    );

    // The rolling update ends: the old agent goes, the new one takes over new connections.
    let status = old.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "{mode}: old agent stop: {status:?}"
    );
    let (trace, list) = header_list(&front);
    let on_wire = single(&list, "x-b3-spanid", "after the older agent left").to_owned();
    rx_new.wait_for_named(
        &format!("{mode}: the newer agent's CLIENT span after the older one left"),
        |_| client_span_id(&rx_new, &trace, front.pid()).is_some(),
        WAIT,
    );
    assert_eq!(
        Some(on_wire),
        client_span_id(&rx_new, &trace, front.pid()),
        "{mode}: after the older agent left, the newer one edits new connections"
    );
    assert!(
        wait_counted(&new, edits, 1, poke) >= 1,
        "{mode}: the newer agent counts its edits ({edits})"
    );
}

/// The kernel counter `name` of `agent` as of after this call: the agent copies its kernel
/// counters all at once, every second. `poke` makes a traced request after the first reading,
/// so once `tracer_kernel_events_total` has moved past that reading, every counter was copied
/// after the call began. Returns early once the counter reaches `at_least` (if not 0).
fn wait_counted(agent: &Agent, name: &str, at_least: u64, poke: impl Fn()) -> u64 {
    let events = agent.counter("tracer_kernel_events_total");
    poke();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let value = agent.counter(name);
        let fresh = agent.counter("tracer_kernel_events_total") > events;
        if (fresh && value >= at_least) || std::time::Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_agents_never_both_edit_a_request_and_the_older_one_wins() {
    let _serial = root_test();
    // rewrite: two edits would leave the newer agent's id on the wire, not the older one's.
    rolling_update("rewrite", &[], "tracer_write_rewritten_total");
    // inject into an app that forwards nothing: two edits would put two sets of headers in.
    rolling_update(
        "inject",
        &[("FORWARD", "none")],
        "tracer_write_injected_total",
    );
}
