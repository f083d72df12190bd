//! The embedded default output: spans on stdout, as a readable tree per trace or as JSON lines.
//!
//! The tree printer holds a trace's spans until nothing new arrived for it for a moment, then
//! prints them nested by parent; spans whose parent lives elsewhere (the sidecar, the caller)
//! are shown at the top with that parent's id.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{self, Write},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

use crate::{
    config::StdoutFormat,
    trace::{
        ids::{SpanId, TraceId},
        span::{AttrValue, Span, Status},
    },
};

/// How long a trace stays open for more spans before it is printed.
const SETTLE: Duration = Duration::from_secs(1);

pub struct Console {
    format: StdoutFormat,
    pending: HashMap<TraceId, (Instant, Vec<Span>)>,
}

fn json_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::String(s.to_string()),
        AttrValue::Static(s) => Value::String((*s).to_owned()),
        AttrValue::Int(i) => json!(i),
        AttrValue::Bool(b) => Value::Bool(*b),
    }
}

/// One span as the JSON object of `--stdout json`.
#[must_use]
pub fn span_json(s: &Span) -> Value {
    let attributes: Map<String, Value> = s
        .attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json_value(v)))
        .collect();
    let resource: Map<String, Value> = s
        .resource
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), json_value(v)))
        .collect();
    json!({
        "trace_id": s.trace_id.to_string(),
        "span_id": s.span_id.to_string(),
        "parent_span_id": s.parent_span_id.map(|p| p.to_string()).unwrap_or_default(),
        "kind": s.kind.as_str(),
        "name": s.name.as_str(),
        "start_unix_nanos": s.start_unix_nanos,
        "end_unix_nanos": s.end_unix_nanos,
        "attributes": attributes,
        "resource": resource,
    })
}

impl Console {
    #[must_use]
    pub fn new(format: StdoutFormat) -> Self {
        Self {
            format,
            pending: HashMap::new(),
        }
    }

    pub fn add(&mut self, span: &Span) {
        match self.format {
            StdoutFormat::Off => {}
            StdoutFormat::Json => {
                let mut out = io::stdout().lock();
                let _ = writeln!(out, "{}", span_json(span));
                let _ = out.flush();
            }
            StdoutFormat::Tree => {
                let entry = self
                    .pending
                    .entry(span.trace_id)
                    .or_insert_with(|| (Instant::now(), Vec::new()));
                entry.0 = Instant::now();
                entry.1.push(span.clone());
            }
        }
    }

    /// Prints the traces that settled (all of them when `force`).
    pub fn flush(&mut self, force: bool) {
        let now = Instant::now();
        let done: Vec<TraceId> = self
            .pending
            .iter()
            .filter(|(_, (t, _))| force || now.duration_since(*t) >= SETTLE)
            .map(|(id, _)| *id)
            .collect();
        if done.is_empty() {
            return;
        }
        let mut out = io::stdout().lock();
        for id in done {
            if let Some((_, spans)) = self.pending.remove(&id) {
                let _ = out.write_all(render_tree(id, spans).as_bytes());
            }
        }
        let _ = out.flush();
    }
}

fn line(s: &Span) -> String {
    let attr = |k: &str| s.attr(k).map(ToString::to_string);
    let target = attr("url.full").or_else(|| {
        attr("url.path").map(|p| match attr("url.query") {
            Some(q) => format!("{p}?{q}"),
            None => p,
        })
    });
    let status = attr("rpc.grpc.status_code")
        .map(|c| format!("grpc {c}"))
        .or_else(|| attr("http.response.status_code"))
        .unwrap_or_else(|| "-".into());
    let micros = s.end_unix_nanos.saturating_sub(s.start_unix_nanos) / 1000;
    let mut text = format!(
        "{} {} [{}] {} {} -> {}  {}.{:03} ms  span {}",
        s.kind.as_str(),
        s.resource.service_name,
        s.resource.pid,
        s.name,
        target.unwrap_or_default(),
        status,
        micros / 1000,
        micros % 1000,
        s.span_id,
    );
    if let Status::Error(msg) = &s.status {
        text.push_str("  ERROR");
        if !msg.is_empty() {
            let _ = write!(text, " ({msg})");
        }
    }
    if s.attr("tracer.capture.truncated").is_some() {
        text.push_str("  [truncated capture]");
    }
    text
}

/// Deepest nesting printed; a parent cycle (which real ids cannot form) stops here.
const MAX_DEPTH: usize = 64;

/// Appends span `idx` and, below it, its children.
fn walk(spans: &[Span], idx: usize, prefix: &str, last: bool, depth: usize, out: &mut String) {
    let s = &spans[idx];
    let _ = writeln!(
        out,
        "{prefix}{}{}",
        if last { "└─ " } else { "├─ " },
        line(s)
    );
    if depth >= MAX_DEPTH {
        return;
    }
    let children: Vec<usize> = (0..spans.len())
        .filter(|c| *c != idx && spans[*c].parent_span_id == Some(s.span_id))
        .collect();
    let next_prefix = format!("{prefix}{}", if last { "   " } else { "│  " });
    for (n, c) in children.iter().enumerate() {
        walk(
            spans,
            *c,
            &next_prefix,
            n + 1 == children.len(),
            depth + 1,
            out,
        );
    }
}

/// The tree of one trace, children under their parents, siblings by start time.
#[must_use]
pub fn render_tree(trace: TraceId, mut spans: Vec<Span>) -> String {
    spans.sort_by_key(|s| s.start_unix_nanos);
    let ids: Vec<SpanId> = spans.iter().map(|s| s.span_id).collect();
    let mut out = format!(
        "trace {trace} ({} span{})\n",
        spans.len(),
        if spans.len() == 1 { "" } else { "s" }
    );
    let roots: Vec<usize> = (0..spans.len())
        .filter(|i| spans[*i].parent_span_id.is_none_or(|p| !ids.contains(&p)))
        .collect();
    for (n, r) in roots.iter().enumerate() {
        if let Some(parent) = spans[*r].parent_span_id {
            let _ = writeln!(out, "  (parent {parent}, not traced here)");
        }
        walk(&spans, *r, "  ", n + 1 == roots.len(), 0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{procs::resource::build_resource, trace::span::SpanKind};

    fn span(trace: TraceId, id: u8, parent: Option<u8>, kind: SpanKind, start: u64) -> Span {
        Span {
            trace_id: trace,
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            kind,
            name: "GET".into(),
            start_unix_nanos: start,
            end_unix_nanos: start + 1_500_000,
            attributes: vec![
                ("url.path", "/x".into()),
                ("http.response.status_code", 200i64.into()),
            ],
            status: Status::Unset,
            resource: Arc::new(build_resource(
                7,
                "python3",
                b"OTEL_SERVICE_NAME=svc-a\0",
                "h",
                &crate::procs::resource::Container::default(),
            )),
        }
    }

    #[test]
    fn tree_nests_children_under_parents() {
        let t = TraceId([1; 16]);
        let text = render_tree(
            t,
            vec![
                span(t, 2, Some(1), SpanKind::Client, 20),
                span(t, 1, Some(9), SpanKind::Server, 10),
                span(t, 3, Some(1), SpanKind::Client, 30),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("trace 01010101"), "{text}");
        assert!(lines[1].contains("parent 0909090909090909"), "{text}");
        assert!(
            lines[2].contains("└─ SERVER svc-a [7] GET /x -> 200  1.500 ms"),
            "{text}"
        );
        assert!(lines[3].contains("├─ CLIENT"), "{text}");
        assert!(lines[4].contains("└─ CLIENT"), "{text}");
    }

    #[test]
    fn json_has_exactly_the_documented_keys() {
        let t = TraceId([1; 16]);
        let v = span_json(&span(t, 2, None, SpanKind::Server, 5));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "attributes",
            "end_unix_nanos",
            "kind",
            "name",
            "parent_span_id",
            "resource",
            "span_id",
            "start_unix_nanos",
            "trace_id",
        ];
        let mut got = keys.clone();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
        assert_eq!(v["parent_span_id"], "");
        assert_eq!(v["kind"], "SERVER");
        assert_eq!(v["trace_id"].as_str().unwrap().len(), 32);
        assert_eq!(v["span_id"].as_str().unwrap().len(), 16);
        assert_eq!(v["attributes"]["http.response.status_code"], 200);
        assert_eq!(v["resource"]["service.name"], "svc-a");
    }
}
