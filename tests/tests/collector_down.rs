//! Root: the OTLP collector is unreachable. The agent must keep running, count the failed export
//! attempts and, once the export timeout is spent, the spans it gave up on; and still shut down
//! cleanly. A collector that comes back on the same port after a long outage, one that never
//! answers and one that answers with retryable failures are in `faults_export.rs`.

use std::time::{Duration, Instant};

use tracer_tests::harness::{Agent, Service, free_port, get, random_hex, root_test};
use tracer_tests::observe::{counter, scrape};

/// `OTEL_BSP_EXPORT_TIMEOUT` for the agent: a failed batch is retried for at most this long.
const EXPORT_TIMEOUT_MS: u64 = 2000;

/// Scrapes until `name` > 0 or `timeout` passes; returns the last scrape and whether it got there.
fn wait_counter(agent: &mut Agent, port: u16, name: &str, timeout: Duration) -> (String, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(
            agent.is_running(),
            "the agent must survive an unreachable collector, but it exited; output:\n{}",
            agent.output()
        );
        let text = scrape(port);
        if counter(&text, name).is_some_and(|v| v > 0) || Instant::now() >= deadline {
            let reached = counter(&text, name).is_some_and(|v| v > 0);
            return (text, reached);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn unreachable_collector_is_counted_and_survived() {
    let _serial = root_test();
    let svc = Service::python(free_port(), None, &[]);
    // Bound a moment ago and released: nothing listens there, connections are refused.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let metrics_port = free_port();
    let (pid, metrics_addr) = (svc.pid().to_string(), format!("127.0.0.1:{metrics_port}"));
    let timeout = EXPORT_TIMEOUT_MS.to_string();
    let mut agent = Agent::start_with_env(
        [
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--metrics-addr",
            &metrics_addr,
            "--pid",
            &pid,
        ],
        &[("OTEL_BSP_EXPORT_TIMEOUT", &timeout)],
    );

    for i in 0..20 {
        let (t, s) = (random_hex(16), random_hex(8));
        let b3 = [
            ("x-b3-traceid", t.as_str()),
            ("x-b3-spanid", s.as_str()),
            ("x-b3-sampled", "1"),
        ];
        let r = get(svc.port(), "/hello", &b3);
        assert_eq!(
            r.status, 200,
            "traced request {i} while the collector is down"
        );
    }
    let sent = Instant::now();

    let (text, reached) = wait_counter(
        &mut agent,
        metrics_port,
        "tracer_export_errors_total",
        Duration::from_secs(10),
    );
    assert!(
        reached,
        "tracer_export_errors_total must rise above 0 within 10 s of 20 spans for an unreachable \
         collector ({endpoint}); /metrics:\n{text}\nagent output:\n{}",
        agent.output()
    );

    // The first batch leaves ~100 ms (OTEL_BSP_SCHEDULE_DELAY) after the first span and is given
    // up on within the export timeout; allow a few seconds on top for a slow machine.
    let budget = Duration::from_millis(EXPORT_TIMEOUT_MS) + Duration::from_secs(4);
    let left = budget.saturating_sub(sent.elapsed());
    let (text, reached) = wait_counter(
        &mut agent,
        metrics_port,
        "tracer_dropped_spans_export_failed_total",
        left,
    );
    assert!(
        reached,
        "tracer_dropped_spans_export_failed_total must rise above 0 within {budget:?} of the \
         requests (export timeout {EXPORT_TIMEOUT_MS} ms); /metrics:\n{text}\nagent output:\n{}",
        agent.output()
    );
    let exported = counter(&text, "tracer_spans_exported_total");
    assert_eq!(
        exported,
        Some(0),
        "no span can have been exported to a collector that is down; /metrics:\n{text}"
    );
    assert!(
        agent.output().contains(&endpoint),
        "the agent's log must name the unreachable endpoint {endpoint}; output:\n{}",
        agent.output()
    );

    assert!(
        agent.is_running(),
        "agent exited; output:\n{}",
        agent.output()
    );
    let status = agent.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM with the collector down must still exit 0 (got {status:?}); output:\n{}",
        agent.output()
    );
}
