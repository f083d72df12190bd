//! The agent's HTTP endpoint on hyper's HTTP/1 server: `/metrics` (see [`super::exposition`]),
//! `/healthz` (200 while the process runs) and `/readyz` (200 once the probes are attached, 503
//! before). Other paths get 404, other methods than GET 405.
//!
//! Bounds, so that a slow or hostile client, or a flood of them, costs the agent neither memory
//! nor tasks beyond a fixed amount ([`Limits::DEFAULT`]):
//! - at most 64 connections at a time; one more is closed as soon as it is accepted, before a
//!   byte is read, and counted in `tracer_metrics_connections_rejected_total`;
//! - the request head must be complete within 5 s of the connection's start: a client that
//!   drip-feeds it is disconnected then;
//! - a connection lives at most 10 s in all (a client that does not read its response);
//!   both cuts are counted in `tracer_metrics_connections_timed_out_total`;
//! - one request per connection: every response closes its connection (`Connection: close`),
//!   so no idle keep-alive connection holds a slot between scrapes;
//! - a request head of at most 16 KiB and 32 header lines (hyper answers 431 beyond); a request
//!   body is never read.
//!
//! With 64 connections of at most 16 KiB of buffer each, the endpoint holds at most about 1 MiB
//! of request data however many clients connect.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::Incoming,
    header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::Semaphore,
};
use tracing::{debug, info, warn};

use super::{
    Metrics,
    exposition::{Exposition, Format},
};

/// Largest request head hyper buffers (its minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a request head.
const MAX_HEADERS: usize = 32;
/// Connections the kernel queues for `accept` (tokio's own choice for `TcpListener::bind`).
const LISTEN_BACKLOG: u32 = 1024;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The endpoint's bounds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// Time for a request head to arrive, from the connection's accept.
    pub head_timeout: Duration,
    /// Longest life of a connection.
    pub lifetime: Duration,
    /// Connections served at a time.
    pub max_connections: usize,
}

impl Limits {
    pub const DEFAULT: Self = Self {
        head_timeout: Duration::from_secs(5),
        lifetime: Duration::from_secs(10),
        max_connections: 64,
    };
}

/// Listens on `addr` now (so that the endpoint answers once the agent says it is ready) and
/// serves `/metrics`, `/healthz` and `/readyz` there from a task of its own until the process
/// ends. A port that cannot be bound is logged, not fatal: tracing goes on without metrics.
pub fn start(addr: SocketAddr, metrics: &'static Metrics) {
    let listener = match listen(addr) {
        Ok(l) => l,
        Err(e) => {
            warn!(
                "metrics endpoint not started: cannot listen on {addr}: {e} (use --metrics-addr to change or \"off\")"
            );
            return;
        }
    };
    let limits = Limits::DEFAULT;
    info!(
        "metrics on http://{}/metrics, health on /healthz and /readyz (at most {} connections, {:?} for a request head)",
        listener.local_addr().map_or(addr, |a| a),
        limits.max_connections,
        limits.head_timeout,
    );
    tokio::spawn(Endpoint::new(metrics, limits).run(listener));
}

/// What `TcpListener::bind` does, synchronously.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What every connection shares.
pub(super) struct Endpoint {
    metrics: &'static Metrics,
    exposition: Exposition,
    limits: Limits,
    /// One permit per connection being served.
    slots: Arc<Semaphore>,
}

impl Endpoint {
    pub(super) fn new(metrics: &'static Metrics, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            metrics,
            exposition: Exposition::new(metrics),
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
        })
    }

    /// Connections being served now.
    #[cfg(test)]
    pub(super) fn open_connections(&self) -> usize {
        self.limits.max_connections - self.slots.available_permits()
    }

    /// Accepts connections on `listener` forever.
    pub(super) async fn run(self: Arc<Self>, listener: TcpListener) {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.head_timeout)
            .keep_alive(false)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                self.metrics.endpoint_rejected.fetch_add(1, Relaxed);
                debug!(
                    "metrics endpoint: {peer} closed at once, {} connections open",
                    self.limits.max_connections
                );
                drop(stream);
                continue;
            };
            let endpoint = self.clone();
            let conn = http.serve_connection(
                TokioIo::new(stream),
                service_fn(move |req| {
                    let response = endpoint.respond(&req);
                    async move { Ok::<_, Infallible>(response) }
                }),
            );
            let (metrics, lifetime) = (self.metrics, self.limits.lifetime);
            tokio::spawn(async move {
                let _slot = slot;
                let cut = match tokio::time::timeout(lifetime, conn).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) if e.is_timeout() => Some("no complete request head in time"),
                    Ok(Err(e)) => {
                        debug!("metrics client {peer}: {e}");
                        None
                    }
                    Err(_) => Some("connection lifetime reached"),
                };
                if let Some(reason) = cut {
                    metrics.endpoint_timed_out.fetch_add(1, Relaxed);
                    debug!("metrics client {peer} cut: {reason}");
                }
            });
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET"));
            return response;
        }
        match req.uri().path() {
            "/metrics" => {
                let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
                let format = Format::from_accept(accept);
                let mut response = Response::new(Full::from(self.exposition.render(format)));
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                response
            }
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" if self.metrics.ready.load(Relaxed) => plain(StatusCode::OK, "ready\n"),
            "/readyz" => plain(StatusCode::SERVICE_UNAVAILABLE, "probes not attached yet\n"),
            _ => plain(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests;
