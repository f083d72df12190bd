//! Write side: edit the trace context of outgoing HTTP/1.x requests at the socket layer.
//!
//! - `tracer_connect4/6` (cgroup connect hooks, process context): a socket being connected by a
//!   process whose write mode is rewrite or inject is remembered by its cookie.
//! - `tracer_sockops` (cgroup sock_ops): when such a socket is established it enters `SOCKS`.
//!   Sockets of other processes never do.
//! - `tracer_sk_msg` (on `SOCKS`): runs on every send of those sockets. When a send starts with
//!   a complete request head, it rewrites the span id of the context the app sent (same length),
//!   or injects B3/W3C headers after the request line when the app sent none and the request
//!   that caused it is known (same thread). Bodies are skipped by length (`apply_bytes`), heads
//!   split over several sends are left alone, and every decision is reported to the agent.
//!
//! The causing request: the inbound path (`server_request`) chooses the SERVER span id when a
//! request head is read, and remembers the request's context for the reading thread and, by
//! trace id, for the process.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_ANY, sk_action::SK_PASS},
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        generated::{bpf_msg_apply_bytes, bpf_msg_pull_data},
    },
    macros::{cgroup_sock_addr, sk_msg, tracepoint},
    programs::{SkMsgContext, SockAddrContext, TracePointContext},
};
use tracer_common::{
    EventKind, INJECT_B3_SINGLE, INJECT_TRACEPARENT, MSG_APPLY, MSG_PLAN, SYS_INGRESS_COUNT,
    WRITE_HEAD_MAX, WRITE_INJECT, WRITE_INJECTED, WRITE_REWRITE, WRITE_REWRITTEN,
    WRITE_SKIP_FAILED, WRITE_SKIP_LONG, WRITE_SKIP_MALFORMED, WRITE_SKIP_NO_CAUSE,
    WRITE_SKIP_NO_CONTEXT, WRITE_SKIP_SPLIT, WriteEvent, counter,
};

use crate::{
    EVENTS, FIRST_BYTE, HEADS, INJECT_FORMAT, MSG_PROGS, PENDING_SOCKS, SAMPLE_BOUND, SCRATCH,
    THREAD_CTX, TRACE_CTX, WRITE_MODE, count,
    head::{
        Found, H_B3, H_CONTENT_LENGTH, H_PARENT, H_SPANID, H_TRACEPARENT, H_TRANSFER_ENCODING,
        TraceCtx, byte, find_headers, hex_char, scan_lines, trace_of,
    },
};

#[cfg(feature = "write-side")]
const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;

/// The request a thread is serving, as the write side needs it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ServerCtx {
    pub trace: TraceCtx,
    pub span: u64,
}

/// `TRACE_CTX` key: a process and the low 64 bits of a trace id it is serving.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TraceKey {
    pub tgid: u32,
    pub pad: u32,
    pub lo: u64,
}

/// Per-CPU work area: what the scan found and the head bytes it scanned (sk_msg only; the
/// inbound path scans the captured bytes in place).
#[repr(C)]
pub struct HeadBuf {
    pub found: Found,
    pub msg: MsgState,
    pub plan: Plan,
    pub buf: [u8; 4096],
}

/// `HEADS` slots: the sk_msg program's, then one per read-side capture program (plus its
/// `SYS_*` constant), so that no two programs that can run interleaved on a CPU share one.
const HEADS_SK_MSG: u32 = 0;
const HEADS_INBOUND: u32 = 1;

/// A random non-zero 64-bit id.
#[inline(always)]
pub fn random_id() -> u64 {
    // SAFETY: helper without preconditions.
    let hi = u64::from(unsafe { bpf_get_prandom_u32() });
    let lo = u64::from(unsafe { bpf_get_prandom_u32() });
    let id = (hi << 32) | lo;
    if id == 0 { 1 } else { id }
}

#[inline(always)]
fn write_mode(tgid: u32) -> u32 {
    // SAFETY: read-only lookup.
    unsafe { WRITE_MODE.get(&tgid) }.copied().unwrap_or(0)
}

/// Sampling decision for a context without one: the agent's ratio sampler, on the same bits.
#[inline(always)]
fn sample(lo: u64) -> u32 {
    u32::from((lo >> 1) < SAMPLE_BOUND.load())
}

// ---------------------------------------------------------------------------------------------
// Inbound: choose the SERVER span id and remember the context.

/// Called by the capture path for a read whose bytes (in `buf`, `len` of them) start with a
/// request line. Fills the event's id fields; returns the event flags to add.
#[inline(always)]
pub fn server_request(
    id: u64,
    slot: u32,
    buf: *const u8,
    len: u64,
    ev: &mut tracer_common::DataEvent,
) -> u32 {
    let tgid = (id >> 32) as u32;
    if write_mode(tgid) < WRITE_REWRITE {
        return 0;
    }
    let Some(heads) = HEADS.get_ptr_mut(HEADS_INBOUND + slot) else {
        return 0;
    };
    // SAFETY: per-CPU value; ownership is checked below before its contents are trusted.
    let f = unsafe { &mut (*heads).found };
    f.owner = id as u32;
    scan_lines(buf, len, f);
    find_headers(buf, f);
    let found = trace_of(buf, f);
    if f.owner != id as u32 {
        return 0;
    }
    let mut flags = tracer_common::FLAG_SERVER_SPAN;
    let trace = match found {
        Some(mut t) => {
            if t.sampled == 2 {
                t.sampled = sample(t.lo);
            }
            t
        }
        None => {
            let t = TraceCtx {
                hi: random_id(),
                lo: random_id(),
                wide: 1,
                sampled: 0,
            };
            let t = TraceCtx {
                sampled: sample(t.lo),
                ..t
            };
            flags |= tracer_common::FLAG_KERNEL_TRACE;
            ev.trace_id[..8].copy_from_slice(&t.hi.to_be_bytes());
            ev.trace_id[8..].copy_from_slice(&t.lo.to_be_bytes());
            t
        }
    };
    if trace.sampled == 1 {
        flags |= tracer_common::FLAG_SAMPLED;
    }
    let ctx = ServerCtx {
        trace,
        span: random_id(),
    };
    ev.server_span = ctx.span.to_be_bytes();
    let _ = THREAD_CTX.insert(&(id as u32), &ctx, u64::from(BPF_ANY));
    let key = TraceKey {
        tgid,
        pad: 0,
        lo: trace.lo,
    };
    let _ = TRACE_CTX.insert(&key, &ctx, u64::from(BPF_ANY));
    count(counter::SERVER_CONTEXTS);
    flags
}

/// Tail-called by the read path (slot 0 of `WRITE_PROGS`) with the event of a read that starts
/// with a request head in the per-CPU scratch buffer: adds the SERVER span id and sends it.
#[tracepoint]
pub fn tracer_server_ctx(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // The caller's buffer: the one read-side buffer of this CPU that this thread owns (a run
    // releases its buffer when it sends, so no other one keeps this thread's tag).
    let mut slot = SYS_INGRESS_COUNT;
    for s in 0..SYS_INGRESS_COUNT {
        if SCRATCH.get(s).is_some_and(|b| b.event.owner == id as u32) {
            slot = s;
        }
    }
    if slot >= SYS_INGRESS_COUNT {
        count(counter::SCRATCH_BUSY);
        return 0;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(slot) else {
        return 0;
    };
    // SAFETY: this run's per-CPU value; the calling program filled it just before the tail call.
    let scratch = unsafe { &mut *scratch };
    let captured = crate::capture::bounded(u64::from(scratch.event.captured_len));
    let data = scratch.data.as_ptr();
    let flags = server_request(id, slot, data, captured, &mut scratch.event);
    scratch.event.flags |= flags;
    crate::capture::output_scratch(scratch, id);
    0
}

/// A read of one byte on a socket of a write-side process: maybe the first byte of the next
/// request, whose rest the next read brings.
#[inline(always)]
pub fn first_byte(key: tracer_common::ConnKey, b: u8) {
    if b.is_ascii_uppercase() && write_mode(key.tgid) >= WRITE_REWRITE {
        let _ = FIRST_BYTE.insert(&key, &b, u64::from(BPF_ANY));
    }
}

/// The byte `first_byte` kept for this socket, if any (taken).
#[inline(always)]
pub fn take_first_byte(key: tracer_common::ConnKey) -> Option<u8> {
    // SAFETY: copied out at once.
    let b = unsafe { FIRST_BYTE.get(&key) }.copied()?;
    let _ = FIRST_BYTE.remove(&key);
    Some(b)
}

/// The thread wrote a response: the request it served no longer causes anything.
#[inline(always)]
pub fn server_response(id: u64) {
    // Absent for most threads: the delete then just fails, one map operation either way.
    let _ = THREAD_CTX.remove(&(id as u32));
}

// ---------------------------------------------------------------------------------------------
// Socket selection.

#[cgroup_sock_addr(connect4)]
pub fn tracer_connect4(ctx: SockAddrContext) -> i32 {
    mark_socket(&ctx);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn tracer_connect6(ctx: SockAddrContext) -> i32 {
    mark_socket(&ctx);
    1
}

#[inline(always)]
fn mark_socket(ctx: &SockAddrContext) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let mode = write_mode(tgid);
    if mode < WRITE_REWRITE {
        return;
    }
    // SAFETY: the sock_addr context is a valid argument for the cookie helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = PENDING_SOCKS.insert(&cookie, &mode, u64::from(BPF_ANY));
}

#[cfg(feature = "write-side")]
#[aya_ebpf::macros::sock_ops]
pub fn tracer_sockops(ctx: aya_ebpf::programs::SockOpsContext) -> u32 {
    use crate::SOCKS;
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // SAFETY: the sock_ops context is a valid argument for the cookie helper.
    let mut cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: presence test only.
    if unsafe { PENDING_SOCKS.get(&cookie) }.is_none() {
        return 1;
    }
    let _ = PENDING_SOCKS.remove(&cookie);
    // SAFETY: `ops` is the program's context.
    if SOCKS
        .update(&mut cookie, unsafe { &mut *ctx.ops }, u64::from(BPF_ANY))
        .is_ok()
    {
        count(counter::WRITE_SOCKETS);
    }
    1
}

// ---------------------------------------------------------------------------------------------
// sk_msg: the edit.

// Three programs chained by tail calls, so the verifier checks each on its own: the copy loop
// over the message (each of its exits a state of its own), the scan and plan over map memory,
// and the edit of the message. In one program, old verifiers (5.10) followed every exit of
// the copy loop through everything after it and did not finish in minutes.

/// Stage 1: copies the start of a send of a rewrite/inject process into the per-CPU work area.
#[sk_msg]
pub fn tracer_sk_msg(ctx: SkMsgContext) -> u32 {
    if copy_msg(&ctx).is_some() {
        next_stage(&ctx, MSG_PLAN);
    }
    SK_PASS
}

/// Stage 2: scans the copied head and decides the edit.
#[sk_msg]
pub fn tracer_sk_msg_plan(ctx: SkMsgContext) -> u32 {
    if plan_msg().is_some() {
        next_stage(&ctx, MSG_APPLY);
    }
    SK_PASS
}

/// Stage 3: edits the message as planned and reports what it did.
#[sk_msg]
pub fn tracer_sk_msg_apply(ctx: SkMsgContext) -> u32 {
    let _ = apply_msg(&ctx);
    SK_PASS
}

#[inline(always)]
fn next_stage(ctx: &SkMsgContext, slot: u32) {
    // SAFETY: `ctx` is this sk_msg program's context; `MSG_PROGS` holds sk_msg programs.
    let _ = unsafe { MSG_PROGS.tail_call(ctx, slot) };
    // Only reached when the next stage could not run: the send goes out unedited.
    count(counter::WRITE_SKIPPED);
}

/// What the edit will do. Kept in the per-CPU work area between stages 2 and 3, which copies
/// it to its stack (checking the owner before and after) before writing anything.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Plan {
    action: u32,
    head_end: u32,
    client: u64,
    parent: u64,
    trace: TraceCtx,
    line_end: u32,
    body: u32,
    /// Offsets of the fields to overwrite (0: none).
    span_at: [u32; 3],
    parent_at: [u32; 2],
    pad: u32,
}

/// The send being edited, as stage 1 leaves it for the next ones.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsgState {
    size: u32,
    copied: u32,
    mode: u32,
    /// Stage 3: a field to overwrite does not hold 16 hex digits.
    bad: u32,
}

/// The work area of the thread running now, if it still owns it.
#[inline(always)]
fn owned_heads(id: u64) -> Option<&'static mut HeadBuf> {
    let heads = HEADS.get_ptr_mut(HEADS_SK_MSG)?;
    // SAFETY: per-CPU value; the owner tag is checked before anything in it is used.
    let hb = unsafe { &mut *heads };
    // SAFETY: valid reference into the map value.
    (unsafe { core::ptr::read_volatile(&raw const hb.found.owner) } == id as u32).then_some(hb)
}

#[inline(always)]
fn copy_msg(ctx: &SkMsgContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let mode = write_mode((id >> 32) as u32);
    if mode < WRITE_REWRITE {
        return None;
    }
    let size = ctx.size();
    if size < 16 {
        return None;
    }
    let want = if size < WRITE_HEAD_MAX as u32 {
        size
    } else {
        WRITE_HEAD_MAX as u32
    };
    // SAFETY: valid context; `want` is within the message.
    if unsafe { bpf_msg_pull_data(ctx.msg, 0, want, 0) } != 0 {
        return None;
    }
    let heads = HEADS.get_ptr_mut(HEADS_SK_MSG)?;
    // SAFETY: per-CPU value, ownership checked by the later stages before they use it.
    let hb = unsafe { &mut *heads };
    // SAFETY: valid reference into the map value.
    unsafe { core::ptr::write_volatile(&raw mut hb.found.owner, id as u32) };
    let copied = copy_head(ctx, hb);
    hb.msg = MsgState {
        size,
        copied: copied as u32,
        mode,
        bad: 0,
    };
    Some(())
}

#[inline(always)]
fn plan_msg() -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let hb = owned_heads(id)?;
    let MsgState {
        size, copied, mode, ..
    } = hb.msg;
    let copied = u64::from(copied);
    let buf = hb.buf.as_ptr();
    if copied < 16 || !crate::capture::is_request_start(buf) {
        return None;
    }
    let f = &mut hb.found;
    scan_lines(buf, copied, f);
    let mut plan = Plan {
        action: 0,
        head_end: f.head_end,
        client: 0,
        parent: 0,
        trace: TraceCtx {
            hi: 0,
            lo: 0,
            wide: 0,
            sampled: 0,
        },
        line_end: f.lines[0],
        body: 0,
        span_at: [0; 3],
        parent_at: [0; 2],
        pad: 0,
    };
    if plan.head_end == 0 {
        plan.action = if u64::from(size) > copied {
            WRITE_SKIP_LONG
        } else {
            WRITE_SKIP_SPLIT
        };
    } else {
        find_headers(buf, f);
        plan_edit(buf, f, id, mode, &mut plan);
    }
    let hb = owned_heads(id)?;
    hb.plan = plan;
    Some(())
}

#[inline(always)]
fn apply_msg(ctx: &SkMsgContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let hb = owned_heads(id)?;
    // SAFETY: valid reference into the map value; read in one go, then the owner is checked
    // again, so the copy is this thread's plan and not a half-overwritten one.
    let mut plan = unsafe { core::ptr::read_volatile(&raw const hb.plan) };
    let hb = owned_heads(id)?;
    let added = apply(ctx, hb, &mut plan);
    if plan.head_end != 0 {
        let skip = plan.head_end + added + plan.body;
        // SAFETY: valid context.
        unsafe { bpf_msg_apply_bytes(ctx.msg, skip) };
    }
    report(id, &plan, added);
    Some(())
}

/// Copies the pulled part of the message into the per-CPU buffer; returns the bytes copied.
/// The count goes through map memory: kept in a register, each of the 1024 places the loop can
/// stop at would be a distinct state for the verifier to follow through everything after it.
#[inline(always)]
fn copy_head(ctx: &SkMsgContext, hb: &mut HeadBuf) -> u64 {
    let data = ctx.data();
    let end = ctx.data_end();
    // SAFETY: valid reference into the map value.
    unsafe { core::ptr::write_volatile(&raw mut hb.found.head_end, WRITE_HEAD_MAX as u32) };
    for i in 0..WRITE_HEAD_MAX {
        if data + i + 1 > end {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut hb.found.head_end, i as u32) };
            break;
        }
        // SAFETY: checked against data_end just above.
        hb.buf[i] = unsafe { *((data + i) as *const u8) };
    }
    // SAFETY: as above.
    u64::from(unsafe { core::ptr::read_volatile(&raw const hb.found.head_end) })
}

/// Decides the edit of a complete head.
#[inline(always)]
fn plan_edit(buf: *const u8, f: &Found, id: u64, mode: u32, plan: &mut Plan) {
    let cl = f.vals[H_CONTENT_LENGTH];
    if cl.len > 0 && f.vals[H_TRANSFER_ENCODING].len == 0 {
        plan.body = parse_decimal(buf, u64::from(cl.off), cl.len);
    }
    let sp = f.vals[H_SPANID];
    let b3 = f.vals[H_B3];
    let tp = f.vals[H_TRACEPARENT];
    let has_context = sp.len > 0 || b3.len > 0 || tp.len > 0;
    if !has_context {
        if mode < WRITE_INJECT {
            plan.action = WRITE_SKIP_NO_CONTEXT;
            return;
        }
        let tid = id as u32;
        // SAFETY: copied out at once.
        let Some(cause) = (unsafe { THREAD_CTX.get(&tid) }).copied() else {
            plan.action = WRITE_SKIP_NO_CAUSE;
            return;
        };
        plan.action = WRITE_INJECTED;
        plan.client = random_id();
        plan.parent = cause.span;
        plan.trace = cause.trace;
        return;
    }
    let Some(trace) = trace_of(buf, f) else {
        plan.action = WRITE_SKIP_MALFORMED;
        return;
    };
    plan.trace = trace;
    // Every span-id field must have the expected shape, or nothing is touched.
    if sp.len > 0 {
        if sp.len != 16 {
            plan.action = WRITE_SKIP_MALFORMED;
            return;
        }
        plan.span_at[0] = sp.off;
    }
    if b3.len >= 33 {
        let width = if byte(buf, u64::from(b3.off) + 16) == b'-' {
            16
        } else {
            32
        };
        plan.span_at[1] = b3.off + width + 1;
        // {trace}-{span}-{sampling}-{parent}
        if b3.len == width + 36 && byte(buf, u64::from(b3.off + width + 19)) == b'-' {
            plan.parent_at[1] = b3.off + width + 20;
        }
    } else if b3.len > 0 && sp.len == 0 && tp.len == 0 {
        // A lone sampling decision: nothing to rewrite.
        plan.action = WRITE_SKIP_NO_CONTEXT;
        return;
    }
    if tp.len == 55 {
        plan.span_at[2] = tp.off + 36;
    } else if tp.len > 0 {
        plan.action = WRITE_SKIP_MALFORMED;
        return;
    }
    let pa = f.vals[H_PARENT];
    if pa.len == 16 {
        plan.parent_at[0] = pa.off;
    }
    // The cause: the request this thread is serving if it is the same trace, else the
    // in-flight request of the process with this trace id.
    let tid = id as u32;
    // SAFETY: copied out at once.
    let by_thread = unsafe { THREAD_CTX.get(&tid) }
        .copied()
        .filter(|c| c.trace.lo == trace.lo);
    let cause = by_thread.or_else(|| {
        let key = TraceKey {
            tgid: (id >> 32) as u32,
            pad: 0,
            lo: trace.lo,
        };
        // SAFETY: copied out at once.
        unsafe { TRACE_CTX.get(&key) }.copied()
    });
    if let Some(c) = cause {
        plan.parent = c.span;
    }
    plan.client = random_id();
    plan.action = WRITE_REWRITTEN;
}

#[inline(always)]
fn parse_decimal(buf: *const u8, at: u64, len: u32) -> u32 {
    let mut v = 0u32;
    for j in 0..10u64 {
        if j >= u64::from(len) {
            break;
        }
        let c = byte(buf, at + j);
        if !c.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u32::from(c - b'0'));
    }
    v
}

/// Writes 16 hex digits of `v` at `off` in the message; false if out of bounds.
#[inline(always)]
fn put_hex16(ctx: &SkMsgContext, off: u32, v: u64) -> bool {
    let off = (off as usize) & (2 * WRITE_HEAD_MAX - 1);
    let data = ctx.data();
    if data + off + 16 > ctx.data_end() {
        return false;
    }
    let p = (data + off) as *mut u8;
    for j in 0..16 {
        // SAFETY: checked against data_end above.
        unsafe { *p.add(j) = hex_char(v >> (60 - 4 * j)) };
    }
    true
}

/// Sets `*bad` unless there are 16 hex digits at `off` in the message. The verdict goes to map
/// memory, not a register: the verifier then sees the same state after each byte whatever the
/// byte was, instead of doubling the paths it follows per byte. A function of its own (a BPF
/// subprogram): inlined five times next to the writes, it took the stage past the stack limit.
#[inline(never)]
fn check_hex16(ctx: &SkMsgContext, off: u32, bad: *mut u32) {
    let off = (off as usize) & (2 * WRITE_HEAD_MAX - 1);
    let data = ctx.data();
    if data + off + 16 > ctx.data_end() {
        // SAFETY: `bad` points into the per-CPU work area.
        unsafe { core::ptr::write_volatile(bad, 1) };
        return;
    }
    let p = (data + off) as *const u8;
    for j in 0..16 {
        // SAFETY: checked against data_end above.
        if !unsafe { *p.add(j) }.is_ascii_hexdigit() {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(bad, 1) };
        }
    }
}

/// Performs the plan; returns the bytes added to the message.
#[inline(always)]
fn apply(ctx: &SkMsgContext, hb: &mut HeadBuf, plan: &mut Plan) -> u32 {
    match plan.action {
        WRITE_REWRITTEN => {
            // An id is only ever written over 16 hex digits in the message itself: a field of
            // unexpected content stays as the app wrote it, and so would the whole head if a
            // plan ever pointed elsewhere.
            let bad = &raw mut hb.msg.bad;
            // SAFETY: valid pointer into the map value.
            unsafe { core::ptr::write_volatile(bad, 0) };
            for at in plan.span_at {
                if at != 0 {
                    check_hex16(ctx, at, bad);
                }
            }
            if plan.parent != 0 {
                for at in plan.parent_at {
                    if at != 0 {
                        check_hex16(ctx, at, bad);
                    }
                }
            }
            // SAFETY: as above.
            if unsafe { core::ptr::read_volatile(bad) } != 0 {
                plan.action = WRITE_SKIP_MALFORMED;
                return 0;
            }
            let mut ok = true;
            for at in plan.span_at {
                if at != 0 {
                    ok &= put_hex16(ctx, at, plan.client);
                }
            }
            if plan.parent != 0 {
                for at in plan.parent_at {
                    if at != 0 {
                        ok &= put_hex16(ctx, at, plan.parent);
                    }
                }
            }
            if !ok {
                plan.action = WRITE_SKIP_FAILED;
            }
            0
        }
        WRITE_INJECTED => inject(ctx, hb, plan),
        _ => 0,
    }
}

/// Text writer into the per-CPU buffer (no bounds checks for the verifier to branch on: the
/// index is masked into the text area).
struct Text<'a> {
    buf: &'a mut [u8; 4096],
    at: usize,
}

/// Where the injected text is assembled in `HeadBuf::buf` (after the head copy).
const TEXT_AT: usize = 2048;
const TEXT_MASK: usize = 255;

impl Text<'_> {
    #[inline(always)]
    fn put(&mut self, c: u8) {
        // Volatile: one plain store per byte, nothing for LLVM to gather on the small BPF stack.
        // SAFETY: TEXT_AT + TEXT_MASK < 4096.
        unsafe {
            core::ptr::write_volatile(
                self.buf.as_mut_ptr().add(TEXT_AT + (self.at & TEXT_MASK)),
                c,
            );
        }
        self.at += 1;
    }

    #[inline(always)]
    fn text(&mut self, s: &'static [u8]) {
        let mut i = 0;
        while i < s.len() {
            self.put(s[i]);
            i += 1;
        }
    }

    #[inline(always)]
    fn hex(&mut self, v: u64) {
        for j in 0..16 {
            self.put(hex_char(v >> (60 - 4 * j)));
        }
    }

    #[inline(always)]
    fn trace(&mut self, t: &TraceCtx, wide: bool) {
        if wide {
            self.hex(t.hi);
        }
        self.hex(t.lo);
    }
}

/// Renders the headers to inject into the text area; returns their length.
#[inline(always)]
fn render(buf: &mut [u8; 4096], plan: &Plan, format: u32, wide: bool) -> u32 {
    let mut out = Text { buf, at: 0 };
    let sampled = if plan.trace.sampled == 1 { b'1' } else { b'0' };
    match format {
        INJECT_B3_SINGLE => {
            out.text(b"b3: ");
            out.trace(&plan.trace, wide);
            out.put(b'-');
            out.hex(plan.client);
            out.put(b'-');
            out.put(sampled);
            out.put(b'-');
            out.hex(plan.parent);
            out.text(b"\r\n");
        }
        INJECT_TRACEPARENT => {
            out.text(b"traceparent: 00-");
            out.trace(&plan.trace, true);
            out.put(b'-');
            out.hex(plan.client);
            out.text(b"-0");
            out.put(sampled);
            out.text(b"\r\n");
        }
        _ => {
            out.text(b"x-b3-traceid: ");
            out.trace(&plan.trace, wide);
            out.text(b"\r\nx-b3-spanid: ");
            out.hex(plan.client);
            out.text(b"\r\nx-b3-parentspanid: ");
            out.hex(plan.parent);
            out.text(b"\r\nx-b3-sampled: ");
            out.put(sampled);
            out.text(b"\r\n");
        }
    }
    out.at as u32
}

/// Copies `len` bytes of the text area into the message at `at`. The count of bytes written
/// goes through map memory, and the caller pulls again afterwards, for the same reason as in
/// `copy_head`.
#[inline(always)]
fn write_text(ctx: &SkMsgContext, hb: &mut HeadBuf, at: u32, len: u32) -> u32 {
    let data = ctx.data();
    let end = ctx.data_end();
    let base = (at as usize) & (2 * WRITE_HEAD_MAX - 1);
    // SAFETY: valid reference into the map value.
    unsafe { core::ptr::write_volatile(&raw mut hb.found.cur, len) };
    for j in 0..=TEXT_MASK {
        if j >= len as usize {
            break;
        }
        if data + base + j + 1 > end {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&raw mut hb.found.cur, j as u32) };
            break;
        }
        // SAFETY: checked against data_end just above.
        unsafe { *((data + base + j) as *mut u8) = hb.buf[TEXT_AT + j] };
    }
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const hb.found.cur) }
}

#[inline(always)]
fn inject(ctx: &SkMsgContext, hb: &mut HeadBuf, plan: &mut Plan) -> u32 {
    let format = INJECT_FORMAT.load();
    let wide = plan.trace.wide == 1 || format == INJECT_TRACEPARENT;
    let len = render(&mut hb.buf, plan, format, wide);
    let at = plan.line_end;
    if ctx.push_data(at, len, 0).is_err() {
        plan.action = WRITE_SKIP_FAILED;
        return 0;
    }
    let upto = at + len;
    // Pointers are stale after the push: pull the head again, from the start of the message.
    // SAFETY: valid context; the range lies within the message.
    if upto > ctx.size() || unsafe { bpf_msg_pull_data(ctx.msg, 0, upto, 0) } != 0 {
        let _ = ctx.pop_data(at, len, 0);
        plan.action = WRITE_SKIP_FAILED;
        return 0;
    }
    let written = write_text(ctx, hb, at, len);
    // SAFETY: valid context (see `write_text`).
    let repulled = unsafe { bpf_msg_pull_data(ctx.msg, 0, upto, 0) } == 0;
    if written != len || !repulled {
        // Pushed bytes that could not be written would corrupt the request: take them out.
        let _ = ctx.pop_data(at, len, 0);
        plan.action = WRITE_SKIP_FAILED;
        return 0;
    }
    len
}

#[inline(always)]
fn report(id: u64, plan: &Plan, added: u32) {
    match plan.action {
        WRITE_REWRITTEN => count(counter::WRITE_REWRITTEN),
        WRITE_INJECTED => count(counter::WRITE_INJECTED),
        _ => count(counter::WRITE_SKIPPED),
    }
    let edited = plan.action == WRITE_REWRITTEN || plan.action == WRITE_INJECTED;
    // Reserved in the ring buffer and filled in place: the BPF stack has no room for a copy.
    let Some(mut entry) = EVENTS.reserve::<WriteEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    // SAFETY: the reservation holds one WriteEvent; every field is written before submit.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EventKind::Write as u32;
    ev.action = plan.action;
    ev.pid = (id >> 32) as u32;
    ev.tid = id as u32;
    // SAFETY: helper without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.client_span = if edited {
        plan.client.to_be_bytes()
    } else {
        [0; 8]
    };
    ev.parent_span = if edited {
        plan.parent.to_be_bytes()
    } else {
        [0; 8]
    };
    ev.trace_id[..8].copy_from_slice(&plan.trace.hi.to_be_bytes());
    ev.trace_id[8..].copy_from_slice(&plan.trace.lo.to_be_bytes());
    ev.sampled = u32::from(plan.trace.sampled == 1);
    ev.added = added;
    entry.submit(0);
}
