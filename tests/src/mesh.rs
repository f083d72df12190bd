//! The mesh scenario, reused by the end-to-end test and `cargo xtask demo`:
//!
//! ```text
//! client -> [envoy a in] -> service-a (Go) -> [envoy a out] -> [envoy b in] -> service-b (Python)
//!        -> [envoy b out] -> [envoy c in] -> service-c (Node)
//! envoys --Zipkin v2 JSON--> store          agent --OTLP gRPC--> rotel --OTLP gRPC--> store
//! ```
//!
//! The apps carry no tracing code; they only forward the B3 headers they receive, as meshes
//! require. The sidecars report Zipkin spans (64-bit trace ids by default, as real meshes send), the agent
//! reports the apps' SERVER and CLIENT spans through a real third-party collector (rotel), and the
//! store ([`Receiver`]) joins both by trace id. Every process is stopped on drop, panics included.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::envoy::{Sidecar, SidecarConfig, envoy_binary, wait_accepting};
use crate::harness::{Agent, HttpResponse, Lang, Service, free_port, get, random_hex, tools_venv};
use crate::otlp::{Receiver, Span, dump};
use crate::process::Proc;

pub use crate::process::detach_from_terminal_signals;
pub use crate::tree::render as render_tree;

/// Spans one request through the whole chain yields: per service an inbound sidecar SERVER span
/// and an agent SERVER span, and for every service but the last a sidecar outbound CLIENT span and
/// an agent CLIENT span.
pub const CHAIN_SPANS: usize = 4 * CHAIN.len() - 2;

/// The services, front to back: name and language.
pub const CHAIN: [(&str, Lang); 3] = [
    ("service-a", Lang::Go),
    ("service-b", Lang::Python),
    ("service-c", Lang::Node),
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
    pub app: Service,
    pub sidecar: Sidecar,
}

/// The running scenario. Field order is drop order: the agent goes first (it flushes its spans to
/// rotel on SIGTERM), the store last.
pub struct Mesh {
    agent: Agent,
    /// The agent's `--write-mode` ("read-only" unless started with another).
    pub write_mode: &'static str,
    pub hops: Vec<Hop>,
    collector: Proc,
    pub store: Receiver,
    dir: TempDir,
}

/// One request sent through the mesh and the trace the store received for it.
pub struct Traced {
    pub response: HttpResponse,
    /// The unique `rid` query parameter the request carried (every app forwards the query).
    pub rid: String,
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
        let dir = TempDir::new();
        let store = Receiver::start_blocking();
        let collector = start_rotel(&store.grpc_endpoint(), dir.path());
        let envoy = envoy_binary();

        // Ports first: each app calls its own sidecar's outbound listener, which routes to the
        // next sidecar's inbound listener.
        let ports: Vec<(u16, u16, u16)> = CHAIN
            .iter()
            .map(|_| (free_port(), free_port(), free_port())) // app, inbound, outbound
            .collect();
        let mut hops = Vec::new();
        for (i, (name, lang)) in CHAIN.iter().enumerate() {
            let (app_port, inbound, outbound) = ports[i];
            let next = ports.get(i + 1).map(|(_, next_in, _)| (outbound, *next_in));
            let downstream = next.map(|(out, _)| format!("http://127.0.0.1:{out}"));
            // The agent names each app's resource from the app's own OTEL_SERVICE_NAME.
            let app = lang.start(
                app_port,
                downstream.as_deref(),
                &[("OTEL_SERVICE_NAME", name)],
            );
            let config = SidecarConfig {
                name: sidecar_name(name),
                inbound,
                app_port,
                outbound: next,
                zipkin_port: store.http_port(),
                trace_id_128bit,
            };
            let sidecar = Sidecar::start(&envoy, dir.path(), config);
            hops.push(Hop {
                name,
                lang: *lang,
                app,
                sidecar,
            });
        }
        let mut args = vec![
            "--otlp-endpoint".to_owned(),
            collector_endpoint(&collector),
            "--metrics-addr".to_owned(),
            format!("127.0.0.1:{}", free_port()),
            "--write-mode".to_owned(),
            write_mode.to_owned(),
        ];
        for hop in &hops {
            args.extend(["--pid".to_owned(), hop.app.pid().to_string()]);
        }
        // Agent::start sets OTEL_BSP_SCHEDULE_DELAY=100: spans leave the agent within 0.1 s.
        let agent = Agent::start(args);
        Self {
            agent,
            write_mode,
            hops,
            collector: collector.proc,
            store,
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
        let deadline = Instant::now() + timeout;
        let (response, rid, trace_id) = self.get_complete(path, expected, deadline);
        let _barrier = self.get_complete(path, expected, deadline);
        let spans = self.store.spans_of_trace(&trace_id);
        Traced {
            response,
            rid,
            trace_id,
            spans,
        }
    }

    /// One request as [`Self::traced_get`] describes, awaited until its trace has `expected`
    /// spans: (response, rid, trace id).
    fn get_complete(
        &self,
        path: &str,
        expected: usize,
        deadline: Instant,
    ) -> (HttpResponse, String, String) {
        let rid = random_hex(8);
        let sep = if path.contains('?') { '&' } else { '?' };
        let response = get(self.entry_port(), &format!("{path}{sep}rid={rid}"), &[]);
        let entry = sidecar_name(self.hops[0].name);
        let mut trace_id = None;
        loop {
            if trace_id.is_none() {
                trace_id = self
                    .store
                    .spans()
                    .iter()
                    .find(|s| {
                        s.kind == "SERVER"
                            && s.service_name() == entry
                            && s.attr_str("http.url")
                                .is_some_and(|u| u.ends_with(&format!("rid={rid}")))
                    })
                    .map(|s| s.trace_id.clone());
            }
            if let Some(id) = &trace_id
                && self.store.spans_of_trace(id).len() >= expected
            {
                return (response, rid, id.clone());
            }
            if Instant::now() >= deadline {
                let got = trace_id.map(|id| self.store.spans_of_trace(&id));
                panic!(
                    "GET {path} (rid={rid}, answered {}): no complete trace of {expected} spans in \
                     time; its spans: {}\nall spans received:\n{}\nagent output:\n{}",
                    response.status,
                    got.map_or_else(|| "(trace not found)".to_owned(), |s| dump(&s)),
                    dump(&self.store.spans()),
                    self.agent.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the agent printed so far.
    #[must_use]
    pub fn agent_output(&self) -> String {
        self.agent.output()
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

struct Collector {
    proc: Proc,
    grpc_port: u16,
}

fn collector_endpoint(c: &Collector) -> String {
    format!("http://127.0.0.1:{}", c.grpc_port)
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
