//! A real OTLP trace receiver for the tests, built on the official `opentelemetry-proto`
//! definitions, that doubles as the trace store of the mesh scenario.
//!
//! It serves OTLP/gRPC (through the generated tonic `TraceServiceServer`) and OTLP/HTTP protobuf
//! (`POST /v1/traces`) on two free loopback ports, flattens every received span into [`Span`] and
//! keeps the raw bytes of every export request, so a test can prove that a secret never left the agent.
//! The HTTP port also takes Zipkin v2 JSON (`POST /api/v2/spans`, see [`crate::zipkin`]), as the
//! sidecars report, and answers `GET /api/traces/<trace id>` with the stored spans of one trace.
//!
//! For the fault tests ([`Receiver::start_with`]) it binds given ports (a collector that comes back
//! on the same address), answers the first N export requests with a retryable failure (HTTP 503
//! or 429, gRPC `UNAVAILABLE`), or accepts connections and never answers; it records the arrival
//! time of every export request, failed ones included.
//!
//! The servers run on their own runtime in a dedicated thread: tests may block (wait for processes,
//! talk raw TCP, sleep) without starving the receiver, whatever runtime flavour they use.
//!
//! [`Receiver::start_tls_blocking`] serves both ports over TLS instead (rustls, a certificate from
//! a test CA, optionally requiring a client certificate: mutual TLS) and keeps the reason of every
//! handshake it refused.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as OtlpStatus};
use prost::Message;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{
    self, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tonic::codegen::Service as _;
pub use tracer_test_support::pki::{Pair, TestPki};

/// One received span, flattened with its resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 lowercase hex characters.
    pub trace_id: String,
    /// 16 lowercase hex characters.
    pub span_id: String,
    /// 16 lowercase hex characters, or "" for a root span.
    pub parent_span_id: String,
    /// "SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER" or "UNSPECIFIED".
    pub kind: String,
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    /// "UNSET", "OK" or "ERROR".
    pub status_code: String,
    pub status_message: String,
    pub attributes: BTreeMap<String, Value>,
    pub resource: BTreeMap<String, Value>,
    pub scope_name: String,
    /// How the span arrived: [`SOURCE`] ("otlp") or [`crate::zipkin::SOURCE`] ("zipkin").
    pub source: &'static str,
    /// Zipkin's `shared` flag (a server span sharing its id with the client span); false for OTLP.
    pub shared: bool,
}

/// [`Span::source`] of the spans that came in over OTLP (gRPC or HTTP).
pub const SOURCE: &str = "otlp";

impl Span {
    /// A string attribute, `None` if absent or not a string.
    #[must_use]
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// An integer attribute, `None` if absent or not an integer.
    #[must_use]
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(Value::as_i64)
    }

    /// `service.name` of the span's resource ("" if absent).
    #[must_use]
    pub fn service_name(&self) -> &str {
        self.resource
            .get("service.name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parent = if self.parent_span_id.is_empty() {
            "-"
        } else {
            &self.parent_span_id
        };
        write!(
            f,
            "{} {} trace={} span={} parent={} name={:?} status={} service={:?} attrs={} resource={}",
            self.source,
            self.kind,
            self.trace_id,
            self.span_id,
            parent,
            self.name,
            self.status_code,
            self.service_name(),
            serde_json::to_string(&self.attributes).unwrap_or_default(),
            serde_json::to_string(&self.resource).unwrap_or_default(),
        )
    }
}

/// Renders spans one per line, for assertion messages.
#[must_use]
pub fn dump(spans: &[Span]) -> String {
    if spans.is_empty() {
        return "  (no spans received)".to_owned();
    }
    spans.iter().fold(String::new(), |mut out, s| {
        let _ = writeln!(out, "  {s}");
        out
    })
}

/// How the receiver answers export requests (see [`Receiver::start_with`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Stores every span and answers success.
    #[default]
    Accept,
    /// Answers the first `count` export requests (both protocols together) with a retryable
    /// failure: `http_status` over OTLP/HTTP (503 or 429), `UNAVAILABLE` over gRPC; then accepts.
    FailFirst { count: usize, http_status: u16 },
    /// Accepts TCP connections and never reads or answers on them: a hung collector.
    Silent,
}

/// Where and how a [`Receiver`] listens: port 0 picks a free one.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReceiverConfig {
    pub grpc_port: u16,
    pub http_port: u16,
    pub behaviour: Behaviour,
}

#[derive(Default)]
struct Store {
    behaviour: Behaviour,
    /// When each OTLP export request arrived (answered or failed), in arrival order.
    attempts: Vec<Instant>,
    /// Export requests answered with a failure ([`Behaviour::FailFirst`]).
    failed: usize,
    /// Connections accepted and left unanswered ([`Behaviour::Silent`]).
    silent_connections: usize,
    spans: Vec<Span>,
    /// Request bodies as they arrived (gRPC: length-prefixed message frames; HTTP: the protobuf
    /// body, after gzip if it was compressed).
    raw: Vec<Vec<u8>>,
    /// The headers (gRPC metadata) of each OTLP export request, names in lowercase.
    headers: Vec<Vec<(String, String)>>,
    /// Why each refused TLS handshake failed (TLS mode only).
    tls_errors: Vec<String>,
}

/// The receiver's TLS mode: its certificate, and the CA its clients' certificates must come from
/// when it requires them.
#[derive(Clone, Debug)]
pub struct ReceiverTls {
    /// Certificate (for 127.0.0.1) and key of both ports.
    pub server: Pair,
    /// `Some(CA PEM)`: mutual TLS, a client without a certificate signed by this CA is refused.
    pub client_ca: Option<String>,
}

impl ReceiverTls {
    /// Server-authenticated TLS with the server pair of `pki`.
    #[must_use]
    pub fn server_auth(pki: &TestPki) -> Self {
        Self {
            server: pki.server.clone(),
            client_ca: None,
        }
    }

    /// Mutual TLS: the server pair of `pki`, and clients must present a certificate of its CA.
    #[must_use]
    pub fn mutual(pki: &TestPki) -> Self {
        Self {
            server: pki.server.clone(),
            client_ca: Some(pki.ca_pem.clone()),
        }
    }

    /// The rustls configuration of one port, offering `alpn` (h2 for gRPC, http/1.1 for HTTP).
    fn config(&self, alpn: &[u8]) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.server.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .expect("server certificate PEM");
        let key =
            PrivateKeyDer::from_pem_slice(self.server.key_pem.as_bytes()).expect("server key PEM");
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(cert.expect("client CA PEM")).expect("client CA");
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .expect("server certificate and key");
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }
}

type Shared = Arc<Mutex<Store>>;

fn lock(store: &Shared) -> MutexGuard<'_, Store> {
    // A panicking test thread must not hide the spans from the next assertion.
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running receiver; stops its servers on drop.
pub struct Receiver {
    store: Shared,
    grpc: SocketAddr,
    http: SocketAddr,
    /// "https" in TLS mode, else "http".
    scheme: &'static str,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts both servers (from async code).
    ///
    /// # Panics
    /// If the loopback ports cannot be bound.
    pub async fn start() -> Self {
        tokio::task::spawn_blocking(Self::start_blocking)
            .await
            .expect("receiver start panicked")
    }

    /// Starts both servers (from synchronous code, e.g. a plain `#[test]`).
    ///
    /// # Panics
    /// If the loopback ports cannot be bound.
    #[must_use]
    pub fn start_blocking() -> Self {
        Self::start_with(ReceiverConfig::default())
    }

    /// Starts both servers over TLS (from synchronous code): `https://` endpoints.
    ///
    /// # Panics
    /// If the loopback ports cannot be bound or the certificates are not usable.
    #[must_use]
    pub fn start_tls_blocking(tls: &ReceiverTls) -> Self {
        Self::start_on(ReceiverConfig::default(), Some(tls))
    }

    /// Starts both servers on the ports of `config` (0: a free one), answering as its
    /// behaviour says; from synchronous code.
    ///
    /// # Panics
    /// If a port cannot be bound.
    #[must_use]
    pub fn start_with(config: ReceiverConfig) -> Self {
        Self::start_on(config, None)
    }

    fn start_on(config: ReceiverConfig, tls: Option<&ReceiverTls>) -> Self {
        let acceptors = tls.map(|t| {
            (
                TlsAcceptor::from(t.config(b"h2")),
                TlsAcceptor::from(t.config(b"http/1.1")),
            )
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let store = Shared::default();
        lock(&store).behaviour = config.behaviour;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_store = store.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(async move {
                    let bind = |port: u16| async move {
                        TcpListener::bind(("127.0.0.1", port))
                            .await
                            .unwrap_or_else(|e| panic!("receiver: binding 127.0.0.1:{port}: {e}"))
                    };
                    let grpc = bind(config.grpc_port).await;
                    let http = bind(config.http_port).await;
                    addr_tx
                        .send((grpc.local_addr().unwrap(), http.local_addr().unwrap()))
                        .unwrap();
                    let (grpc_tls, http_tls) = acceptors.unzip();
                    tokio::spawn(serve(grpc, thread_store.clone(), true, grpc_tls));
                    tokio::spawn(serve(http, thread_store, false, http_tls));
                    let _ = shutdown_rx.await;
                });
                // Dropping the runtime here (outside any async context) aborts the connection tasks.
            })
            .expect("spawn receiver thread");
        let (grpc, http) = addr_rx.recv().expect("receiver failed to bind");
        Self {
            store,
            grpc,
            http,
            scheme,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Endpoint for OTLP/gRPC, e.g. `http://127.0.0.1:40123` (`https://` in TLS mode).
    #[must_use]
    pub fn grpc_endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.grpc)
    }

    /// Base URL for OTLP/HTTP, e.g. `http://127.0.0.1:40124` (spans are posted to `/v1/traces`;
    /// `https://` in TLS mode).
    #[must_use]
    pub fn http_endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.http)
    }

    /// Why each TLS handshake the receiver refused failed, in arrival order (TLS mode).
    #[must_use]
    pub fn tls_errors(&self) -> Vec<String> {
        lock(&self.store).tls_errors.clone()
    }

    /// Port of the gRPC server.
    #[must_use]
    pub fn grpc_port(&self) -> u16 {
        self.grpc.port()
    }

    /// When each OTLP export request arrived, failed ones included, in arrival order.
    #[must_use]
    pub fn attempts(&self) -> Vec<Instant> {
        lock(&self.store).attempts.clone()
    }

    /// Export requests answered with a failure so far ([`Behaviour::FailFirst`]).
    #[must_use]
    pub fn failed_count(&self) -> usize {
        lock(&self.store).failed
    }

    /// Connections accepted and never answered so far ([`Behaviour::Silent`]).
    #[must_use]
    pub fn silent_connections(&self) -> usize {
        lock(&self.store).silent_connections
    }

    /// Port of the HTTP server (OTLP/HTTP, Zipkin and the trace query), e.g. for an Envoy cluster.
    #[must_use]
    pub fn http_port(&self) -> u16 {
        self.http.port()
    }

    /// All spans received so far, in arrival order.
    #[must_use]
    pub fn spans(&self) -> Vec<Span> {
        lock(&self.store).spans.clone()
    }

    /// The spans received so far with this trace id (32 lowercase hex), in arrival order; what
    /// `GET /api/traces/<trace_id>` answers.
    #[must_use]
    pub fn spans_of_trace(&self, trace_id: &str) -> Vec<Span> {
        spans_of_trace(&self.store, trace_id)
    }

    /// Number of export requests received (both protocols).
    #[must_use]
    pub fn export_count(&self) -> usize {
        lock(&self.store).raw.len()
    }

    /// The headers (gRPC metadata) of every OTLP export request received so far, names in
    /// lowercase, in arrival order.
    #[must_use]
    pub fn export_headers(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.store).headers.clone()
    }

    /// Whether `needle` occurs in the raw bytes of any export request received so far.
    #[must_use]
    pub fn raw_contains(&self, needle: &[u8]) -> bool {
        if needle.is_empty() {
            return true;
        }
        lock(&self.store)
            .raw
            .iter()
            .any(|body| body.windows(needle.len()).any(|w| w == needle))
    }

    /// Polls until `pred` holds for the received spans and returns them.
    ///
    /// # Panics
    /// On timeout, with a dump of every span received.
    pub fn wait_for(&self, pred: impl Fn(&[Span]) -> bool, timeout: Duration) -> Vec<Span> {
        self.wait_for_named("the expected spans", pred, timeout)
    }

    /// Like [`Self::wait_for`], with a description of what is awaited for the panic message.
    ///
    /// # Panics
    /// On timeout, with `what` and a dump of every span received.
    pub fn wait_for_named(
        &self,
        what: &str,
        pred: impl Fn(&[Span]) -> bool,
        timeout: Duration,
    ) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; {} spans received in {} exports:\n{}",
                spans.len(),
                self.export_count(),
                dump(&spans)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Accept loop: gRPC connections are HTTP/2 (prior knowledge, as OTLP exporters speak it),
/// OTLP/HTTP connections are HTTP/1.1; in TLS mode both after the handshake.
async fn serve(listener: TcpListener, store: Shared, grpc: bool, tls: Option<TlsAcceptor>) {
    // Collectors (rotel in the mesh scenario) gzip their exports by default, as OTLP allows.
    let trace_service = TraceServiceServer::new(Collector {
        store: store.clone(),
    })
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    // Held, never read nor written, until the receiver stops.
    let mut silent = Vec::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        {
            let mut store = lock(&store);
            if store.behaviour == Behaviour::Silent {
                store.silent_connections += 1;
                silent.push(stream);
                continue;
            }
        }
        let store = store.clone();
        let trace_service = trace_service.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), store, grpc, trace_service).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(stream) => {
                        serve_connection(TokioIo::new(stream), store, grpc, trace_service).await;
                    }
                    Err(e) => lock(&store).tls_errors.push(e.to_string()),
                },
            }
        });
    }
}

async fn serve_connection<I>(
    io: TokioIo<I>,
    store: Shared,
    grpc: bool,
    trace_service: TraceServiceServer<Collector>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if grpc {
        let svc = service_fn(move |req| grpc_request(req, store.clone(), trace_service.clone()));
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let svc = service_fn(move |req| http_request(req, store.clone()));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

/// Keeps the raw gRPC body, then hands the request to the generated tonic service, which decodes it
/// and calls [`Collector::export`].
async fn grpc_request(
    req: Request<Incoming>,
    store: Shared,
    mut trace_service: TraceServiceServer<Collector>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let status = tonic::Status::internal(format!("reading request body: {e}"));
            return Ok(status.into_http());
        }
    };
    if attempt_fails(&store).is_some() {
        return Ok(
            tonic::Status::unavailable("receiver: failing on purpose (FailFirst)").into_http(),
        );
    }
    {
        let mut store = lock(&store);
        store.raw.push(bytes.to_vec());
        store.headers.push(header_list(&parts.headers));
    }
    trace_service
        .call(Request::from_parts(parts, Full::new(bytes)))
        .await
}

/// Records an OTLP export request's arrival; `Some(http status)` if it is to be failed.
fn attempt_fails(store: &Shared) -> Option<u16> {
    let mut store = lock(store);
    store.attempts.push(Instant::now());
    match store.behaviour {
        Behaviour::FailFirst { count, http_status } if store.failed < count => {
            store.failed += 1;
            Some(http_status)
        }
        _ => None,
    }
}

fn header_list(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn spans_of_trace(store: &Shared, trace_id: &str) -> Vec<Span> {
    let trace_id = trace_id.to_ascii_lowercase();
    lock(store)
        .spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

fn reply(code: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static(content_type),
    );
    resp
}

/// The HTTP port's routes: OTLP/HTTP protobuf, Zipkin v2 JSON, the trace query. hyper undoes
/// Content-Length and chunked framing (Envoy posts Zipkin spans chunked).
async fn http_request(
    req: Request<Incoming>,
    store: Shared,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |code, msg: &str| Ok(reply(code, "text/plain", msg.as_bytes().to_vec()));
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET
        && let Some(id) = path.strip_prefix("/api/traces/")
    {
        let spans: Vec<Value> = spans_of_trace(&store, id)
            .iter()
            .map(crate::zipkin::span_json)
            .collect();
        let body = serde_json::json!({ "trace_id": id.to_ascii_lowercase(), "spans": spans });
        return Ok(reply(
            StatusCode::OK,
            "application/json",
            body.to_string().into_bytes(),
        ));
    }
    let zipkin = match (req.method() == Method::POST, path.as_str()) {
        (true, "/v1/traces") => false,
        (true, "/api/v2/spans") => true,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "only POST /v1/traces, POST /api/v2/spans, GET /api/traces/<id>",
            );
        }
    };
    if !zipkin && let Some(status) = attempt_fails(&store) {
        let code = StatusCode::from_u16(status).expect("FailFirst http_status is a status code");
        return text(code, "receiver: failing on purpose (FailFirst)");
    }
    let headers = header_list(req.headers());
    let gzip = match req
        .headers()
        .get("content-encoding")
        .map(hyper::http::HeaderValue::as_bytes)
    {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(_) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "only gzip compression is supported",
            );
        }
    };
    let mut bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("body: {e}")),
    };
    if gzip {
        let mut plain = Vec::new();
        if let Err(e) =
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut plain)
        {
            return text(StatusCode::BAD_REQUEST, &format!("gzip: {e}"));
        }
        bytes = Bytes::from(plain);
    }
    {
        let mut store = lock(&store);
        store.raw.push(bytes.to_vec());
        if !zipkin {
            store.headers.push(headers);
        }
    }
    if zipkin {
        return match crate::zipkin::parse_spans(&bytes) {
            Ok(spans) => {
                lock(&store).spans.extend(spans);
                // What a Zipkin server answers.
                text(StatusCode::ACCEPTED, "")
            }
            Err(e) => text(StatusCode::BAD_REQUEST, &e),
        };
    }
    let protobuf = |code, body| Ok(reply(code, "application/x-protobuf", body));
    match ExportTraceServiceRequest::decode(bytes) {
        Ok(export) => {
            let spans = flatten(export);
            lock(&store).spans.extend(spans);
            protobuf(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(e) => protobuf(StatusCode::BAD_REQUEST, format!("decode: {e}").into_bytes()),
    }
}

struct Collector {
    store: Shared,
}

#[tonic::codegen::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(request.into_inner());
        lock(&self.store).spans.extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in export.resource_spans {
        let resource = rs
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            let scope_name = ss.scope.map(|s| s.name).unwrap_or_default();
            for s in ss.spans {
                let kind = SpanKind::try_from(s.kind).map_or("INVALID", |k| k.as_str_name());
                let (status_code, status_message) = match s.status {
                    Some(st) => (
                        OtlpStatus::try_from(st.code).map_or("INVALID", |c| c.as_str_name()),
                        st.message,
                    ),
                    None => ("STATUS_CODE_UNSET", String::new()),
                };
                out.push(Span {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    kind: kind.trim_start_matches("SPAN_KIND_").to_owned(),
                    name: s.name,
                    start_unix_nanos: s.start_time_unix_nano,
                    end_unix_nanos: s.end_time_unix_nano,
                    status_code: status_code.trim_start_matches("STATUS_CODE_").to_owned(),
                    status_message,
                    attributes: attributes(s.attributes),
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    source: SOURCE,
                    shared: false,
                });
            }
        }
    }
    out
}

fn attributes(kvs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    kvs.into_iter()
        .map(|kv| (kv.key, kv.value.map_or(Value::Null, any_value)))
        .collect()
}

fn any_value(v: AnyValue) -> Value {
    use any_value::Value as V;
    match v.value {
        Some(V::StringValue(s)) => Value::String(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::from(i),
        Some(V::DoubleValue(d)) => Value::from(d),
        Some(V::ArrayValue(a)) => Value::Array(a.values.into_iter().map(any_value).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(attributes(kv.values).into_iter().collect()),
        Some(V::BytesValue(b)) => Value::String(hex(&b)),
        // Profiles-only string-table references and empty values carry nothing for traces.
        _ => Value::Null,
    }
}

/// Lowercase hex; an empty id stays "" (the OTLP encoding of "no parent").
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
