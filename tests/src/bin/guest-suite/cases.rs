//! The requests the guest sends and what the agent must report for each.
//!
//! Each case has its own trace id (or its own path when it carries no context), so a span is
//! matched to its request without depending on order or timing.

use std::{path::Path, process::Command};

use serde_json::Value;
use tracer_tests::http::HttpConn;

/// Requests on the single keep-alive connection (the read-ahead/keep-alive assembly path).
const KEEPALIVE_REQUESTS: u64 = 20;

/// How a span's parent id must look.
enum Parent {
    /// Exactly this id (the span id the caller sent).
    Is(String),
    /// None: a new trace.
    Empty,
    /// The SERVER span of process `pid` in the same trace (CLIENT parent = SERVER span).
    ServerOf(u32),
    /// The id the caller sent, or the CLIENT span of `pid` in the same trace: the first while the
    /// agent only reads headers, the second once it rewrites them. Either keeps one trace.
    SentOrClientOf(String, u32),
    /// The CLIENT span of `pid` in the same trace (the write side rewrote the span id).
    ClientOf(u32),
}

/// One span the agent must export.
pub struct Expect {
    name: String,
    kind: &'static str,
    pid: u32,
    /// The padded trace id, or None for a request without context (any valid new id).
    trace_id: Option<String>,
    parent: Parent,
    path: &'static str,
    query: Option<String>,
    status: i64,
    /// `tracer.context.source`.
    source: &'static str,
}

/// The agent's `--write-mode`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    ReadOnly,
    Rewrite,
    Inject,
}

impl WriteMode {
    /// The mode the agent arguments `args` select.
    pub fn of(args: &[String]) -> Self {
        match args
            .windows(2)
            .find(|w| w[0] == "--write-mode")
            .map(|w| w[1].as_str())
        {
            Some("rewrite") => Self::Rewrite,
            Some("inject") => Self::Inject,
            _ => Self::ReadOnly,
        }
    }
}

/// Sends every request to the upstream service on `port`; returns the spans to expect. With
/// the write side (`rewrite` or `inject`) the downstream SERVER span must be the child of the
/// upstream CLIENT span; with `inject`, also for a call the upstream makes from a goroutine
/// without forwarding any header.
pub fn drive(port: u16, up: u32, down: u32, mode: WriteMode) -> Result<Vec<Expect>, String> {
    let mut expected = Vec::new();
    for (headers, e) in single_requests(up) {
        let path = format!("{}?{}", e.path, e.query.as_deref().unwrap_or_default());
        let path = path.trim_end_matches('?');
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let status = HttpConn::connect(port)
            .request("GET", path, &headers, None)
            .status;
        println!("guest-suite: GET {path} -> {status}");
        if i64::from(status) != e.status {
            return Err(format!(
                "GET {path} answered {status}, expected {}",
                e.status
            ));
        }
        expected.push(e);
    }
    expected.extend(keep_alive(port, up)?);
    expected.extend(chain(port, up, down, mode != WriteMode::ReadOnly)?);
    if mode == WriteMode::Inject {
        expected.extend(goroutine_call(port, up, down)?);
    }
    Ok(expected)
}

type Headers = Vec<(&'static str, String)>;

fn b3_multi(trace: &str, span: &str) -> Headers {
    vec![
        ("x-b3-traceid", trace.to_owned()),
        ("x-b3-spanid", span.to_owned()),
        ("x-b3-sampled", "1".to_owned()),
    ]
}

/// A SERVER span of the upstream service (`pid`) with status 200 and no query; callers adjust.
fn server(
    name: &str,
    pid: u32,
    trace: Option<String>,
    parent: Parent,
    path: &'static str,
) -> Expect {
    Expect {
        name: name.to_owned(),
        kind: "SERVER",
        pid,
        trace_id: trace,
        parent,
        path,
        query: None,
        status: 200,
        source: "b3multi",
    }
}

/// One request per context format, each on a new connection, with a distinct path or status.
fn single_requests(up: u32) -> Vec<(Headers, Expect)> {
    let (t64, s64) = ("463ac35c9f6413ad", "a2fb4a1d1a96d312");
    let (t128, s128) = ("80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1");
    let (tb3, sb3) = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
    let (tw3c, sw3c) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let (tv, sv) = ("7a3c0b5e9d1f2468", "13579bdf02468ace");
    let b3_128 = vec![
        ("X-B3-TraceId", t128.to_owned()),
        ("X-B3-SpanId", s128.to_owned()),
        ("X-B3-Sampled", "1".to_owned()),
    ];
    vec![
        (
            b3_multi(t64, s64),
            server(
                "b3 multi 64-bit",
                up,
                Some(pad(t64)),
                Parent::Is(s64.into()),
                "/hello",
            ),
        ),
        (
            b3_128,
            Expect {
                status: 201,
                ..server(
                    "b3 multi 128-bit",
                    up,
                    Some(t128.into()),
                    Parent::Is(s128.into()),
                    "/status/201",
                )
            },
        ),
        (
            vec![("b3", format!("{tb3}-{sb3}-1"))],
            Expect {
                status: 404,
                source: "b3",
                ..server(
                    "b3 single",
                    up,
                    Some(tb3.into()),
                    Parent::Is(sb3.into()),
                    "/status/404",
                )
            },
        ),
        (
            vec![("traceparent", format!("00-{tw3c}-{sw3c}-01"))],
            Expect {
                status: 503,
                source: "tracecontext",
                ..server(
                    "traceparent",
                    up,
                    Some(tw3c.into()),
                    Parent::Is(sw3c.into()),
                    "/status/503",
                )
            },
        ),
        (
            Vec::new(),
            Expect {
                status: 202,
                source: "none",
                ..server("no context", up, None, Parent::Empty, "/status/202")
            },
        ),
        (
            b3_multi(tv, sv),
            Expect {
                status: 203,
                ..server(
                    "response in one writev of three buffers",
                    up,
                    Some(pad(tv)),
                    Parent::Is(sv.into()),
                    "/writev",
                )
            },
        ),
    ]
}

/// Requests on one keep-alive connection, told apart by trace id and query.
fn keep_alive(port: u16, up: u32) -> Result<Vec<Expect>, String> {
    let mut conn = HttpConn::connect(port);
    let mut expected = Vec::new();
    for i in 0..KEEPALIVE_REQUESTS {
        let trace = format!("{:016x}", 0x1000_0000_0000_0001 + i);
        let span = format!("{:016x}", 0x2000_0000_0000_0001 + i);
        let headers = b3_multi(&trace, &span);
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let status = conn
            .request("GET", &format!("/hello?ka={i}"), &headers, None)
            .status;
        if status != 200 {
            return Err(format!("keep-alive request {i} answered {status}"));
        }
        let name = format!("keep-alive #{i}");
        expected.push(Expect {
            query: Some(format!("ka={i}")),
            ..server(&name, up, Some(pad(&trace)), Parent::Is(span), "/hello")
        });
    }
    println!("guest-suite: {KEEPALIVE_REQUESTS} requests on one keep-alive connection -> 200");
    Ok(expected)
}

/// `/call/hello`: the upstream's SERVER span, its CLIENT call and the downstream's SERVER span.
fn chain(port: u16, up: u32, down: u32, rewrite: bool) -> Result<Vec<Expect>, String> {
    let span = "bf9b5b8a9c3d1e27";
    hop(
        port,
        (up, down),
        "/call/hello",
        ("6e0c63257de34c92", span),
        [
            "chain: upstream SERVER",
            "chain: upstream CLIENT",
            "chain: downstream SERVER",
        ],
        if rewrite {
            Parent::ClientOf(up)
        } else {
            Parent::SentOrClientOf(span.into(), up)
        },
    )
}

/// `/gocall/hello` (inject mode): the upstream's handler calls the downstream from a goroutine
/// it starts and forwards no header. Only the agent's goroutine probes can tell that this call
/// belongs to the handler's request: they read the goroutine and the arguments from the
/// registers of Go's ABI, which differ per architecture. The kernel then injects the context,
/// so the downstream SERVER span is the child of that CLIENT span, in the caller's trace.
fn goroutine_call(port: u16, up: u32, down: u32) -> Result<Vec<Expect>, String> {
    hop(
        port,
        (up, down),
        "/gocall/hello",
        ("2f8e4c1a9b7d3e05", "c4d2e6f80a1b3c5d"),
        [
            "goroutine call: upstream SERVER",
            "goroutine call: upstream CLIENT (from another goroutine, no headers)",
            "goroutine call: downstream SERVER (injected context)",
        ],
        Parent::ClientOf(up),
    )
}

/// One request with B3 ids `(trace, span)` to the upstream's `path`, whose handler calls the
/// downstream's `/hello`: the upstream's SERVER span, its CLIENT call (the SERVER span's child)
/// and the downstream's SERVER span with `down_parent`, all in the caller's trace. `names`
/// label the three in that order.
fn hop(
    port: u16,
    (up, down): (u32, u32),
    path: &'static str,
    (trace, span): (&str, &str),
    names: [&str; 3],
    down_parent: Parent,
) -> Result<Vec<Expect>, String> {
    let headers = b3_multi(trace, span);
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let status = HttpConn::connect(port)
        .request("GET", path, &headers, None)
        .status;
    println!("guest-suite: GET {path} -> {status}");
    if status != 200 {
        return Err(format!("GET {path} answered {status}"));
    }
    let t = || Some(pad(trace));
    Ok(vec![
        server(names[0], up, t(), Parent::Is(span.into()), path),
        Expect {
            kind: "CLIENT",
            ..server(names[1], up, t(), Parent::ServerOf(up), "/hello")
        },
        server(names[2], down, t(), down_parent, "/hello"),
    ])
}

/// The HTTP/2 family: gRPC calls by the Go demo's client, one client process and HTTP/2
/// connection each, to the front service on `port` (`front`), which makes each call again to the
/// back service (`back`) on its own connection, forwarding the B3 headers: `SayHello`, a
/// server-streaming `Count` and a `SayHello` whose reply outgrows the capture size. Each call has its own trace id: its front SERVER span must have
/// the sender's trace and parent and the method as its path, the front CLIENT span the SERVER
/// span as parent, the back SERVER span the forwarded id (or the CLIENT span's, rewritten).
pub fn grpc(bin: &Path, port: u16, front: u32, back: u32) -> Result<Vec<Expect>, String> {
    // A reply larger than any capture size (`hello ` and the 6,000-byte name): its trailers
    // come after a DATA frame the kernel copies only the first bytes of, and are seen only if
    // the frames are walked in the kernel.
    let big = "x".repeat(6000);
    let calls: [(&str, &'static str, &str, [&str; 2]); 3] = [
        (
            "SayHello",
            "SayHello",
            "/demo.Greeter/SayHello",
            ["--name", "guest"],
        ),
        ("Count", "Count", "/demo.Greeter/Count", ["--count", "3"]),
        (
            "SayHello with a 6 KB reply",
            "SayHello",
            "/demo.Greeter/SayHello",
            ["--name", &big],
        ),
    ];
    let mut expected = Vec::new();
    // One client process per call (the client repeats one method on its connection).
    for (i, (label, method, path, args)) in calls.into_iter().enumerate() {
        let trace = format!("4bf92f3577b34da6a3ce929d0e0e47{i:02x}");
        let span = format!("00f067aa0ba902{i:02x}");
        let out = Command::new(bin)
            .args(["client", "--target", &format!("127.0.0.1:{port}")])
            .args(["--method", method])
            .args(args)
            .args(["--metadata", &format!("x-b3-traceid={trace}")])
            .args(["--metadata", &format!("x-b3-spanid={span}")])
            .args(["--metadata", "x-b3-sampled=1"])
            .output()
            .map_err(|e| format!("running the gRPC client: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let shown: String = stdout
            .trim()
            .replace('\n', " | ")
            .chars()
            .take(300)
            .collect();
        println!("guest-suite: gRPC {label} -> {shown}");
        if !out.status.success() || !stdout.contains("\"status\":0") {
            return Err(format!(
                "gRPC {label} failed ({}): {shown} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let name = |what: &str| format!("gRPC {label}: {what}");
        expected.push(server(
            &name("front SERVER"),
            front,
            Some(trace.clone()),
            Parent::Is(span.clone()),
            path,
        ));
        expected.push(Expect {
            kind: "CLIENT",
            parent: Parent::ServerOf(front),
            ..server(
                &name("front CLIENT"),
                front,
                Some(trace.clone()),
                Parent::Empty,
                path,
            )
        });
        expected.push(server(
            &name("back SERVER"),
            back,
            Some(trace),
            Parent::SentOrClientOf(span, front),
            path,
        ));
    }
    Ok(expected)
}

/// The CLIENT spans of the early-answer client's two calls (`tracer_tests::early_answer`): the
/// first answer was read before its request's write returned, the second refers to HPACK
/// entries the first added, so both carry `grpc-status` only if the first was kept and decoded.
pub fn early_answer(pid: u32) -> Vec<Expect> {
    tracer_tests::early_answer::CALLS
        .iter()
        .enumerate()
        .map(|(i, (trace, span))| Expect {
            kind: "CLIENT",
            ..server(
                &format!("early answer call {}: CLIENT", i + 1),
                pid,
                Some(pad(trace)),
                Parent::Is((*span).to_owned()),
                tracer_tests::early_answer::PATH,
            )
        })
        .collect()
}

/// 64-bit B3 ids are left-padded with zeros to 128 bits (what a Zipkin receiver does).
fn pad(id: &str) -> String {
    format!("{id:0>32}")
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn text<'a>(span: &'a Value, key: &str) -> &'a str {
    span[key].as_str().unwrap_or_default()
}

impl Expect {
    /// The spans this expectation is about: same process, kind, trace (if known) and target.
    fn matches<'a>(&self, spans: &'a [Value]) -> Vec<&'a Value> {
        spans
            .iter()
            .filter(|s| {
                text(s, "kind") == self.kind
                    && s["resource"]["process.pid"].as_u64() == Some(u64::from(self.pid))
                    && self
                        .trace_id
                        .as_deref()
                        .is_none_or(|t| text(s, "trace_id") == t)
                    && attr(s, "url.path").as_str() == Some(self.path)
                    && attr(s, "url.query").as_str() == self.query.as_deref()
            })
            .collect()
    }

    pub fn found(&self, spans: &[Value]) -> bool {
        !self.matches(spans).is_empty()
    }

    /// Prints the check's line; returns the failure, if any.
    pub fn check(&self, spans: &[Value]) -> Option<String> {
        let result = self.verify(spans);
        match &result {
            Ok(detail) => println!("check ok   {}: {detail}", self.name),
            Err(why) => println!("check FAIL {}: {why}", self.name),
        }
        result.err().map(|why| format!("{}: {why}", self.name))
    }

    fn verify(&self, spans: &[Value]) -> Result<String, String> {
        let found = self.matches(spans);
        let span = match found.as_slice() {
            [one] => *one,
            [] => {
                return Err(format!(
                    "no {} span of pid {} for {}",
                    self.kind, self.pid, self.path
                ));
            }
            many => return Err(format!("{} spans instead of one", many.len())),
        };
        let trace = text(span, "trace_id");
        if trace.len() != 32
            || !trace.bytes().all(|b| b.is_ascii_hexdigit())
            || trace.bytes().all(|b| b == b'0')
        {
            return Err(format!("invalid trace id {trace:?}"));
        }
        let parent = text(span, "parent_span_id");
        let in_trace = |kind: &str, pid: u32| {
            spans.iter().find(|s| {
                text(s, "kind") == kind
                    && text(s, "trace_id") == trace
                    && s["resource"]["process.pid"].as_u64() == Some(u64::from(pid))
            })
        };
        let parent_ok = match &self.parent {
            Parent::Is(id) => parent == id,
            Parent::Empty => parent.is_empty(),
            Parent::ServerOf(pid) => {
                in_trace("SERVER", *pid).is_some_and(|s| text(s, "span_id") == parent)
            }
            Parent::SentOrClientOf(sent, pid) => {
                parent == sent
                    || in_trace("CLIENT", *pid).is_some_and(|s| text(s, "span_id") == parent)
            }
            Parent::ClientOf(pid) => {
                in_trace("CLIENT", *pid).is_some_and(|s| text(s, "span_id") == parent)
            }
        };
        if !parent_ok {
            return Err(format!("parent {parent:?} is wrong (trace {trace})"));
        }
        let status = attr(span, "http.response.status_code").as_i64();
        if status != Some(self.status) {
            return Err(format!("status {status:?}, expected {}", self.status));
        }
        // A gRPC call is named by its method's path, and POSTed; the HTTP/1 cases are GETs.
        let (name, method) = match self.path.strip_prefix('/') {
            Some(rpc) if self.path.starts_with("/demo.Greeter/") => (rpc, "POST"),
            _ => ("GET", "GET"),
        };
        if text(span, "name") != name || attr(span, "http.request.method").as_str() != Some(method)
        {
            return Err(format!(
                "name/method {:?} {:?}, expected {name} {method}",
                text(span, "name"),
                attr(span, "http.request.method")
            ));
        }
        if name != "GET" {
            let code = attr(span, "rpc.grpc.status_code").as_i64();
            let version = attr(span, "network.protocol.version").as_str();
            if code.is_none() {
                // Worded as a missing response: a lost event (counted) can hide the trailers.
                return Err("status None: no gRPC status (its trailers were not seen)".to_owned());
            }
            if code != Some(0) || version != Some("2") {
                return Err(format!(
                    "rpc.grpc.status_code {code:?}, network.protocol.version {version:?}: expected 0 and 2"
                ));
            }
        }
        let source = attr(span, "tracer.context.source")
            .as_str()
            .unwrap_or_default();
        // A CLIENT span's context is the one the app forwarded: only SERVER spans name a source.
        if self.kind == "SERVER" && source != self.source {
            return Err(format!(
                "tracer.context.source {source:?}, expected {:?}",
                self.source
            ));
        }
        Ok(format!(
            "trace {trace} parent {} status {}",
            if parent.is_empty() { "-" } else { parent },
            self.status
        ))
    }
}
