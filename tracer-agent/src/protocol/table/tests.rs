use std::path::PathBuf;

use tracer_common::{DIR_EGRESS, DIR_INGRESS};

use super::*;
use crate::{
    procs::resource::ProcessCache,
    trace::{
        context::Propagator,
        sampler::Sampler,
        sink::SpanSink,
        span::{AttrValue, Span, SpanKind},
        tracker::Tracker,
    },
};

pub(crate) type Sink = SpanSink<ProcessCache>;

/// The table with the agent's own trace side: what it reports is checked as spans.
pub(crate) fn sink() -> Sink {
    SpanSink::new(
        Tracker::new(Propagator::ALL.to_vec(), Sampler::AlwaysOn),
        ProcessCache::new(PathBuf::from("/nonexistent"), "test-host".into(), None),
    )
}

struct Driver {
    table: ConnTable<Sink>,
    f: Sink,
    t: u64,
}

impl Driver {
    fn new() -> Self {
        Self {
            table: ConnTable::new(16),
            f: sink(),
            t: 1_000,
        }
    }

    fn send(&mut self, pid: u32, tid: u32, fd: u32, direction: u32, data: &[u8]) {
        self.send_full(pid, tid, fd, direction, None, data, self.t + 1_000);
    }

    /// A syscall carrying sequence number `seq` in its socket and direction.
    fn send_seq(
        &mut self,
        pid: u32,
        tid: u32,
        fd: u32,
        direction: u32,
        seq: Option<u32>,
        data: &[u8],
    ) {
        self.send_full(pid, tid, fd, direction, seq, data, self.t + 1_000);
    }

    /// A syscall that began at `start_ns`, reported after the ones sent before it.
    fn send_at(&mut self, pid: u32, tid: u32, fd: u32, direction: u32, data: &[u8], start_ns: u64) {
        self.send_full(pid, tid, fd, direction, None, data, start_ns);
    }

    #[expect(clippy::too_many_arguments, reason = "test driver")]
    fn send_full(
        &mut self,
        pid: u32,
        tid: u32,
        fd: u32,
        direction: u32,
        seq: Option<u32>,
        data: &[u8],
        start_ns: u64,
    ) {
        self.t += 1_000;
        let ev = DataIn {
            pid,
            tid,
            fd,
            direction: if direction == DIR_INGRESS {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            peer: None,
            seq,
            frames: false,
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

    fn status(span: &Span) -> Option<i64> {
        match span.attr("http.response.status_code") {
            Some(AttrValue::Int(c)) => Some(*c),
            _ => None,
        }
    }

    fn path(span: &Span) -> String {
        span.attr("url.path")
            .map(ToString::to_string)
            .unwrap_or_default()
    }
}

const REQ_B3: &[u8] = b"GET /a HTTP/1.1\r\nHost: svc:8080\r\nx-b3-traceid: 463ac35c9f6413ad\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nx-b3-sampled: 1\r\n\r\n";
const UNAVAILABLE: &[u8] = b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n";
const BAD_GATEWAY: &[u8] = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
const GET_ONE: &[u8] = b"GET /one HTTP/1.1\r\nHost: svc\r\n\r\n";
const GET_TWO: &[u8] = b"GET /two HTTP/1.1\r\nHost: svc\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn server_span_from_request_and_response() {
    let mut d = Driver::new();
    d.send(1, 1, 5, DIR_INGRESS, REQ_B3);
    assert!(d.f.spans.is_empty(), "no span before the response");
    d.send(1, 1, 5, DIR_EGRESS, OK);
    assert_eq!(d.f.spans.len(), 1);
    let s = &d.f.spans[0];
    assert_eq!(s.kind, SpanKind::Server);
    assert_eq!(s.trace_id.to_string(), "0000000000000000463ac35c9f6413ad");
    assert_eq!(s.parent_span_id.unwrap().to_string(), "a2fb4a1d1a96d312");
    assert_eq!(Driver::status(s), Some(200));
    assert_eq!(
        s.attr("server.address"),
        Some(&AttrValue::Str("svc".into()))
    );
    assert_eq!(s.attr("server.port"), Some(&AttrValue::Int(8080)));
    assert_eq!(s.name, "GET");
    assert!(s.end_unix_nanos > s.start_unix_nanos);
}

#[test]
fn keep_alive_and_pipelining_pair_in_order() {
    let mut d = Driver::new();
    for i in 0..3 {
        d.send(
            1,
            1,
            5,
            DIR_INGRESS,
            format!("GET /k{i} HTTP/1.1\r\n\r\n").as_bytes(),
        );
        d.send(1, 1, 5, DIR_EGRESS, OK);
    }
    d.send(
        1,
        1,
        5,
        DIR_INGRESS,
        b"GET /p1 HTTP/1.1\r\n\r\nHEAD /p2 HTTP/1.1\r\n\r\nGET /p3 HTTP/1.1\r\n\r\n",
    );
    d.send(
        1,
        1,
        5,
        DIR_EGRESS,
        b"HTTP/1.1 201 A\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 202 B\r\nContent-Length: 100\r\n\r\nHTTP/1.1 203 C\r\nContent-Length: 0\r\n\r\n",
    );
    let got: Vec<(String, Option<i64>)> =
        d.f.spans
            .iter()
            .map(|s| (Driver::path(s), Driver::status(s)))
            .collect();
    assert_eq!(
        got,
        [
            ("/k0".into(), Some(200)),
            ("/k1".into(), Some(200)),
            ("/k2".into(), Some(200)),
            ("/p1".into(), Some(201)),
            ("/p2".into(), Some(202)),
            ("/p3".into(), Some(203)),
        ]
    );
    let traces: std::collections::HashSet<_> = d.f.spans.iter().map(|s| s.trace_id).collect();
    assert_eq!(
        traces.len(),
        6,
        "requests without context each start their own trace"
    );
}

#[test]
fn continue_100_then_final_response() {
    let mut d = Driver::new();
    d.send(
        1,
        1,
        5,
        DIR_INGRESS,
        b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    d.send(1, 1, 5, DIR_EGRESS, b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(d.f.spans.is_empty());
    d.send(1, 1, 5, DIR_INGRESS, b"data");
    d.send(
        1,
        1,
        5,
        DIR_EGRESS,
        b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(d.f.spans.len(), 1);
    assert_eq!(Driver::status(&d.f.spans[0]), Some(201));
}

#[test]
fn client_span_is_child_of_server_span() {
    let mut d = Driver::new();
    d.send(7, 70, 3, DIR_INGRESS, REQ_B3);
    // The app forwards the headers on another connection, from another thread.
    d.send(7, 71, 9, DIR_EGRESS, REQ_B3);
    d.send(7, 71, 9, DIR_INGRESS, UNAVAILABLE);
    d.send(7, 70, 3, DIR_EGRESS, BAD_GATEWAY);
    assert_eq!(d.f.spans.len(), 2);
    let client = &d.f.spans[0];
    let server = &d.f.spans[1];
    assert_eq!(client.kind, SpanKind::Client);
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(client.parent_span_id, Some(server.span_id));
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(
        client.status,
        crate::trace::span::Status::Error(String::new())
    );
    assert_eq!(
        server.status,
        crate::trace::span::Status::Error(String::new())
    );
    assert_eq!(
        client.attr("url.full"),
        Some(&AttrValue::Str("http://svc:8080/a".into()))
    );
}

#[test]
fn a_response_reported_before_its_request_is_put_back_in_order() {
    let mut d = Driver::new();
    // Keep-alive client connection: the first exchange in order, then the second response
    // (read by another thread) reported before the write of its request.
    d.send(7, 71, 9, DIR_EGRESS, GET_ONE);
    d.send(7, 72, 9, DIR_INGRESS, OK);
    d.send(7, 72, 9, DIR_INGRESS, OK);
    let read_returned = d.t + 10;
    assert_eq!(
        d.f.spans.len(),
        1,
        "the early response waits for its request"
    );
    // The write began before the read of its response returned.
    d.send_at(7, 71, 9, DIR_EGRESS, GET_TWO, read_returned - 500);
    assert_eq!(d.f.spans.len(), 2);
    let two = &d.f.spans[1];
    assert_eq!(two.kind, SpanKind::Client);
    assert_eq!(Driver::path(two), "/two");
    assert_eq!(Driver::status(two), Some(200));
    assert_eq!(d.table.stats.http1.orphan_responses, 0);
    assert_eq!(d.table.stats.http1.reordered_responses, 1);

    // A response on a connection whose request is never seen is still an orphan, at close.
    d.send(7, 72, 10, DIR_INGRESS, OK);
    d.table.on_close(7, 10, &mut d.f);
    assert_eq!(d.table.stats.http1.orphan_responses, 1);
    assert_eq!(d.f.spans.len(), 2);
}

#[test]
fn close_flushes_incomplete_and_close_delimited() {
    let mut d = Driver::new();
    d.send(1, 1, 5, DIR_INGRESS, b"GET /slow HTTP/1.1\r\n\r\n");
    d.table.on_close(1, 5, &mut d.f);
    assert_eq!(d.f.spans.len(), 1);
    assert_eq!(
        d.f.spans[0].attr("error.type"),
        Some(&AttrValue::Str("incomplete".into()))
    );

    d.send(1, 1, 6, DIR_EGRESS, b"GET /old HTTP/1.0\r\n\r\n");
    d.send(
        1,
        1,
        6,
        DIR_INGRESS,
        b"HTTP/1.0 200 OK\r\n\r\nbody until close",
    );
    assert_eq!(d.f.spans.len(), 1);
    d.table.on_close(1, 6, &mut d.f);
    assert_eq!(d.f.spans.len(), 2);
    assert_eq!(Driver::status(&d.f.spans[1]), Some(200));
    assert_eq!(d.table.len(), 0);
}

#[test]
fn unsampled_requests_are_counted_not_exported() {
    let mut d = Driver::new();
    let denied = String::from_utf8_lossy(REQ_B3).replace("x-b3-sampled: 1", "x-b3-sampled: 0");
    d.send(1, 1, 5, DIR_INGRESS, denied.as_bytes());
    d.send(1, 1, 5, DIR_EGRESS, OK);
    assert!(d.f.spans.is_empty());
    assert_eq!(d.f.unsampled, 1);
}

#[test]
fn table_is_bounded_and_sweeps_idle() {
    let mut d = Driver::new();
    d.table = ConnTable::new(2);
    for fd in 0..3 {
        d.send(1, 1, fd, DIR_INGRESS, b"GET / HTTP/1.1\r\n\r\n");
    }
    assert_eq!(d.table.len(), 2);
    assert_eq!(d.table.stats.evicted, 1);
    assert_eq!(
        d.f.spans.len(),
        1,
        "the evicted request is flushed as incomplete"
    );
    d.table.sweep(u64::MAX, &mut d.f);
    assert_eq!(d.table.len(), 0);
    assert_eq!(d.f.spans.len(), 3);
}

/// The (path, status) of every span so far, in the order they ended.
fn pairs(d: &Driver) -> Vec<(String, Option<i64>)> {
    d.f.spans
        .iter()
        .map(|s| (Driver::path(s), Driver::status(s)))
        .collect()
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: svc\r\n\r\n").into_bytes()
}

fn status(code: u16) -> Vec<u8> {
    format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok").into_bytes()
}

/// Numbers each direction's events of one connection like the kernel does, and can lose one.
struct Seqs([u32; 2]);

impl Seqs {
    fn next(&mut self, dir: u32) -> u32 {
        let n = self.0[dir as usize];
        self.0[dir as usize] += 1;
        n
    }
}

#[test]
fn a_lost_response_costs_its_own_request_only() {
    let mut d = Driver::new();
    let mut seq = Seqs([0; 2]);
    let mut exchange = |d: &mut Driver, path: &str, code: u16, lose_response: bool| {
        let s = Some(seq.next(DIR_INGRESS));
        d.send_seq(1, 1, 5, DIR_INGRESS, s, &get(path));
        let s = Some(seq.next(DIR_EGRESS));
        if !lose_response {
            d.send_seq(1, 1, 5, DIR_EGRESS, s, &status(code));
        }
    };
    exchange(&mut d, "/a", 201, false);
    exchange(&mut d, "/b", 202, true);
    exchange(&mut d, "/c", 203, false);
    exchange(&mut d, "/d", 204, false);
    assert_eq!(
        pairs(&d),
        [
            ("/a".into(), Some(201)),
            ("/b".into(), None),
            ("/c".into(), Some(203)),
            ("/d".into(), Some(204)),
        ],
        "without the sequence numbers /b would get 203, /c 204 and /d nothing"
    );
    let stats = d.table.stats.http1;
    assert_eq!(
        (stats.abandoned_requests, stats.streams.lost_events),
        (1, 1),
        "{stats:?}"
    );
}

#[test]
fn order_alone_shifts_every_later_pair() {
    // The same traffic without sequence numbers: the failure the numbers exist for.
    let mut d = Driver::new();
    for (path, code, lose) in [("/a", 201, false), ("/b", 202, true), ("/c", 203, false)] {
        d.send(1, 1, 5, DIR_INGRESS, &get(path));
        if !lose {
            d.send(1, 1, 5, DIR_EGRESS, &status(code));
        }
    }
    assert_eq!(pairs(&d)[1], ("/b".into(), Some(203)));
}

#[test]
fn a_lost_response_head_with_its_body_still_coming_resyncs() {
    let mut d = Driver::new();
    let mut seq = Seqs([0; 2]);
    let s = Some(seq.next(DIR_INGRESS));
    d.send_seq(1, 1, 5, DIR_INGRESS, s, &get("/a"));
    // The head and first part of a long body are lost; the rest of the body arrives.
    let _lost = Some(seq.next(DIR_EGRESS));
    let s = Some(seq.next(DIR_EGRESS));
    d.send_seq(1, 1, 5, DIR_EGRESS, s, &[b'x'; 300]);
    let s = Some(seq.next(DIR_INGRESS));
    d.send_seq(1, 1, 5, DIR_INGRESS, s, &get("/b"));
    let s = Some(seq.next(DIR_EGRESS));
    d.send_seq(1, 1, 5, DIR_EGRESS, s, &status(202));
    assert_eq!(
        pairs(&d),
        [("/a".into(), None), ("/b".into(), Some(202))],
        "skipped bytes: {}",
        d.table.stats.http1.streams.skipped_bytes
    );
}

#[test]
fn a_lost_request_does_not_take_the_next_response() {
    // Client side: the write of /b is lost, its response arrives and is kept back for the
    // next write (responses can be reported before their request's write); the next write
    // shows the loss, so the kept response is dropped rather than paired with /c.
    let mut d = Driver::new();
    let mut seq = Seqs([0; 2]);
    for (path, code, lose_request) in [
        ("/a", 201, false),
        ("/b", 202, true),
        ("/c", 203, false),
        ("/d", 204, false),
    ] {
        let s = Some(seq.next(DIR_EGRESS));
        if !lose_request {
            d.send_seq(1, 1, 5, DIR_EGRESS, s, &get(path));
        }
        let s = Some(seq.next(DIR_INGRESS));
        d.send_seq(1, 1, 5, DIR_INGRESS, s, &status(code));
    }
    assert_eq!(
        pairs(&d),
        [
            ("/a".into(), Some(201)),
            ("/c".into(), Some(203)),
            ("/d".into(), Some(204)),
        ]
    );
    assert_eq!(d.table.stats.http1.orphan_responses, 1);
}

#[test]
fn crossed_events_of_one_direction_are_not_a_loss() {
    let mut d = Driver::new();
    d.send_seq(1, 1, 5, DIR_INGRESS, Some(0), &get("/a"));
    d.send_seq(
        1,
        1,
        5,
        DIR_EGRESS,
        Some(0),
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n",
    );
    d.send_seq(1, 1, 5, DIR_EGRESS, Some(2), b"ok");
    d.send_seq(1, 1, 5, DIR_EGRESS, Some(1), b"ok");
    d.send_seq(1, 1, 5, DIR_EGRESS, Some(3), b"ok");
    assert_eq!(
        d.table.stats.http1.streams.lost_events, 1,
        "1 after 2 is no new loss, nor 3 after it"
    );
}

#[test]
fn too_many_waiting_requests_are_given_up_and_pairing_restarts() {
    use crate::protocol::http1::conn::MAX_PENDING;
    let mut d = Driver::new();
    for i in 0..=MAX_PENDING {
        d.send(1, 1, 5, DIR_INGRESS, &get(&format!("/p{i}")));
    }
    assert_eq!(d.table.stats.http1.pending_full, 1);
    assert_eq!(d.table.stats.http1.abandoned_requests, MAX_PENDING as u64);
    assert!(d.table.buffered() < 4 * PENDING_COST_FOR_TEST);
    d.send(1, 1, 5, DIR_EGRESS, &status(201));
    d.send(1, 1, 5, DIR_INGRESS, &get("/next"));
    d.send(1, 1, 5, DIR_EGRESS, &status(202));
    let got = pairs(&d);
    assert_eq!(got[got.len() - 2], (format!("/p{MAX_PENDING}"), Some(201)));
    assert_eq!(got[got.len() - 1], ("/next".into(), Some(202)));
}

const PENDING_COST_FOR_TEST: usize = crate::protocol::http1::conn::PENDING_COST;

#[test]
fn the_least_recently_active_connection_is_evicted() {
    let mut d = Driver::new();
    d.table = ConnTable::new(3);
    for fd in 0..3 {
        d.send(1, 1, fd, DIR_INGRESS, &get(&format!("/fd{fd}")));
    }
    // fd 0 is active again: fd 1 is now the least recently active.
    d.send(1, 1, 0, DIR_EGRESS, &status(200));
    d.send(1, 1, 3, DIR_INGRESS, &get("/fd3"));
    assert_eq!(d.table.stats.evicted, 1);
    let evicted: Vec<String> = pairs(&d).into_iter().map(|(p, _)| p).collect();
    assert_eq!(evicted, ["/fd0", "/fd1"], "fd 0 answered, fd 1 evicted");
}

#[test]
fn drip_fed_heads_are_bounded_per_connection_and_in_total() {
    use crate::protocol::http1::stream::MAX_HEAD;
    let mut d = Driver::new();
    let budget = 64 * 1024;
    d.table = ConnTable::with_budget(1000, budget);
    // 40 connections each drip-feed a head far larger than any bound, a few bytes at a time.
    let line = b"X-Filler: 0123456789abcdef0123456789abcdef\r\n";
    d.send(1, 1, 0, DIR_INGRESS, b"GET /drip HTTP/1.1\r\n");
    for fd in 1..40 {
        d.send(1, 1, fd, DIR_INGRESS, b"GET /drip HTTP/1.1\r\n");
    }
    for _ in 0..(2 * MAX_HEAD / line.len()) {
        for fd in 0..40 {
            d.send(1, 1, fd, DIR_INGRESS, line);
        }
        assert!(
            d.table.buffered() <= budget + 2 * MAX_HEAD,
            "{} bytes held",
            d.table.buffered()
        );
    }
    assert!(d.table.stats.evicted_memory > 0);
    // The heads that survived stopped growing at MAX_HEAD and were reported as truncated.
    d.table.drain(&mut d.f);
    assert!(d.f.spans.iter().all(|s| Driver::path(s) == "/drip"));
    assert!(d.table.stats.http1.streams.oversized_heads > 0);
}

#[test]
fn connections_of_exited_processes_are_flushed() {
    let mut d = Driver::new();
    d.send(1, 1, 5, DIR_INGRESS, &get("/alive"));
    d.send(2, 1, 5, DIR_INGRESS, &get("/gone"));
    d.send(2, 1, 6, DIR_INGRESS, &get("/gone"));
    let mut asked = Vec::new();
    d.table.sweep_exited(
        |pid| {
            asked.push(pid);
            pid == 1
        },
        &mut d.f,
    );
    asked.sort_unstable();
    assert_eq!(asked, [1, 2], "each process is asked once");
    assert_eq!(d.table.len(), 1);
    assert_eq!(d.table.stats.exited_closed, 2);
    assert_eq!(pairs(&d), [("/gone".into(), None), ("/gone".into(), None)]);
}

#[test]
fn an_idle_connection_costs_a_few_hundred_bytes() {
    // What the README's memory bound rests on: a table entry (key, recency links, state).
    let entry = size_of::<Conn<Sink>>() + size_of::<(u32, u32)>() + 2 * size_of::<usize>();
    println!("connection entry: {entry} bytes");
    assert!(entry <= 448, "a connection entry grew to {entry} bytes");
}

#[test]
fn secret_query_values_never_reach_a_span() {
    let mut d = Driver::new();
    let req: &[u8] = b"GET /login?user=ann&password=hunter2&api_key=k3y HTTP/1.1\r\nHost: svc:8080\r\nx-b3-traceid: 463ac35c9f6413ad48485a3953bb6124\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nx-b3-sampled: 1\r\n\r\n";
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    d.send(7, 70, 3, DIR_INGRESS, req);
    d.send(7, 71, 9, DIR_EGRESS, req);
    d.send(7, 71, 9, DIR_INGRESS, ok);
    d.send(7, 70, 3, DIR_EGRESS, ok);
    assert_eq!(d.f.spans.len(), 2);
    let (client, server) = (&d.f.spans[0], &d.f.spans[1]);
    assert_eq!(
        server.attr("url.query"),
        Some(&AttrValue::Str(
            "user=ann&password=REDACTED&api_key=REDACTED".into()
        ))
    );
    assert_eq!(
        client.attr("url.full"),
        Some(&AttrValue::Str(
            "http://svc:8080/login?user=ann&password=REDACTED&api_key=REDACTED".into()
        ))
    );
    for span in [client, server] {
        for (key, value) in &span.attributes {
            let text = value.as_str().unwrap_or_default();
            assert!(
                !text.contains("hunter2") && !text.contains("k3y"),
                "{key}={text}"
            );
        }
    }
}

/// Found by the `http1_assembly` fuzz target: a response read before a request was even written
/// was paired with it (the request's exchange ended before it started, with the old response's
/// status), and the request's own response was counted as an orphan.
#[test]
fn a_response_read_before_a_request_was_written_does_not_answer_it() {
    let mut d = Driver::new();
    // A client connection the agent sees from the middle: first the response to a request
    // written before the agent started, then the next request and its response.
    d.send(7, 72, 9, DIR_INGRESS, OK);
    d.send(7, 71, 9, DIR_EGRESS, GET_TWO);
    d.send(7, 72, 9, DIR_INGRESS, OK);
    d.table.on_close(7, 9, &mut d.f);
    assert_eq!(d.f.spans.len(), 1);
    let two = &d.f.spans[0];
    assert_eq!(Driver::path(two), "/two");
    assert_eq!(Driver::status(two), Some(200));
    assert!(
        two.end_unix_nanos >= two.start_unix_nanos,
        "the span ends before it starts"
    );
    assert_eq!(d.table.stats.http1.orphan_responses, 1);
    assert_eq!(d.table.stats.http1.reordered_responses, 0);
}
