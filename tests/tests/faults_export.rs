//! Root: the collector fails, the agent survives. Each test runs the real agent against the test
//! receiver in a fault mode and checks what the agent promises in each case:
//!
//! - down for 60 s, then back on the same port: the agent keeps running with bounded memory,
//!   counts what it drops, and spans of requests made after the collector is back arrive;
//! - a collector that accepts connections and never answers: every attempt times out
//!   (`OTEL_EXPORTER_OTLP_TIMEOUT`), failures are counted, and the event loop keeps up (kernel
//!   events and spans keep being processed, `/metrics` answers), with bounded memory;
//! - HTTP 503 / 429 and gRPC `UNAVAILABLE` for the first requests: the batch is retried with
//!   growing gaps (exponential backoff, never hammering) and arrives; retries are counted.
//!
//! Only the outage test is long (60 s, as the issue asks); the others take a few seconds each.

use std::time::{Duration, Instant};

use tracer_tests::harness::{Agent, Receiver, Service, free_port, get_traced, root_test};
use tracer_tests::observe::vm_rss_kib;
use tracer_tests::otlp::{Behaviour, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(30);

/// Most the agent's resident memory may grow over its level before a fault while the fault
/// lasts. The queue holds at most `OTEL_BSP_MAX_QUEUE_SIZE` spans (a few hundred bytes each);
/// this leaves room for allocator slack, never for spans piling up without bound.
const RSS_GROWTH_KIB: u64 = 32 * 1024;

/// Sends a traced `GET /hello` to `svc`, expecting 200; returns the trace id.
fn hello(svc: &Service, what: &str) -> String {
    let (trace, r) = get_traced(svc.port(), "/hello");
    assert_eq!(r.status, 200, "{what}: GET /hello on {}", svc.url());
    trace
}

fn has_server_span(rx: &Receiver, trace: &str) -> bool {
    rx.spans_of_trace(trace).iter().any(|s| s.kind == "SERVER")
}

/// Checks that every RSS sample stays within [`RSS_GROWTH_KIB`] of `before` and that the second
/// half of the samples does not climb over the first half (a leak grows with time, a bounded
/// queue levels off).
fn assert_memory_bounded(agent: &Agent, before: u64, samples: &[u64], what: &str) {
    let peak = samples.iter().copied().max().unwrap_or(before);
    assert!(
        peak <= before + RSS_GROWTH_KIB,
        "{what}: the agent's VmRSS went from {before} KiB to {peak} KiB (bound: +{RSS_GROWTH_KIB} KiB); samples: {samples:?}\nagent output:\n{}",
        agent.output()
    );
    let (first, second) = samples.split_at(samples.len() / 2);
    let (p1, p2) = (
        first.iter().copied().max().unwrap_or(before),
        second.iter().copied().max().unwrap_or(before),
    );
    assert!(
        p2 <= p1 + 8 * 1024,
        "{what}: the agent's memory keeps growing: peak {p1} KiB in the first half of the fault, {p2} KiB in the second; samples: {samples:?}"
    );
}

#[test]
fn collector_down_for_a_minute_then_back_on_the_same_port() {
    const OUTAGE: Duration = Duration::from_mins(1);
    let _serial = root_test();
    let svc = Service::python(free_port(), None, &[]);
    let rx = Receiver::start_blocking();
    let grpc_port = rx.grpc_port();
    let mut agent = Agent::start_for_with_env(
        &rx,
        "grpc",
        &[svc.pid()],
        &[],
        // A small queue, so the outage overflows it within seconds; the default export timeout
        // (30 s) keeps a batch retrying for half the outage.
        &[("OTEL_BSP_MAX_QUEUE_SIZE", "256")],
    );
    let first = hello(&svc, "before the outage");
    rx.wait_for_named(
        "the span of the request before the outage",
        |_| has_server_span(&rx, &first),
        WAIT,
    );
    let exported_before = agent.counter("tracer_spans_exported_total");

    drop(rx);
    let before = vm_rss_kib(agent.pid());
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut requests = 0u32;
    let mut last_sample = start;
    while start.elapsed() < OUTAGE {
        hello(&svc, "during the outage");
        requests += 1;
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            assert!(
                agent.is_running(),
                "the agent exited during the outage; output:\n{}",
                agent.output()
            );
            samples.push(vm_rss_kib(agent.pid()));
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let queue_full = agent.counter("tracer_dropped_spans_queue_full_total");
    let export_failed = agent.counter("tracer_dropped_spans_export_failed_total");
    let errors = agent.counter("tracer_export_errors_total");
    assert!(
        queue_full > 0 && export_failed > 0 && errors > 0,
        "after {OUTAGE:?} without a collector and {requests} requests, the drops must be counted: \
         queue_full={queue_full} export_failed={export_failed} export_errors={errors}\n{}",
        agent.metrics()
    );
    assert_memory_bounded(&agent, before, &samples, "collector down for 60 s");

    let rx = Receiver::start_with(ReceiverConfig {
        grpc_port,
        ..ReceiverConfig::default()
    });
    let after: Vec<String> = (0..5).map(|_| hello(&svc, "after the outage")).collect();
    rx.wait_for_named(
        "the spans of the 5 requests made after the collector came back",
        |_| after.iter().all(|t| has_server_span(&rx, t)),
        WAIT,
    );
    let exported_after = agent.counter("tracer_spans_exported_total");
    assert!(
        exported_after >= exported_before + 5,
        "tracer_spans_exported_total must count the spans exported after the outage: {exported_before} -> {exported_after}"
    );
}

/// One protocol against a collector that never answers.
fn silent_collector(protocol: &str) {
    const LOAD: Duration = Duration::from_secs(6);
    let svc = Service::python(free_port(), None, &[]);
    let rx = Receiver::start_with(ReceiverConfig {
        behaviour: Behaviour::Silent,
        ..ReceiverConfig::default()
    });
    let mut agent = Agent::start_for_with_env(
        &rx,
        protocol,
        &[svc.pid()],
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "500"),
            ("OTEL_BSP_EXPORT_TIMEOUT", "2000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "256"),
        ],
    );
    let before = vm_rss_kib(agent.pid());
    let built_before = agent.counter("tracer_spans_built_total");
    let events_before = agent.counter("tracer_kernel_events_total");
    let start = Instant::now();
    let (mut samples, mut requests) = (Vec::new(), 0u64);
    let mut slowest_scrape = Duration::ZERO;
    while start.elapsed() < LOAD {
        for _ in 0..10 {
            hello(&svc, &format!("{protocol}: with a silent collector"));
            requests += 1;
        }
        let asked = Instant::now();
        let _ = agent.metrics();
        slowest_scrape = slowest_scrape.max(asked.elapsed());
        samples.push(vm_rss_kib(agent.pid()));
    }
    assert!(
        agent.is_running(),
        "{protocol}: the agent exited; output:\n{}",
        agent.output()
    );
    // Every request is a SERVER span: the event loop built them all while the exporter waited.
    let deadline = Instant::now() + Duration::from_secs(5);
    let built = loop {
        let built = agent.counter("tracer_spans_built_total") - built_before;
        if built >= requests || Instant::now() >= deadline {
            break built;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        built >= requests,
        "{protocol}: the event loop must keep up while exports hang: {built} spans built for {requests} requests\n{}",
        agent.metrics()
    );
    let events = agent.counter("tracer_kernel_events_total") - events_before;
    assert!(
        events >= requests,
        "{protocol}: kernel events must keep flowing: {events} for {requests} requests"
    );
    assert!(
        slowest_scrape < Duration::from_secs(2),
        "{protocol}: /metrics must answer while exports hang; slowest scrape {slowest_scrape:?}"
    );
    // 500 ms per attempt: a hung attempt that never times out would leave these at 0.
    let errors = agent.counter("tracer_export_errors_total");
    let failed = agent.counter("tracer_dropped_spans_export_failed_total");
    assert!(
        errors >= 4 && failed > 0,
        "{protocol}: attempts must time out and be counted within {LOAD:?}: export_errors={errors} \
         dropped_export_failed={failed}\n{}\nagent output:\n{}",
        agent.metrics(),
        agent.output()
    );
    assert!(
        rx.silent_connections() > 0,
        "{protocol}: the agent never connected to the silent collector"
    );
    assert_eq!(
        agent.counter("tracer_spans_exported_total"),
        0,
        "{protocol}: nothing can be exported to a collector that never answers"
    );
    assert_memory_bounded(&agent, before, &samples, protocol);
    let status = agent.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "{protocol}: SIGTERM with a hung collector must still exit 0 in time (got {status:?}); output:\n{}",
        agent.output()
    );
}

#[test]
fn silent_collector_times_out_and_the_event_loop_keeps_up() {
    let _serial = root_test();
    silent_collector("grpc");
    silent_collector("http/protobuf");
}

/// One protocol against a collector that fails the first 3 requests with `http_status` (or
/// `UNAVAILABLE` over gRPC).
fn retried_after_failures(protocol: &str, http_status: u16) {
    const FAILURES: usize = 3;
    let what = if protocol == "grpc" {
        "gRPC UNAVAILABLE".to_owned()
    } else {
        format!("HTTP {http_status}")
    };
    let svc = Service::python(free_port(), None, &[]);
    let rx = Receiver::start_with(ReceiverConfig {
        behaviour: Behaviour::FailFirst {
            count: FAILURES,
            http_status,
        },
        ..ReceiverConfig::default()
    });
    let agent = Agent::start_for_with_env(
        &rx,
        protocol,
        &[svc.pid()],
        &[],
        &[("OTEL_BSP_EXPORT_TIMEOUT", "10000")],
    );
    let trace = hello(&svc, &what);
    rx.wait_for_named(
        &format!("the span, after {FAILURES} answers {what}"),
        |_| has_server_span(&rx, &trace),
        WAIT,
    );
    let attempts = rx.attempts();
    assert_eq!(
        attempts.len(),
        FAILURES + 1,
        "{what}: one request per attempt, {FAILURES} failed ones then the one that succeeded"
    );
    assert_eq!(rx.failed_count(), FAILURES, "{what}: failures answered");
    // The agent waits 100 ms before the first retry and doubles the wait each time: the gaps
    // between attempts are at least that (timers never fire early), so they grow.
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let backoff = Duration::from_millis(100 << i);
        assert!(
            *gap >= backoff.mul_f64(0.9),
            "{what}: retry {} came {gap:?} after the previous attempt, before the backoff of {backoff:?}; gaps: {gaps:?}",
            i + 1
        );
    }
    assert!(
        gaps.windows(2).all(|w| w[1] > w[0]),
        "{what}: the gaps between attempts must grow: {gaps:?}"
    );
    let retries = agent.counter("tracer_export_retries_total");
    let errors = agent.counter("tracer_export_errors_total");
    assert!(
        retries == FAILURES as u64 && errors == FAILURES as u64,
        "{what}: {FAILURES} failed attempts and retries must be counted: retries={retries} errors={errors}"
    );
    assert_eq!(
        agent.counter("tracer_dropped_spans_export_failed_total"),
        0,
        "{what}: a retried batch that arrived is not dropped"
    );
    assert!(
        agent.counter("tracer_spans_exported_total") >= 1,
        "{what}: the span is counted as exported"
    );
}

#[test]
fn retryable_failures_are_retried_with_growing_gaps() {
    let _serial = root_test();
    retried_after_failures("http/protobuf", 503);
    retried_after_failures("http/protobuf", 429);
    retried_after_failures("grpc", 0);
}
