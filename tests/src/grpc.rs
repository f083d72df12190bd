//! The gRPC part of the harness: the gRPC demo services (`demo.Greeter` in Go, Python and Node),
//! their command-line clients, the expectation a gRPC span is checked against ([`RpcSpan`]) and
//! the attribute names the HTTP/2 and gRPC tests check ([`attr`]). Plain h2c is in
//! [`crate::h2c`].
//!
//! Every service and client is a real process of `tests/services` (`go-grpc/main.go`,
//! `python/grpc_demo.py`, `node/grpc_demo.js`) with its output collected like the HTTP/1
//! services'; what they need (Go gRPC from Debian, grpcio in the tools venv, @grpc/grpc-js in
//! `target/tools/node`) is installed by `cargo xtask setup`. A client makes all its calls on one
//! HTTP/2 connection and prints one JSON line per call.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::expect::of_pid;
use crate::harness::{Lang, Service, services_dir, target_dir, tools_venv};
use crate::otlp::Span;
use crate::process::Proc;
use crate::{check, check_eq};

/// The attribute names of HTTP/2 and gRPC spans, after the OpenTelemetry semantic conventions
/// (RPC spans, gRPC, HTTP); the one place the tests name them.
pub mod attr {
    /// "grpc".
    pub const RPC_SYSTEM: &str = "rpc.system";
    /// The full service name, "demo.Greeter".
    pub const RPC_SERVICE: &str = "rpc.service";
    /// `SayHello`, `Count`.
    pub const RPC_METHOD: &str = "rpc.method";
    /// The `grpc-status` of the trailers, an integer (0 = OK, 5 = `NOT_FOUND`, 13 = INTERNAL).
    pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
    /// "2" for HTTP/2 (as "1.1" for HTTP/1.1).
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const URL_PATH: &str = "url.path";
    /// The `:status` of the response headers, an integer.
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// Messages of the call in the request direction (integer). The conventions define no span
    /// attribute for message counts (only per-message events), hence the agent's own namespace.
    pub const REQUEST_MESSAGES: &str = "tracer.grpc.request.message_count";
    /// Messages of the call in the response direction (integer).
    pub const RESPONSE_MESSAGES: &str = "tracer.grpc.response.message_count";
}

/// The gRPC service of the demo services.
pub const SERVICE: &str = "demo.Greeter";

/// gRPC status codes the demo services answer.
pub mod code {
    pub const OK: i64 = 0;
    pub const NOT_FOUND: i64 = 5;
    pub const INTERNAL: i64 = 13;

    /// Whether a SERVER span with this status is an error, by the gRPC semantic conventions
    /// (a CLIENT span is one for any status but OK).
    #[must_use]
    pub fn server_error(code: i64) -> bool {
        // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
        matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
    }
}

/// One call of `demo.Greeter`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc<'a> {
    /// Unary: the name; `missing` answers `NOT_FOUND`, `fail` INTERNAL, `metadata` the metadata
    /// the (last) server received, one sorted `key=value` line each.
    SayHello(&'a str),
    /// Server streaming: this many messages.
    Count(u32),
}

impl Rpc<'_> {
    /// `SayHello` or `Count`.
    #[must_use]
    pub fn method(self) -> &'static str {
        match self {
            Rpc::SayHello(_) => "SayHello",
            Rpc::Count(_) => "Count",
        }
    }

    /// The span name: `demo.Greeter/SayHello`.
    #[must_use]
    pub fn span_name(self) -> String {
        format!("{SERVICE}/{}", self.method())
    }

    /// The `:path` of the call: `/demo.Greeter/SayHello`.
    #[must_use]
    pub fn path(self) -> String {
        format!("/{}", self.span_name())
    }
}

/// What one gRPC call must have produced on one side (a SERVER or a CLIENT span).
pub struct RpcSpan<'a> {
    /// "SERVER" or "CLIENT".
    pub kind: &'a str,
    pub trace_id: &'a str,
    /// SERVER: the span id the call carried; CLIENT: the process's SERVER span.
    pub parent: &'a str,
    pub rpc: Rpc<'a>,
    /// The gRPC status of the call on this side.
    pub status: i64,
    /// Messages in the response direction (the request direction always has one).
    pub response_messages: i64,
    pub pid: u32,
}

impl RpcSpan<'_> {
    /// Checks `span` against the expectation, with the attribute names of [`attr`].
    pub fn check(&self, spans: &[Span], span: &Span, label: &str) {
        self.check_identity(spans, span, label);
        self.check_attributes(spans, span, label);
    }

    /// Kind, ids, process, times and span status.
    fn check_identity(&self, spans: &[Span], span: &Span, label: &str) {
        check_eq!(spans, span.kind.as_str(), self.kind, "{label}: kind");
        check_eq!(
            spans,
            span.trace_id.as_str(),
            self.trace_id,
            "{label}: trace id"
        );
        check_eq!(
            spans,
            span.parent_span_id.as_str(),
            self.parent,
            "{label}: parent span id"
        );
        check!(
            spans,
            span.span_id.len() == 16
                && span.span_id != "0000000000000000"
                && span.span_id != self.parent,
            "{label}: a span id of its own (16 hex digits, not zero, not the parent's): {span}"
        );
        let error = if self.kind == "CLIENT" {
            self.status != code::OK
        } else {
            code::server_error(self.status)
        };
        check_eq!(
            spans,
            span.status_code == "ERROR",
            error,
            "{label}: span status ERROR exactly for the gRPC conventions' error codes ({} {})",
            self.kind,
            self.status
        );
        check!(
            spans,
            of_pid(span, self.pid),
            "{label}: resource process.pid must be {}: {span}",
            self.pid
        );
        check!(
            spans,
            span.start_unix_nanos > 0 && span.start_unix_nanos <= span.end_unix_nanos,
            "{label}: start <= end: {span}"
        );
    }

    /// Name and attributes.
    fn check_attributes(&self, spans: &[Span], span: &Span, label: &str) {
        check_eq!(spans, span.name, self.rpc.span_name(), "{label}: span name");
        check_eq!(
            spans,
            span.attr_str(attr::RPC_SYSTEM),
            Some("grpc"),
            "{label}: {}",
            attr::RPC_SYSTEM
        );
        check_eq!(
            spans,
            span.attr_str(attr::RPC_SERVICE),
            Some(SERVICE),
            "{label}: {}",
            attr::RPC_SERVICE
        );
        check_eq!(
            spans,
            span.attr_str(attr::RPC_METHOD),
            Some(self.rpc.method()),
            "{label}: {}",
            attr::RPC_METHOD
        );
        check_eq!(
            spans,
            span.attr_i64(attr::RPC_GRPC_STATUS_CODE),
            Some(self.status),
            "{label}: {} (an integer)",
            attr::RPC_GRPC_STATUS_CODE
        );
        check_eq!(
            spans,
            span.attr_str(attr::NETWORK_PROTOCOL_VERSION),
            Some("2"),
            "{label}: {}",
            attr::NETWORK_PROTOCOL_VERSION
        );
        check_eq!(
            spans,
            span.attr_str(attr::URL_PATH),
            Some(self.rpc.path().as_str()),
            "{label}: {}",
            attr::URL_PATH
        );
        check_eq!(
            spans,
            span.attr_i64(attr::REQUEST_MESSAGES),
            Some(1),
            "{label}: {}",
            attr::REQUEST_MESSAGES
        );
        check_eq!(
            spans,
            span.attr_i64(attr::RESPONSE_MESSAGES),
            Some(self.response_messages),
            "{label}: {}",
            attr::RESPONSE_MESSAGES
        );
    }
}

/// The outcome of one call, as a client printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// 1 for the first call of the client.
    pub call: u32,
    /// The gRPC status code.
    pub status: i64,
    /// The status message ("" for OK).
    pub message: String,
    /// The response messages, as text.
    pub responses: Vec<String>,
}

impl Call {
    fn parse(line: &str) -> Option<Self> {
        let v: Value = serde_json::from_str(line).ok()?;
        Some(Self {
            call: u32::try_from(v["call"].as_u64()?).ok()?,
            status: v["status"].as_i64()?,
            message: v["message"].as_str()?.to_owned(),
            responses: v["responses"]
                .as_array()?
                .iter()
                .map(|m| m.as_str().map(str::to_owned))
                .collect::<Option<_>>()?,
        })
    }
}

impl Service {
    /// The Go gRPC service (Debian's gRPC 1.33), built on demand into
    /// `target/test-services/go-grpc-demo`. `downstream`: `grpc://HOST:PORT` (see
    /// [`Service::grpc_url`]) or an `http://` URL to GET.
    #[must_use]
    pub fn grpc_go(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(go_grpc_binary());
        cmd.arg("server");
        Self::start("go gRPC", cmd, port, downstream, env)
    }

    /// The Python gRPC service (grpcio), run by the tools venv's interpreter.
    #[must_use]
    pub fn grpc_python(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = venv_python();
        cmd.arg("-u")
            .arg(services_dir().join("python/grpc_demo.py"))
            .arg("server");
        Self::start("python gRPC", cmd, port, downstream, env)
    }

    /// The Node gRPC service (@grpc/grpc-js).
    #[must_use]
    pub fn grpc_node(port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Self {
        let mut cmd = node_with_modules();
        cmd.arg(services_dir().join("node/grpc_demo.js"))
            .arg("server");
        Self::start("node gRPC", cmd, port, downstream, env)
    }

    /// `127.0.0.1:PORT`, a client's `--target`.
    #[must_use]
    pub fn grpc_target(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `grpc://127.0.0.1:PORT`, usable as another gRPC service's downstream.
    #[must_use]
    pub fn grpc_url(&self) -> String {
        format!("grpc://{}", self.grpc_target())
    }
}

impl Lang {
    /// Starts this language's gRPC service (see [`Service::grpc_go`]).
    #[must_use]
    pub fn start_grpc(self, port: u16, downstream: Option<&str>, env: &[(&str, &str)]) -> Service {
        match self {
            Lang::Go => Service::grpc_go(port, downstream, env),
            Lang::Python => Service::grpc_python(port, downstream, env),
            Lang::Node => Service::grpc_node(port, downstream, env),
        }
    }
}

/// A running gRPC client process: `repeat` calls (0: until stopped) on one connection, each
/// printed as it completes; killed on drop.
pub struct GrpcClient {
    proc: Proc,
}

impl GrpcClient {
    /// Starts the `lang` client against `target` (`HOST:PORT`). Every call carries `metadata`;
    /// `{seq}` in a value becomes the call number as 8 hex digits (so each call of a long-running
    /// client can have its own trace id). `interval_ms` is the pause between calls.
    #[must_use]
    pub fn start(
        lang: Lang,
        target: &str,
        rpc: Rpc,
        metadata: &[(&str, &str)],
        repeat: u32,
        interval_ms: u32,
    ) -> Self {
        let mut cmd = match lang {
            Lang::Go => {
                let mut c = Command::new(go_grpc_binary());
                c.arg("client");
                c
            }
            Lang::Python => {
                let mut c = venv_python();
                c.arg("-u")
                    .arg(services_dir().join("python/grpc_demo.py"))
                    .arg("client");
                c
            }
            Lang::Node => {
                let mut c = node_with_modules();
                c.arg(services_dir().join("node/grpc_demo.js"))
                    .arg("client");
                c
            }
        };
        cmd.args(["--target", target, "--method", rpc.method()]);
        match rpc {
            Rpc::SayHello(name) => cmd.args(["--name", name]),
            Rpc::Count(n) => cmd.args(["--count", &n.to_string()]),
        };
        for (k, v) in metadata {
            cmd.arg("--metadata").arg(format!("{k}={v}"));
        }
        cmd.args(["--repeat", &repeat.to_string()])
            .args(["--interval-ms", &interval_ms.to_string()]);
        let label = format!("{lang:?} gRPC client of {target}");
        Self {
            proc: Proc::spawn(cmd, label),
        }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// The calls printed so far.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.proc
            .output()
            .lines()
            .filter_map(|l| l.strip_prefix("[out] "))
            .filter_map(Call::parse)
            .collect()
    }

    /// Waits until call number `n` has completed; returns the calls so far.
    ///
    /// # Panics
    /// If it does not within `timeout`, or the client exits first.
    pub fn wait_call(&mut self, n: u32, timeout: Duration) -> Vec<Call> {
        self.proc.wait_line(&format!("{{\"call\":{n},"), timeout);
        self.calls()
    }

    /// Waits for the client to finish its calls; returns them.
    ///
    /// # Panics
    /// If it does not within `timeout`.
    #[must_use]
    pub fn finish(mut self, timeout: Duration) -> Vec<Call> {
        self.proc.wait_line("client done:", timeout);
        self.calls()
    }

    /// Tells a client started with `repeat` 0 to stop after its current call (SIGTERM); returns
    /// every call it made.
    ///
    /// # Panics
    /// If it does not say it is done within 15 s.
    #[must_use]
    pub fn stop(mut self) -> Vec<Call> {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, not reaped yet (the Proc owns it).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.proc.wait_line("client done:", Duration::from_secs(15));
        self.calls()
    }
}

/// One call from a fresh `lang` client process; returns its outcome.
///
/// # Panics
/// If the client does not finish within 30 s.
#[must_use]
pub fn grpc_call(lang: Lang, target: &str, rpc: Rpc, metadata: &[(&str, &str)]) -> Call {
    let calls =
        GrpcClient::start(lang, target, rpc, metadata, 1, 0).finish(Duration::from_secs(30));
    let [call] = <[Call; 1]>::try_from(calls).unwrap_or_else(|calls| {
        panic!("one call expected from the {lang:?} client, got {calls:?}")
    });
    call
}

/// The Go gRPC demo binary, built when its source is newer.
fn go_grpc_binary() -> PathBuf {
    tracer_test_support::go_grpc_service(&target_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// The tools venv's Python (where setup installs grpcio).
fn venv_python() -> Command {
    let python = tools_venv().join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: `cargo xtask setup` creates the venv with grpcio",
        python.display()
    );
    Command::new(python)
}

/// `node` with `NODE_PATH` at the packages setup installs (`target/tools/node/node_modules`).
fn node_with_modules() -> Command {
    let modules = target_dir().join("tools/node/node_modules");
    assert!(
        modules.join("@grpc/grpc-js").is_dir(),
        "{} has no @grpc/grpc-js: `cargo xtask setup` installs it (npm ci)",
        modules.display()
    );
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", modules);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_clients_lines() {
        let go = r#"{"call":2,"status":5,"message":"no greeting for missing","responses":[]}"#;
        assert_eq!(
            Call::parse(go),
            Some(Call {
                call: 2,
                status: 5,
                message: "no greeting for missing".into(),
                responses: vec![]
            })
        );
        let count = r#"{"call":1,"status":0,"message":"","responses":["1","2"]}"#;
        assert_eq!(Call::parse(count).unwrap().responses, ["1", "2"]);
        assert_eq!(Call::parse("client done: 1 calls"), None);
        assert_eq!(Rpc::Count(3).path(), "/demo.Greeter/Count");
        assert!(code::server_error(code::INTERNAL) && !code::server_error(code::NOT_FOUND));
    }

    /// A span as the agent is to export a `NOT_FOUND` call on the client side.
    fn not_found_client(pid: u32) -> Span {
        let attributes = [
            (attr::RPC_SYSTEM, Value::from("grpc")),
            (attr::RPC_SERVICE, Value::from(SERVICE)),
            (attr::RPC_METHOD, Value::from("SayHello")),
            (attr::RPC_GRPC_STATUS_CODE, Value::from(code::NOT_FOUND)),
            (attr::NETWORK_PROTOCOL_VERSION, Value::from("2")),
            (attr::URL_PATH, Value::from("/demo.Greeter/SayHello")),
            (attr::REQUEST_MESSAGES, Value::from(1)),
            (attr::RESPONSE_MESSAGES, Value::from(0)),
        ];
        Span {
            trace_id: "463ac35c9f6413ad48485a3953bb6124".into(),
            span_id: "0102030405060708".into(),
            parent_span_id: "a2fb4a1d1a96d312".into(),
            kind: "CLIENT".into(),
            name: "demo.Greeter/SayHello".into(),
            start_unix_nanos: 1,
            end_unix_nanos: 2,
            status_code: "ERROR".into(),
            status_message: String::new(),
            attributes: attributes
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            resource: [("process.pid".to_owned(), Value::from(pid))].into(),
            scope_name: String::new(),
            source: crate::otlp::SOURCE,
            shared: false,
        }
    }

    fn expectation() -> RpcSpan<'static> {
        RpcSpan {
            kind: "CLIENT",
            trace_id: "463ac35c9f6413ad48485a3953bb6124",
            parent: "a2fb4a1d1a96d312",
            rpc: Rpc::SayHello("missing"),
            status: code::NOT_FOUND,
            response_messages: 0,
            pid: 42,
        }
    }

    #[test]
    fn rpc_span_accepts_the_expected_span() {
        let span = not_found_client(42);
        expectation().check(std::slice::from_ref(&span), &span, "client");
    }

    #[test]
    #[should_panic(expected = "span status ERROR")]
    fn rpc_span_wants_an_error_status_on_a_failed_client_call() {
        let mut span = not_found_client(42);
        span.status_code = "UNSET".into();
        expectation().check(std::slice::from_ref(&span), &span, "client");
    }

    #[test]
    #[should_panic(expected = "rpc.grpc.status_code (an integer)")]
    fn rpc_span_wants_the_status_code_as_an_integer() {
        let mut span = not_found_client(42);
        span.attributes
            .insert(attr::RPC_GRPC_STATUS_CODE.into(), Value::from("5"));
        expectation().check(std::slice::from_ref(&span), &span, "client");
    }
}
