//! The mesh scenario, reused by the end-to-end test and `cargo xtask demo`:
//!
//! ```text
//! client -> [envoy a in] -> service-a (Go) -> [envoy a out] -> [envoy b in] -> service-b (Python)
//!        -> [envoy b out] -> [envoy c in] -> service-c (Node)
//! envoys --Zipkin v2 JSON--> store          agent --OTLP gRPC--> rotel --OTLP gRPC--> store
//! ```
//!
//! The same scenario runs with other chains ([`Link`]): [`GRPC_CHAIN`] makes every hop gRPC
//! (the Go, Python and Node gRPC services of tests/src/grpc.rs behind HTTP/2 sidecars), and
//! [`MIXED_CHAIN`] has gRPC hops then an HTTP/1 one (the Python gRPC service GETs the Node HTTP
//! service), so one trace crosses both protocols.
//!
//! The apps carry no tracing code; they only forward the B3 headers they receive, as meshes
//! require. The sidecars report Zipkin spans (64-bit trace ids by default, as real meshes send), the agent
//! reports the apps' SERVER and CLIENT spans through a real third-party collector (rotel), and the
//! store ([`Receiver`]) joins both by trace id. Every process is stopped on drop, panics included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::envoy::{
    Codec, RID_HEADER, RID_TAG, Sidecar, SidecarConfig, envoy_binary, wait_accepting,
};
use crate::grpc::{Call, Rpc, grpc_call};
use crate::harness::{Agent, HttpResponse, Lang, Service, free_port, get, random_hex, tools_venv};
use crate::otlp::{Receiver, Span, dump};
use crate::process::Proc;

pub use crate::process::detach_from_terminal_signals;
pub use crate::tree::render as render_tree;

/// Spans one request through the whole chain yields: per service an inbound sidecar SERVER span
/// and an agent SERVER span, and for every service but the last a sidecar outbound CLIENT span and
/// an agent CLIENT span.
pub const CHAIN_SPANS: usize = chain_spans(CHAIN.len());

/// The spans one request through a chain of `links` services yields (see [`CHAIN_SPANS`]).
#[must_use]
pub const fn chain_spans(links: usize) -> usize {
    4 * links - 2
}

/// One service of a chain: its name, language and what it speaks (and its sidecar in front of it).
pub type Link = (&'static str, Lang, Codec);

/// The HTTP/1 services, front to back.
pub const CHAIN: [Link; 3] = [
    ("service-a", Lang::Go, Codec::Http1),
    ("service-b", Lang::Python, Codec::Http1),
    ("service-c", Lang::Node, Codec::Http1),
];

/// The gRPC services (`demo.Greeter`), front to back: every hop is gRPC over HTTP/2.
pub const GRPC_CHAIN: [Link; 3] = [
    ("service-a", Lang::Go, Codec::Grpc),
    ("service-b", Lang::Python, Codec::Grpc),
    ("service-c", Lang::Node, Codec::Grpc),
];

/// gRPC then HTTP/1: service-b (Python gRPC) GETs `/hello` of service-c (Node HTTP). The demo
/// services speak no gRPC from HTTP/1 (the HTTP/1 services only make GETs), so the gRPC hops
/// come first.
pub const MIXED_CHAIN: [Link; 3] = [
    ("service-a", Lang::Go, Codec::Grpc),
    ("service-b", Lang::Python, Codec::Grpc),
    ("service-c", Lang::Node, Codec::Http1),
];

/// Zipkin `serviceName` of a service's sidecar.
#[must_use]
pub fn sidecar_name(service: &str) -> String {
    format!("{service}-sidecar")
}

/// One service of the running mesh.
pub struct Hop {
    pub name: &'static str,
    pub lang: Lang,
    pub codec: Codec,
    pub app: Service,
    pub sidecar: Sidecar,
}

/// The running scenario. Field order is drop order: the agent goes first (it flushes its spans to
/// rotel on SIGTERM), the store last.
pub struct Mesh {
    /// None: only the sidecars report ([`Mesh::start_sidecars_only`]).
    agent: Option<Agent>,
    /// The agent's `--write-mode` ("read-only" unless started with another; "none" without agent).
    pub write_mode: &'static str,
    /// The sidecars' `trace_id_128bit`.
    pub trace_id_128bit: bool,
    pub hops: Vec<Hop>,
    collector: Proc,
    collector_grpc_port: u16,
    pub store: Receiver,
    /// The trace id of every request sent so far, barriers included.
    traces: Mutex<Vec<String>>,
    dir: TempDir,
}

/// One request sent through the mesh (an HTTP response or a gRPC [`Call`]) and the trace the store
/// received for it.
pub struct Traced<R = HttpResponse> {
    pub response: R,
    /// The unique id the request carried: the `rid` query parameter of an HTTP request (every
    /// HTTP app forwards the query), the [`RID_HEADER`] metadata of a gRPC call (only the entry
    /// sidecar sees it: the apps forward trace context only).
    pub rid: String,
    /// The span id the request carried in its B3 context, the entry sidecar's parent ("" when it
    /// carried none and the entry sidecar started the trace).
    pub incoming_span_id: String,
    /// 32 hex digits: a 64-bit Zipkin id comes left-padded with zeros.
    pub trace_id: String,
    pub spans: Vec<Span>,
}

impl Mesh {
    /// Starts the store, rotel, the three apps, their sidecars (`trace_id_128bit` as given) and
    /// the agent tracing the three apps.
    ///
    /// # Panics
    /// If a tool is missing (run `cargo xtask setup`) or a process does not come up.
    #[must_use]
    pub fn start(trace_id_128bit: bool) -> Self {
        Self::start_with(trace_id_128bit, "read-only")
    }

    /// As [`Mesh::start`], the agent in write mode `write_mode` (read-only, rewrite, inject).
    ///
    /// # Panics
    /// As [`Mesh::start`].
    #[must_use]
    pub fn start_with(trace_id_128bit: bool, write_mode: &'static str) -> Self {
        Self::start_chain(&CHAIN, trace_id_128bit, write_mode)
    }

    /// As [`Mesh::start_with`], with the services of `chain` (e.g. [`GRPC_CHAIN`]).
    ///
    /// # Panics
    /// As [`Mesh::start`], and for an HTTP/1 link before a gRPC one (the HTTP/1 services make
    /// no gRPC calls).
    #[must_use]
    pub fn start_chain(chain: &[Link], trace_id_128bit: bool, write_mode: &'static str) -> Self {
        let mut mesh = Self::start_sidecars_only(chain, trace_id_128bit);
        let mut args = vec![
            "--otlp-endpoint".to_owned(),
            format!("http://127.0.0.1:{}", mesh.collector_grpc_port),
            "--metrics-addr".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--write-mode".to_owned(),
            write_mode.to_owned(),
        ];
        for hop in &mesh.hops {
            args.extend(["--pid".to_owned(), hop.app.pid().to_string()]);
        }
        // Agent::start sets OTEL_BSP_SCHEDULE_DELAY=100: spans leave the agent within 0.1 s.
        mesh.agent = Some(Agent::start(args));
        mesh.write_mode = write_mode;
        mesh
    }

    /// The scenario without the agent (no root needed): the apps, their sidecars, rotel and the
    /// store, so only the sidecars' Zipkin spans arrive, as in a mesh without this agent. A
    /// request yields `2 * links - 1` spans.
    ///
    /// # Panics
    /// As [`Mesh::start_chain`].
    #[must_use]
    pub fn start_sidecars_only(chain: &[Link], trace_id_128bit: bool) -> Self {
        let dir = TempDir::new();
        let store = Receiver::start_blocking();
        let collector = start_rotel(&store.grpc_endpoint(), dir.path());
        let envoy = envoy_binary();

        // Ports first: each app calls its own sidecar's outbound listener, which routes to the
        // next sidecar's inbound listener.
        let ports: Vec<(u16, u16, u16)> = chain
            .iter()
            .map(|_| (free_port(), free_port(), free_port())) // app, inbound, outbound
            .collect();
        let mut hops = Vec::new();
        for (i, &(name, lang, codec)) in chain.iter().enumerate() {
            let (app_port, inbound, outbound) = ports[i];
            let next = ports.get(i + 1).map(|(_, next_in, _)| (outbound, *next_in));
            let next_codec = chain.get(i + 1).map_or(Codec::Http1, |l| l.2);
            let downstream = next.map(|(out, _)| downstream_url(codec, next_codec, out));
            let config = SidecarConfig {
                name: sidecar_name(name),
                inbound,
                app_port,
                app_codec: codec,
                outbound: next,
                next_codec,
                zipkin_port: store.http_port(),
                trace_id_128bit,
            };
            // The sidecar first: a gRPC app connects to its outbound listener at start, and a
            // refused connection would put its channel in backoff, failing the first calls.
            let sidecar = Sidecar::start(&envoy, dir.path(), config);
            // The agent names each app's resource from the app's own OTEL_SERVICE_NAME.
            let env = [("OTEL_SERVICE_NAME", name)];
            let app = match codec {
                Codec::Http1 => lang.start(app_port, downstream.as_deref(), &env),
                Codec::Grpc => lang.start_grpc(app_port, downstream.as_deref(), &env),
            };
            hops.push(Hop {
                name,
                lang,
                codec,
                app,
                sidecar,
            });
        }
        Self {
            agent: None,
            write_mode: "none",
            trace_id_128bit,
            hops,
            collector: collector.proc,
            collector_grpc_port: collector.grpc_port,
            store,
            traces: Mutex::new(Vec::new()),
            dir,
        }
    }

    /// The port clients call: service-a's inbound sidecar listener.
    #[must_use]
    pub fn entry_port(&self) -> u16 {
        self.hops[0].sidecar.config.inbound
    }

    /// Sends `GET path` (no trace context: the first sidecar starts the trace) to the entry port
    /// and waits until the store holds `expected` spans of its trace. A unique `rid` query
    /// parameter (forwarded by every app) finds the trace: the entry sidecar's SERVER span has it
    /// in `http.url`.
    ///
    /// Extra spans (a duplicate, a stray hop) must show too, without a fixed sleep: a second,
    /// barrier request takes the same path once the first trace is complete, and its trace is
    /// awaited as well. Every reporter sends its spans in the order it finished them (each
    /// sidecar runs one worker thread with one Zipkin reporter flushing every span; the agent has
    /// one exporter task draining one FIFO queue; rotel forwards in order), and each of them
    /// handled the barrier after the first request, so once the barrier's trace is complete every
    /// span of the first request has arrived.
    ///
    /// # Panics
    /// If a trace does not complete within `timeout`, with every span received and the logs.
    #[must_use]
    pub fn traced_get(&self, path: &str, expected: usize, timeout: Duration) -> Traced {
        let sep = if path.contains('?') { '&' } else { '?' };
        self.traced(&format!("GET {path}"), expected, timeout, |rid| {
            let response = get(self.entry_port(), &format!("{path}{sep}rid={rid}"), &[]);
            let outcome = format!("answered {}", response.status);
            (response, outcome, String::new())
        })
    }

    /// Makes the gRPC call `rpc` to the entry port (Go client, a fresh connection per call) and
    /// waits for its trace as [`Self::traced_get`] does (a barrier call follows). The call carries
    /// the [`RID_HEADER`] metadata (the entry sidecar records it as [`RID_TAG`], which finds the
    /// trace) and, with `b3`, a B3 context of its own (a fresh trace id of the sidecars' width and
    /// a span id, sampled) that the entry sidecar continues; without, the entry sidecar starts the
    /// trace.
    ///
    /// # Panics
    /// As [`Self::traced_get`].
    #[must_use]
    pub fn traced_call(
        &self,
        rpc: Rpc,
        b3: bool,
        expected: usize,
        timeout: Duration,
    ) -> Traced<Call> {
        let target = format!("127.0.0.1:{}", self.entry_port());
        self.traced(&format!("gRPC {rpc:?}"), expected, timeout, |rid| {
            let (trace_id, span_id) = (
                random_hex(if self.trace_id_128bit { 16 } else { 8 }),
                random_hex(8),
            );
            let mut metadata = vec![(RID_HEADER, rid)];
            if b3 {
                metadata.extend([
                    ("x-b3-traceid", trace_id.as_str()),
                    ("x-b3-spanid", span_id.as_str()),
                    ("x-b3-sampled", "1"),
                ]);
            }
            let call = grpc_call(Lang::Go, &target, rpc, &metadata);
            let outcome = format!("answered {call:?}");
            (call, outcome, if b3 { span_id } else { String::new() })
        })
    }

    /// A request sent by `send` (given the rid, it returns the response, a description of it for
    /// failures, and the span id it carried) and a barrier request after it, as
    /// [`Self::traced_get`] describes.
    fn traced<R>(
        &self,
        what: &str,
        expected: usize,
        timeout: Duration,
        send: impl Fn(&str) -> (R, String, String),
    ) -> Traced<R> {
        let deadline = Instant::now() + timeout;
        let (response, rid, incoming_span_id, trace_id) =
            self.complete(what, expected, deadline, &send);
        let _barrier = self.complete(what, expected, deadline, &send);
        let spans = self.store.spans_of_trace(&trace_id);
        Traced {
            response,
            rid,
            incoming_span_id,
            trace_id,
            spans,
        }
    }

    /// One request, awaited until its trace has `expected` spans: (response, rid, incoming span
    /// id, trace id).
    fn complete<R>(
        &self,
        what: &str,
        expected: usize,
        deadline: Instant,
        send: &impl Fn(&str) -> (R, String, String),
    ) -> (R, String, String, String) {
        let rid = random_hex(8);
        let (response, outcome, incoming) = send(&rid);
        let entry = sidecar_name(self.hops[0].name);
        let mut trace_id = None;
        loop {
            if trace_id.is_none() {
                trace_id = self
                    .store
                    .spans()
                    .iter()
                    .find(|s| s.kind == "SERVER" && s.service_name() == entry && carries(s, &rid))
                    .map(|s| s.trace_id.clone());
                if let Some(id) = &trace_id {
                    self.traces.lock().expect("trace list").push(id.clone());
                }
            }
            if let Some(id) = &trace_id
                && self.store.spans_of_trace(id).len() >= expected
            {
                return (response, rid, incoming, id.clone());
            }
            if Instant::now() >= deadline {
                let got = trace_id.map(|id| self.store.spans_of_trace(&id));
                // Which half is missing is the first thing to know (the agent's, typically).
                let halves = got.as_ref().map_or_else(String::new, |s| {
                    let sidecar = s.iter().filter(|s| crate::tree::is_sidecar(s)).count();
                    format!(
                        " ({sidecar} from the sidecars over Zipkin, {} from the agent over OTLP)",
                        s.len() - sidecar
                    )
                });
                panic!(
                    "{what} (rid={rid}, {outcome}): no complete trace of {expected} spans in \
                     time; its spans{halves}: {}\nall spans received:\n{}\nagent output:\n{}",
                    got.map_or_else(|| "(trace not found)".to_owned(), |s| dump(&s)),
                    dump(&self.store.spans()),
                    self.agent_output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spans the store holds outside the traces of the requests sent so far (barriers included):
    /// a span of a request that did not join its trace lands here.
    ///
    /// # Panics
    /// If a thread panicked holding the list of traces.
    #[must_use]
    pub fn spans_outside_the_requests_traces(&self) -> Vec<Span> {
        let traces = self.traces.lock().expect("trace list").clone();
        self.store
            .spans()
            .into_iter()
            .filter(|s| !traces.contains(&s.trace_id))
            .collect()
    }

    /// Everything the agent printed so far.
    #[must_use]
    pub fn agent_output(&self) -> String {
        self.agent
            .as_ref()
            .map_or_else(|| "(no agent)".to_owned(), Agent::output)
    }

    /// Everything rotel printed so far.
    #[must_use]
    pub fn collector_output(&self) -> String {
        self.collector.output()
    }

    /// Where the sidecars' bootstrap files are.
    #[must_use]
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// For a process about to exit on a signal: stops every child process (agent first asked to flush)
/// and removes the scenario's temporary directories, since no `Drop` will run.
pub fn stop_all_after_signal() {
    crate::process::terminate_all(Duration::from_secs(5));
    let prefix = TempDir::prefix();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Whether the entry sidecar's span `s` is the one of the request with this rid: in the query of
/// its `http.url` (HTTP/1) or its [`RID_TAG`] (gRPC).
fn carries(s: &Span, rid: &str) -> bool {
    s.attr_str("http.url")
        .is_some_and(|u| u.ends_with(&format!("rid={rid}")))
        || s.attr_str(RID_TAG) == Some(rid)
}

/// What an app of `codec` calls for its downstream of `next` through its outbound sidecar
/// listener on `port`: an HTTP/1 app a base URL (it appends the rest of its own path), a gRPC app
/// `grpc://HOST:PORT` or the URL it GETs as it is.
fn downstream_url(codec: Codec, next: Codec, port: u16) -> String {
    match (codec, next) {
        (Codec::Http1, Codec::Http1) => format!("http://127.0.0.1:{port}"),
        (Codec::Grpc, Codec::Http1) => format!("http://127.0.0.1:{port}/hello"),
        (Codec::Grpc, Codec::Grpc) => format!("grpc://127.0.0.1:{port}"),
        (Codec::Http1, Codec::Grpc) => {
            panic!("the HTTP/1 demo services make no gRPC calls: put gRPC links first")
        }
    }
}

struct Collector {
    proc: Proc,
    grpc_port: u16,
}

/// rotel in the foreground (never `--daemon`: it must stay our child), OTLP in on free ports,
/// OTLP/gRPC out to the store (gzip, rotel's default). rotel's pid and log files would default to
/// fixed /tmp paths shared with any other rotel.
fn start_rotel(store_grpc: &str, dir: &Path) -> Collector {
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut cmd = Command::new(rotel_binary());
    cmd.arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .args(["--exporter", "otlp", "--otlp-exporter-endpoint", store_grpc])
        .args(["--otlp-exporter-protocol", "grpc"])
        // Forward batches at once rather than every 200 ms: the test waits on them.
        .args(["--batch-timeout", "50ms"])
        .arg("--pid-file")
        .arg(dir.join("rotel.pid"))
        .arg("--log-file")
        .arg(dir.join("rotel.log"))
        .env("NO_COLOR", "1");
    let mut proc = Proc::spawn(cmd, "rotel".to_owned());
    wait_accepting(&mut proc, &[grpc_port], Duration::from_secs(30));
    Collector { proc, grpc_port }
}

/// The `rotel-agent` binary shipped inside the `rotel` package of the tools venv, located by
/// asking the venv's Python where the package is (found, not imported: importing takes 0.2 s).
///
/// # Panics
/// If the venv or the package is missing.
#[must_use]
pub fn rotel_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let python = tools_venv().join("bin/python");
        let hint = "run `cargo xtask setup` (it installs rotel from PyPI into target/tools/venv)";
        let out = Command::new(&python)
            .args([
                "-c",
                "import os, importlib.util as u; print(os.path.dirname(u.find_spec('rotel').origin))",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {hint}", python.display()));
        assert!(
            out.status.success(),
            "rotel is not importable in {}: {}; {hint}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("rotel-agent");
        assert!(bin.is_file(), "{} is missing; {hint}", bin.display());
        bin
    })
    .clone()
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn prefix() -> String {
        format!("tracer-mesh-{}-", std::process::id())
    }

    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("{}{}", Self::prefix(), random_hex(4)));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
