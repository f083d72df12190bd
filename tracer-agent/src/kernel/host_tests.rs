//! The plain-Rust parts of the kernel programs, compiled for the host: the request-head
//! scanner (`tracer-ebpf/src/write/head.rs`) run on real request heads (what the `sk_msg` program
//! and the read path will find) and on every row of the trace-context rules table the agent's
//! extractor is held to (`trace/context_cases.rs`), and Go's register ABI (`write/go_abi.rs`) read from register
//! blocks laid out as the kernel's UAPI headers define them.

#[allow(dead_code, clippy::all, clippy::pedantic)]
#[path = "../../../tracer-ebpf/src/write/head.rs"]
mod head;

#[allow(dead_code, clippy::all, clippy::pedantic)]
#[path = "../../../tracer-ebpf/src/write/go_abi.rs"]
mod go_abi;

use head::{
    Found, H_B3, H_CONTENT_LENGTH, H_PARENT, H_SPANID, H_TRACEID, H_TRACEPARENT, HeadCtx, Val,
    find_headers, scan_lines,
};

use crate::trace::{
    context::{Propagator, parse_propagators, propagation_flags},
    context_cases::{CASES, request_head},
};

/// The kernel's reading of a head with the default propagators (`b3multi,b3,tracecontext`).
fn trace_of(buf: *const u8, f: &Found) -> Option<head::TraceCtx> {
    head::trace_of(buf, f, propagation_flags(&Propagator::ALL)).map(|c| c.trace)
}

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

/// Every row of the shared rules table: the kernel scanner reads the same trace id, parent span
/// id and decision as the agent's extractor (`trace::context` runs the same rows).
#[test]
fn every_row_of_the_rules_table() {
    let mut failed = Vec::new();
    for case in CASES {
        let order = if case.propagators.is_empty() {
            Propagator::ALL.to_vec()
        } else {
            parse_propagators(case.propagators).expect("a valid propagator list")
        };
        let h = request_head(case, "/rules", "example");
        let (buf, f) = scan(&h);
        assert_ne!(
            f.head_end, 0,
            "{}: the head ends within the scan",
            case.name
        );
        let got = head::trace_of(buf.as_ptr(), &f, propagation_flags(&order)).map(
            |HeadCtx { trace: t, parent }| {
                (
                    format!("{:016x}{:016x}", t.hi, t.lo),
                    format!("{parent:016x}"),
                    t.sampled,
                )
            },
        );
        if got != case.outcome.kernel() {
            failed.push(format!(
                "{}: expected {:?}, got {got:?}\n{h:?}",
                case.name,
                case.outcome.kernel()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{} rows differ:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// `struct pt_regs` of x86-64 (arch/x86/include/uapi/asm/ptrace.h).
#[repr(C)]
#[derive(Default)]
struct X86PtRegs {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    rbp: u64,
    rbx: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rax: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    orig_rax: u64,
    rip: u64,
    cs: u64,
    eflags: u64,
    rsp: u64,
    ss: u64,
}

/// `struct user_pt_regs` of arm64 (arch/arm64/include/uapi/asm/ptrace.h).
#[repr(C)]
struct Arm64UserPtRegs {
    regs: [u64; 31],
    sp: u64,
    pc: u64,
    pstate: u64,
}

#[test]
fn go_abi_reads_the_argument_and_goroutine_registers_of_each_architecture() {
    // Go's ABIInternal on amd64: RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11; g in R14.
    let x86 = X86PtRegs {
        rax: 1,
        rbx: 2,
        rcx: 3,
        rdi: 4,
        rsi: 5,
        r8: 6,
        r9: 7,
        r10: 8,
        r11: 9,
        r14: 0x6060,
        rdx: 0xbad,
        r15: 0xbad,
        ..X86PtRegs::default()
    };
    let regs = (&raw const x86).cast::<u64>();
    let args: Vec<u64> = go_abi::amd64::ARGS
        .iter()
        .map(|&r| go_abi::register(regs, r))
        .collect();
    assert_eq!(args, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(go_abi::register(regs, go_abi::amd64::G), 0x6060);

    // On arm64: R0..R15; g in R28.
    let mut arm = Arm64UserPtRegs {
        regs: [0; 31],
        sp: 0xbad,
        pc: 0xbad,
        pstate: 0xbad,
    };
    for (i, r) in arm.regs.iter_mut().enumerate() {
        *r = 100 + i as u64;
    }
    let regs = (&raw const arm).cast::<u64>();
    let args: Vec<u64> = go_abi::arm64::ARGS
        .iter()
        .map(|&r| go_abi::register(regs, r))
        .collect();
    assert_eq!(args, (100..116).collect::<Vec<u64>>());
    assert_eq!(go_abi::register(regs, go_abi::arm64::G), 128);
}
