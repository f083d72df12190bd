//! End to end with gRPC hops: the mesh scenario of tests/src/mesh.rs with [`GRPC_CHAIN`], the
//! gRPC services of tests/src/grpc.rs (service-a Go, service-b Python, service-c Node; each
//! forwards the B3 metadata it received, as mesh apps must) behind real Envoy sidecars with HTTP/2
//! listeners and clusters and the Zipkin tracer. The test client (Go, one connection per call)
//! calls the entry sidecar with no trace context (Envoy starts the trace) or with a B3 context of
//! its own. The store must hold one joined tree per call: the sidecars' SERVER/CLIENT spans from
//! Zipkin, the agent's SERVER/CLIENT spans from OTLP (through rotel), one trace id (64-bit ids
//! padded, or 128-bit), no orphan, no span of the call anywhere else.
//!
//! Only the read-only expectations exist for gRPC: the write side leaves HTTP/2 untouched (HTTP/2
//! rewrite is not supported), so each app forwards the span id its inbound sidecar sent and the
//! outbound sidecar's CLIENT span is a sibling of the agent SERVER span, both children of the
//! inbound sidecar span (as in the read-only HTTP/1 mesh, tests/tests/mesh.rs):
//!
//! ```text
//! a-sidecar SERVER ─┬─ a SERVER ── a CLIENT
//!                   └─ a-sidecar CLIENT ── b-sidecar SERVER ─┬─ b SERVER ── b CLIENT
//!                                                            └─ b-sidecar CLIENT ── c-sidecar SERVER ── c SERVER
//! ```
//!
//! Every test but the first needs the agent's HTTP/2 side; the first runs the same mesh without
//! the agent and checks the sidecar half alone (Envoy proxies gRPC and its spans join).

use std::time::Duration;

use tracer_tests::envoy::Codec;
use tracer_tests::expect::{of_pid, only};
use tracer_tests::grpc::{Call, Rpc, RpcSpan, attr, code};
use tracer_tests::harness::{Span, root_test};
use tracer_tests::mesh::{
    GRPC_CHAIN, MIXED_CHAIN, Mesh, Traced, chain_spans, render_tree, sidecar_name,
};
use tracer_tests::tree::is_sidecar;
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(30);

/// The mesh without the agent: every call through the three gRPC hops comes back right (replies
/// and statuses as the last service answered them) and yields the five sidecar spans, joined as
/// the read-only tree above minus the agent spans, with Envoy's gRPC tags. No root needed.
#[test]
fn grpc_mesh_sidecars_alone_proxy_grpc_and_report_one_joined_tree() {
    let mesh = Mesh::start_sidecars_only(&GRPC_CHAIN, false);
    let sidecar_spans = 2 * GRPC_CHAIN.len() - 1;
    for (rpc, b3, status) in [
        (Rpc::SayHello("alice"), false, code::OK),
        (Rpc::Count(3), true, code::OK),
        (Rpc::SayHello("missing"), false, code::NOT_FOUND),
        (Rpc::SayHello("fail"), true, code::INTERNAL),
    ] {
        let t = call(&mesh, rpc, b3, sidecar_spans);
        check_reply(&t, rpc, status);
        check_trace(&mesh, &t, rpc, status, sidecar_spans);
    }
    check_nothing_outside(&mesh);
}

/// The demo's chain ([`MIXED_CHAIN`]) without the agent: the gRPC hops and the HTTP/1 hop behind
/// them report one joined sidecar tree (the HTTP/1 sidecars get the B3 headers the Python gRPC
/// service forwarded from its metadata). No root needed.
#[test]
fn grpc_mesh_sidecars_alone_cross_a_grpc_and_an_http1_hop() {
    let mesh = Mesh::start_sidecars_only(&MIXED_CHAIN, true);
    let sidecar_spans = 2 * MIXED_CHAIN.len() - 1;
    let hello = Rpc::SayHello("mixed");
    let t = call(&mesh, hello, false, sidecar_spans);
    check_reply(&t, hello, code::OK);
    check_trace(&mesh, &t, hello, code::OK, sidecar_spans);
    check_nothing_outside(&mesh);
}

#[test]
fn grpc_mesh_joins_sidecar_and_agent_spans_with_64_bit_trace_ids() {
    scenario(false);
}

#[test]
fn grpc_mesh_joins_sidecar_and_agent_spans_with_128_bit_trace_ids() {
    scenario(true);
}

/// `NOT_FOUND` and INTERNAL from service-c travel back through every hop: each agent span carries
/// the code in `rpc.grpc.status_code` and the gRPC conventions' error status (a CLIENT span for any
/// code but OK, a SERVER span for INTERNAL but not `NOT_FOUND`); each sidecar span carries Envoy's
/// `grpc.status_code` and its `error` tag for INTERNAL only.
#[test]
fn grpc_mesh_error_statuses_reach_every_span() {
    let _serial = root_test();
    let mesh = Mesh::start_chain(&GRPC_CHAIN, false, "read-only");
    for (rpc, b3, status) in [
        (Rpc::SayHello("missing"), false, code::NOT_FOUND),
        (Rpc::SayHello("fail"), true, code::INTERNAL),
    ] {
        let t = call(&mesh, rpc, b3, chain_spans(GRPC_CHAIN.len()));
        check_reply(&t, rpc, status);
        check_trace(&mesh, &t, rpc, status, chain_spans(GRPC_CHAIN.len()));
    }
    check_nothing_outside(&mesh);
}

/// [`MIXED_CHAIN`], the chain of `cargo xtask demo`'s gRPC pass: a -> b over gRPC, then b's
/// Python gRPC service GETs `/hello` of service-c (Node HTTP/1) through the sidecars; one trace
/// holds both kinds of hop, each span with its protocol's attributes.
#[test]
fn grpc_mesh_trace_crosses_a_grpc_and_an_http1_hop() {
    let _serial = root_test();
    let mesh = Mesh::start_chain(&MIXED_CHAIN, false, "read-only");
    let expected = chain_spans(MIXED_CHAIN.len());
    let hello = Rpc::SayHello("mixed");
    let t = call(&mesh, hello, false, expected);
    check_reply(&t, hello, code::OK);
    check_trace(&mesh, &t, hello, code::OK, expected);
    check_nothing_outside(&mesh);
}

/// A unary call started by Envoy, a unary call whose reply shows the metadata service-c received,
/// and a server-streaming call carrying the client's own B3 context.
fn scenario(trace_id_128bit: bool) {
    let _serial = root_test();
    let mesh = Mesh::start_chain(&GRPC_CHAIN, trace_id_128bit, "read-only");
    let expected = chain_spans(GRPC_CHAIN.len());

    let hello = Rpc::SayHello("alice");
    let ok = call(&mesh, hello, false, expected);
    check_reply(&ok, hello, code::OK);
    check_trace(&mesh, &ok, hello, code::OK, expected);

    // service-c answers with the metadata it received (the reply travels back up unchanged): the
    // x-b3-spanid its inbound sidecar passed is that sidecar's SERVER span, the parent of c's
    // agent SERVER span; the trace id has the sidecars' width.
    let meta = Rpc::SayHello("metadata");
    let echo = call(&mesh, meta, false, expected);
    check_trace(&mesh, &echo, meta, code::OK, expected);
    let received = |key: &str| {
        echo.response
            .responses
            .first()
            .and_then(|r| r.lines().find_map(|l| l.strip_prefix(&format!("{key}="))))
            .map(str::to_owned)
    };
    let c_sidecar = sidecar_span(&echo.spans, "service-c", "SERVER");
    check_eq!(
        &echo.spans,
        received("x-b3-spanid"),
        Some(c_sidecar.span_id.clone()),
        "x-b3-spanid service-c received (reply {:?})",
        echo.response
    );
    let sent_trace = received("x-b3-traceid").unwrap_or_default();
    check_eq!(
        &echo.spans,
        sent_trace.len(),
        if trace_id_128bit { 32 } else { 16 },
        "x-b3-traceid length Envoy sends"
    );
    check_eq!(
        &echo.spans,
        format!("{sent_trace:0>32}"),
        echo.trace_id,
        "x-b3-traceid, padded"
    );

    let count = Rpc::Count(3);
    let stream = call(&mesh, count, true, expected);
    check_reply(&stream, count, code::OK);
    check_trace(&mesh, &stream, count, code::OK, expected);
    check_nothing_outside(&mesh);
}

fn call(mesh: &Mesh, rpc: Rpc, b3: bool, expected: usize) -> Traced<Call> {
    let traced = mesh.traced_call(rpc, b3, expected, WAIT);
    // In the test log, so that a failure can be read against the picture.
    println!(
        "gRPC {rpc:?} (client context: {b3}) -> {:?}\n{}",
        traced.response,
        render_tree(&traced.spans)
    );
    traced
}

/// What the client got: the status service-c answered and its reply.
fn check_reply(t: &Traced<Call>, rpc: Rpc, status: i64) {
    let responses: Vec<String> = match rpc {
        _ if status != code::OK => Vec::new(),
        Rpc::SayHello(name) => vec![format!("hello {name}")],
        Rpc::Count(n) => (1..=n).map(|i| i.to_string()).collect(),
    };
    check_eq!(
        &t.spans,
        (t.response.status, &t.response.responses),
        (status, &responses),
        "status and reply of {rpc:?} through the mesh ({:?})",
        t.response
    );
}

/// The single span of `service`'s sidecar with this kind.
fn sidecar_span<'a>(spans: &'a [Span], service: &str, kind: &str) -> &'a Span {
    let name = sidecar_name(service);
    only(spans, &format!("{kind} span of {name}"), |s| {
        is_sidecar(s) && s.kind == kind && s.service_name() == name
    })
}

fn agent_span<'a>(spans: &'a [Span], service: &str, kind: &str) -> &'a Span {
    only(spans, &format!("agent {kind} span of {service}"), |s| {
        !is_sidecar(s) && s.kind == kind && s.service_name() == service
    })
}

/// The trace as a whole (size, id width, no orphan), then each hop.
fn check_trace(mesh: &Mesh, t: &Traced<Call>, rpc: Rpc, status: i64, expected: usize) {
    let spans = &t.spans[..];
    let tree = render_tree(spans);
    check_eq!(spans, spans.len(), expected, "spans in the trace\n{tree}");
    check!(
        spans,
        t.trace_id.len() == 32
            && t.trace_id.starts_with("0000000000000000") != mesh.trace_id_128bit,
        "trace id {} must be {} bits",
        t.trace_id,
        if mesh.trace_id_128bit { 128 } else { 64 }
    );
    // No orphans: every parent is in the trace, but the entry sidecar's, which is the client's
    // span id (none when Envoy started the trace).
    let entry = sidecar_span(spans, "service-a", "SERVER");
    check_eq!(
        spans,
        entry.parent_span_id,
        t.incoming_span_id,
        "entry sidecar's parent = the client's span id (none: Envoy started the trace)"
    );
    for s in spans {
        check!(
            spans,
            s.span_id == entry.span_id || spans.iter().any(|p| p.span_id == s.parent_span_id),
            "span {} ({} {}) must have its parent {} in the trace\n{tree}",
            s.span_id,
            s.service_name(),
            s.kind,
            s.parent_span_id
        );
    }
    check_hops(mesh, t, rpc, status);
}

/// Per service: its sidecar spans and, with the agent, its agent spans, their parents and
/// attributes, by what each side speaks (a hop's inbound side is its app's codec, its outbound
/// side the next app's). Every gRPC hop ends the call with the status service-c answered (each
/// app answers a downstream failure with the downstream's status); the HTTP/1 hop of
/// [`MIXED_CHAIN`] is `GET /hello`, answered 200.
fn check_hops(mesh: &Mesh, t: &Traced<Call>, rpc: Rpc, status: i64) {
    let spans = &t.spans[..];
    let with_agent = mesh.write_mode != "none";
    let mut parent_of_next = String::new();
    for (i, hop) in mesh.hops.iter().enumerate() {
        let (name, next) = (hop.name, mesh.hops.get(i + 1));
        let label = format!("{name} ({:?} {:?}), {rpc:?}", hop.lang, hop.codec);
        let inbound = sidecar_span(spans, name, "SERVER");
        if i > 0 {
            check_eq!(
                spans,
                inbound.parent_span_id,
                parent_of_next,
                "{label}: inbound sidecar's parent = previous outbound sidecar span"
            );
        }
        check_side(spans, inbound, hop.codec, rpc, status, &label);
        let server = with_agent.then(|| {
            let server = agent_span(spans, name, "SERVER");
            let label = format!("{label}: agent SERVER, parent = inbound sidecar");
            let expected = AgentSpan {
                codec: hop.codec,
                pid: hop.app.pid(),
                parent: &inbound.span_id,
            };
            expected.check(spans, server, t, rpc, status, &label);
            server
        });
        let Some(next) = next else { continue };
        if let Some(server) = server {
            let client = agent_span(spans, name, "CLIENT");
            let label = format!("{label}: agent CLIENT, parent = agent SERVER of the process");
            let expected = AgentSpan {
                codec: next.codec,
                pid: hop.app.pid(),
                parent: &server.span_id,
            };
            expected.check(spans, client, t, rpc, status, &label);
        }
        // Read-only: the app forwarded its inbound sidecar's span id to its outbound sidecar.
        let outbound = sidecar_span(spans, name, "CLIENT");
        check_eq!(
            spans,
            outbound.parent_span_id,
            inbound.span_id,
            "{label}: outbound sidecar parent = the inbound sidecar span the app forwarded"
        );
        check_side(spans, outbound, next.codec, rpc, status, &label);
        parent_of_next.clone_from(&outbound.span_id);
    }
}

/// A sidecar span of a gRPC side ([`check_sidecar`]) or of the HTTP/1 hop (`GET /hello`, 200).
fn check_side(spans: &[Span], s: &Span, codec: Codec, rpc: Rpc, status: i64, label: &str) {
    match codec {
        Codec::Grpc => check_sidecar(spans, s, rpc, status, label),
        Codec::Http1 => {
            let url = s.attr_str("http.url").unwrap_or_default();
            check!(
                spans,
                url.ends_with("/hello"),
                "{label}: sidecar {} http.url {url:?} must end in /hello",
                s.kind
            );
            for (tag, value) in [("http.method", "GET"), ("http.status_code", "200")] {
                check_eq!(
                    spans,
                    s.attr_str(tag),
                    Some(value),
                    "{label}: sidecar {} {tag}",
                    s.kind
                );
            }
        }
    }
}

/// An agent span (its kind says which) of a call over `codec`: an [`RpcSpan`] for gRPC, else
/// the HTTP/1 `GET /hello` answered 200.
struct AgentSpan<'a> {
    /// What the call speaks: the app's own for a SERVER span, the callee's for a CLIENT span.
    codec: Codec,
    /// The process the span is of.
    pid: u32,
    parent: &'a str,
}

impl AgentSpan<'_> {
    fn check(
        &self,
        spans: &[Span],
        span: &Span,
        t: &Traced<Call>,
        rpc: Rpc,
        status: i64,
        label: &str,
    ) {
        if self.codec == Codec::Grpc {
            rpc_span(&span.kind, t, self.parent, rpc, status, self.pid).check(spans, span, label);
            return;
        }
        check_eq!(spans, span.trace_id, t.trace_id, "{label}: trace id");
        check_eq!(spans, span.parent_span_id, self.parent, "{label}: parent");
        check!(
            spans,
            of_pid(span, self.pid),
            "{label}: of the app's pid {}",
            self.pid
        );
        for (key, value) in [
            (attr::HTTP_REQUEST_METHOD, "GET"),
            (attr::URL_PATH, "/hello"),
        ] {
            check_eq!(spans, span.attr_str(key), Some(value), "{label}: {key}");
        }
        check_eq!(
            spans,
            span.attr_i64(attr::HTTP_RESPONSE_STATUS_CODE),
            Some(200),
            "{label}: {}",
            attr::HTTP_RESPONSE_STATUS_CODE
        );
    }
}

fn rpc_span<'a>(
    kind: &'a str,
    t: &'a Traced<Call>,
    parent: &'a str,
    rpc: Rpc<'a>,
    status: i64,
    pid: u32,
) -> RpcSpan<'a> {
    let response_messages = match rpc {
        _ if status != code::OK => 0,
        Rpc::SayHello(_) => 1,
        Rpc::Count(n) => i64::from(n),
    };
    RpcSpan {
        kind,
        trace_id: &t.trace_id,
        parent,
        rpc,
        status,
        response_messages,
        pid,
    }
}

/// Whether Envoy tags a gRPC span `error` for this status: its tracer marks the server-side
/// codes (UNKNOWN, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE, `DATA_LOSS`; Envoy's `source/common/tracing/tracer_impl.cc`), not the client's
/// (`NOT_FOUND`...).
fn envoy_error(status: i64) -> bool {
    matches!(status, 2 | 4 | 8 | 12 | 13 | 14 | 15)
}

/// Envoy's tags on a gRPC span: the call's path, POST over HTTP/2, HTTP 200 (gRPC errors travel
/// in the trailers), the call's `grpc.status_code` and the `error` tag by [`envoy_error`].
fn check_sidecar(spans: &[Span], s: &Span, rpc: Rpc, status: i64, label: &str) {
    let kind = &s.kind;
    let url = s.attr_str("http.url").unwrap_or_default();
    check!(
        spans,
        url.ends_with(&rpc.path()),
        "{label}: sidecar {kind} http.url {url:?} must end in {}",
        rpc.path()
    );
    for (tag, value) in [
        ("http.method", "POST"),
        ("http.protocol", "HTTP/2"),
        ("http.status_code", "200"),
        ("grpc.status_code", &status.to_string()),
    ] {
        check_eq!(
            spans,
            s.attr_str(tag),
            Some(value),
            "{label}: sidecar {kind} {tag}"
        );
    }
    let error = envoy_error(status);
    check_eq!(
        spans,
        s.attr_str("error"),
        error.then_some("true"),
        "{label}: sidecar {kind} error tag"
    );
    check_eq!(
        spans,
        s.status_code == "ERROR",
        error,
        "{label}: sidecar {kind} status"
    );
    check!(
        spans,
        !s.shared,
        "{label}: shared_span_context is off, no span may be shared"
    );
}

/// Every span in the store belongs to the trace of a call (or of its barrier): no span of a call
/// landed in a trace of its own.
fn check_nothing_outside(mesh: &Mesh) {
    let strays = mesh.spans_outside_the_requests_traces();
    check!(
        &strays,
        strays.is_empty(),
        "spans outside the calls' traces:\n{}",
        tracer_tests::otlp::dump(&strays)
    );
}
