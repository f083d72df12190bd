//! The kernel's request-head scanner (`tracer-ebpf/src/write/head.rs`, plain Rust compiled for
//! the host) on arbitrary heads, as the kernel runs it: on a zeroed 4 KiB buffer, for input
//! that starts like a request.
//!
//! Checked: no panic (and, built with `--asan`, no read outside the buffer); offsets inside the
//! scanned bytes; and where both the kernel and the agent read ids from the head with the same
//! propagator order, they read the same trace id.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tracer_fuzz::{
    kernel::head::{
        Found, H_COUNT, MAX_LINES, Val, find_headers, is_request_start, scan_lines, trace_of,
    },
    protocol::http1::parse::parse_head,
    trace::context::{Propagator, extract, propagation_flags},
};

const BUF: usize = 4096;

fuzz_target!(|input: &[u8]| {
    let len = input.len().min(tracer_common::WRITE_HEAD_MAX);
    let mut buf = Box::new([0u8; BUF]);
    buf[..len].copy_from_slice(&input[..len]);
    if !is_request_start(buf.as_ptr()) {
        return;
    }
    let mut f = Box::new(Found {
        owner: 0,
        head_end: 0,
        nlines: 0,
        cur: 0,
        lines: [0; 64],
        pad: 0,
        vals: [Val { off: 0, len: 0 }; H_COUNT],
    });
    scan_lines(buf.as_ptr(), len as u64, &mut f);
    find_headers(buf.as_ptr(), &mut f);
    assert!(
        f.head_end as usize <= len,
        "head end past the scanned bytes"
    );
    for v in f.vals {
        assert!(
            v.len == 0 || (v.off + v.len) as usize <= len,
            "a header value past the scanned bytes"
        );
    }
    // Both read with the agent's default propagator order, as the write side is configured.
    let order = Propagator::ALL;
    let kernel = trace_of(buf.as_ptr(), &f, propagation_flags(&order));
    // Compare only heads the kernel read whole (end found, every line remembered).
    let (Some(k), true) = (kernel, f.head_end > 0 && f.nlines as usize <= MAX_LINES) else {
        return;
    };
    let bytes = &input[..f.head_end as usize];
    // The kernel reads CRLF lines only; httparse also takes a bare LF, which no client sends.
    if bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    {
        return;
    }
    let head = parse_head(
        Bytes::copy_from_slice(bytes),
        false,
        0,
    );
    if head.malformed || !head.is_request() {
        return;
    }
    let Some((trace, _)) = extract(&head.context, &order).and_then(|x| x.ids) else {
        return;
    };
    if k.trace.hi == 0 && k.trace.lo == 0 {
        // The kernel saw a decision without ids where the agent found ids.
        panic!("the kernel read no ids where the agent read trace {trace:?}");
    }
    let mut ours = [0u8; 16];
    ours[..8].copy_from_slice(&k.trace.hi.to_be_bytes());
    ours[8..].copy_from_slice(&k.trace.lo.to_be_bytes());
    assert_eq!(
        ours, trace.0,
        "the kernel and the agent read different trace ids"
    );
});
