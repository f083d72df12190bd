//! A fake Kubernetes API server for the pod watch: just the calls the agent makes, list and watch
//! of `/api/v1/pods` with a node field selector, over plain HTTP on a given port (so a test can
//! stop it and bring it back on the same address, as an API server restart or a network cut
//! looks to a node). A [`kubeconfig`] file points the agent at it.
//!
//! - A list answers the pods it was given, at its resource version.
//! - A watch from the current resource version stays open without events (nothing changes while
//!   it runs); a watch from another version gets `410 Gone`, as a real API server answers a
//!   version it no longer has, so the client lists again and sees what changed.
//!
//! It records every call (time and URI), so a test can see the client's retries.

use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One pod as the API server returns it, on `node`, with one running container whose
/// `containerID` is `containerd://<container_id>`.
#[must_use]
pub fn pod(name: &str, uid: &str, node: &str, container_id: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": uid,
            "labels": { "app": name },
        },
        "spec": { "nodeName": node, "containers": [{ "name": "app", "image": "app:1" }] },
        "status": {
            "phase": "Running",
            "containerStatuses": [{
                "name": "app",
                "containerID": format!("containerd://{container_id}"),
                "image": "app:1",
                "imageID": "",
                "ready": true,
                "restartCount": 0,
            }],
        },
    })
}

/// Writes a kubeconfig that points at `127.0.0.1:port` over HTTP, without credentials.
///
/// # Panics
/// If the file cannot be written.
pub fn kubeconfig(path: &Path, port: u16) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
         users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
         current-context: fake\n"
    );
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

struct State {
    node: String,
    pods: Vec<Value>,
    resource_version: u64,
    calls: Vec<(Instant, String)>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The running fake; stops (closing every connection, watches included) on drop.
pub struct FakeApi {
    state: Shared,
    port: u16,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeApi {
    /// Serves `pods` of `node` at `resource_version` on 127.0.0.1:`port` (0: a free port).
    ///
    /// # Panics
    /// If the port cannot be bound.
    #[must_use]
    pub fn start(port: u16, node: &str, pods: Vec<Value>, resource_version: u64) -> Self {
        let state = Arc::new(Mutex::new(State {
            node: node.to_owned(),
            pods,
            resource_version,
            calls: Vec::new(),
        }));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("fake-kube-api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake API runtime");
                rt.block_on(async move {
                    let listener = TcpListener::bind(("127.0.0.1", port))
                        .await
                        .unwrap_or_else(|e| panic!("fake API: binding 127.0.0.1:{port}: {e}"));
                    port_tx
                        .send(listener.local_addr().expect("local addr").port())
                        .expect("report port");
                    tokio::spawn(async move {
                        loop {
                            let Ok((stream, _)) = listener.accept().await else {
                                continue;
                            };
                            let state = thread_state.clone();
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| {
                                    std::future::ready(Ok::<_, Infallible>(answer(&req, &state)))
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                            });
                        }
                    });
                    let _ = shutdown_rx.await;
                });
            })
            .expect("spawn fake API thread");
        let port = port_rx.recv().expect("fake API failed to bind");
        Self {
            state,
            port,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every call so far: when it came and its URI.
    #[must_use]
    pub fn calls(&self) -> Vec<(Instant, String)> {
        lock(&self.state).calls.clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A response body that never ends: an open watch with nothing to report.
struct Open;

impl Body for Open {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Pending
    }
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

fn json_answer(code: StatusCode, body: &Value) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *r.status_mut() = code;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// The value of `key` in a query string (undoing the `%3D` of `fieldSelector`).
fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.replace("%3D", "=").replace("%2F", "/"))
    })
}

fn answer(req: &Request<hyper::body::Incoming>, state: &Shared) -> Answer {
    let uri = req.uri().to_string();
    let (path, query) = (req.uri().path(), req.uri().query().unwrap_or(""));
    let mut st = lock(state);
    st.calls.push((Instant::now(), uri.clone()));
    if path != "/api/v1/pods" {
        return json_answer(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": format!("fake API: no {path}")}),
        );
    }
    let selector = format!("spec.nodeName={}", st.node);
    if query_param(query, "fieldSelector").as_deref() != Some(&selector) {
        return json_answer(
            StatusCode::BAD_REQUEST,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400, "message": format!("fake API: only {selector} is served: {uri}")}),
        );
    }
    let rv = st.resource_version.to_string();
    if query_param(query, "watch").is_some_and(|w| w == "true" || w == "1") {
        if query_param(query, "resourceVersion").as_deref() == Some(rv.as_str()) {
            return Response::new(Open.boxed());
        }
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410}});
        let body = Full::new(Bytes::from(format!("{gone}\n"))).boxed();
        return Response::new(body);
    }
    let list = json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": { "resourceVersion": rv },
        "items": st.pods,
    });
    json_answer(StatusCode::OK, &list)
}
