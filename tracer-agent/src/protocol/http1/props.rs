//! Property tests of the HTTP/1 assembly: however the kernel cut a connection's bytes into
//! syscalls, the exchanges found are the same (method, target, status, trace context), and they
//! are the ones that were sent. Keep-alive exchanges one after another, and pipelined requests
//! (every request, then every response), as client and as server.

use std::ops::Range;

use proptest::{collection::vec, prelude::*};

use super::{Conn, Http1Stats, Report};
use crate::{
    protocol::{
        Chunk, Direction, Exchange, ExchangeSink, Role,
        http::{Head, StartLine},
    },
    trace::{
        context::{Propagator, extract},
        ids::{SpanId, TraceId},
    },
};

/// What an exchange must come out as.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    status: Option<u16>,
    ids: Option<(TraceId, SpanId)>,
}

#[derive(Default)]
struct Recorder {
    done: Vec<Seen>,
}

impl ExchangeSink for Recorder {
    type Started = ();

    fn request(&mut self, _: Role, _: u32, _: u32, _: &Head) {}

    fn finish(&mut self, x: Exchange<()>, _end_ns: u64) {
        let StartLine::Request { method, target } = &x.request.start else {
            panic!("an exchange whose request is a response: {:?}", x.request);
        };
        let status = x.response.as_ref().map(|r| match r.start {
            StartLine::Response { status } => status,
            StartLine::Request { .. } => panic!("a request as the response"),
        });
        self.done.push(Seen {
            method: method.to_string(),
            target: target.to_string(),
            status,
            ids: extract(&x.request.context, &Propagator::ALL).and_then(|c| c.ids),
        });
    }
}

/// How a request carries its trace context.
#[derive(Clone, Copy, Debug)]
enum Carrier {
    None,
    B3Multi,
    B3Single,
    TraceParent,
}

/// How a message's body is framed.
#[derive(Clone, Debug)]
enum Body {
    None,
    Length(Vec<u8>),
    Chunked(Vec<Vec<u8>>),
}

#[derive(Clone, Debug)]
struct Case {
    method: &'static str,
    path: String,
    carrier: Carrier,
    trace: [u8; 16],
    span: [u8; 8],
    request_body: Body,
    status: u16,
    response_body: Body,
}

fn body_bytes(body: &Body, head: &mut Vec<u8>) {
    match body {
        Body::None => head.extend_from_slice(b"\r\n"),
        Body::Length(b) => {
            head.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            head.extend_from_slice(b);
        }
        Body::Chunked(chunks) => {
            head.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in chunks.iter().filter(|c| !c.is_empty()) {
                head.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                head.extend_from_slice(c);
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

impl Case {
    fn request(&self) -> Vec<u8> {
        let mut r = format!(
            "{} {} HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: prop/1\r\n",
            self.method, self.path
        )
        .into_bytes();
        let (t, s) = (TraceId(self.trace), SpanId(self.span));
        let context = match self.carrier {
            Carrier::None => String::new(),
            Carrier::B3Multi => {
                format!("X-B3-TraceId: {t}\r\nX-B3-SpanId: {s}\r\nX-B3-Sampled: 1\r\n")
            }
            Carrier::B3Single => format!("b3: {t}-{s}-1\r\n"),
            Carrier::TraceParent => format!("traceparent: 00-{t}-{s}-01\r\n"),
        };
        r.extend_from_slice(context.as_bytes());
        // A HEAD or GET request with a body is legal but odd; only POST and PUT carry one.
        let body = if matches!(self.method, "POST" | "PUT") {
            &self.request_body
        } else {
            &Body::None
        };
        body_bytes(body, &mut r);
        r
    }

    fn response(&self) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {} Whatever\r\nServer: prop\r\n", self.status).into_bytes();
        // A response to HEAD, a 204 and a 304 have no body, whatever their head says.
        if self.method == "HEAD" || matches!(self.status, 204 | 304) {
            r.extend_from_slice(b"\r\n");
        } else if let Body::None = self.response_body {
            // Without a length a response runs until the connection closes.
            r.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        } else {
            body_bytes(&self.response_body, &mut r);
        }
        r
    }

    fn expected(&self) -> Seen {
        let ids = match self.carrier {
            Carrier::None => None,
            _ => Some((TraceId(self.trace), SpanId(self.span))),
        };
        Seen {
            method: self.method.to_owned(),
            target: self.path.clone(),
            status: Some(self.status),
            ids,
        }
    }
}

fn body() -> impl Strategy<Value = Body> {
    let bytes = vec(any::<u8>(), 0..40);
    prop_oneof![
        Just(Body::None),
        bytes.clone().prop_map(Body::Length),
        vec(bytes, 0..4).prop_map(Body::Chunked),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
        "/[a-z0-9/._-]{0,20}(\\?[a-z=&0-9]{1,10})?",
        prop_oneof![
            Just(Carrier::None),
            Just(Carrier::B3Multi),
            Just(Carrier::B3Single),
            Just(Carrier::TraceParent),
        ],
        any::<[u8; 16]>().prop_filter("a zero trace id is invalid", |t| *t != [0; 16]),
        any::<[u8; 8]>().prop_filter("a zero span id is invalid", |s| *s != [0; 8]),
        body(),
        prop::sample::select(vec![200u16, 201, 204, 301, 304, 404, 500, 503]),
        body(),
    )
        .prop_map(
            |(method, path, carrier, trace, span, request_body, status, response_body)| Case {
                method,
                path,
                carrier,
                trace,
                span,
                request_body,
                status,
                response_body,
            },
        )
}

/// `bytes` cut at the given positions (taken modulo its length, any order, duplicates ignored).
fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Range<usize>> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % bytes.len().max(1))
        .filter(|&c| c > 0)
        .collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        out.push(start..c);
        start = c;
    }
    out
}

/// Feeds `(direction, bytes, cuts)` in order, each cut into syscalls, then closes; returns the
/// exchanges found.
fn assemble(role: Role, parts: &[(bool, Vec<u8>, Vec<usize>)]) -> Vec<Seen> {
    let mut sink = Recorder::default();
    let mut stats = Http1Stats::default();
    let mut conn = Conn::<Recorder>::new(1, 0);
    let mut t = 1_000;
    for (is_request, bytes, cuts) in parts {
        let dir = match (role, is_request) {
            (Role::Server, true) | (Role::Client, false) => Direction::Ingress,
            (Role::Server, false) | (Role::Client, true) => Direction::Egress,
        };
        for r in split(bytes, cuts) {
            t += 1_000;
            let chunk = Chunk {
                data: &bytes[r],
                gap: 0,
                tail: &[],
                start_ns: t,
                end_ns: t + 10,
                kernel: &[],
            };
            conn.feed(
                dir,
                7,
                None,
                &chunk,
                &mut Report {
                    sink: &mut sink,
                    stats: &mut stats,
                },
            );
        }
    }
    conn.close(&mut Report {
        sink: &mut sink,
        stats: &mut stats,
    });
    assert_eq!(stats.streams.malformed_heads, 0, "{stats:?}");
    sink.done
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(any::<usize>(), 0..12)
}

proptest! {
    #[test]
    fn keep_alive_exchanges_split_anywhere_are_the_exchanges_sent(
        role in role(),
        cases in vec((case(), cuts(), cuts()), 1..4),
    ) {
        let split: Vec<_> = cases
            .iter()
            .flat_map(|(c, rc, pc)| [(true, c.request(), rc.clone()), (false, c.response(), pc.clone())])
            .collect();
        let whole: Vec<_> = split.iter().map(|(r, b, _)| (*r, b.clone(), Vec::new())).collect();
        let expected: Vec<_> = cases.iter().map(|(c, _, _)| c.expected()).collect();
        prop_assert_eq!(assemble(role, &whole), expected.clone());
        prop_assert_eq!(assemble(role, &split), expected);
    }

    #[test]
    fn pipelined_requests_split_anywhere_are_the_exchanges_sent(
        role in role(),
        cases in vec(case(), 1..5),
        request_cuts in cuts(),
        response_cuts in cuts(),
    ) {
        let requests: Vec<u8> = cases.iter().flat_map(Case::request).collect();
        let responses: Vec<u8> = cases.iter().flat_map(Case::response).collect();
        let expected: Vec<_> = cases.iter().map(Case::expected).collect();
        let whole = [(true, requests.clone(), Vec::new()), (false, responses.clone(), Vec::new())];
        prop_assert_eq!(assemble(role, &whole), expected.clone());
        let split = [(true, requests, request_cuts), (false, responses, response_cuts)];
        prop_assert_eq!(assemble(role, &split), expected);
    }
}
