//! Root: the agent's metrics endpoint under a flood of connections. 20 clients that drip-feed a
//! request head and 500 more that connect at once and send half a head must not stop the agent,
//! keep `/healthz` and `/metrics` away for longer than the 5 s head timeout, nor grow its memory:
//! connections beyond the endpoint's 64 are closed at once and counted
//! (`tracer_metrics_connections_rejected_total`), the slow ones are cut by the head timeout
//! (`tracer_metrics_connections_timed_out_total`).

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use tracer_test_support::observe::{proc_status_kib, prometheus_samples};
use tracer_tests::harness::{Agent, Receiver, Service, free_port, root_test};

/// The endpoint's bounds (`tracer-agent/src/metrics/server.rs`).
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: u64 = 64;

const DRIPPERS: usize = 20;
const FLOOD: usize = 500;
/// Resident memory the flood may add to the agent. The endpoint buffers at most 16 KiB of head
/// for each of its 64 connections (1 MiB) plus a task and hyper's state per connection; 8 MiB
/// leaves room for the allocator's granularity. A server that accepted every connection would
/// hold 520 of them, and one that buffered without bound would grow with every dripped byte.
const RSS_GROWTH_BOUND_KIB: u64 = 8 * 1024;

/// A head that never ends: the blank line that would close it is never sent.
const HALF_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// `GET path` on a fresh connection; `None` when the endpoint closes it without an answer (over
/// its connection limit) or does not answer within 2 s.
fn try_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Retries `GET path` until it answers 200 or `deadline`; returns the body. `each_try` runs
/// before every attempt.
fn get_until(
    agent: &mut Agent,
    port: u16,
    path: &str,
    deadline: Instant,
    mut each_try: impl FnMut(),
) -> Option<String> {
    loop {
        each_try();
        assert!(
            agent.is_running(),
            "the agent died under the connection flood; output:\n{}",
            agent.output()
        );
        if let Some((200, body)) = try_get(port, path) {
            return Some(body);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A client that sends half a head and then one more byte every 100 ms, until the endpoint
/// closes the connection; returns how long after its connect that was, or `None` if the
/// endpoint had not closed it within `give_up`.
fn drip(mut sock: TcpStream, connected: Instant, give_up: Duration) -> Option<Duration> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut buf = [0u8; 512];
    while connected.elapsed() < give_up {
        if sock.write_all(b"a").is_err() {
            return Some(connected.elapsed());
        }
        match sock.read(&mut buf) {
            Ok(0) => return Some(connected.elapsed()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Bytes (an error response) before the close, or a reset: keep reading to the end.
            Ok(_) => {}
            Err(_) => return Some(connected.elapsed()),
        }
    }
    None
}

/// Opens the flood on `port`: the drippers first (accepted first, they hold 20 of the 64 slots;
/// each thread returns when its connection was cut), then the connections that send half a head
/// and wait, held open by the caller (the endpoint closes the rejected ones, and writes to
/// those may fail).
fn open_flood(port: u16, give_up: Duration) -> (Vec<JoinHandle<Option<Duration>>>, Vec<TcpStream>) {
    let drippers = (0..DRIPPERS)
        .map(|i| {
            let mut sock = TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("dripper {i} connect: {e}"));
            let connected = Instant::now();
            sock.write_all(HALF_HEAD).expect("half a head");
            thread::spawn(move || drip(sock, connected, give_up))
        })
        .collect();
    let flood = (0..FLOOD)
        .map(|i| {
            let mut sock = TcpStream::connect(("127.0.0.1", port))
                .unwrap_or_else(|e| panic!("flood connection {i}: {e}"));
            let _ = sock.write_all(HALF_HEAD);
            sock
        })
        .collect();
    (drippers, flood)
}

/// `/metrics`, read again until it counts all the served connections as cut, or `by`. The 64
/// served connections were accepted over the time the flood took to open, so their head
/// timeouts fire over that span too: `/healthz` answers as soon as the first slot is free.
/// `each_read` runs after every read.
fn metrics_once_all_cut(
    agent: &mut Agent,
    port: u16,
    by: Instant,
    mut each_read: impl FnMut(),
) -> String {
    loop {
        let text = get_until(
            agent,
            port,
            "/metrics",
            Instant::now() + Duration::from_secs(5),
            || {},
        )
        .expect("/metrics answers once /healthz does");
        each_read();
        let timed_out = counter(
            &prometheus_samples(&text),
            "tracer_metrics_connections_timed_out_total",
        );
        if timed_out >= MAX_CONNECTIONS || Instant::now() >= by {
            return text;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn counter(samples: &HashMap<String, f64>, name: &str) -> u64 {
    let value = samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from /metrics"));
    // Counters are whole numbers well below 2^53.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "whole, non-negative"
    )]
    let value = *value as u64;
    value
}

#[test]
fn flood_of_connections_is_bounded_and_counted() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::python(free_port(), None, &[]);
    let port = free_port();
    let mut agent = Agent::start([
        "--otlp-endpoint".to_owned(),
        rx.grpc_endpoint(),
        "--metrics-addr".to_owned(),
        format!("127.0.0.1:{port}"),
        "--pid".to_owned(),
        svc.pid().to_string(),
    ]);
    let pid = agent.pid();
    let rss = || proc_status_kib(pid, "VmRSS").unwrap_or_else(|e| panic!("{e}"));

    // A few scrapes first, so that the baseline includes what any scrape allocates.
    for _ in 0..5 {
        let (status, _) = try_get(port, "/metrics").expect("/metrics before the flood");
        assert_eq!(status, 200);
    }
    let baseline = rss();

    let start = Instant::now();
    let give_up = HEAD_TIMEOUT + Duration::from_secs(10);
    let (drippers, flood) = open_flood(port, give_up);
    let flooded = start.elapsed();

    // The endpoint answers again once the slow clients' head timeout has cut them, not later.
    let mut peak = baseline;
    let deadline = start + HEAD_TIMEOUT + Duration::from_secs(5);
    let healthy = get_until(&mut agent, port, "/healthz", deadline, || {
        peak = peak.max(rss());
    });
    assert_eq!(
        healthy.as_deref(),
        Some("ok\n"),
        "/healthz did not answer within {:?} of the flood ({FLOOD} connections opened in \
         {flooded:?}); output:\n{}",
        deadline - start,
        agent.output()
    );
    let counted_by = Instant::now().max(start + flooded + HEAD_TIMEOUT) + Duration::from_secs(5);
    let text = metrics_once_all_cut(&mut agent, port, counted_by, || peak = peak.max(rss()));

    for (i, dripper) in drippers.into_iter().enumerate() {
        let cut = dripper.join().expect("dripper thread");
        let cut = cut.unwrap_or_else(|| {
            panic!(
                "dripper {i} was still connected after {give_up:?}: the head timeout did not cut it"
            )
        });
        assert!(
            cut >= HEAD_TIMEOUT,
            "dripper {i} was cut after {cut:?}, before the {HEAD_TIMEOUT:?} head timeout (the \
             drippers connect first, they must have been accepted)"
        );
    }

    let samples = prometheus_samples(&text);
    let rejected = counter(&samples, "tracer_metrics_connections_rejected_total");
    let timed_out = counter(&samples, "tracer_metrics_connections_timed_out_total");
    let opened = (DRIPPERS + FLOOD) as u64;
    assert!(
        rejected >= opened - MAX_CONNECTIONS,
        "{opened} slow connections at once, at most {MAX_CONNECTIONS} served: at least {} must \
         have been rejected, {rejected} were; /metrics:\n{text}",
        opened - MAX_CONNECTIONS
    );
    assert!(
        timed_out >= MAX_CONNECTIONS,
        "every one of the {MAX_CONNECTIONS} served slow connections must be cut by the head \
         timeout, {timed_out} were; /metrics:\n{text}"
    );
    assert!(
        peak <= baseline + RSS_GROWTH_BOUND_KIB,
        "the agent's VmRSS grew from {baseline} KiB to {peak} KiB under the flood, more than \
         the {RSS_GROWTH_BOUND_KIB} KiB bound"
    );
    eprintln!(
        "flood: {opened} connections in {flooded:?}, rejected {rejected}, timed out {timed_out}, \
         VmRSS {baseline} KiB -> peak {peak} KiB"
    );

    drop(flood);
    assert!(
        agent.is_running(),
        "agent exited; output:\n{}",
        agent.output()
    );
    let status = agent.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent must still stop cleanly (got {status:?}); output:\n{}",
        agent.output()
    );
}
