//! A decoded header block read as an HTTP head: the pseudo-headers (`:method`, `:path`,
//! `:authority`, `:scheme`, `:status`), the headers the tracer uses (`content-type`,
//! `user-agent`, `host`, `content-length`, `grpc-status`, `grpc-message`) and the trace-context
//! headers. The values kept are copied into one buffer per block that the head's texts share;
//! no other value is kept (credentials never are).
//!
//! A field whose name refers to an unknown table entry while its value is a literal (a
//! connection picked up mid-way: the name was indexed before the agent started) is recognised
//! by its value when that value can only be a `traceparent` or a single `b3` header, and B3
//! multi headers by the shapes of the block's nameless values together (`b3_multi_by_shape`):
//! trace context is what a mid-way connection must not lose.

use bytes::Bytes;
use tracer_common::http as names;

use super::hpack::Field;
use crate::protocol::http::{ContextHeaders, Head, StartLine, Text, Version};

/// What a header block says, as far as it was decoded.
#[derive(Clone, Debug, Default)]
pub struct Decoded {
    pub method: Option<Text>,
    pub path: Option<Text>,
    pub authority: Option<Text>,
    pub scheme: Option<Text>,
    pub status: Option<u16>,
    pub content_type: Option<Text>,
    pub user_agent: Option<Text>,
    pub content_length: Option<u64>,
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<Text>,
    pub context: ContextHeaders,
    /// Fields that referred to an unknown table entry (name, value or both).
    pub unknown: u32,
    /// The block was cut (capture, loss or bound): fields may be missing.
    pub cut: bool,
}

/// Names whose values a head keeps (HTTP/2 sends them lowercase).
const KEPT: [&str; 17] = [
    ":method",
    ":path",
    ":authority",
    ":scheme",
    ":status",
    "content-type",
    "user-agent",
    "host",
    "content-length",
    "grpc-status",
    GRPC_MESSAGE,
    names::B3_TRACE_ID,
    names::B3_SPAN_ID,
    names::B3_SAMPLED,
    names::B3_FLAGS,
    names::B3_SINGLE,
    names::TRACEPARENT,
];
const GRPC_MESSAGE: &str = "grpc-message";

fn is_hex(s: &str, lens: &[usize]) -> bool {
    lens.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The context header a value of unknown name can only be, by its shape.
fn context_name_by_shape(value: &[u8]) -> Option<&'static str> {
    let v = std::str::from_utf8(value).ok()?;
    let parts: Vec<&str> = v.split('-').collect();
    match parts.as_slice() {
        [ver, t, s, flags]
            if is_hex(ver, &[2]) && is_hex(t, &[32]) && is_hex(flags, &[2]) && is_hex(s, &[16]) =>
        {
            Some(names::TRACEPARENT)
        }
        [t, s, rest @ ..]
            if is_hex(t, &[16, 32])
                && is_hex(s, &[16])
                && match rest {
                    [] => true,
                    [d] => matches!(*d, "0" | "1" | "d"),
                    [d, p] => matches!(*d, "0" | "1" | "d") && is_hex(p, &[16]),
                    _ => false,
                } =>
        {
            Some(names::B3_SINGLE)
        }
        _ => None,
    }
}

/// The `x-b3-*` headers among literal values whose names referred to unknown entries (an
/// encoder that indexes header names, as grpc-go's does, sends every later call's B3 values as
/// literals under indexed names): the one 32-hex value is the trace id, and then the one 16-hex
/// value the span id, the one `0`/`1` value the sampling decision. Anything ambiguous (64-bit
/// trace ids, which look like span ids; a parent span id next to the span id) is left unread.
fn b3_multi_by_shape<'a>(values: &[&'a Bytes]) -> Vec<(&'static str, &'a Bytes)> {
    let of_shape = |test: &dyn Fn(&str) -> bool| -> Vec<&'a Bytes> {
        values
            .iter()
            .filter(|v| std::str::from_utf8(v).is_ok_and(test))
            .copied()
            .collect()
    };
    let traces = of_shape(&|v| is_hex(v, &[32]));
    let [trace] = traces.as_slice() else {
        return Vec::new();
    };
    let mut out = vec![(names::B3_TRACE_ID, *trace)];
    if let [span] = of_shape(&|v| is_hex(v, &[16])).as_slice() {
        out.push((names::B3_SPAN_ID, *span));
    }
    if let [sampled] = of_shape(&|v| v == "0" || v == "1").as_slice() {
        out.push((names::B3_SAMPLED, *sampled));
    }
    out
}

/// Reads the fields of one header block.
#[must_use]
pub fn decode(fields: &[Field], cut: bool) -> Decoded {
    let mut unknown = 0u32;
    // (name, value range) of each value kept, in a buffer of their own.
    let mut buf = Vec::new();
    let mut kept: Vec<(&'static str, usize, usize)> = Vec::new();
    // Literal values whose names referred to unknown entries, and are no context by shape.
    let mut nameless: Vec<&Bytes> = Vec::new();
    for f in fields {
        let name = match (&f.name, &f.value) {
            (Some(n), Some(_)) => {
                let Ok(n) = std::str::from_utf8(n) else {
                    continue;
                };
                KEPT.iter().find(|k| n.eq_ignore_ascii_case(k)).copied()
            }
            (None, Some(v)) => {
                unknown += 1;
                let name = context_name_by_shape(v);
                if name.is_none() {
                    nameless.push(v);
                }
                name
            }
            _ => {
                unknown += 1;
                None
            }
        };
        let (Some(name), Some(value)) = (name, &f.value) else {
            continue;
        };
        let at = buf.len();
        buf.extend_from_slice(value);
        kept.push((name, at, buf.len()));
        // Values apart, as in a head: trimming never reaches into the next one.
        buf.push(b'\n');
    }
    for (name, value) in b3_multi_by_shape(&nameless) {
        let at = buf.len();
        buf.extend_from_slice(value);
        kept.push((name, at, buf.len()));
        buf.push(b'\n');
    }
    let whole = Bytes::from(buf);
    let mut d = Decoded {
        unknown,
        cut,
        ..Decoded::default()
    };
    for (name, start, end) in kept {
        let raw = &whole[start..end];
        let text = || Some(Text::slice_of(&whole, raw));
        let first = |slot: &mut Option<Text>| {
            if slot.is_none() {
                *slot = text();
            }
        };
        match name {
            ":method" => first(&mut d.method),
            ":path" => first(&mut d.path),
            ":authority" => first(&mut d.authority),
            "host" => {
                if d.authority.is_none() {
                    d.authority = text();
                }
            }
            ":scheme" => first(&mut d.scheme),
            "content-type" => first(&mut d.content_type),
            "user-agent" => first(&mut d.user_agent),
            GRPC_MESSAGE => first(&mut d.grpc_message),
            ":status" => d.status = d.status.or_else(|| number(raw)),
            "content-length" => d.content_length = d.content_length.or_else(|| number(raw)),
            "grpc-status" => d.grpc_status = d.grpc_status.or_else(|| number(raw)),
            _ => d.context.offer(&whole, name, raw),
        }
    }
    d
}

fn number<T: std::str::FromStr>(raw: &[u8]) -> Option<T> {
    std::str::from_utf8(raw).ok()?.trim().parse().ok()
}

impl Decoded {
    /// Whether the block announces gRPC (`content-type: application/grpc...`) or carries its
    /// status.
    #[must_use]
    pub fn is_grpc(&self) -> bool {
        self.grpc_status.is_some()
            || self
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/grpc"))
    }

    /// Trailers: a block decoded whole, without a pseudo-header and without a field of an
    /// unknown table entry (which might have been one). It never opens a stream: on a stream not
    /// seen it ends an exchange whose start the agent missed or has not had reported yet.
    #[must_use]
    pub fn is_trailers(&self) -> bool {
        self.method.is_none()
            && self.path.is_none()
            && self.authority.is_none()
            && self.scheme.is_none()
            && self.status.is_none()
            && self.unknown == 0
            && !self.cut
    }

    /// The block as a request head (an unknown method or path reads as empty).
    #[must_use]
    pub fn request_head(&self, start_ns: u64) -> Head {
        Head {
            start: StartLine::Request {
                method: self.method.clone().unwrap_or_default(),
                target: self.path.clone().unwrap_or_default(),
            },
            ..self.head(start_ns)
        }
    }

    /// The block as a response head (an unknown status reads as 0).
    #[must_use]
    pub fn response_head(&self, start_ns: u64) -> Head {
        Head {
            start: StartLine::Response {
                status: self.status.unwrap_or(0),
            },
            ..self.head(start_ns)
        }
    }

    fn head(&self, start_ns: u64) -> Head {
        Head {
            start: StartLine::Response { status: 0 },
            version: Version::Http2,
            host: self.authority.clone(),
            user_agent: self.user_agent.clone(),
            content_length: self.content_length,
            chunked: false,
            context: self.context.clone(),
            truncated: self.cut,
            malformed: false,
            start_ns,
            kernel: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: Option<&str>, v: Option<&str>) -> Field {
        Field {
            name: n.map(|n| Bytes::copy_from_slice(n.as_bytes())),
            value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        }
    }

    #[test]
    fn reads_pseudo_headers_context_and_nothing_else() {
        let d = decode(
            &[
                field(Some(":method"), Some("POST")),
                field(Some(":path"), Some("/pkg.Svc/Call")),
                field(Some(":authority"), Some("svc:50051")),
                field(Some("authorization"), Some("Bearer s3cr3t")),
                field(Some("content-type"), Some("application/grpc+proto")),
                field(Some("x-b3-traceid"), Some("463ac35c9f6413ad")),
                field(Some("x-b3-spanid"), Some("a2fb4a1d1a96d312")),
                field(None, None),
            ],
            false,
        );
        assert_eq!(d.method.as_deref(), Some("POST"));
        assert_eq!(d.path.as_deref(), Some("/pkg.Svc/Call"));
        assert_eq!(d.authority.as_deref(), Some("svc:50051"));
        assert!(d.is_grpc());
        assert_eq!(d.context.b3_trace_id(), Some("463ac35c9f6413ad"));
        assert_eq!(d.context.b3_span_id(), Some("a2fb4a1d1a96d312"));
        assert_eq!(d.unknown, 1);
        let head = d.request_head(5);
        assert!(!format!("{head:?}").contains("s3cr3t"), "credentials kept");
    }

    #[test]
    fn context_values_of_unknown_names_are_recognised_by_shape() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let d = decode(
            &[
                field(None, Some(tp)),
                field(
                    None,
                    Some("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
                ),
                field(None, Some("some-other-value")),
                field(None, Some("463ac35c9f6413ad")),
            ],
            false,
        );
        assert_eq!(d.context.traceparent(), Some(tp));
        assert_eq!(
            d.context.b3(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")
        );
        assert_eq!(
            d.context.b3_trace_id(),
            None,
            "a bare id could be any of them"
        );
        assert_eq!(d.unknown, 4);
    }

    #[test]
    fn b3_multi_values_of_unknown_names_are_read_together_when_unambiguous() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let d = decode(
            &[
                field(Some(":method"), Some("POST")),
                field(None, Some(trace)),
                field(None, Some("00f067aa0ba902b7")),
                field(None, Some("1")),
                field(None, Some("grpc-go/1.33.3")),
            ],
            false,
        );
        assert_eq!(d.context.b3_trace_id(), Some(trace));
        assert_eq!(d.context.b3_span_id(), Some("00f067aa0ba902b7"));
        assert_eq!(d.context.b3_sampled(), Some("1"));
        // A parent span id next to the span id: which is which cannot be told.
        let d = decode(
            &[
                field(None, Some(trace)),
                field(None, Some("00f067aa0ba902b7")),
                field(None, Some("a2fb4a1d1a96d312")),
            ],
            false,
        );
        assert_eq!(d.context.b3_trace_id(), Some(trace));
        assert_eq!(d.context.b3_span_id(), None);
        // 64-bit trace ids look like span ids: nothing is read.
        let d = decode(
            &[
                field(None, Some("463ac35c9f6413ad")),
                field(None, Some("00f067aa0ba902b7")),
            ],
            false,
        );
        assert_eq!(d.context.b3_trace_id(), None);
        assert_eq!(d.context.b3_span_id(), None);
    }

    #[test]
    fn trailers_and_status() {
        let d = decode(
            &[
                field(Some(":status"), Some("200")),
                field(Some("grpc-status"), Some("14")),
                field(Some("grpc-message"), Some("unavailable%20now")),
            ],
            false,
        );
        assert_eq!(d.status, Some(200));
        assert_eq!(d.grpc_status, Some(14));
        assert_eq!(d.grpc_message.as_deref(), Some("unavailable%20now"));
        assert!(d.is_grpc());
        assert_eq!(
            d.response_head(1).start,
            StartLine::Response { status: 200 }
        );
    }
}
