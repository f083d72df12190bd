//! Root, end to end: the mesh scenario (tests/src/mesh.rs). Real Envoy sidecars report Zipkin and
//! pass B3 headers, the agent reports the apps' spans over OTLP through rotel, and the store must
//! hold one connected trace per request, in a 64-bit-id run (Envoy's default, what meshes send) and
//! a 128-bit-id run.
//!
//! The agent only reads headers today. Each app forwards the span id its inbound sidecar sent, so
//! the outbound sidecar's CLIENT span is a sibling of the agent SERVER span, both children of the
//! inbound sidecar span, and the next sidecar hangs under the outbound one:
//!
//! ```text
//! a-sidecar SERVER ─┬─ a SERVER ── a CLIENT
//!                   └─ a-sidecar CLIENT ── b-sidecar SERVER ─┬─ b SERVER ── b CLIENT
//!                                                            └─ b-sidecar CLIENT ── c-sidecar SERVER ── c SERVER
//! ```

use std::time::Duration;

use tracer_tests::expect::{of_pid, only};
use tracer_tests::harness::{Span, root_test};
use tracer_tests::mesh::{CHAIN_SPANS, Mesh, Traced, render_tree, sidecar_name};
use tracer_tests::tree::is_sidecar;
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn mesh_joins_sidecar_and_agent_spans_with_64_bit_trace_ids() {
    scenario(false);
}

#[test]
fn mesh_joins_sidecar_and_agent_spans_with_128_bit_trace_ids() {
    scenario(true);
}

/// The write side on: each app's outgoing request carries its agent CLIENT span id, so the tree
/// is strictly nested: sidecar -> agent SERVER -> agent CLIENT -> sidecar -> agent SERVER ...
#[test]
fn mesh_tree_is_strictly_nested_with_rewrite() {
    scenario_with(false, "rewrite");
}

fn scenario(trace_id_128bit: bool) {
    scenario_with(trace_id_128bit, "read-only");
}

fn scenario_with(trace_id_128bit: bool, write_mode: &'static str) {
    let _serial = root_test();
    let mesh = Mesh::start_with(trace_id_128bit, write_mode);

    let ok = request(&mesh, "/call/call/hello");
    check_eq!(
        &ok.spans,
        ok.response.status,
        200,
        "response of the entry sidecar"
    );
    check_trace(
        &mesh,
        &ok,
        trace_id_128bit,
        &["/call/call/hello", "/call/hello", "/hello"],
        200,
    );

    // service-c answers with the headers it received: the x-b3-spanid its inbound sidecar passed
    // is that sidecar's SERVER span, which must be the parent of c's agent SERVER span.
    let echo = request(&mesh, "/call/call/headers");
    check_trace(
        &mesh,
        &echo,
        trace_id_128bit,
        &["/call/call/headers", "/call/headers", "/headers"],
        200,
    );
    let received: serde_json::Value =
        serde_json::from_slice(&echo.response.body).unwrap_or_else(|e| {
            panic!(
                "service-c's /headers answer is not JSON ({e}): {}",
                echo.response.text()
            )
        });
    let c_sidecar = sidecar_span(&echo.spans, "service-c", "SERVER");
    check_eq!(
        &echo.spans,
        received["x-b3-spanid"].as_str(),
        Some(c_sidecar.span_id.as_str()),
        "x-b3-spanid service-c received"
    );
    let sent_trace = received["x-b3-traceid"].as_str().unwrap_or_default();
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

    let err = request(&mesh, "/call/call/status/500");
    check_eq!(
        &err.spans,
        err.response.status,
        500,
        "service-c's 500 reaches the client"
    );
    check_trace(
        &mesh,
        &err,
        trace_id_128bit,
        &["/call/call/status/500", "/call/status/500", "/status/500"],
        500,
    );
}

fn request(mesh: &Mesh, path: &str) -> Traced {
    let traced = mesh.traced_get(path, CHAIN_SPANS, WAIT);
    // In the test log, so that a failure can be read against the picture.
    println!(
        "GET {path} -> {}\n{}",
        traced.response.status,
        render_tree(&traced.spans)
    );
    traced
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

/// Everything the issue asks of one request's trace; `paths[i]` is what service i received.
/// First the trace as a whole: size, id width, one trace id, no orphans.
fn check_trace(mesh: &Mesh, t: &Traced, t128: bool, paths: &[&str], status: u16) {
    let spans = &t.spans[..];
    let tree = render_tree(spans);
    check_eq!(
        spans,
        spans.len(),
        CHAIN_SPANS,
        "spans in the trace\n{tree}"
    );
    check!(
        spans,
        t.trace_id.len() == 32 && t.trace_id.starts_with("0000000000000000") != t128,
        "trace id {} must be {} bits",
        t.trace_id,
        if t128 { 128 } else { 64 }
    );
    // One trace id for the whole request: no span of it (found by the unique rid every app
    // forwards) may sit in another trace.
    let rid = format!("rid={}", t.rid);
    let strays: Vec<Span> = mesh
        .store
        .spans()
        .into_iter()
        .filter(|s| {
            s.trace_id != t.trace_id
                && s.attributes
                    .values()
                    .any(|v| v.as_str().is_some_and(|v| v.contains(&rid)))
        })
        .collect();
    check!(
        spans,
        strays.is_empty(),
        "spans of this request in other traces:\n{}",
        tracer_tests::otlp::dump(&strays)
    );

    // No orphans: every parent is in the trace; the entry sidecar's span is the only root.
    let root = sidecar_span(spans, "service-a", "SERVER");
    for s in spans {
        check!(
            spans,
            s.parent_span_id.is_empty() == (s.span_id == root.span_id)
                && (s.parent_span_id.is_empty()
                    || spans.iter().any(|p| p.span_id == s.parent_span_id)),
            "span {} ({} {}) must have a parent in the trace, unless it is the root {}\n{tree}",
            s.span_id,
            s.service_name(),
            s.kind,
            root.span_id
        );
    }

    check_hops(mesh, spans, paths, status, &rid);
}

/// Per service: its four spans (two for the last), their parents, names, paths and statuses.
fn check_hops(mesh: &Mesh, spans: &[Span], paths: &[&str], status: u16, rid: &str) {
    let status_text = status.to_string();
    let error = status >= 500;
    let mut parent_of_next = String::new();
    for (i, hop) in mesh.hops.iter().enumerate() {
        let (name, path, last) = (hop.name, paths[i], i + 1 == mesh.hops.len());
        let label = format!("{name} ({:?}), {}", hop.lang, paths[0]);
        let inbound = sidecar_span(spans, name, "SERVER");
        if i > 0 {
            check_eq!(
                spans,
                inbound.parent_span_id,
                parent_of_next,
                "{label}: inbound sidecar's parent = previous outbound sidecar span"
            );
        }
        check_sidecar(spans, inbound, path, &status_text, rid, &label);

        let server = agent_span(spans, name, "SERVER");
        check_eq!(
            spans,
            server.parent_span_id,
            inbound.span_id,
            "{label}: agent SERVER parent = the span id its inbound sidecar passed"
        );
        check!(
            spans,
            of_pid(server, hop.app.pid()),
            "{label}: SERVER span of the app's pid {}",
            hop.app.pid()
        );
        check_agent(spans, server, path, status, rid, &label);
        check_eq!(
            spans,
            server.status_code == "ERROR",
            error,
            "{label}: agent SERVER status ERROR exactly for 5xx"
        );

        if last {
            continue;
        }
        let client = agent_span(spans, name, "CLIENT");
        check_eq!(
            spans,
            client.parent_span_id,
            server.span_id,
            "{label}: agent CLIENT parent = agent SERVER of the same service"
        );
        check_agent(spans, client, paths[i + 1], status, rid, &label);
        check_eq!(
            spans,
            client.status_code == "ERROR",
            error,
            "{label}: agent CLIENT status ERROR for >= 400"
        );

        let outbound = sidecar_span(spans, name, "CLIENT");
        if mesh.write_mode == "read-only" {
            // The app forwarded the inbound sidecar's span id to its outbound sidecar.
            check_eq!(
                spans,
                outbound.parent_span_id,
                inbound.span_id,
                "{label}: outbound sidecar parent = the inbound sidecar span the app forwarded"
            );
        } else {
            // The kernel replaced it with the agent CLIENT span's id on the way out.
            check_eq!(
                spans,
                outbound.parent_span_id,
                client.span_id,
                "{label}: outbound sidecar parent = agent CLIENT span (rewritten on the wire)"
            );
        }
        check_sidecar(spans, outbound, paths[i + 1], &status_text, rid, &label);
        parent_of_next.clone_from(&outbound.span_id);
    }
}

fn check_sidecar(spans: &[Span], s: &Span, path: &str, status: &str, rid: &str, label: &str) {
    let url = s.attr_str("http.url").unwrap_or_default();
    check!(
        spans,
        url.ends_with(&format!("{path}?{rid}")),
        "{label}: {} sidecar http.url {url:?} must end in {path}?{rid}",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_str("http.method"),
        Some("GET"),
        "{label}: sidecar {} http.method",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_str("http.status_code"),
        Some(status),
        "{label}: sidecar {} http.status_code",
        s.kind
    );
    let error = status.starts_with('5');
    check_eq!(
        spans,
        s.attr_str("error"),
        error.then_some("true"),
        "{label}: sidecar {} error tag",
        s.kind
    );
    check_eq!(
        spans,
        s.status_code == "ERROR",
        error,
        "{label}: sidecar {} status",
        s.kind
    );
    check!(
        spans,
        !s.shared,
        "{label}: shared_span_context is off, no span may be shared"
    );
}

fn check_agent(spans: &[Span], s: &Span, path: &str, status: u16, rid: &str, label: &str) {
    check_eq!(
        spans,
        s.name.as_str(),
        "GET",
        "{label}: agent {} name",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_str("http.request.method"),
        Some("GET"),
        "{label}: agent {} method",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_str("url.path"),
        Some(path),
        "{label}: agent {} url.path",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_str("url.query"),
        Some(rid),
        "{label}: agent {} url.query",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_i64("http.response.status_code"),
        Some(i64::from(status)),
        "{label}: agent {} status code",
        s.kind
    );
    check_eq!(
        spans,
        s.attr_str("tracer.context.source"),
        Some("b3multi"),
        "{label}: agent {} context source",
        s.kind
    );
}
