//! Root: kernel events lost in the middle of a long-lived keep-alive connection. Pairing by
//! order alone would shift every later request onto the next one's response; the per-socket
//! sequence numbers let the agent see the gap, give up only the requests it touched, and pair
//! the following requests exactly.
//!
//! Losses are forced for real: the agent is stopped (SIGSTOP) with a 1 MiB ring buffer while a
//! burst of requests runs on the connection, so the kernel drops events once the buffer is full.
//! After SIGCONT, requests with their own trace id, path and status go over the same connection.
//! Each round's burst has another shape (small requests with large responses, the reverse,
//! both large), so the lost events end on a request as well as on a response. Four rounds on one
//! connection: order alone fails as soon as one round leaves a request without its response.

use std::time::{Duration, Instant};

use tracer_tests::harness::{Agent, HttpConn, Receiver, Service, free_port, random_hex, root_test};
use tracer_tests::observe::{counter as sample, scrape};

/// Requests per burst: about 4 MiB of events, four times the ring buffer.
const BURST: usize = 5000;
/// Requests checked after each burst.
const AFTER: usize = 10;

struct Sent {
    trace_id: String,
    parent: String,
    path: String,
    status: i64,
    /// The client's round trip: a SERVER span paired with its own response fits in it.
    rtt: Duration,
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain syscall on a pid this test started.
    let r = unsafe { libc::kill(i32::try_from(pid).expect("pid fits"), sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Scrapes until `done` holds for the agent's metrics, or panics after `timeout`.
fn wait_metrics(port: u16, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = scrape(port);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached; metrics:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (method, path, headers, body) of one round's burst requests: events of different sizes in
/// the two directions decide which of them still fit when the buffer is nearly full.
type Shape = (
    &'static str,
    &'static str,
    Vec<(&'static str, String)>,
    Option<Vec<u8>>,
);

fn burst_shape(round: usize) -> Shape {
    let pad = "p".repeat(1800);
    match round % 4 {
        // A small request, a chunked response.
        0 => ("GET", "/chunked", vec![], None),
        // A large request whose headers come back in the response.
        1 => ("GET", "/headers", vec![("x-pad", pad)], None),
        // A large body both ways.
        2 => ("POST", "/echo", vec![], Some(vec![b'b'; 1800])),
        // A large request, a small response.
        _ => ("GET", "/hello", vec![("x-pad", pad)], None),
    }
}

/// Waits until the agent has read what the ring buffer kept: its record count stops moving.
fn wait_drained(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    loop {
        let now = sample(&scrape(port), "tracer_ringbuf_records_total");
        if now.is_some() && now == last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the agent never drained its ring buffer"
        );
        last = now;
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One round's burst, on `conn`, while the agent is stopped.
fn burst(conn: &mut HttpConn, round: usize) {
    let (method, path, headers, body) = burst_shape(round);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for i in 0..BURST {
        let r = conn.request(method, path, &headers, body.as_deref());
        assert_eq!(
            r.status, 200,
            "round {round}: burst request {i} {method} {path}"
        );
    }
}

/// A request for status `code` with its own sampled B3 context, timed by the client.
fn send_distinct(conn: &mut HttpConn, code: i64) -> Sent {
    let (t, s) = (random_hex(16), random_hex(8));
    let path = format!("/status/{code}");
    let headers = [
        ("x-b3-traceid", t.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    let started = Instant::now();
    let r = conn.request("GET", &path, &headers, None);
    let rtt = started.elapsed();
    assert_eq!(r.status, u16::try_from(code).unwrap(), "{path}");
    Sent {
        trace_id: t,
        parent: s,
        path,
        status: code,
        rtt,
    }
}

#[test]
fn pairs_after_kernel_losses_on_one_keep_alive_connection_are_exact() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::go(free_port(), None, &[]);
    let metrics_port = free_port();
    let mut agent = Agent::start(vec![
        "--otlp-endpoint".to_owned(),
        rx.grpc_endpoint(),
        "--metrics-addr".to_owned(),
        format!("127.0.0.1:{metrics_port}"),
        "--ring-buffer-mib".to_owned(),
        "1".to_owned(),
        "--pid".to_owned(),
        svc.pid().to_string(),
    ]);
    let mut conn = HttpConn::connect(svc.port());
    // The agent follows the connection before the first loss: a first request's span is out
    // (and with it the metrics endpoint, which starts before the exporter).
    let warm = random_hex(16);
    let headers = [
        ("x-b3-traceid", warm.as_str()),
        ("x-b3-spanid", "00f067aa0ba902b7"),
    ];
    assert_eq!(conn.request("GET", "/hello", &headers, None).status, 200);
    rx.wait_for_named(
        "the warm-up request's span",
        |spans| spans.iter().any(|s| s.trace_id == warm),
        Duration::from_secs(30),
    );
    let mut checked: Vec<Sent> = Vec::new();
    let mut code = 200;

    for round in 0..4 {
        signal(agent.pid(), libc::SIGSTOP);
        burst(&mut conn, round);
        signal(agent.pid(), libc::SIGCONT);
        wait_drained(metrics_port);
        for _ in 0..AFTER {
            code += 1;
            checked.push(send_distinct(&mut conn, code));
        }
    }
    assert!(agent.is_running(), "agent output:\n{}", agent.output());

    let spans = rx.wait_for_named(
        "a SERVER span for every request sent after a loss",
        |spans| {
            checked.iter().all(|c| {
                spans
                    .iter()
                    .any(|s| s.kind == "SERVER" && s.trace_id == c.trace_id)
            })
        },
        Duration::from_secs(30),
    );
    for c in &checked {
        let matching: Vec<_> = spans
            .iter()
            .filter(|s| s.kind == "SERVER" && s.trace_id == c.trace_id)
            .collect();
        assert_eq!(matching.len(), 1, "one SERVER span for {}", c.path);
        let s = matching[0];
        assert_eq!(s.parent_span_id, c.parent, "{}: parent", c.path);
        assert_eq!(
            s.attr_str("url.path"),
            Some(c.path.as_str()),
            "{}: path",
            c.path
        );
        assert_eq!(
            s.attr_i64("http.response.status_code"),
            Some(c.status),
            "{}: status (a neighbour's status means the pairs shifted)",
            c.path
        );
        let duration = Duration::from_nanos(s.end_unix_nanos.saturating_sub(s.start_unix_nanos));
        assert!(
            s.end_unix_nanos > s.start_unix_nanos && duration <= c.rtt + Duration::from_millis(2),
            "{}: the span lasts {duration:?}, the client's round trip {:?}",
            c.path,
            c.rtt
        );
    }
    // The losses happened and were seen as gaps, not guessed (checked after the spans, so that
    // order alone shows as the wrong pairs it makes).
    let text = wait_metrics(
        metrics_port,
        "losses counted",
        Duration::from_secs(10),
        |t| {
            sample(t, "tracer_kernel_dropped_ringbuf_full_total").is_some_and(|v| v > 0)
                && sample(t, "tracer_http_lost_events_total").is_some_and(|v| v > 0)
        },
    );
    let lost = sample(&text, "tracer_http_lost_events_total").unwrap_or(0);
    let abandoned = sample(&text, "tracer_http_abandoned_requests_total").unwrap_or(0);
    eprintln!("lost events seen: {lost}, requests given up: {abandoned}");
}
