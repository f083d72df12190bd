//! One trace as a readable tree: sidecar spans (`[envoy]`, arrived as Zipkin) and agent spans
//! (`[agent]`, arrived as OTLP) side by side, children under their parent by start time.
//!
//! ```text
//! trace 0000000000000000d6a1... (10 spans: 5 [envoy] over Zipkin, 5 [agent] over OTLP)
//! └─ SERVER [envoy] service-a-sidecar "127.0.0.1:40001" GET /call/call/hello -> 200  6.210 ms  span d6a1...
//!    ├─ SERVER [agent] service-a GET /call/call/hello -> 200  4.902 ms  span 5e0c...
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::otlp::Span;

/// Renders `spans` (one trace) as a tree; spans whose parent is absent are roots, marked as such.
#[must_use]
pub fn render(spans: &[Span]) -> String {
    let mut out = String::new();
    let trace = spans.first().map_or("-", |s| s.trace_id.as_str());
    let envoy = spans.iter().filter(|s| is_sidecar(s)).count();
    let _ = writeln!(
        out,
        "trace {trace} ({} spans: {envoy} [envoy] over Zipkin, {} [agent] over OTLP)",
        spans.len(),
        spans.len() - envoy
    );
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<&str, Vec<&Span>> = BTreeMap::new();
    let mut roots = Vec::new();
    for s in spans {
        if ids.contains(s.parent_span_id.as_str()) && s.parent_span_id != s.span_id {
            children.entry(&s.parent_span_id).or_default().push(s);
        } else {
            roots.push(s);
        }
    }
    let by_start = |v: &mut Vec<&Span>| v.sort_by_key(|s| (s.start_unix_nanos, s.source));
    by_start(&mut roots);
    for v in children.values_mut() {
        by_start(v);
    }
    for (i, root) in roots.iter().enumerate() {
        if !root.parent_span_id.is_empty() {
            let _ = writeln!(
                out,
                "  (parent {} is not in the trace)",
                root.parent_span_id
            );
        }
        walk(&mut out, root, &children, "", i + 1 == roots.len());
    }
    out
}

fn walk(
    out: &mut String,
    span: &Span,
    children: &BTreeMap<&str, Vec<&Span>>,
    indent: &str,
    last: bool,
) {
    let branch = if last { "└─ " } else { "├─ " };
    let _ = writeln!(out, "{indent}{branch}{}", line(span));
    let indent = format!("{indent}{}", if last { "   " } else { "│  " });
    let kids = children
        .get(span.span_id.as_str())
        .map_or(&[][..], Vec::as_slice);
    for (i, kid) in kids.iter().enumerate() {
        walk(out, kid, children, &indent, i + 1 == kids.len());
    }
}

/// Whether the span came from a sidecar (Zipkin) rather than the agent (OTLP).
#[must_use]
pub fn is_sidecar(s: &Span) -> bool {
    s.source == crate::zipkin::SOURCE
}

/// `KIND [origin] service ["name"] METHOD target -> status  duration  span id`.
fn line(s: &Span) -> String {
    let attr = |k: &str| {
        s.attributes.get(k).map(|v| match v {
            serde_json::Value::String(t) => t.clone(),
            other => other.to_string(),
        })
    };
    let (origin, method, target, status) = if is_sidecar(s) {
        // Envoy's tags: the full URL, and the span is named after the Host.
        let url = attr("http.url").unwrap_or_default();
        let target = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or(url);
        (
            "envoy",
            attr("http.method"),
            target,
            attr("http.status_code"),
        )
    } else {
        let target = if s.kind == "CLIENT" {
            attr("url.full").unwrap_or_default()
        } else {
            let query = attr("url.query")
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            attr("url.path").unwrap_or_default() + &query
        };
        let status = attr("http.response.status_code");
        ("agent", attr("http.request.method"), target, status)
    };
    let method = method.unwrap_or_default();
    let name = if s.name == method {
        String::new()
    } else {
        format!("{:?}", s.name)
    };
    let origin = format!("[{origin}]");
    let head = [
        s.kind.as_str(),
        &origin,
        s.service_name(),
        &name,
        &method,
        &target,
    ]
    .into_iter()
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    // A gRPC call's status is in the trailers (its HTTP status is 200 whatever the outcome).
    let grpc = attr("rpc.grpc.status_code")
        .or_else(|| attr("grpc.status_code"))
        .map(|c| format!(" grpc {c}"))
        .unwrap_or_default();
    let error = if s.status_code == "ERROR" {
        " ERROR"
    } else {
        ""
    };
    #[allow(clippy::cast_precision_loss)] // display only
    let ms = s.end_unix_nanos.saturating_sub(s.start_unix_nanos) as f64 / 1e6;
    format!(
        "{head} -> {}{grpc}{error}  {ms:.3} ms  span {}",
        status.unwrap_or_else(|| "(none)".to_owned()),
        s.span_id
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::render;
    use crate::otlp::Span;

    fn span(
        id: &str,
        parent: &str,
        start: u64,
        source: &'static str,
        attrs: &[(&str, &str)],
    ) -> Span {
        Span {
            trace_id: "0000000000000000463ac35c9f6413ad".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            kind: "SERVER".into(),
            name: "GET".into(),
            start_unix_nanos: start,
            end_unix_nanos: start + 1_500_000,
            status_code: "UNSET".into(),
            status_message: String::new(),
            attributes: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect(),
            resource: BTreeMap::from([("service.name".to_owned(), json!("svc"))]),
            scope_name: String::new(),
            source,
            shared: false,
        }
    }

    #[test]
    fn nests_children_by_start_and_marks_orphans() {
        let envoy = [
            ("http.url", "http://h:1/p?q=1"),
            ("http.method", "GET"),
            ("http.status_code", "200"),
        ];
        let spans = [
            span(
                "00000000000000b2",
                "00000000000000a1",
                30,
                "otlp",
                &[("url.path", "/late"), ("http.request.method", "GET")],
            ),
            span("00000000000000a1", "", 10, "zipkin", &envoy),
            span(
                "00000000000000b1",
                "00000000000000a1",
                20,
                "otlp",
                &[("url.path", "/early"), ("http.request.method", "GET")],
            ),
            span("00000000000000c1", "00000000000000ff", 40, "otlp", &[]),
            span(
                "00000000000000b3",
                "00000000000000a1",
                35,
                "otlp",
                &[("url.path", "/g"), ("rpc.grpc.status_code", "13")],
            ),
        ];
        let text = render(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("(5 spans: 1 [envoy] over Zipkin, 4 [agent] over OTLP)"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("├─ SERVER [envoy] svc GET /p?q=1 -> 200  1.500 ms"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("│  ├─ SERVER [agent] svc GET /early"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("│  ├─ SERVER [agent] svc GET /late"),
            "{text}"
        );
        assert!(
            lines[4].starts_with("│  └─ SERVER [agent] svc \"GET\" /g -> (none) grpc 13  1.500 ms"),
            "{text}"
        );
        assert_eq!(
            lines[5], "  (parent 00000000000000ff is not in the trace)",
            "{text}"
        );
        assert!(
            lines[6].starts_with("└─ SERVER [agent] svc \"GET\" -> (none)"),
            "{text}"
        );
    }
}
