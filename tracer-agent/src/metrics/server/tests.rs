//! The endpoint in-process, on a loopback port of its own, with small bounds.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{Endpoint, Limits};
use crate::metrics::Metrics;

/// A head that never ends: the blank line that closes it is not sent.
const HALF_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

struct Server {
    endpoint: Arc<Endpoint>,
    metrics: &'static Metrics,
    addr: SocketAddr,
}

async fn start(limits: Limits) -> Server {
    let metrics: &'static Metrics = Box::leak(Box::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let endpoint = Endpoint::new(metrics, limits);
    tokio::spawn(endpoint.clone().run(listener));
    Server {
        endpoint,
        metrics,
        addr,
    }
}

/// One response: its status and the bytes after the head.
struct Reply {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` and reads until the server closes (it always does after one response).
async fn exchange(addr: SocketAddr, request: &str) -> Reply {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut raw))
        .await
        .expect("the endpoint answers and closes within 5 s")
        .expect("read the response");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    exchange(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).await
}

/// A client that sent half a request head and waits.
async fn slow_client(addr: SocketAddr) -> TcpStream {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    sock.write_all(HALF_HEAD).await.expect("send half a head");
    sock
}

/// Reads until the server closes `sock`; returns the bytes it sent and when it closed.
async fn wait_closed(sock: &mut TcpStream, within: Duration) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the endpoint did not close within {within:?}");
    (got, Instant::now())
}

async fn wait_until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn drip_feeding_client_is_cut_after_the_head_timeout() {
    let limits = Limits {
        head_timeout: Duration::from_millis(400),
        lifetime: Duration::from_secs(30),
        max_connections: 4,
    };
    let server = start(limits).await;
    let start = Instant::now();
    let sock = slow_client(server.addr).await;
    let (mut reader, mut writer) = sock.into_split();
    // One more header byte every 50 ms: the connection never goes quiet, the head never ends.
    let drip = tokio::spawn(async move {
        while writer.write_all(b"a").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(n) = reader.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    let elapsed = start.elapsed();
    assert!(closed.is_ok(), "a drip-feeding client was not cut");
    assert!(
        elapsed >= limits.head_timeout,
        "cut after {elapsed:?}, before the head timeout"
    );
    drip.await.expect("drip task");
    let m = server.metrics;
    wait_until(
        "timed-out connection counted",
        Duration::from_secs(2),
        || m.endpoint_timed_out.load(Relaxed) == 1,
    )
    .await;
    assert_eq!(server.endpoint.open_connections(), 0);
    assert_eq!(m.endpoint_rejected.load(Relaxed), 0);
}

#[tokio::test]
async fn connection_is_cut_at_its_lifetime() {
    let limits = Limits {
        head_timeout: Duration::from_secs(30),
        lifetime: Duration::from_millis(400),
        max_connections: 4,
    };
    let server = start(limits).await;
    let start = Instant::now();
    let mut sock = slow_client(server.addr).await;
    let (_, closed) = wait_closed(&mut sock, Duration::from_secs(5)).await;
    assert!(closed - start >= limits.lifetime);
    let m = server.metrics;
    wait_until("cut connection counted", Duration::from_secs(2), || {
        m.endpoint_timed_out.load(Relaxed) == 1
    })
    .await;
}

#[tokio::test]
async fn scrape_succeeds_while_slow_clients_hold_connections() {
    let limits = Limits {
        head_timeout: Duration::from_secs(30),
        lifetime: Duration::from_secs(30),
        max_connections: 4,
    };
    let server = start(limits).await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(slow_client(server.addr).await);
    }
    let endpoint = server.endpoint.clone();
    wait_until("3 slow clients served", Duration::from_secs(5), || {
        endpoint.open_connections() == 3
    })
    .await;
    let reply = get(server.addr, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert!(
        reply
            .body
            .contains("\ntracer_metrics_connections_rejected_total 0\n"),
        "{}",
        reply.body
    );
    // The slow clients are still held, none was cut to make room.
    assert_eq!(server.endpoint.open_connections(), 3);
    assert_eq!(server.metrics.endpoint_timed_out.load(Relaxed), 0);
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_and_counted() {
    let limits = Limits {
        head_timeout: Duration::from_secs(30),
        lifetime: Duration::from_secs(30),
        max_connections: 4,
    };
    let server = start(limits).await;
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(slow_client(server.addr).await);
    }
    let endpoint = server.endpoint.clone();
    wait_until("4 slow clients served", Duration::from_secs(5), || {
        endpoint.open_connections() == 4
    })
    .await;
    for i in 1..=2 {
        let mut sock = TcpStream::connect(server.addr).await.expect("connect");
        let start = Instant::now();
        // Closed at once: long before any timeout, without a byte of response.
        let (got, closed) = wait_closed(&mut sock, Duration::from_secs(2)).await;
        assert!(got.is_empty(), "a rejected connection got {got:?}");
        assert!(closed - start < Duration::from_secs(2));
        let m = server.metrics;
        wait_until("rejection counted", Duration::from_secs(2), || {
            m.endpoint_rejected.load(Relaxed) == i
        })
        .await;
    }
    // A slot freed by a client that leaves is taken by the next one.
    drop(slow.pop());
    wait_until("a slot freed", Duration::from_secs(5), || {
        endpoint.open_connections() == 3
    })
    .await;
    let reply = get(server.addr, "/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.head);
    assert!(
        reply
            .body
            .contains("\ntracer_metrics_connections_rejected_total 2\n"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn routes_methods_and_formats() {
    let server = start(Limits::DEFAULT).await;
    let addr = server.addr;

    let health = get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert!(health.head.contains("connection: close"), "{}", health.head);

    assert_eq!(get(addr, "/readyz").await.status, 503);
    server.metrics.ready.store(true, Relaxed);
    let ready = get(addr, "/readyz").await;
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    assert_eq!(get(addr, "/nothing").await.status, 404);
    let post = exchange(
        addr,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert_eq!(post.status, 405);
    assert!(post.head.contains("allow: GET"), "{}", post.head);

    let text = get(addr, "/metrics").await;
    assert_eq!(text.status, 200);
    assert!(
        text.head
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        text.head
    );
    assert!(text.body.contains("\ntracer_kernel_events_total 0\n"));
    assert!(!text.body.contains("# EOF"));

    let om = exchange(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
    )
    .await;
    assert_eq!(om.status, 200);
    assert!(
        om.head
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{}",
        om.head
    );
    assert!(om.body.contains("\ntracer_kernel_events_total 0\n"));
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
}
