//! The body of the `http1_assembly` and `http2_assembly` targets: a connection table fed the
//! events of a fuzz input, with a sink that checks what the assembly reports. For
//! `http2_assembly` the data events are HTTP/2 frame records (`tracer_common::h2`), except
//! those whose `early` is 6, which are HTTP/1 bytes (so connections also switch between the
//! two: an h2c upgrade, a descriptor reused).
//!
//! Invariants checked: nothing panics; a request is reported as a request head and a response as
//! a response head; every request reported ends exactly once, and by the time its connection is
//! closed (or replaced on its descriptor, or the table is drained); a connection never holds
//! more requests waiting for their responses than its bound (`MAX_PENDING`), nor an HTTP/2
//! connection more open streams than `MAX_STREAMS`. (An exchange may
//! end before its request started when the streams are out of step, e.g. a response head begun
//! before its request and cut by the close: the span builder clamps that.)

use std::collections::HashMap;

use crate::{
    ops::{self, Op},
    protocol::{
        Chunk, Direction, Exchange, ExchangeSink, Role,
        http::Head,
        http1::conn::MAX_PENDING,
        http2::conn::MAX_STREAMS,
        table::{ConnTable, DataIn},
    },
};

/// Fewer slots than descriptors, so that connections are also evicted.
const TABLE_CAPACITY: usize = 2;
/// Kernel time between two events.
const STEP_NS: u64 = 1_000;
/// A sweep flushes connections idle for this long.
const IDLE_NS: u64 = 3 * STEP_NS;

/// Each descriptor's connection belongs to a process of its own, so the sink (which sees the
/// process, not the descriptor) can tell connections apart.
fn pid_of(fd: u8) -> u32 {
    100 + u32::from(fd)
}

/// Requests reported and not yet ended, by id, with their process.
#[derive(Default)]
pub struct Checker {
    next_id: u64,
    open: HashMap<u64, u32>,
    pub requests: u64,
    pub finished: u64,
}

impl Checker {
    fn pending(&self, pid: u32) -> usize {
        self.open.values().filter(|p| **p == pid).count()
    }
}

impl ExchangeSink for Checker {
    type Started = u64;

    fn request(&mut self, _role: Role, pid: u32, _tid: u32, head: &Head) -> u64 {
        assert!(
            head.is_request(),
            "a response head reported as a request: {head:?}"
        );
        let id = self.next_id;
        self.next_id += 1;
        self.requests += 1;
        self.open.insert(id, pid);
        id
    }

    fn finish(&mut self, x: Exchange<u64>, _end_ns: u64) {
        let Some(pid) = self.open.remove(&x.started) else {
            panic!("request {} ended twice or was never reported", x.started);
        };
        self.finished += 1;
        assert_eq!(pid, x.pid, "an exchange ended on another process");
        assert!(
            x.request.is_request(),
            "an exchange's request is a response"
        );
        if let Some(r) = &x.response {
            assert!(
                !r.is_request(),
                "an exchange's response is a request: {r:?}"
            );
        }
    }
}

/// What the data events of a fuzz input carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The bytes moved (HTTP/1).
    Http1,
    /// HTTP/2 frame records, but for events whose `early` is [`HTTP1_IN_HTTP2`].
    Http2,
}

/// In `Protocol::Http2` inputs, the `early` of a data event that carries HTTP/1 bytes.
pub const HTTP1_IN_HTTP2: u8 = 6;

/// Feeds the events of `input` to a connection table and checks the invariants (HTTP/1).
pub fn run(input: &[u8]) -> Checker {
    run_with(input, Protocol::Http1)
}

/// Feeds the events of `input` to a connection table and checks the invariants.
pub fn run_with(input: &[u8], protocol: Protocol) -> Checker {
    let mut table = ConnTable::<Checker>::new(TABLE_CAPACITY);
    let mut sink = Checker::default();
    let mut now = 1_000_000;
    // Each connection numbers its events per direction, as the kernel does; an event whose
    // syscall began the earliest an input can say (`early` = 7) follows a lost one.
    let mut seqs: HashMap<(u8, bool), u32> = HashMap::new();
    for op in ops::decode(input) {
        now += STEP_NS;
        match op {
            Op::Data {
                fd,
                dir,
                early,
                data,
                gap,
                tail,
            } => {
                // As the pipeline has them: a read's data arrived when it returned, a write's
                // left when it began.
                let end_ns = now + STEP_NS / 2;
                let start_ns = match dir {
                    Direction::Ingress => end_ns,
                    Direction::Egress => now - u64::from(early) * ops::BACKDATE_NS,
                };
                let next = seqs.entry((fd, dir == Direction::Ingress)).or_insert(0);
                if early == 7 {
                    *next += 1;
                }
                let seq = *next;
                *next += 1;
                let frames = protocol == Protocol::Http2 && early != HTTP1_IN_HTTP2;
                let ev = DataIn {
                    pid: pid_of(fd),
                    tid: pid_of(fd),
                    fd: u32::from(fd),
                    direction: dir,
                    peer: None,
                    seq: Some(seq),
                    frames,
                    chunk: Chunk {
                        data: &data,
                        gap,
                        tail: &tail,
                        start_ns,
                        end_ns,
                        kernel: &[],
                    },
                };
                table.on_data(&ev, &mut sink);
                let pending = sink.pending(pid_of(fd));
                // After a frames event the connection is HTTP/2.
                let bound = if frames { MAX_STREAMS } else { MAX_PENDING };
                assert!(
                    pending <= bound,
                    "{pending} requests wait for a response on one connection (bound {bound})"
                );
            }
            Op::Open { fd } => {
                seqs.remove(&(fd, true));
                seqs.remove(&(fd, false));
                table.on_connect(pid_of(fd), u32::from(fd), None, now, &mut sink);
                assert_eq!(
                    sink.pending(pid_of(fd)),
                    0,
                    "a new connection on a descriptor left the old one's requests open"
                );
            }
            Op::Close { fd } => {
                seqs.remove(&(fd, true));
                seqs.remove(&(fd, false));
                table.on_close(pid_of(fd), u32::from(fd), &mut sink);
                assert_eq!(
                    sink.pending(pid_of(fd)),
                    0,
                    "a closed connection left requests open"
                );
            }
            Op::Sweep => table.sweep(now - IDLE_NS, &mut sink),
        }
        assert!(
            table.len() <= TABLE_CAPACITY,
            "the table outgrew its capacity"
        );
    }
    table.drain(&mut sink);
    assert!(
        sink.open.is_empty(),
        "{} requests never ended after the table was drained",
        sink.open.len()
    );
    sink
}
