//! Writes the seed corpus of every target into `fuzz/seeds/TARGET/` (committed; run again after
//! changing a seed or the input format): `cargo run --example seeds` in `fuzz/`.
//!
//! Seeds are small real inputs: request and response heads with B3 and `traceparent` headers,
//! chunked bodies, pipelined requests, a head split over reads, a capture gap; HTTP/2 frame
//! records of gRPC calls (a block split over CONTINUATION and events, a reset, a GOAWAY, a
//! loss, an h2c upgrade); ring-buffer records as the kernel lays them out; the header blocks of
//! RFC 7541's HPACK examples.

use std::{fs, path::Path};

use tracer_common::{
    CloseEvent, ConnEvent, DataEvent, EventKind, SockTuple, WriteEvent,
    h2::{
        CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, GOAWAY, HEADERS, RST_STREAM,
        SETTINGS,
    },
};
use tracer_fuzz::{
    checker::{HTTP1_IN_HTTP2, Protocol},
    ops::{Op, decode, encode},
    protocol::{
        Direction::{Egress, Ingress},
        http2::records::build::{cont, frame, hpack, lost},
    },
};

const REQ_B3: &[u8] = b"GET /a HTTP/1.1\r\nHost: svc:8080\r\nx-b3-traceid: 463ac35c9f6413ad\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nx-b3-parentspanid: 1111111111111111\r\nx-b3-sampled: 1\r\n\r\n";
const REQ_B3_SINGLE: &[u8] = b"POST /submit HTTP/1.1\r\nHost: svc\r\nb3: 4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-1111111111111111\r\nContent-Length: 5\r\n\r\nhello";
const REQ_W3C: &[u8] = b"GET /w3c?q=1 HTTP/1.1\r\nHost: svc\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nUser-Agent: curl/8.0\r\n\r\n";
const RESP_200: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
const RESP_CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
const RESP_500_CLOSE: &[u8] =
    b"HTTP/1.0 500 Internal Server Error\r\nConnection: close\r\n\r\nboom";
const RESP_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const REQ_CHUNKED: &[u8] = b"POST /upload HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nx-b3-traceid: 4bf92f3577b34da6a3ce929d0e0e4736\r\nx-b3-spanid: 00f067aa0ba902b7\r\n\r\n4\r\nWiki\r\n0\r\n\r\n";
const REQ_HEAD: &[u8] = b"HEAD /h HTTP/1.1\r\nHost: svc\r\n\r\n";
const RESP_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n";

fn data(fd: u8, dir: tracer_fuzz::protocol::Direction, bytes: &[u8]) -> Op {
    Op::Data {
        fd,
        dir,
        early: 0,
        data: bytes.to_vec(),
        gap: 0,
        tail: Vec::new(),
    }
}

fn assembly_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let pipelined = [REQ_B3, REQ_W3C, REQ_HEAD].concat();
    let answers = [RESP_200, RESP_CHUNKED, RESP_HEAD].concat();
    let (first, second) = REQ_B3.split_at(23);
    vec![
        (
            "server_b3",
            vec![
                Op::Open { fd: 0 },
                data(0, Ingress, REQ_B3),
                data(0, Egress, RESP_200),
                Op::Close { fd: 0 },
            ],
        ),
        (
            "client_b3_single_body",
            vec![
                Op::Open { fd: 1 },
                data(1, Egress, REQ_B3_SINGLE),
                data(1, Ingress, RESP_CHUNKED),
                Op::Close { fd: 1 },
            ],
        ),
        (
            "pipelined",
            vec![
                Op::Open { fd: 2 },
                data(2, Ingress, &pipelined),
                data(2, Egress, &answers),
                Op::Close { fd: 2 },
            ],
        ),
        (
            "split_head_and_continue",
            vec![
                data(0, Ingress, first),
                data(0, Ingress, second),
                data(0, Egress, RESP_100),
                data(0, Egress, RESP_500_CLOSE),
                data(1, Egress, REQ_CHUNKED),
                data(1, Ingress, RESP_200),
                Op::Sweep,
                Op::Close { fd: 0 },
            ],
        ),
        (
            "response_reported_before_its_write",
            vec![
                data(1, Egress, REQ_W3C),
                data(1, Ingress, RESP_200),
                data(1, Ingress, RESP_CHUNKED),
                Op::Data {
                    fd: 1,
                    dir: Egress,
                    early: 3,
                    data: REQ_B3.to_vec(),
                    gap: 0,
                    tail: Vec::new(),
                },
                Op::Close { fd: 1 },
            ],
        ),
        (
            "gap_in_chunked_body",
            vec![
                data(3, Egress, REQ_W3C),
                Op::Data {
                    fd: 3,
                    dir: Ingress,
                    early: 0,
                    data: RESP_CHUNKED[..60].to_vec(),
                    gap: 1 + 20 * 20 * 4,
                    tail: b"ld\r\n0\r\n\r\n".to_vec(),
                },
                data(3, Egress, REQ_B3),
                data(3, Ingress, RESP_200),
            ],
        ),
    ]
}

/// A gRPC request header block: literal fields (static-table POST), B3 context.
fn grpc_request(path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    hpack::indexed(&mut b, 3);
    hpack::literal_indexed(&mut b, ":path", path);
    b.extend(hpack::block(&[
        (":authority", "greeter:50051"),
        ("content-type", "application/grpc"),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ]));
    b
}

fn len(b: &[u8]) -> u32 {
    b.len() as u32
}

/// Records of a request on `stream` with one message, and of its answer (`status` in the
/// trailers).
fn unary(stream: u32, status: &str) -> (Vec<u8>, Vec<u8>) {
    let mut req = Vec::new();
    let block = grpc_request("/helloworld.Greeter/SayHello");
    frame(&mut req, HEADERS, FLAG_END_HEADERS, stream, len(&block), &block);
    frame(&mut req, DATA, FLAG_END_STREAM, stream, 12, &[0, 0, 0, 0, 7]);
    let mut resp = Vec::new();
    let mut head = Vec::new();
    hpack::indexed(&mut head, 8);
    let trailers = hpack::block(&[("grpc-status", status), ("grpc-message", "m")]);
    frame(&mut resp, HEADERS, FLAG_END_HEADERS, stream, len(&head), &head);
    frame(&mut resp, DATA, 0, stream, 9, &[0, 0, 0, 0, 4]);
    frame(
        &mut resp,
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        stream,
        len(&trailers),
        &trailers,
    );
    (req, resp)
}

fn http2_seeds() -> Vec<(&'static str, Vec<Op>)> {
    let mut settings = Vec::new();
    frame(&mut settings, SETTINGS, 0, 0, 0, &[]);
    let (req1, resp1) = unary(1, "0");
    let (req3, resp3) = unary(3, "14");
    // A block over HEADERS and CONTINUATION, its HEADERS payload over two events.
    let block = grpc_request("/pkg.Split/Call");
    let (a, rest) = block.split_at(20);
    let (b, c) = rest.split_at(10);
    let mut split1 = Vec::new();
    frame(&mut split1, HEADERS, 0, 5, len(a), &a[..8]);
    let mut split2 = Vec::new();
    cont(&mut split2, 8, &a[8..]);
    frame(&mut split2, CONTINUATION, 0, 5, len(b), b);
    frame(&mut split2, CONTINUATION, FLAG_END_HEADERS, 5, len(c), c);
    let mut ends = Vec::new();
    frame(&mut ends, RST_STREAM, 0, 5, 4, &8u32.to_be_bytes());
    frame(&mut ends, GOAWAY, 0, 0, 8, &[0, 0, 0, 1, 0, 0, 0, 0]);
    lost(&mut ends);
    let http1 = |fd, dir, bytes: &[u8]| Op::Data {
        fd,
        dir,
        early: HTTP1_IN_HTTP2,
        data: bytes.to_vec(),
        gap: 0,
        tail: Vec::new(),
    };
    vec![
        (
            "unary_server_and_client",
            vec![
                Op::Open { fd: 0 },
                data(0, Ingress, &[settings.clone(), req1.clone()].concat()),
                data(0, Egress, &[settings.clone(), resp1.clone()].concat()),
                data(1, Egress, &req3),
                data(1, Ingress, &resp3),
                Op::Close { fd: 0 },
            ],
        ),
        (
            "split_block_reset_goaway",
            vec![
                Op::Open { fd: 2 },
                data(2, Egress, &settings),
                data(2, Egress, &split1),
                data(2, Egress, &split2),
                data(2, Ingress, &ends),
                Op::Sweep,
            ],
        ),
        (
            "loss_then_more_streams",
            vec![
                data(3, Ingress, &req1),
                // A sequence gap before it (`early` 7).
                Op::Data {
                    fd: 3,
                    dir: Ingress,
                    early: 7,
                    data: req3.clone(),
                    gap: 0,
                    tail: Vec::new(),
                },
                data(3, Egress, &[resp1, resp3].concat()),
                Op::Close { fd: 3 },
            ],
        ),
        (
            "h2c_upgrade",
            vec![
                Op::Open { fd: 1 },
                http1(
                    1,
                    Ingress,
                    b"GET / HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
                ),
                http1(
                    1,
                    Egress,
                    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                ),
                data(1, Ingress, &settings),
                data(1, Egress, &settings),
                Op::Close { fd: 1 },
            ],
        ),
    ]
}

/// The bytes of a `#[repr(C)]` record as the kernel writes it into the ring buffer.
fn raw<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: plain-old-data kernel records (explicit padding), viewed as bytes.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn record_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut tuple = SockTuple::default();
    tuple.family = tracer_common::AF_INET;
    tuple.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    tuple.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    tuple.sport = 43210;
    tuple.dport = 8080;
    let header = DataEvent {
        kind: EventKind::Data as u32,
        direction: tracer_common::DIR_INGRESS,
        pid: 1234,
        tid: 1235,
        fd: 7,
        flags: 0,
        enter_ns: 1_000,
        exit_ns: 2_000,
        total_len: 4096,
        captured_len: REQ_B3.len() as u32,
        tail_len: 4,
        owner: 0,
        seq: 0,
        tail: *b"............\r\n\r\n",
        tuple,
        server_span: [0; 8],
        trace_id: [0; 16],
    };
    let mut data = raw(&header);
    data.extend_from_slice(REQ_B3);
    let conn = ConnEvent {
        kind: EventKind::Conn as u32,
        pid: 1234,
        fd: 7,
        family: tracer_common::AF_INET6,
        port: 8080,
        ts_ns: 500,
        addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1],
    };
    // SAFETY: all-zero is a valid value of these plain integer records.
    let mut close: CloseEvent = unsafe { std::mem::zeroed() };
    close.kind = EventKind::Close as u32;
    let mut write: WriteEvent = unsafe { std::mem::zeroed() };
    write.kind = EventKind::Write as u32;
    vec![
        ("data_b3_request", data),
        ("conn_v4_mapped", raw(&conn)),
        ("close", raw(&close)),
        ("write", raw(&write)),
    ]
}

/// Header sets in the `context` target's format: one header a line, its first byte picking the
/// name (0 x-b3-traceid, 1 x-b3-spanid, 2 x-b3-sampled, 3 x-b3-flags, 4 b3, 5 traceparent,
/// 6 x-b3-parentspanid, 7 a name of the line's own).
fn context_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let lines = |l: &[&[u8]]| l.join(&b'\n');
    vec![
        (
            "b3_multi_64",
            lines(&[
                b"\x00463ac35c9f6413ad",
                b"\x01a2fb4a1d1a96d312",
                b"\x021",
                b"\x06a2fb4a1d1a96d311",
            ]),
        ),
        (
            "b3_multi_128_debug",
            lines(&[
                b"\x004bf92f3577b34da6a3ce929d0e0e4736",
                b"\x0100f067aa0ba902b7",
                b"\x031",
            ]),
        ),
        (
            "b3_single",
            lines(&[b"\x044bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-d-1111111111111111"]),
        ),
        ("b3_sampling_only", lines(&[b"\x040"])),
        (
            "traceparent",
            lines(&[b"\x0500-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]),
        ),
        (
            "all_and_other",
            lines(&[
                b"\x07X-Request-Id: 42",
                b"\x0500-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                b"\x04463ac35c9f6413ad-a2fb4a1d1a96d312",
                b"\x00463AC35C9F6413AD",
            ]),
        ),
    ]
}

fn head_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("b3_multi", REQ_B3.to_vec()),
        ("b3_single_body", REQ_B3_SINGLE.to_vec()),
        ("traceparent", REQ_W3C.to_vec()),
        ("chunked", REQ_CHUNKED.to_vec()),
        ("head", REQ_HEAD.to_vec()),
    ]
}

/// The header blocks of RFC 7541 Appendix C, as the agent's HPACK tests read them.
const HPACK_EXAMPLES: &str =
    include_str!("../../tracer-agent/src/protocol/http2/hpack/rfc7541_examples.txt");

/// The block of HPACK example `section` (e.g. `C.3.1`).
fn hpack_example(section: &str) -> Vec<u8> {
    let line = HPACK_EXAMPLES
        .lines()
        .find_map(|l| l.strip_prefix(section)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no HPACK example {section}"));
    let digits: Vec<u8> = line.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).unwrap())
        .collect()
}

/// An operation of the `hpack` target: a block (`op` 0: seen; 1: lost for the decoder under
/// test) or, with an empty block, a restart mid-way (`op` 2).
fn hpack_op(op: u8, block: &[u8]) -> Vec<u8> {
    if op == 2 {
        return vec![2];
    }
    let len = u16::try_from(block.len()).expect("a seed block under 64 KiB");
    [&[op][..], &len.to_le_bytes(), block].concat()
}

fn hpack_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let seen = |sections: &[&str]| -> Vec<u8> {
        sections
            .iter()
            .flat_map(|s| hpack_op(0, &hpack_example(s)))
            .collect()
    };
    // A dynamic table size update to 256 bytes (C.5 and C.6 assume that size), then to 2^32 - 1.
    let to_256 = hpack_op(0, &[0x3f, 0xe1, 0x01]);
    let to_max = hpack_op(0, &[0x3f, 0xe0, 0xff, 0xff, 0xff, 0x0f]);
    vec![
        ("rfc_c2", seen(&["C.2.1", "C.2.2", "C.2.3", "C.2.4"])),
        ("rfc_c3", seen(&["C.3.1", "C.3.2", "C.3.3"])),
        (
            "rfc_c4_midway",
            [
                seen(&["C.4.1"]),
                hpack_op(2, &[]),
                seen(&["C.4.2", "C.4.3"]),
            ]
            .concat(),
        ),
        (
            "rfc_c5_lost",
            [
                to_256.clone(),
                seen(&["C.5.1"]),
                hpack_op(1, &hpack_example("C.5.2")),
                seen(&["C.5.3"]),
            ]
            .concat(),
        ),
        (
            "rfc_c6",
            [to_256, seen(&["C.6.1", "C.6.2", "C.6.3"])].concat(),
        ),
        (
            "size_over_cap",
            [to_max, seen(&["C.3.1", "C.3.2", "C.3.3"])].concat(),
        ),
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("creating the seed directory");
    fs::write(dir.join(name), bytes).expect("writing a seed");
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, ops) in assembly_seeds() {
        let bytes = encode(&ops);
        assert_eq!(
            decode(&bytes),
            ops,
            "seed {name} does not decode to its events"
        );
        write(&root.join("http1_assembly"), name, &bytes);
    }
    for (name, ops) in http2_seeds() {
        let bytes = encode(&ops);
        assert_eq!(
            decode(&bytes),
            ops,
            "seed {name} does not decode to its events"
        );
        // Each seed reaches the streams: requests reported, and all of them ended.
        let checked = tracer_fuzz::checker::run_with(&bytes, Protocol::Http2);
        assert!(
            checked.requests > 0 && checked.finished == checked.requests,
            "seed {name}: {} requests, {} ended",
            checked.requests,
            checked.finished
        );
        write(&root.join("http2_assembly"), name, &bytes);
    }
    for (name, bytes) in record_seeds() {
        tracer_fuzz::kernel::records::decode(&bytes).expect("a seed record decodes");
        write(&root.join("records"), name, &bytes);
    }
    for (name, bytes) in context_seeds() {
        write(&root.join("context"), name, &bytes);
    }
    for (name, bytes) in head_seeds() {
        write(&root.join("head_scanner"), name, &bytes);
    }
    for (name, bytes) in hpack_seeds() {
        write(&root.join("hpack"), name, &bytes);
    }
    println!("seeds written to {}", root.display());
}
