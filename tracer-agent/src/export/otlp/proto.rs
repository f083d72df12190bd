//! OTLP `ExportTraceServiceRequest` protobuf, written straight from our [`Span`]s.
//!
//! The SDK path (span -> `SpanData` -> prost structs -> bytes, then both dropped) took a third
//! of the agent's CPU at saturation; here each span is sized, then written once into one buffer,
//! with no allocation per span. Field numbers are those of opentelemetry-proto
//! (`opentelemetry/proto/{collector/trace,trace,common,resource}/v1`); the tests decode the
//! output with the official generated types.

use crate::trace::span::{AttrValue, Resource, Span, SpanKind, Status};

/// The instrumentation scope every span is reported under.
pub struct Scope {
    pub name: &'static str,
    pub version: &'static str,
}

pub const SCOPE: Scope = Scope {
    name: "tracer-agent",
    version: env!("CARGO_PKG_VERSION"),
};

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

// `Span.kind` and `Status.code` values.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;
// `Span.flags`: the W3C trace flags in the low byte, then whether the parent is remote.
const FLAG_SAMPLED: u32 = 0x01;
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
const FLAG_IS_REMOTE: u32 = 0x200;

const fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

const fn tag_len(field: u32) -> usize {
    varint_len((field as u64) << 3)
}

/// Size of a length-delimited field whose payload is `n` bytes.
const fn len_field(field: u32, n: usize) -> usize {
    tag_len(field) + varint_len(n as u64) + n
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "each byte takes the low 7 bits on purpose"
)]
fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(buf, u64::from((field << 3) | wire));
}

fn put_len(buf: &mut Vec<u8>, field: u32, n: usize) {
    put_tag(buf, field, LEN);
    put_varint(buf, n as u64);
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_len(buf, field, bytes.len());
    buf.extend_from_slice(bytes);
}

// AnyValue { string_value = 1; bool_value = 2; int_value = 3; }
fn any_value_len(v: &AttrValue) -> usize {
    match v {
        AttrValue::Str(s) => len_field(1, s.len()),
        AttrValue::Static(s) => len_field(1, s.len()),
        AttrValue::Bool(_) => tag_len(2) + 1,
        AttrValue::Int(i) => tag_len(3) + varint_len(i.cast_unsigned()),
    }
}

fn put_any_value(buf: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Str(s) => put_bytes(buf, 1, s.as_bytes()),
        AttrValue::Static(s) => put_bytes(buf, 1, s.as_bytes()),
        AttrValue::Bool(b) => {
            put_tag(buf, 2, VARINT);
            buf.push(u8::from(*b));
        }
        AttrValue::Int(i) => {
            put_tag(buf, 3, VARINT);
            // int64 is the two's complement as a 64-bit varint.
            put_varint(buf, i.cast_unsigned());
        }
    }
}

// KeyValue { key = 1; value = 2; }
fn key_value_len(key: &str, v: &AttrValue) -> usize {
    len_field(1, key.len()) + len_field(2, any_value_len(v))
}

fn put_key_value(buf: &mut Vec<u8>, field: u32, key: &str, v: &AttrValue) {
    put_len(buf, field, key_value_len(key, v));
    put_bytes(buf, 1, key.as_bytes());
    put_len(buf, 2, any_value_len(v));
    put_any_value(buf, v);
}

// Status { message = 2; code = 3; }
fn status_len(status: &Status) -> usize {
    match status {
        Status::Unset => 0,
        Status::Error(msg) => {
            (if msg.is_empty() {
                0
            } else {
                len_field(2, msg.len())
            }) + tag_len(3)
                + varint_len(STATUS_ERROR)
        }
    }
}

// Span { trace_id = 1; span_id = 2; parent_span_id = 4; name = 5; kind = 6;
//        start_time_unix_nano = 7; end_time_unix_nano = 8; attributes = 9; status = 15; flags = 16; }
fn span_len(s: &Span) -> usize {
    let mut n = len_field(1, 16) + len_field(2, 8);
    if s.parent_span_id.is_some() {
        n += len_field(4, 8);
    }
    n += len_field(5, s.name.len());
    n += tag_len(6) + 1;
    n += 2 * (tag_len(7) + 8);
    for (k, v) in &s.attributes {
        n += len_field(9, key_value_len(k, v));
    }
    if !matches!(s.status, Status::Unset) {
        n += len_field(15, status_len(&s.status));
    }
    n + tag_len(16) + 4
}

fn put_span(buf: &mut Vec<u8>, s: &Span) {
    put_bytes(buf, 1, &s.trace_id.0);
    put_bytes(buf, 2, &s.span_id.0);
    if let Some(parent) = &s.parent_span_id {
        put_bytes(buf, 4, &parent.0);
    }
    put_bytes(buf, 5, s.name.as_bytes());
    put_tag(buf, 6, VARINT);
    put_varint(
        buf,
        match s.kind {
            SpanKind::Server => KIND_SERVER,
            SpanKind::Client => KIND_CLIENT,
        },
    );
    put_tag(buf, 7, FIXED64);
    buf.extend_from_slice(&s.start_unix_nanos.to_le_bytes());
    put_tag(buf, 8, FIXED64);
    buf.extend_from_slice(&s.end_unix_nanos.to_le_bytes());
    for (k, v) in &s.attributes {
        put_key_value(buf, 9, k, v);
    }
    if let Status::Error(msg) = &s.status {
        put_len(buf, 15, status_len(&s.status));
        if !msg.is_empty() {
            put_bytes(buf, 2, msg.as_bytes());
        }
        put_tag(buf, 3, VARINT);
        put_varint(buf, STATUS_ERROR);
    }
    // A SERVER span's parent is the caller's span: remote. A CLIENT span's parent is local.
    let remote = s.kind == SpanKind::Server && s.parent_span_id.is_some();
    let flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | if remote { FLAG_IS_REMOTE } else { 0 };
    put_tag(buf, 16, FIXED32);
    buf.extend_from_slice(&flags.to_le_bytes());
}

// InstrumentationScope { name = 1; version = 2; }
fn scope_len(scope: &Scope) -> usize {
    len_field(1, scope.name.len()) + len_field(2, scope.version.len())
}

// Resource { attributes = 1; }
fn resource_len(r: &Resource) -> usize {
    r.attributes
        .iter()
        .map(|(k, v)| len_field(1, key_value_len(k, v)))
        .sum()
}

/// Appends an `ExportTraceServiceRequest` to `buf`: one `ResourceSpans` per group, each with one
/// `ScopeSpans`. Every span of a group is expected to have that group's resource.
pub fn encode_request<'a>(
    buf: &mut Vec<u8>,
    scope: &Scope,
    groups: impl IntoIterator<Item = (&'a Resource, &'a [Span])>,
) {
    // Each span's size is needed twice (its group's size, then its own length prefix).
    let mut sizes = Vec::new();
    for (resource, spans) in groups {
        sizes.clear();
        sizes.extend(spans.iter().map(span_len));
        // ResourceSpans { resource = 1; scope_spans = 2; }
        // ScopeSpans { scope = 1; spans = 2; }
        let r_len = resource_len(resource);
        let ss_len =
            len_field(1, scope_len(scope)) + sizes.iter().map(|n| len_field(2, *n)).sum::<usize>();
        put_len(buf, 1, len_field(1, r_len) + len_field(2, ss_len));
        put_len(buf, 1, r_len);
        for (k, v) in &resource.attributes {
            put_key_value(buf, 1, k, v);
        }
        put_len(buf, 2, ss_len);
        put_len(buf, 1, scope_len(scope));
        put_bytes(buf, 1, scope.name.as_bytes());
        put_bytes(buf, 2, scope.version.as_bytes());
        for (s, n) in spans.iter().zip(&sizes) {
            put_len(buf, 2, *n);
            let body = buf.len();
            put_span(buf, s);
            debug_assert_eq!(buf.len() - body, *n, "span size computed wrong");
        }
    }
}

/// What an `ExportTraceServiceResponse` says: spans the collector rejected (partial success).
/// Unknown or malformed content counts as no rejection: the export itself succeeded.
#[must_use]
pub fn rejected_spans(response: &[u8]) -> i64 {
    // ExportTraceServiceResponse { partial_success = 1 { rejected_spans = 1; error_message = 2; } }
    let Some(partial) = field(response, 1) else {
        return 0;
    };
    first_varint(partial, 1).map_or(0, u64::cast_signed)
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Skips one field's value of `wire` type; `None` if malformed.
fn skip(b: &[u8], at: &mut usize, wire: u64) -> Option<()> {
    match wire {
        0 => read_varint(b, at).map(drop),
        1 => (*at + 8 <= b.len()).then(|| *at += 8),
        2 => {
            let n = usize::try_from(read_varint(b, at)?).ok()?;
            (*at + n <= b.len()).then(|| *at += n)
        }
        5 => (*at + 4 <= b.len()).then(|| *at += 4),
        _ => None,
    }
}

/// The payload of the first length-delimited field `number` of a message.
fn field(b: &[u8], number: u64) -> Option<&[u8]> {
    let mut at = 0;
    while at < b.len() {
        let key = read_varint(b, &mut at)?;
        if key >> 3 == number && key & 7 == u64::from(LEN) {
            let n = usize::try_from(read_varint(b, &mut at)?).ok()?;
            return b.get(at..at + n);
        }
        skip(b, &mut at, key & 7)?;
    }
    None
}

fn first_varint(b: &[u8], number: u64) -> Option<u64> {
    let mut at = 0;
    while at < b.len() {
        let key = read_varint(b, &mut at)?;
        if key >> 3 == number && key & 7 == u64::from(VARINT) {
            return read_varint(b, &mut at);
        }
        skip(b, &mut at, key & 7)?;
    }
    None
}
