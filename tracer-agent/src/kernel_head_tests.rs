//! The kernel's request-head scanner (`tracer-ebpf/src/head.rs`), compiled for the host and
//! run on real request heads: what the sk_msg program and the read path will find.

#[allow(dead_code, clippy::all, clippy::pedantic)]
#[path = "../../tracer-ebpf/src/head.rs"]
mod head;

use head::{
    Found, H_B3, H_CONTENT_LENGTH, H_PARENT, H_SPANID, H_TRACEID, H_TRACEPARENT, Val, find_headers,
    scan_lines, trace_of,
};

fn scan(head: &str) -> (Box<[u8; 4096]>, Box<Found>) {
    let mut buf = Box::new([0u8; 4096]);
    buf[..head.len()].copy_from_slice(head.as_bytes());
    let mut f = Box::new(Found {
        owner: 0,
        head_end: 0,
        nlines: 0,
        cur: 0,
        lines: [0; 64],
        pad: 0,
        vals: [Val { off: 0, len: 0 }; head::H_COUNT],
    });
    scan_lines(buf.as_ptr(), head.len() as u64, &mut f);
    find_headers(buf.as_ptr(), &mut f);
    (buf, f)
}

fn value<'a>(head: &'a str, f: &Found, slot: usize) -> &'a str {
    let v = f.vals[slot];
    &head[v.off as usize..(v.off + v.len) as usize]
}

#[test]
fn finds_b3_headers_in_a_python_request() {
    let h = "GET /headers HTTP/1.1\r\nHost: 127.0.0.1:18081\r\nAccept-Encoding: identity\r\nx-b3-traceid: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\nx-b3-parentspanid: 1111111111111111\r\nx-b3-sampled: 1\r\nContent-Length: 12\r\n\r\nbody";
    let (buf, f) = scan(h);
    assert_eq!(f.head_end as usize, h.len() - 4);
    assert_eq!(value(h, &f, H_TRACEID), "463ac35c9f6413ad");
    assert_eq!(value(h, &f, H_SPANID), "a2fb4a1d1a96d312");
    assert_eq!(value(h, &f, H_PARENT), "1111111111111111");
    assert_eq!(value(h, &f, H_CONTENT_LENGTH), "12");
    let t = trace_of(buf.as_ptr(), &f).unwrap();
    assert_eq!(
        (t.hi, t.lo, t.wide, t.sampled),
        (0, 0x463a_c35c_9f64_13ad, 0, 1)
    );
}

#[test]
fn reads_b3_single_and_traceparent() {
    let h = "POST /x HTTP/1.1\r\nb3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0-1111111111111111\r\n\r\n";
    let (buf, f) = scan(h);
    assert_eq!(value(h, &f, H_B3).len(), 68);
    let t = trace_of(buf.as_ptr(), &f).unwrap();
    assert_eq!(
        (t.hi, t.lo, t.wide, t.sampled),
        (0x4bf9_2f35_77b3_4da6, 0xa3ce_929d_0e0e_4736, 1, 0)
    );
    let h = "GET / HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";
    let (buf, f) = scan(h);
    assert_eq!(value(h, &f, H_TRACEPARENT).len(), 55);
    let t = trace_of(buf.as_ptr(), &f).unwrap();
    assert_eq!((t.lo, t.sampled), (0xa3ce_929d_0e0e_4736, 1));
}

#[test]
fn split_heads_and_garbage_ids_are_not_trusted() {
    let (_, f) = scan("GET / HTTP/1.1\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n");
    assert_eq!(f.head_end, 0, "no blank line: the head is not complete");
    let h =
        "GET / HTTP/1.1\r\nx-b3-traceid: 463ac35c9f6413zz\r\nx-b3-spanid: a2fb4a1d1a96d312\r\n\r\n";
    let (buf, f) = scan(h);
    assert!(trace_of(buf.as_ptr(), &f).is_none());
    // A body that mentions a header is not a header.
    let h = "POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\nx-b3-spanid: a2fb4a1d1a96d312";
    let (_, f) = scan(h);
    assert_eq!(f.vals[H_SPANID].len, 0);
}
