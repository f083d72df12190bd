use super::*;

fn chunk(data: &[u8], t: u64) -> Chunk<'_> {
    Chunk {
        data,
        gap: 0,
        tail: &[],
        start_ns: t,
        end_ns: t + 1,
        kernel: &[],
    }
}

fn gapped<'a>(data: &'a [u8], gap: u64, tail: &'a [u8], t: u64) -> Chunk<'a> {
    Chunk {
        data,
        gap,
        tail,
        start_ns: t,
        end_ns: t + 1,
        kernel: &[],
    }
}

/// Feeds chunks to a request-side stream with the standard request rule.
fn requests(chunks: &[Chunk<'_>]) -> (Vec<Output>, StreamStats) {
    let mut s = HalfStream::default();
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, &mut |h: &Head| h.request_body(), &mut out);
    }
    (out, s.stats)
}

fn responses(chunks: &[Chunk<'_>], answers_head: bool) -> Vec<Output> {
    let mut s = HalfStream::default();
    let mut out = Vec::new();
    for c in chunks {
        s.feed(c, &mut |h: &Head| h.response_body(answers_head), &mut out);
    }
    out
}

fn heads(out: &[Output]) -> Vec<&Head> {
    out.iter()
        .filter_map(|o| match o {
            Output::Head(h) => Some(&**h),
            Output::End { .. } => None,
        })
        .collect()
}

fn ends(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::End { end_ns } => Some(*end_ns),
            Output::Head(_) => None,
        })
        .collect()
}

fn target(h: &Head) -> String {
    h.start.to_string()
}

#[test]
fn simple_request_in_one_chunk() {
    let (out, _) = requests(&[chunk(
        b"GET /hello?x=1 HTTP/1.1\r\nHost: svc:8080\r\nUser-Agent: curl/8\r\nX-B3-TraceId: 463ac35c9f6413ad\r\n\r\n",
        10,
    )]);
    let h = heads(&out);
    assert_eq!(h.len(), 1);
    assert_eq!(target(h[0]), "GET /hello?x=1");
    assert_eq!(h[0].host.as_deref(), Some("svc:8080"));
    assert_eq!(h[0].user_agent.as_deref(), Some("curl/8"));
    assert_eq!(h[0].context.b3_trace_id(), Some("463ac35c9f6413ad"));
    assert_eq!(h[0].start_ns, 10);
    assert_eq!(ends(&out), vec![11]);
}

#[test]
fn head_split_over_three_syscalls() {
    let (out, _) = requests(&[
        chunk(b"GET /a HTTP/1.1\r\nHo", 1),
        chunk(b"st: x\r\nx-b3-spanid: a2fb4a1d1a96d312\r", 2),
        chunk(b"\n\r\n", 3),
    ]);
    let h = heads(&out);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].host.as_deref(), Some("x"));
    assert_eq!(h[0].context.b3_span_id(), Some("a2fb4a1d1a96d312"));
    assert_eq!(h[0].start_ns, 1, "start is the first byte's syscall");
    assert_eq!(ends(&out), vec![4]);
}

#[test]
fn keep_alive_and_pipelined_requests_stay_separate() {
    let one = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    let two_pipelined =
        b"POST /2 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.1\r\n\r\n";
    let (out, stats) = requests(&[chunk(one, 1), chunk(two_pipelined, 5)]);
    let h = heads(&out);
    assert_eq!(
        h.iter().map(|h| target(h)).collect::<Vec<_>>(),
        ["GET /1", "POST /2", "GET /3"]
    );
    assert_eq!(ends(&out).len(), 3);
    assert_eq!(stats, StreamStats::default());
}

#[test]
fn body_by_length_across_chunks_and_gaps() {
    let (out, stats) = requests(&[
        chunk(b"POST /up HTTP/1.1\r\nContent-Length: 10000\r\n\r\n0123", 1),
        gapped(b"4567", 5000, b"", 2),
        gapped(b"89", 4990, b"", 3),
        chunk(b"GET /next HTTP/1.1\r\n\r\n", 4),
    ]);
    let h = heads(&out);
    assert_eq!(h.len(), 2);
    assert_eq!(
        ends(&out),
        vec![4, 5],
        "the body ends with the third syscall"
    );
    assert_eq!(stats.skipped_bytes, 0);
}

#[test]
fn chunked_response_in_one_write_and_split() {
    let whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
    assert_eq!(ends(&responses(&[chunk(whole, 1)], false)), vec![2]);

    // Go writes the head and first chunk, then the terminator in a separate write.
    let out = responses(
        &[
            chunk(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n",
                1,
            ),
            chunk(b"abcdefghijklmnopqrstuvwxyz\r\n", 2),
            chunk(b"0\r\n", 3),
            chunk(b"X-Trailer: 1\r\n\r\n", 4),
        ],
        false,
    );
    assert_eq!(ends(&out), vec![5]);
}

#[test]
fn chunked_data_hidden_by_gap_is_skipped_in_sync() {
    let out = responses(
        &[
            gapped(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2000\r\nabc",
                8189,
                b"",
                1,
            ),
            chunk(b"\r\n0\r\n\r\n", 2),
        ],
        false,
    );
    assert_eq!(ends(&out), vec![3]);
}

#[test]
fn chunked_framing_lost_in_gap_falls_back_to_tail() {
    let mut s = HalfStream::default();
    let mut out = Vec::new();
    let rule = &mut |h: &Head| h.response_body(false);
    // The gap hides the end of the 0x10 chunk and the next size line.
    s.feed(
        &gapped(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123",
            500,
            b"ore data\r\n",
            1,
        ),
        rule,
        &mut out,
    );
    assert_eq!(ends(&out), Vec::<u64>::new());
    assert_eq!(s.stats.lost_sync, 1);
    s.feed(
        &gapped(b"40\r\n", 900, b"xyz\r\n0\r\n\r\n", 2),
        rule,
        &mut out,
    );
    assert_eq!(ends(&out), vec![3]);
    assert!(matches!(s.state, State::Idle));
}

#[test]
fn response_to_head_and_no_content_have_no_body() {
    let out = responses(
        &[chunk(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", 1)],
        true,
    );
    assert_eq!(ends(&out), vec![2]);
    let out = responses(&[chunk(b"HTTP/1.1 204 No Content\r\n\r\n", 1)], false);
    assert_eq!(ends(&out), vec![2]);
}

#[test]
fn interim_100_continue_is_its_own_message() {
    let out = responses(
        &[
            chunk(b"HTTP/1.1 100 Continue\r\n\r\n", 1),
            chunk(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 2),
        ],
        false,
    );
    let h = heads(&out);
    assert_eq!(target(h[0]), "100");
    assert_eq!(target(h[1]), "201");
    assert_eq!(ends(&out), vec![2, 3]);
}

#[test]
fn head_larger_than_capture_is_truncated_but_usable() {
    let (out, _) = requests(&[
        gapped(
            b"GET /big HTTP/1.1\r\nHost: h\r\nx-b3-traceid: 463ac35c9f6413ad\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nX-Long: aaaa",
            4000,
            b"aaaaaaaaa\r\n\r\n",
            1,
        ),
        chunk(b"GET /after HTTP/1.1\r\n\r\n", 7),
    ]);
    let h = heads(&out);
    assert_eq!(h.len(), 2);
    assert!(h[0].truncated);
    assert_eq!(h[0].host.as_deref(), Some("h"));
    assert_eq!(h[0].context.b3_span_id(), Some("a2fb4a1d1a96d312"));
    assert_eq!(target(h[1]), "GET /after");
    assert!(!h[1].truncated);
    assert_eq!(
        ends(&out),
        vec![2, 8],
        "the truncated one ends where the next starts"
    );
}

#[test]
fn request_line_cut_by_capture() {
    let (out, _) = requests(&[gapped(b"GET /very/long/pa", 3000, b"", 1)]);
    let h = heads(&out);
    assert_eq!(h.len(), 1);
    assert!(h[0].truncated);
    assert_eq!(target(h[0]), "GET /very/long/pa");
}

#[test]
fn malformed_head_keeps_the_start_line_and_good_headers() {
    let (out, stats) = requests(&[chunk(
        b"GET /x HTTP/1.1\r\nHost: h:81\r\nx-b3-traceid: 463ac35c9f6413ad\r\nBad Header Line\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n\r\n",
        1,
    )]);
    let h = heads(&out);
    assert_eq!(h.len(), 1);
    assert!(h[0].malformed);
    assert_eq!(target(h[0]), "GET /x");
    assert_eq!(h[0].host.as_deref(), Some("h:81"));
    assert_eq!(h[0].context.b3_trace_id(), Some("463ac35c9f6413ad"));
    assert_eq!(h[0].context.b3_span_id(), Some("a2fb4a1d1a96d312"));
    assert_eq!(stats.malformed_heads, 1);
}

#[test]
fn garbage_is_skipped_and_counted() {
    let (out, stats) = requests(&[chunk(b"\x16\x03\x01\x02\x00random tls", 1), chunk(b"", 2)]);
    assert!(out.is_empty());
    assert_eq!(stats.skipped_bytes, 15);
}

#[test]
fn close_delimited_response_ends_on_close() {
    let mut s = HalfStream::default();
    let mut out = Vec::new();
    let rule = &mut |h: &Head| h.response_body(false);
    s.feed(
        &chunk(b"HTTP/1.0 200 OK\r\n\r\nstream...", 1),
        rule,
        &mut out,
    );
    s.feed(&chunk(b"more", 5), rule, &mut out);
    assert!(ends(&out).is_empty());
    s.close(&mut out);
    assert_eq!(ends(&out), vec![6]);
}

#[test]
fn credentials_are_not_kept() {
    let (out, _) = requests(&[chunk(
        b"GET / HTTP/1.1\r\nAuthorization: Bearer s3cr3t\r\nCookie: id=s3cr3t\r\nProxy-Authorization: Basic s3cr3t\r\n\r\n",
        1,
    )]);
    let dump = format!("{out:?}");
    assert!(!dump.contains("s3cr3t"), "{dump}");
}

#[test]
fn chunked_with_content_length_uses_chunked() {
    let (out, _) = requests(&[chunk(
        b"POST / HTTP/1.1\r\nContent-Length: 999\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        1,
    )]);
    assert_eq!(ends(&out), vec![2]);
}

#[test]
fn first_byte_read_ahead_is_joined() {
    // Go's net/http reads one byte ahead on keep-alive connections.
    let (out, stats) = requests(&[
        chunk(b"GET /1 HTTP/1.1\r\n\r\n", 1),
        chunk(b"G", 2),
        chunk(b"ET /2 HTTP/1.1\r\n\r\n", 3),
        chunk(b"P", 4),
        chunk(b"OST /3 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", 5),
    ]);
    let h = heads(&out);
    assert_eq!(
        h.iter().map(|h| target(h)).collect::<Vec<_>>(),
        ["GET /1", "GET /2", "POST /3"]
    );
    assert_eq!(h[1].start_ns, 2, "the request started with its first byte");
    assert_eq!(stats.skipped_bytes, 0);
}

#[test]
fn false_tentative_start_is_dropped() {
    let (out, stats) = requests(&[
        chunk(b"G", 1),
        chunk(b"arbage", 2),
        chunk(b"GET /ok HTTP/1.1\r\n\r\n", 3),
    ]);
    let h = heads(&out);
    assert_eq!(h.len(), 1);
    assert_eq!(target(h[0]), "GET /ok");
    assert_eq!(stats.skipped_bytes, 7);
}

#[test]
fn lost_chunked_framing_without_tail_ends_at_next_status_line() {
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nchunk-00\r\n8\r\n";
    let out = responses(
        &[
            gapped(head, 31, b"", 1),
            chunk(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 5),
        ],
        false,
    );
    assert_eq!(heads(&out).len(), 2);
    assert_eq!(ends(&out), vec![2, 6]);

    let mut s = HalfStream::default();
    let mut o = Vec::new();
    s.feed(
        &gapped(head, 31, b"", 1),
        &mut |h: &Head| h.response_body(false),
        &mut o,
    );
    assert!(s.end_unknown(&mut o), "the next request ends it");
    assert_eq!(ends(&o), vec![2]);
}

#[test]
fn kernel_ids_follow_a_head_whose_first_byte_came_alone() {
    use crate::kernel::write::ids::KernelIds;
    let ids = [KernelIds::Server {
        span_id: [7; 8],
        started: None,
    }];
    let mut s = HalfStream::default();
    let mut out = Vec::new();
    let mut rule = |h: &Head| h.request_body();
    s.feed(&chunk(b"G", 1), &mut rule, &mut out);
    let rest = Chunk {
        kernel: &ids,
        ..chunk(b"ET /x HTTP/1.1\r\nHost: a\r\n\r\n", 2)
    };
    s.feed(&rest, &mut rule, &mut out);
    match out.first() {
        Some(Output::Head(h)) => assert_eq!(h.kernel, Some(ids[0])),
        other => panic!("no head: {other:?}"),
    }
}
