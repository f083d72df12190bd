//! Span names and attributes after the OpenTelemetry HTTP semantic conventions (stable,
//! v1.23+): `http.request.method`, `url.path`, `http.response.status_code`, `server.address`,
//! `client.address`, `network.peer.*`, `user_agent.original`, and for errors `error.type`.
//! Header values other than Host and User-Agent are never copied into a span.
//!
//! HTTP/2 adds `network.protocol.name` = `http` (version `2`); a method, path or status that
//! referred to an HPACK table entry the agent never saw (a connection picked up mid-way) is
//! left out (the method reads `_OTHER`), and `tracer.http2.unknown_fields` says how many fields
//! were unknown. A reset stream carries `tracer.http2.reset_code` (the `RST_STREAM` error code).
//! gRPC calls get the RPC conventions ([`rpc`](super::rpc)).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use tracer_common::http::METHODS;

use super::{
    clock::Clock,
    rpc,
    span::{AttrValue, Resource, Span, SpanKind, Status},
    tracker::Identity,
};
use crate::protocol::{
    self,
    http::{StartLine, Text},
};

/// Peer addresses as text, formatted once rather than for every span of a connection.
#[derive(Default)]
pub struct PeerNames(HashMap<IpAddr, Text>);

impl PeerNames {
    /// Formatted addresses kept at most; the cache starts over beyond it.
    const MAX: usize = 4096;

    fn text(&mut self, ip: IpAddr) -> Text {
        if let Some(t) = self.0.get(&ip) {
            return t.clone();
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let t = Text::from(ip.to_string());
        self.0.insert(ip, t.clone());
        t
    }
}

/// What the trace side decided when the request was seen: the ids the span carries and the
/// resource of its process.
#[derive(Debug)]
pub struct SpanStart {
    pub identity: Identity,
    pub resource: Arc<Resource>,
}

/// An exchange as the protocols report it, with its span's start.
pub type Exchange = protocol::Exchange<SpanStart>;

/// Splits a request target into path and query; absolute-form targets lose scheme and host.
fn split_target(target: &str) -> (&str, Option<&str>) {
    let without_authority = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .map_or(target, |rest| rest.find('/').map_or("/", |i| &rest[i..]));
    match without_authority.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_authority, None),
    }
}

/// `host[:port]` (IPv6 in brackets) to address and port.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((addr, after)) = rest.split_once(']')
    {
        return (addr, after.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

type Attrs = Vec<(&'static str, AttrValue)>;

/// Method, path, query, scheme and protocol version of the request.
fn request_attributes(x: &Exchange, method: &Text, target: &Text, attrs: &mut Attrs) {
    if let Some(m) = known_method(method) {
        attrs.push(("http.request.method", AttrValue::Static(m)));
    } else {
        attrs.push(("http.request.method", AttrValue::Static("_OTHER")));
        // Empty: HTTP/2's method was an unknown table entry.
        if !method.is_empty() {
            attrs.push(("http.request.method_original", method.clone().into()));
        }
    }
    let (path, query) = split_target(target);
    if !target.is_empty() {
        attrs.push(("url.path", target.sub(path).into()));
    }
    if let Some(q) = query {
        let value = super::redact::query(q).map_or_else(|| target.sub(q).into(), AttrValue::from);
        attrs.push(("url.query", value));
    }
    attrs.push(("url.scheme", AttrValue::Static("http")));
    if x.http2.is_some() {
        attrs.push(("network.protocol.name", AttrValue::Static("http")));
    }
    attrs.push((
        "network.protocol.version",
        AttrValue::Static(x.request.version.as_str()),
    ));
    if let Some(ua) = &x.request.user_agent {
        attrs.push(("user_agent.original", ua.clone().into()));
    }
}

/// server.*, client.* and network.peer.*: from the Host header and the socket.
fn endpoint_attributes(x: &Exchange, target: &str, peers: &mut PeerNames, attrs: &mut Attrs) {
    let kind = SpanKind::from(x.role);
    match (&x.request.host, kind, x.peer) {
        (Some(host), _, _) => {
            let (h, port) = split_host(host);
            attrs.push(("server.address", host.sub(h).into()));
            if let Some(p) = port {
                attrs.push(("server.port", i64::from(p).into()));
            }
        }
        (None, SpanKind::Client, Some(peer)) => {
            attrs.push(("server.address", peers.text(peer.ip()).into()));
            attrs.push(("server.port", i64::from(peer.port()).into()));
        }
        _ => {}
    }
    if let Some(peer) = x.peer {
        let ip = AttrValue::from(peers.text(peer.ip()));
        if kind == SpanKind::Server {
            attrs.push(("client.address", ip.clone()));
        }
        attrs.push(("network.peer.address", ip));
        attrs.push(("network.peer.port", i64::from(peer.port()).into()));
    }
    if kind == SpanKind::Client {
        let authority = x
            .request
            .host
            .as_deref()
            .map(str::to_owned)
            .or_else(|| x.peer.map(|p| p.to_string()));
        if let Some(a) = authority {
            let full = if target.starts_with("http://") {
                target.to_owned()
            } else {
                format!("http://{a}{target}")
            };
            let full = super::redact::url(&full).unwrap_or(full);
            attrs.push(("url.full", full.into()));
        }
    }
}

/// Status code attribute and span status: an error is 5xx for a server, 4xx and 5xx for a
/// client, and no response at all.
fn response_status(x: &Exchange, attrs: &mut Attrs) -> Status {
    let status = x.response.as_ref().and_then(|r| match r.start {
        StartLine::Response { status } => Some(status),
        StartLine::Request { .. } => None,
    });
    let error_from = if x.role == protocol::Role::Server {
        500
    } else {
        400
    };
    let Some(code) = status else {
        attrs.push(("error.type", AttrValue::Static("incomplete")));
        return Status::Error("connection closed or timed out before the response".into());
    };
    if code == 0 {
        // HTTP/2: the status was an unknown table entry; the response came.
        return Status::Unset;
    }
    attrs.push(("http.response.status_code", i64::from(code).into()));
    if code >= error_from {
        attrs.push(("error.type", code.to_string().into()));
        Status::Error(String::new())
    } else {
        Status::Unset
    }
}

/// The method as the conventions name it, when it is one of the standard ones.
fn known_method(method: &str) -> Option<&'static str> {
    METHODS.into_iter().find(|m| *m == method)
}

/// Builds the span for an exchange that ended at `end_ns` (kernel time).
#[must_use]
pub fn build_span(x: &Exchange, end_ns: u64, clock: Clock, peers: &mut PeerNames) -> Span {
    let fallback;
    let (method, target) = match &x.request.start {
        StartLine::Request { method, target } => (method, target),
        StartLine::Response { .. } => {
            fallback = (Text::from_static("_OTHER"), Text::from_static(""));
            (&fallback.0, &fallback.1)
        }
    };
    let mut attrs: Attrs = Vec::with_capacity(16);
    request_attributes(x, method, target, &mut attrs);
    endpoint_attributes(x, target, peers, &mut attrs);
    let http2 = x.http2.as_deref();
    let grpc = http2.and_then(|h| h.grpc.as_ref().map(|g| (h, g)));
    let status = match grpc {
        Some((h, g)) => {
            let http_status = x.response.as_ref().and_then(|r| match r.start {
                StartLine::Response { status } if status > 0 => Some(status),
                _ => None,
            });
            if let Some(code) = http_status {
                attrs.push(("http.response.status_code", i64::from(code).into()));
            }
            rpc::attributes(target, g, &mut attrs);
            rpc::status(x.role, h, g, http_status, &mut attrs)
        }
        None => response_status(x, &mut attrs),
    };
    if let Some(h) = http2 {
        if h.unknown_fields > 0 {
            attrs.push((
                "tracer.http2.unknown_fields",
                i64::from(h.unknown_fields).into(),
            ));
        }
        if let Some(code) = h.reset {
            attrs.push(("tracer.http2.reset_code", i64::from(code).into()));
        }
    }
    let truncated = x.request.truncated || x.response.as_ref().is_some_and(|r| r.truncated);
    if truncated {
        attrs.push(("tracer.capture.truncated", true.into()));
    }
    attrs.push((
        "tracer.context.source",
        AttrValue::Static(x.started.identity.source.map_or("none", |s| s.name())),
    ));
    let name = match grpc {
        Some(_) => rpc::span_name(target),
        None => Text::from_static(known_method(method).unwrap_or("HTTP")),
    };
    let start = clock.to_unix_nanos(x.request.start_ns);
    let identity = &x.started.identity;
    Span {
        trace_id: identity.trace_id,
        span_id: identity.span_id,
        parent_span_id: identity.parent,
        kind: x.role.into(),
        name,
        start_unix_nanos: start,
        end_unix_nanos: clock.to_unix_nanos(end_ns).max(start),
        attributes: attrs,
        status,
        resource: x.started.resource.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_hosts() {
        assert_eq!(split_target("/a/b?x=1&y"), ("/a/b", Some("x=1&y")));
        assert_eq!(split_target("http://h:8/p?q"), ("/p", Some("q")));
        assert_eq!(split_target("http://h"), ("/", None));
        assert_eq!(split_target("*"), ("*", None));
        assert_eq!(split_host("svc.ns:8080"), ("svc.ns", Some(8080)));
        assert_eq!(split_host("svc"), ("svc", None));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("::1"), ("::1", None));
    }
}
