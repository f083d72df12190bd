//! gRPC exchanges as spans, after the OpenTelemetry RPC and gRPC semantic conventions:
//! `rpc.system` = `grpc`, `rpc.service` and `rpc.method` from the path
//! (`/package.Service/Method`), `rpc.grpc.status_code` from the trailers, span name
//! `package.Service/Method` (`grpc` when the path is unknown), and the span status: a SERVER
//! span is an error for the codes that mean a server fault (UNKNOWN, `DEADLINE_EXCEEDED`,
//! UNIMPLEMENTED, INTERNAL, UNAVAILABLE, `DATA_LOSS`), a CLIENT span for every code but OK. A call
//! without a status (reset, cut by a GOAWAY or the connection's end) is an error. A response
//! that is not HTTP 200 and carries no `grpc-status` (a proxy's error page: Envoy answering 503
//! for an unreachable upstream) gets the code gRPC's HTTP mapping gives it
//! (doc/http-grpc-status-mapping.md in the gRPC repository).
//!
//! The conventions have no attribute for message counts; the agent adds its own:
//! `tracer.grpc.request.message_count`, `tracer.grpc.response.message_count`, and
//! `tracer.grpc.message_count_estimated` when some message starts were not captured.

use super::span::{AttrValue, SpanKind, Status};
use crate::protocol::{
    Role,
    http::Text,
    http2::{Grpc, Http2Info},
};

type Attrs = Vec<(&'static str, AttrValue)>;

/// The canonical names of the gRPC status codes, by code.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Codes that make a SERVER span an error.
const SERVER_ERRORS: [u32; 6] = [2, 4, 12, 13, 14, 15];

/// Service and method of a gRPC path (`/package.Service/Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The span name of a call to `path`.
#[must_use]
pub fn span_name(path: &Text) -> Text {
    match split_path(path) {
        Some(_) => path.sub(&path[1..]),
        None => Text::from_static("grpc"),
    }
}

/// The `rpc.*` attributes and message counts of a call.
pub fn attributes(path: &Text, g: &Grpc, attrs: &mut Attrs) {
    attrs.push(("rpc.system", AttrValue::Static("grpc")));
    if let Some((service, method)) = split_path(path) {
        attrs.push(("rpc.service", path.sub(service).into()));
        attrs.push(("rpc.method", path.sub(method).into()));
    }
    attrs.push((
        "tracer.grpc.request.message_count",
        i64::try_from(g.request_messages).unwrap_or(i64::MAX).into(),
    ));
    attrs.push((
        "tracer.grpc.response.message_count",
        i64::try_from(g.response_messages)
            .unwrap_or(i64::MAX)
            .into(),
    ));
    if g.counts_estimated {
        attrs.push(("tracer.grpc.message_count_estimated", true.into()));
    }
}

/// `rpc.grpc.status_code`, `error.type` and the span status of a call.
/// The gRPC code of an HTTP status that is not 200, for a response without `grpc-status`.
fn from_http(status: u16) -> Option<u32> {
    match status {
        200 => None,
        400 => Some(13),
        401 => Some(16),
        403 => Some(7),
        404 => Some(12),
        429 | 502..=504 => Some(14),
        _ => Some(2),
    }
}

pub fn status(
    role: Role,
    info: &Http2Info,
    g: &Grpc,
    http_status: Option<u16>,
    attrs: &mut Attrs,
) -> Status {
    let Some(code) = g.status.or_else(|| http_status.and_then(from_http)) else {
        let why = if info.reset.is_some() {
            "stream reset before the gRPC status"
        } else if info.goaway {
            "connection going away before the gRPC status"
        } else {
            "connection closed or timed out before the gRPC status"
        };
        attrs.push(("error.type", AttrValue::Static("incomplete")));
        return Status::Error(why.into());
    };
    attrs.push(("rpc.grpc.status_code", i64::from(code).into()));
    let error = match SpanKind::from(role) {
        SpanKind::Server => SERVER_ERRORS.contains(&code),
        SpanKind::Client => code != 0,
    };
    if !error {
        return Status::Unset;
    }
    let name = CODES.get(code as usize).copied();
    attrs.push((
        "error.type",
        name.map_or_else(|| code.to_string().into(), AttrValue::Static),
    ));
    Status::Error(
        g.message
            .as_ref()
            .map_or_else(|| name.unwrap_or_default().to_owned(), ToString::to_string),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_paths() {
        assert_eq!(
            &*span_name(&Text::from_static("/helloworld.Greeter/SayHello")),
            "helloworld.Greeter/SayHello"
        );
        assert_eq!(&*span_name(&Text::from_static("")), "grpc");
        assert_eq!(&*span_name(&Text::from_static("/a/b/c")), "grpc");
        assert_eq!(split_path("/p.S/M"), Some(("p.S", "M")));
    }

    #[test]
    fn status_rules_differ_by_kind() {
        let info = Http2Info::default();
        let g = |code| Grpc {
            status: Some(code),
            ..Grpc::default()
        };
        let mut a = Vec::new();
        // NOT_FOUND: the client's error, not the server's.
        assert_eq!(
            status(Role::Server, &info, &g(5), Some(200), &mut a),
            Status::Unset
        );
        assert!(matches!(
            status(Role::Client, &info, &g(5), Some(200), &mut a),
            Status::Error(_)
        ));
        for code in SERVER_ERRORS {
            assert!(matches!(
                status(Role::Server, &info, &g(code), None, &mut a),
                Status::Error(_)
            ));
        }
        assert_eq!(
            status(Role::Client, &info, &g(0), Some(200), &mut a),
            Status::Unset
        );
        let mut a = Vec::new();
        let none = Grpc::default();
        assert!(matches!(
            status(Role::Server, &info, &none, Some(200), &mut a),
            Status::Error(_)
        ));
        assert_eq!(a, vec![("error.type", AttrValue::Static("incomplete"))]);
    }

    #[test]
    fn a_proxy_error_without_grpc_status_maps_to_a_grpc_code() {
        let info = Http2Info::default();
        let none = Grpc::default();
        let mut a = Vec::new();
        assert!(matches!(
            status(Role::Client, &info, &none, Some(503), &mut a),
            Status::Error(_)
        ));
        assert!(a.contains(&("rpc.grpc.status_code", AttrValue::Int(14))));
        assert!(a.contains(&("error.type", AttrValue::Static("UNAVAILABLE"))));
        let mut a = Vec::new();
        status(Role::Server, &info, &none, Some(404), &mut a);
        assert!(a.contains(&("rpc.grpc.status_code", AttrValue::Int(12))));
        // The trailers' status wins over the HTTP one.
        let ok = Grpc {
            status: Some(0),
            ..Grpc::default()
        };
        let mut a = Vec::new();
        assert_eq!(
            status(Role::Client, &info, &ok, Some(503), &mut a),
            Status::Unset
        );
    }
}
