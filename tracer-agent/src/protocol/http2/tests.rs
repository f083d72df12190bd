//! The HTTP/2 assembly from hand-built record sequences, through the connection table and the
//! agent's own trace side: what it reports is checked as spans. Header blocks are built by a
//! small encoder (`records::build::hpack`): literal fields (what trace context always is), indexed references to
//! the static table, and references to dynamic entries (what a mid-way connection cannot know).

use tracer_common::h2::{
    CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, GOAWAY,
    HEADERS, RST_STREAM, SETTINGS,
};

use super::{
    conn::MAX_STREAMS,
    frames::MAX_BLOCK,
    records::build::{cont, frame, hpack as hp, lost},
};
use crate::{
    protocol::{
        Chunk, Direction,
        table::{
            ConnTable, DataIn,
            tests::{Sink, sink},
        },
    },
    trace::span::{AttrValue, Span, SpanKind, Status},
};

/// Static table entries.
const METHOD_POST: usize = 3;
const STATUS_200: usize = 8;
const SCHEME_HTTP: usize = 6;
/// The first dynamic entry.
const DYN: usize = 62;

const PID: u32 = 1;
const FD: u32 = 3;
const TID: u32 = 7;
const TRACE: &str = "463ac35c9f6413ad";
const PARENT: &str = "a2fb4a1d1a96d312";
const PATH: &str = "/helloworld.Greeter/SayHello";

struct Driver {
    table: ConnTable<Sink>,
    f: Sink,
    t: u64,
    /// Next sequence number per (fd, direction).
    seq: std::collections::HashMap<(u32, usize), u32>,
}

impl Driver {
    fn new() -> Self {
        Self {
            table: ConnTable::new(16),
            f: sink(),
            t: 1_000,
            seq: std::collections::HashMap::new(),
        }
    }

    /// accept/connect of `fd`: followed from its start.
    fn open(&mut self, fd: u32) {
        self.t += 1_000;
        self.table.on_connect(PID, fd, None, self.t, &mut self.f);
    }

    fn event(&mut self, fd: u32, dir: Direction, frames: bool, data: &[u8]) {
        self.event_at(fd, dir, frames, self.t + 1_000, data);
    }

    /// An event whose syscall began at `start_ns`.
    fn event_at(&mut self, fd: u32, dir: Direction, frames: bool, start_ns: u64, data: &[u8]) {
        let seq = self.seq.entry((fd, dir as usize)).or_insert(0);
        let s = *seq;
        *seq += 1;
        self.t += 1_000;
        let ev = DataIn {
            pid: PID,
            tid: TID,
            fd,
            direction: dir,
            peer: None,
            seq: Some(s),
            frames,
            h2_raw: false,
            chunk: Chunk {
                data,
                gap: 0,
                tail: &[],
                start_ns,
                end_ns: self.t + 10,
                kernel: &[],
            },
        };
        self.table.on_data(&ev, &mut self.f);
    }

    /// Frame records read (server side) or written (client side) on `FD`.
    fn read(&mut self, recs: &[u8]) {
        self.event(FD, Direction::Ingress, true, recs);
    }

    fn write(&mut self, recs: &[u8]) {
        self.event(FD, Direction::Egress, true, recs);
    }

    /// Skips `n` sequence numbers of a direction: those events were lost.
    fn lose(&mut self, fd: u32, dir: Direction, n: u32) {
        *self.seq.entry((fd, dir as usize)).or_insert(0) += n;
    }

    fn stats(&self) -> super::Http2Stats {
        self.table.stats.http2
    }

    fn span(&self, name: &str) -> &Span {
        self.f
            .spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {:?}", self.names()))
    }

    fn names(&self) -> Vec<String> {
        self.f.spans.iter().map(|s| s.name.to_string()).collect()
    }
}

fn int(s: &Span, key: &str) -> Option<i64> {
    match s.attr(key) {
        Some(AttrValue::Int(i)) => Some(*i),
        _ => None,
    }
}

fn text(s: &Span, key: &str) -> Option<String> {
    s.attr(key).map(ToString::to_string)
}

/// A HEADERS frame carrying all of `block`.
fn headers(out: &mut Vec<u8>, stream: u32, flags: u8, block: &[u8]) {
    frame(
        out,
        HEADERS,
        flags | FLAG_END_HEADERS,
        stream,
        len(block),
        block,
    );
}

/// A DATA frame of `len` bytes starting with one gRPC message prefix (of a `msg`-byte message).
fn data(out: &mut Vec<u8>, stream: u32, flags: u8, len: u32, msg: u32) {
    let mut prefix = vec![0];
    prefix.extend_from_slice(&msg.to_be_bytes());
    frame(out, DATA, flags, stream, len, &prefix);
}

fn settings(out: &mut Vec<u8>) {
    frame(out, SETTINGS, 0, 0, 0, &[]);
}

fn len(b: &[u8]) -> u32 {
    u32::try_from(b.len()).expect("small")
}

/// A gRPC request block: POST and http from the static table, the rest literal.
fn grpc_request(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    hp::indexed(&mut b, METHOD_POST);
    hp::indexed(&mut b, SCHEME_HTTP);
    hp::literal(&mut b, ":path", path.as_bytes());
    hp::literal(&mut b, ":authority", b"greeter:50051");
    hp::literal(&mut b, "content-type", b"application/grpc");
    hp::literal(&mut b, "te", b"trailers");
    b.extend(hp::block(extra));
    b
}

fn grpc_response_head() -> Vec<u8> {
    let mut b = Vec::new();
    hp::indexed(&mut b, STATUS_200);
    hp::literal(&mut b, "content-type", b"application/grpc");
    b
}

fn b3() -> [(&'static str, &'static str); 3] {
    [
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", PARENT),
        ("x-b3-sampled", "1"),
    ]
}

/// What a grpc-go server answers a unary call with, in one read: the head, one message, the
/// trailers (no pseudo-header: only the `END_STREAM` flag says they end the stream).
fn unary_answer(out: &mut Vec<u8>, id: u32, status: &str) {
    headers(out, id, 0, &grpc_response_head());
    data(out, id, 0, 9, 4);
    headers(
        out,
        id,
        FLAG_END_STREAM,
        &hp::block(&[("grpc-status", status)]),
    );
}

/// A unary call served by us on stream `id`: request read, response written.
fn serve_unary(d: &mut Driver, id: u32, path: &str, status: &str) {
    let mut r = Vec::new();
    headers(&mut r, id, 0, &grpc_request(path, &b3()));
    data(&mut r, id, FLAG_END_STREAM, 12, 7);
    d.read(&r);
    let mut w = Vec::new();
    unary_answer(&mut w, id, status);
    d.write(&w);
}

#[test]
fn unary_grpc_server_span_joins_the_callers_b3_context() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    settings(&mut r);
    headers(&mut r, 1, 0, &grpc_request(PATH, &b3()));
    d.read(&r);
    assert_eq!(
        d.f.tracker.inflight_count(),
        1,
        "request known at its HEADERS"
    );
    let mut r = Vec::new();
    data(&mut r, 1, FLAG_END_STREAM, 12, 7);
    d.read(&r);
    let mut w = Vec::new();
    settings(&mut w);
    headers(&mut w, 1, 0, &grpc_response_head());
    data(&mut w, 1, 0, 9, 4);
    d.write(&w);
    assert!(d.f.spans.is_empty(), "no span before the trailers");
    let mut w = Vec::new();
    headers(
        &mut w,
        1,
        FLAG_END_STREAM,
        &hp::block(&[("grpc-status", "0")]),
    );
    d.write(&w);
    let s = d.span("helloworld.Greeter/SayHello");
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.trace_id.to_string(), format!("{TRACE:0>32}"));
    assert_eq!(s.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(text(s, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        text(s, "rpc.service").as_deref(),
        Some("helloworld.Greeter")
    );
    assert_eq!(text(s, "rpc.method").as_deref(), Some("SayHello"));
    assert_eq!(int(s, "rpc.grpc.status_code"), Some(0));
    assert_eq!(int(s, "http.response.status_code"), Some(200));
    assert_eq!(text(s, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(text(s, "url.path").as_deref(), Some(PATH));
    assert_eq!(text(s, "network.protocol.name").as_deref(), Some("http"));
    assert_eq!(text(s, "network.protocol.version").as_deref(), Some("2"));
    assert_eq!(text(s, "server.address").as_deref(), Some("greeter"));
    assert_eq!(int(s, "tracer.grpc.request.message_count"), Some(1));
    assert_eq!(int(s, "tracer.grpc.response.message_count"), Some(1));
    assert_eq!(s.status, Status::Unset);
    assert_eq!(d.f.tracker.inflight_count(), 0);
    let st = d.stats();
    assert_eq!((st.streams, st.exchanges, st.hpack.desyncs), (1, 1, 0));
}

#[test]
fn a_client_call_made_while_serving_is_the_server_spans_child() {
    let mut d = Driver::new();
    d.open(FD);
    d.open(4);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &grpc_request(PATH, &b3()));
    d.read(&r);
    // The app calls downstream, forwarding the trace id with a span id of its own.
    let mut w = Vec::new();
    headers(
        &mut w,
        1,
        0,
        &grpc_request(
            "/pkg.Down/Call",
            &[("x-b3-traceid", TRACE), ("x-b3-spanid", "00000000000000aa")],
        ),
    );
    d.event(4, Direction::Egress, true, &w);
    let mut r = Vec::new();
    headers(
        &mut r,
        1,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", "5")])].concat(),
    );
    d.event(4, Direction::Ingress, true, &r);
    let mut w = Vec::new();
    headers(
        &mut w,
        1,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", "5")])].concat(),
    );
    d.write(&w);
    let server = d.span("helloworld.Greeter/SayHello");
    let client = d.span("pkg.Down/Call");
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, Some(server.span_id));
    // NOT_FOUND: an error for the client, not for the server.
    assert!(matches!(client.status, Status::Error(_)));
    assert_eq!(text(client, "error.type").as_deref(), Some("NOT_FOUND"));
    assert_eq!(server.status, Status::Unset);
}

#[test]
fn server_streaming_counts_every_message() {
    let mut d = Driver::new();
    d.open(FD);
    let mut w = Vec::new();
    headers(&mut w, 1, 0, &grpc_request("/pkg.Feed/Watch", &b3()));
    data(&mut w, 1, FLAG_END_STREAM, 8, 3);
    d.write(&w);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &grpc_response_head());
    d.event(FD, Direction::Ingress, true, &r);
    for _ in 0..5 {
        // Each message in a frame of its own, in events of their own.
        let mut r = Vec::new();
        data(&mut r, 1, 0, 105, 100);
        d.event(FD, Direction::Ingress, true, &r);
    }
    // A message over two frames: the second starts mid-message.
    let mut r = Vec::new();
    data(&mut r, 1, 0, 50, 200);
    frame(&mut r, DATA, 0, 1, 155, &[0x12, 0x34, 0, 0, 0]);
    headers(
        &mut r,
        1,
        FLAG_END_STREAM,
        &hp::block(&[("grpc-status", "0")]),
    );
    d.event(FD, Direction::Ingress, true, &r);
    let s = d.span("pkg.Feed/Watch");
    assert_eq!(s.kind, SpanKind::Client);
    assert_eq!(int(s, "tracer.grpc.request.message_count"), Some(1));
    assert_eq!(int(s, "tracer.grpc.response.message_count"), Some(6));
    assert_eq!(s.attr("tracer.grpc.message_count_estimated"), None);
    assert_eq!(s.status, Status::Unset);
}

#[test]
fn a_trailers_only_error_ends_the_call_with_its_grpc_status() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &grpc_request(PATH, &b3()));
    data(&mut r, 1, FLAG_END_STREAM, 5, 0);
    d.read(&r);
    let mut w = Vec::new();
    let block = [
        grpc_response_head(),
        hp::block(&[("grpc-status", "14"), ("grpc-message", "backend down")]),
    ]
    .concat();
    headers(&mut w, 1, FLAG_END_STREAM, &block);
    d.write(&w);
    let s = d.span("helloworld.Greeter/SayHello");
    assert_eq!(int(s, "rpc.grpc.status_code"), Some(14));
    assert_eq!(s.status, Status::Error("backend down".into()));
    assert_eq!(text(s, "error.type").as_deref(), Some("UNAVAILABLE"));
    assert_eq!(int(s, "tracer.grpc.response.message_count"), Some(0));
}

#[test]
fn concurrent_interleaved_streams_pair_by_id() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    for (id, path) in [(1, "/a"), (3, "/b"), (5, "/c")] {
        let mut b = Vec::new();
        hp::indexed(&mut b, 2); // GET
        hp::literal(&mut b, ":path", path.as_bytes());
        headers(&mut r, id, FLAG_END_STREAM, &b);
    }
    d.read(&r);
    assert_eq!(d.f.tracker.inflight_count(), 3);
    // Answered out of order, interleaved, over several events.
    let status = |code: &str| hp::block(&[(":status", code)]);
    let mut w = Vec::new();
    headers(&mut w, 5, 0, &status("500"));
    headers(&mut w, 1, 0, &status("200"));
    frame(&mut w, DATA, 0, 5, 10, b"boom");
    d.write(&w);
    let mut w = Vec::new();
    headers(&mut w, 3, 0, &status("404"));
    frame(&mut w, DATA, FLAG_END_STREAM, 1, 2, b"ok");
    frame(&mut w, DATA, FLAG_END_STREAM, 5, 0, b"");
    frame(&mut w, DATA, FLAG_END_STREAM, 3, 0, b"");
    d.write(&w);
    let mut got: Vec<(String, Option<i64>)> =
        d.f.spans
            .iter()
            .map(|s| {
                (
                    text(s, "url.path").unwrap(),
                    int(s, "http.response.status_code"),
                )
            })
            .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("/a".to_owned(), Some(200)),
            ("/b".to_owned(), Some(404)),
            ("/c".to_owned(), Some(500)),
        ]
    );
    assert!(d.f.spans.iter().all(|s| s.name == "GET"));
    assert!(d.f.spans.iter().all(|s| s.attr("rpc.system").is_none()));
}

#[test]
fn rst_stream_ends_the_exchange_with_its_code() {
    let mut d = Driver::new();
    d.open(FD);
    let mut w = Vec::new();
    headers(&mut w, 1, 0, &grpc_request(PATH, &[]));
    d.write(&w);
    let mut w = Vec::new();
    frame(&mut w, RST_STREAM, 0, 1, 4, &8u32.to_be_bytes());
    d.write(&w);
    let s = d.span("helloworld.Greeter/SayHello");
    assert_eq!(int(s, "tracer.http2.reset_code"), Some(8));
    assert_eq!(
        s.status,
        Status::Error("stream reset before the gRPC status".into())
    );
    assert_eq!(d.stats().resets, 1);
}

#[test]
fn goaway_ends_the_streams_above_its_last_id() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    for (id, path) in [(1, "/p.S/One"), (3, "/p.S/Three"), (5, "/p.S/Five")] {
        headers(&mut r, id, 0, &grpc_request(path, &[]));
    }
    d.read(&r);
    let mut w = Vec::new();
    let mut goaway = 1u32.to_be_bytes().to_vec();
    goaway.extend_from_slice(&0u32.to_be_bytes());
    frame(&mut w, GOAWAY, 0, 0, 8, &goaway);
    d.write(&w);
    assert_eq!(d.names().len(), 2);
    for name in ["p.S/Three", "p.S/Five"] {
        assert!(matches!(d.span(name).status, Status::Error(ref m) if m.contains("going away")));
    }
    let mut w = Vec::new();
    headers(
        &mut w,
        1,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", "0")])].concat(),
    );
    d.write(&w);
    assert_eq!(d.span("p.S/One").status, Status::Unset);
    assert_eq!(d.stats().goaways, 1);
}

#[test]
fn a_block_split_across_continuation_and_events_is_reassembled() {
    let mut d = Driver::new();
    d.open(FD);
    let block = grpc_request(PATH, &b3());
    let (first, second) = block.split_at(30);
    let (second, third) = second.split_at(20);
    // HEADERS padded and with priority: pad length, 5 priority bytes, the fragment, 3 pad bytes.
    let mut payload = vec![3, 0, 0, 0, 0, 16];
    payload.extend_from_slice(first);
    payload.extend_from_slice(&[0, 0, 0]);
    let (cap, rest) = payload.split_at(10);
    let mut r = Vec::new();
    frame(
        &mut r,
        HEADERS,
        FLAG_PADDED | FLAG_PRIORITY,
        1,
        len(&payload),
        cap,
    );
    d.read(&r);
    assert_eq!(
        d.f.tracker.inflight_count(),
        0,
        "the block is not whole yet"
    );
    // The rest of the frame's payload comes with the next read, then the CONTINUATIONs.
    let mut r = Vec::new();
    cont(&mut r, 10, rest);
    frame(&mut r, CONTINUATION, 0, 1, len(second), second);
    d.read(&r);
    let mut r = Vec::new();
    frame(
        &mut r,
        CONTINUATION,
        FLAG_END_HEADERS,
        1,
        len(third),
        &third[..5],
    );
    cont(&mut r, 5, &third[5..]);
    data(&mut r, 1, FLAG_END_STREAM, 5, 0);
    d.read(&r);
    assert_eq!(d.f.tracker.inflight_count(), 1);
    let mut w = Vec::new();
    headers(
        &mut w,
        1,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", "0")])].concat(),
    );
    d.write(&w);
    let s = d.span("helloworld.Greeter/SayHello");
    assert_eq!(s.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(s.attr("tracer.capture.truncated"), None);
    assert_eq!(d.stats().hpack.desyncs, 0);
}

/// A request whose path goes into the dynamic table (entry 62 afterwards), as encoders do.
fn request_indexing_path(path: &str, trace: &str) -> Vec<u8> {
    let mut b = Vec::new();
    hp::indexed(&mut b, METHOD_POST);
    hp::literal_indexed(&mut b, ":path", path);
    hp::literal(&mut b, "content-type", b"application/grpc");
    hp::literal(&mut b, "x-b3-traceid", trace.as_bytes());
    hp::literal(&mut b, "x-b3-spanid", PARENT.as_bytes());
    b
}

/// A request that refers to the path indexed before, with literal trace context.
fn request_reusing_path(trace: &str) -> Vec<u8> {
    let mut b = Vec::new();
    hp::indexed(&mut b, METHOD_POST);
    hp::indexed(&mut b, DYN);
    hp::literal(&mut b, "content-type", b"application/grpc");
    hp::literal(&mut b, "x-b3-traceid", trace.as_bytes());
    hp::literal(&mut b, "x-b3-spanid", PARENT.as_bytes());
    b
}

fn answer(d: &mut Driver, id: u32, status: &str) {
    let mut w = Vec::new();
    headers(
        &mut w,
        id,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", status)])].concat(),
    );
    d.write(&w);
}

#[test]
fn dynamic_references_resolve_on_a_connection_followed_from_its_start() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &request_indexing_path(PATH, TRACE));
    d.read(&r);
    answer(&mut d, 1, "0");
    let mut r = Vec::new();
    headers(&mut r, 3, 0, &request_reusing_path("00000000000000bb"));
    d.read(&r);
    answer(&mut d, 3, "0");
    assert_eq!(d.names(), [&PATH[1..], &PATH[1..]]);
    assert_eq!(d.stats().hpack.unknown_refs, 0);
}

#[test]
fn a_lost_event_desyncs_and_later_streams_still_pair_and_read_literals() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &request_indexing_path(PATH, TRACE));
    d.read(&r);
    answer(&mut d, 1, "0");
    // An event of requests is lost: stream 3's request, and what it did to the table.
    d.lose(FD, Direction::Ingress, 1);
    let later = "00000000000000cc";
    let mut r = Vec::new();
    headers(&mut r, 5, 0, &request_reusing_path(later));
    d.read(&r);
    // Stream 3's response: its request was not seen.
    answer(&mut d, 3, "0");
    answer(&mut d, 5, "13");
    let st = d.stats();
    assert_eq!((st.lost_events, st.hpack.desyncs), (1, 1));
    assert_eq!(st.orphan_headers, 1);
    assert_eq!(d.f.spans.len(), 2);
    let s = &d.f.spans[1];
    // The path referred to the lost table: unknown; the literal context was read.
    assert_eq!(s.trace_id.to_string(), format!("{later:0>32}"));
    assert_eq!(s.name, "grpc");
    assert_eq!(s.attr("url.path"), None);
    assert_eq!(text(s, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(int(s, "tracer.http2.unknown_fields"), Some(1));
    assert_eq!(int(s, "rpc.grpc.status_code"), Some(13));
    assert!(
        matches!(s.status, Status::Error(_)),
        "INTERNAL is a server error"
    );
}

#[test]
fn a_connection_picked_up_midway_marks_unknown_fields_and_still_spans() {
    let mut d = Driver::new();
    // No accept seen, no SETTINGS: the first frame is a request on stream 41 whose method and
    // path were indexed before the agent started; its traceparent value is literal, but its
    // name refers to an entry indexed before: only the value's shape tells what it is.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut block = Vec::new();
    hp::indexed(&mut block, DYN + 3);
    hp::indexed(&mut block, DYN);
    hp::literal_name_ref(&mut block, DYN + 1, tp);
    let mut r = Vec::new();
    headers(&mut r, 41, 0, &block);
    d.read(&r);
    assert_eq!(
        d.f.tracker.inflight_count(),
        1,
        "an odd stream read: we serve"
    );
    // A SETTINGS frame mid-connection does not make our side's decoder think it saw the start.
    let mut w = Vec::new();
    settings(&mut w);
    let mut resp = Vec::new();
    hp::indexed(&mut resp, STATUS_200);
    hp::indexed(&mut resp, DYN + 2);
    headers(&mut w, 41, 0, &resp);
    data(&mut w, 41, 0, 10, 5);
    headers(
        &mut w,
        41,
        FLAG_END_STREAM,
        &hp::block(&[("grpc-status", "0")]),
    );
    d.write(&w);
    let s = &d.f.spans[0];
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.parent_span_id.unwrap().to_string(), "00f067aa0ba902b7");
    assert_eq!(text(s, "http.request.method").as_deref(), Some("_OTHER"));
    assert_eq!(s.attr("http.request.method_original"), None);
    assert_eq!(int(s, "tracer.http2.unknown_fields"), Some(4));
    // gRPC known from the trailers' status, though content-type was unknown.
    assert_eq!(text(s, "rpc.system").as_deref(), Some("grpc"));
    assert_eq!(int(s, "tracer.grpc.response.message_count"), Some(1));
    assert_eq!(int(s, "http.response.status_code"), Some(200));
    let st = d.stats();
    assert_eq!((st.hpack.unknown_refs, st.hpack.errors), (4, 0));
}

#[test]
fn h2c_upgrade_continues_the_http1_request_as_stream_1() {
    let mut d = Driver::new();
    d.open(FD);
    d.event(
        FD,
        Direction::Ingress,
        false,
        b"GET /up HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nx-b3-traceid: 463ac35c9f6413ad\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n\r\n",
    );
    d.event(
        FD,
        Direction::Egress,
        false,
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    );
    assert_eq!(d.f.tracker.inflight_count(), 1);
    // The kernel saw the client preface: frames from now on.
    let mut r = Vec::new();
    settings(&mut r);
    d.read(&r);
    let mut w = Vec::new();
    settings(&mut w);
    let mut block = Vec::new();
    hp::indexed(&mut block, STATUS_200);
    headers(&mut w, 1, 0, &block);
    frame(&mut w, DATA, FLAG_END_STREAM, 1, 5, b"hello");
    d.write(&w);
    assert_eq!(d.f.spans.len(), 1);
    let s = &d.f.spans[0];
    assert_eq!(s.name, "GET");
    assert_eq!(text(s, "url.path").as_deref(), Some("/up"));
    assert_eq!(int(s, "http.response.status_code"), Some(200));
    assert_eq!(s.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(text(s, "network.protocol.version").as_deref(), Some("2"));
    assert_eq!(d.stats().upgrades, 1);
    assert_eq!(d.f.tracker.inflight_count(), 0);
    // The connection goes on as HTTP/2.
    serve_unary(&mut d, 3, PATH, "0");
    assert_eq!(d.f.spans.len(), 2);
}

#[test]
fn the_stream_map_is_bounded_and_the_oldest_given_up() {
    let mut d = Driver::new();
    d.open(FD);
    let n = u32::try_from(MAX_STREAMS).unwrap() + 1;
    for i in 0..n {
        let mut r = Vec::new();
        headers(
            &mut r,
            2 * i + 1,
            0,
            &grpc_request(&format!("/p.S/M{i}"), &[]),
        );
        d.read(&r);
    }
    assert_eq!(d.stats().streams_given_up, 1);
    assert_eq!(d.names(), ["p.S/M0"]);
    assert!(
        d.table.buffered() > MAX_STREAMS * 500,
        "open streams count in the budget"
    );
    d.table.on_close(PID, FD, &mut d.f);
    assert_eq!(
        d.f.spans.len(),
        MAX_STREAMS + 1,
        "the close ends every stream"
    );
    assert_eq!(d.table.buffered(), 0);
}

#[test]
fn a_block_over_the_bound_is_decoded_as_far_as_it_goes() {
    let mut d = Driver::new();
    d.open(FD);
    let mut b = grpc_request(PATH, &b3());
    hp::literal(&mut b, "x-big", &vec![b'x'; MAX_BLOCK]);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &b);
    d.read(&r);
    answer(&mut d, 1, "0");
    let s = d.span("helloworld.Greeter/SayHello");
    assert_eq!(
        s.attr("tracer.capture.truncated"),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(s.parent_span_id.unwrap().to_string(), PARENT);
    let st = d.stats();
    // The cut block ends inside a field: refused there, which desynchronises the decoder once.
    assert_eq!(
        (st.oversized_blocks, st.hpack.desyncs, st.hpack.errors),
        (1, 1, 1)
    );
    // Literal fields of later blocks are still read.
    serve_unary(&mut d, 3, "/p.S/Next", "0");
    assert!(d.names().contains(&"p.S/Next".to_owned()));
}

#[test]
fn malformed_records_and_rec_lost_are_counted_not_fatal() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    settings(&mut r);
    // A frame record that claims more bytes than the chunk holds.
    r.extend_from_slice(&[1, 0, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3]);
    d.read(&r);
    let mut r = Vec::new();
    lost(&mut r);
    d.read(&r);
    let st = d.stats();
    assert_eq!((st.malformed_records, st.hpack.desyncs), (1, 2));
    serve_unary(&mut d, 1, PATH, "0");
    assert_eq!(d.f.spans.len(), 1);
}

#[test]
fn a_response_reported_before_its_request_write_is_put_back_in_order() {
    let mut d = Driver::new();
    d.open(FD);
    let mut w = Vec::new();
    settings(&mut w);
    d.write(&w);
    // The read of the whole answer is reported before the write of its request (loopback: the
    // writing thread was still on its way out of write).
    let mut r = Vec::new();
    headers(
        &mut r,
        1,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", "7")])].concat(),
    );
    d.read(&r);
    assert!(d.f.spans.is_empty());
    let read_at = d.t;
    let mut w = Vec::new();
    headers(&mut w, 1, 0, &grpc_request(PATH, &b3()));
    data(&mut w, 1, FLAG_END_STREAM, 5, 0);
    // The write began before the read returned.
    d.event_at(FD, Direction::Egress, true, read_at - 500, &w);
    let span = d.span("helloworld.Greeter/SayHello");
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(int(span, "rpc.grpc.status_code"), Some(7));
    let st = d.stats();
    assert_eq!((st.reordered, st.orphan_headers), (1, 0));
}

#[test]
fn a_whole_answer_read_before_its_request_write_on_a_connection_older_than_the_agent_is_put_back_in_order()
 {
    // The socket-level capture sees no connect: a gRPC client connection dialled before the
    // agent, whose first call's answer (head, message, trailers) is read before the write of
    // the call is reported. The trailers carry no pseudo-header: they must wait with the rest of
    // the answer, never open a stream of their own (which would make us the server).
    let mut d = Driver::new();
    let mut r = Vec::new();
    unary_answer(&mut r, 1, "0");
    d.read(&r);
    assert!(d.f.spans.is_empty(), "{:?}", d.names());
    let read_at = d.t;
    let mut w = Vec::new();
    headers(&mut w, 1, 0, &grpc_request(PATH, &b3()));
    data(&mut w, 1, FLAG_END_STREAM, 12, 7);
    d.event_at(FD, Direction::Egress, true, read_at - 500, &w);
    assert_eq!(d.names(), [&PATH[1..]]);
    let span = &d.f.spans[0];
    assert_eq!(span.kind, SpanKind::Client);
    assert_eq!(int(span, "rpc.grpc.status_code"), Some(0));
    assert_eq!(int(span, "tracer.grpc.response.message_count"), Some(1));
    // The connection stays a client one: the next call is a CLIENT span too.
    let mut w = Vec::new();
    headers(&mut w, 3, 0, &grpc_request(PATH, &b3()));
    data(&mut w, 3, FLAG_END_STREAM, 12, 7);
    d.write(&w);
    let mut r = Vec::new();
    unary_answer(&mut r, 3, "5");
    d.read(&r);
    assert_eq!(d.f.spans.len(), 2, "{:?}", d.names());
    assert_eq!(d.f.spans[1].kind, SpanKind::Client);
    assert_eq!(int(&d.f.spans[1], "rpc.grpc.status_code"), Some(5));
    let st = d.stats();
    // Both header blocks of the answer (head and trailers) were put back.
    assert_eq!((st.reordered, st.orphan_headers, st.streams), (2, 0, 2));
}

#[test]
fn answers_to_requests_before_the_agent_are_given_up_at_a_later_write() {
    let mut d = Driver::new();
    // A client connection picked up mid-way: answers to streams whose requests were not seen.
    let mut r = Vec::new();
    let mut status = Vec::new();
    hp::indexed(&mut status, STATUS_200);
    headers(&mut r, 7, 0, &status);
    data(&mut r, 7, FLAG_END_STREAM, 10, 5);
    d.read(&r);
    // A later call on the connection: its write began after that read returned.
    let mut w = Vec::new();
    headers(&mut w, 9, 0, &grpc_request(PATH, &b3()));
    d.write(&w);
    let st = d.stats();
    assert_eq!((st.orphan_headers, st.reordered), (1, 0));
    let mut r = Vec::new();
    headers(
        &mut r,
        9,
        FLAG_END_STREAM,
        &[grpc_response_head(), hp::block(&[("grpc-status", "0")])].concat(),
    );
    d.read(&r);
    assert_eq!(d.names(), [&PATH[1..]]);
    assert_eq!(d.f.spans[0].kind, SpanKind::Client);
}

#[test]
fn credentials_in_a_header_block_never_reach_a_span() {
    let mut d = Driver::new();
    d.open(FD);
    let secret = "Bearer s3cr3t-h2-token";
    let mut r = Vec::new();
    headers(
        &mut r,
        1,
        FLAG_END_STREAM,
        &grpc_request(
            PATH,
            &[
                ("authorization", secret),
                ("cookie", "session=s3cr3t-h2-cookie"),
            ],
        ),
    );
    d.read(&r);
    answer(&mut d, 1, "0");
    let s = d.span("helloworld.Greeter/SayHello");
    let printed = format!("{s:?}");
    assert!(printed.contains("SayHello"), "positive control: {printed}");
    assert!(
        !printed.contains("s3cr3t"),
        "a credential in the span: {printed}"
    );
}

#[test]
fn idle_sweeps_and_a_reused_descriptor_end_http2_streams() {
    let mut d = Driver::new();
    d.open(FD);
    let mut r = Vec::new();
    headers(&mut r, 1, 0, &grpc_request(PATH, &[]));
    d.read(&r);
    // The descriptor is reused for an HTTP/1 connection whose close was not seen.
    d.event(
        FD,
        Direction::Ingress,
        false,
        b"GET /h1 HTTP/1.1\r\nHost: svc\r\n\r\n",
    );
    assert_eq!(d.names(), [&PATH[1..]]);
    assert!(matches!(d.f.spans[0].status, Status::Error(_)));
    // An HTTP/2 connection left idle is flushed by the sweep.
    let mut w = Vec::new();
    headers(&mut w, 1, 0, &grpc_request("/p.S/Idle", &[]));
    d.event(5, Direction::Egress, true, &w);
    d.table.sweep(d.t + 100, &mut d.f);
    assert_eq!(d.table.len(), 0);
    assert!(d.names().contains(&"p.S/Idle".to_owned()));
    assert_eq!(d.table.buffered(), 0);
}

#[test]
fn a_block_over_the_bound_across_continuation_holds_at_most_the_bound() {
    let mut d = Driver::new();
    d.open(FD);
    let mut b = grpc_request(PATH, &b3());
    hp::literal(&mut b, "x-big", &vec![b'x'; 9_000]);
    hp::literal(&mut b, "x-big-2", &vec![b'y'; 15_000]);
    let (first, second) = b.split_at(10_000);
    let mut r = Vec::new();
    frame(&mut r, HEADERS, 0, 1, len(first), first);
    d.read(&r);
    // Most of the CONTINUATION, the rest to come: only what fits the bound is kept.
    let mut r = Vec::new();
    frame(
        &mut r,
        CONTINUATION,
        FLAG_END_HEADERS,
        1,
        len(second),
        &second[..12_000],
    );
    d.read(&r);
    assert!(
        d.table.buffered() < MAX_BLOCK + 4 * 1024,
        "{} bytes held",
        d.table.buffered()
    );
    let mut r = Vec::new();
    cont(&mut r, 12_000, &second[12_000..]);
    d.read(&r);
    answer(&mut d, 1, "0");
    let s = d.span("helloworld.Greeter/SayHello");
    assert_eq!(
        s.attr("tracer.capture.truncated"),
        Some(&AttrValue::Bool(true))
    );
    assert_eq!(s.parent_span_id.unwrap().to_string(), PARENT);
    assert_eq!(d.stats().oversized_blocks, 1);
}
