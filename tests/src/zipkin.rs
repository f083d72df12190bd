//! Zipkin v2 JSON (`POST /api/v2/spans`, what Envoy's Zipkin tracer posts) into the flattened
//! [`Span`] the OTLP side produces, converted the way the OpenTelemetry Collector's `zipkin`
//! receiver converts it, so a test sees sidecar spans exactly as a real collector would store them.
//!
//! The one conversion that decides whether a mesh trace joins up is the trace id: a 64-bit
//! (16-hex) Zipkin trace id becomes a 128-bit OTLP id with the high half zero, i.e. the hex is
//! left-padded with zeros to 32 characters. The agent pads B3 ids the same way.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::otlp::Span;

/// [`Span::source`] of the spans that came in as Zipkin (OTLP ones have [`crate::otlp::SOURCE`]).
pub const SOURCE: &str = "zipkin";

/// Parses a Zipkin v2 JSON body (an array of spans). Like the collector, one bad span rejects the
/// whole request (it answers 400): a half-accepted batch would hide the error.
///
/// # Errors
/// Invalid JSON, not an array, or a span without valid ids.
pub fn parse_spans(body: &[u8]) -> Result<Vec<Span>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("a Zipkin v2 body is a JSON array of spans".to_owned());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| convert(v).map_err(|e| format!("span {i}: {e}")))
        .collect()
}

fn convert(v: &Value) -> Result<Span, String> {
    let field = |name: &str| v.get(name).and_then(Value::as_str);
    let trace_id = trace_id(field("traceId").ok_or("no traceId")?)?;
    let span_id = span_id(field("id").ok_or("no id")?)?;
    let parent_span_id = match field("parentId") {
        None | Some("") => String::new(),
        Some(p) => span_id_of(p, "parentId")?,
    };
    let kind = match field("kind") {
        Some(k @ ("CLIENT" | "SERVER" | "PRODUCER" | "CONSUMER")) => k.to_owned(),
        _ => "UNSPECIFIED".to_owned(),
    };
    let micros = |name: &str| v.get(name).and_then(Value::as_u64).unwrap_or(0);
    let (start, duration) = (micros("timestamp"), micros("duration"));
    let attributes: BTreeMap<String, Value> = v
        .get("tags")
        .and_then(Value::as_object)
        .map(|tags| {
            tags.iter()
                .map(|(k, t)| (k.clone(), Value::String(tag_string(t))))
                .collect()
        })
        .unwrap_or_default();
    let (status_code, status_message) = status(&attributes);
    let mut resource = BTreeMap::new();
    if let Some(name) = v
        .pointer("/localEndpoint/serviceName")
        .and_then(Value::as_str)
    {
        resource.insert("service.name".to_owned(), Value::from(name));
    }
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        name: field("name").unwrap_or_default().to_owned(),
        start_unix_nanos: start.saturating_mul(1000),
        end_unix_nanos: start.saturating_add(duration).saturating_mul(1000),
        status_code: status_code.to_owned(),
        status_message,
        attributes,
        resource,
        scope_name: String::new(),
        source: SOURCE,
        shared: v.get("shared").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Tag values are strings in Zipkin v2; anything else is kept as its JSON text rather than lost.
fn tag_string(t: &Value) -> String {
    t.as_str().map_or_else(|| t.to_string(), str::to_owned)
}

/// The collector's rule, in order: an `otel.status_code` tag, else an `error` tag (its value is
/// the message unless it is just "true"), else an HTTP 5xx in `http.status_code`. Unlike the
/// collector, the `error` tag also stays in the attributes: a test can see what the sidecar said.
fn status(tags: &BTreeMap<String, Value>) -> (&'static str, String) {
    let tag = |k: &str| tags.get(k).and_then(Value::as_str);
    if let Some(code) = tag("otel.status_code") {
        let message = tag("otel.status_description")
            .unwrap_or_default()
            .to_owned();
        return match code.to_ascii_uppercase().as_str() {
            "ERROR" => ("ERROR", message),
            "OK" => ("OK", message),
            _ => ("UNSET", String::new()),
        };
    }
    if let Some(error) = tag("error") {
        let message = if error == "true" { "" } else { error };
        return ("ERROR", message.to_owned());
    }
    match tag("http.status_code").and_then(|c| c.parse::<u16>().ok()) {
        Some(code) if code >= 500 => ("ERROR", String::new()),
        _ => ("UNSET", String::new()),
    }
}

/// 1 to 32 hex digits, lowercased and left-padded with zeros to 32 (64-bit ids: high half zero).
fn trace_id(hex: &str) -> Result<String, String> {
    if hex.is_empty() || hex.len() > 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad traceId {hex:?}"));
    }
    if hex.bytes().all(|b| b == b'0') {
        return Err("traceId is all zeros".to_owned());
    }
    Ok(format!("{:0>32}", hex.to_ascii_lowercase()))
}

fn span_id(hex: &str) -> Result<String, String> {
    span_id_of(hex, "id")
}

/// 1 to 16 hex digits as 16 lowercase hex digits.
fn span_id_of(hex: &str, what: &str) -> Result<String, String> {
    if hex.is_empty() || hex.len() > 16 {
        return Err(format!("bad {what} {hex:?}"));
    }
    let id = u64::from_str_radix(hex, 16).map_err(|_| format!("bad {what} {hex:?}"))?;
    if id == 0 {
        return Err(format!("{what} is zero"));
    }
    Ok(format!("{id:016x}"))
}

/// A span as the JSON of `GET /api/traces/<id>`.
#[must_use]
pub fn span_json(s: &Span) -> Value {
    json!({
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "kind": s.kind,
        "name": s.name,
        "start_unix_nanos": s.start_unix_nanos,
        "end_unix_nanos": s.end_unix_nanos,
        "status_code": s.status_code,
        "status_message": s.status_message,
        "attributes": s.attributes,
        "resource": s.resource,
        "scope_name": s.scope_name,
        "source": s.source,
        "shared": s.shared,
    })
}

#[cfg(test)]
#[path = "zipkin_tests.rs"]
mod tests;
