//! The sk_msg edit of outgoing requests: for a send that starts with a complete request head,
//! the span id of the context the app sent is rewritten in place (same length), or B3/W3C
//! headers are injected after the request line when the app sent none and the request that
//! caused it is known. Bodies are skipped by length (`apply_bytes`), heads split over several
//! sends are left alone, and every decision is reported to the agent (`WriteEvent`).
//!
//! Three programs chained by tail calls, so the verifier checks each on its own: the copy loop
//! over the message (each of its exits a state of its own), the scan and plan over map memory,
//! and the edit of the message. In one program, old verifiers (5.10) followed every exit of
//! the copy loop through everything after it and did not finish in minutes.

use aya_ebpf::{
    bindings::sk_action::SK_PASS,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_msg_apply_bytes, bpf_msg_pull_data},
    },
    macros::sk_msg,
    programs::SkMsgContext,
};
use aya_log_ebpf::{
    info,
    macro_support::{Level, level_enabled},
};
use tracer_common::{
    EventKind, MSG_APPLY, MSG_LOG, MSG_PLAN, WRITE_HEAD_MAX, WRITE_INJECTED, WRITE_REWRITTEN,
    WRITE_SKIP_FAILED, WRITE_SKIP_LONG, WRITE_SKIP_MALFORMED, WRITE_SKIP_NO_CAUSE,
    WRITE_SKIP_NO_CONTEXT, WRITE_SKIP_SPLIT, WriteEvent, counter,
};

use super::{
    ctx::{TraceKey, edits, injects, mode_of, random_id},
    head::{
        Found, H_B3, H_CONTENT_LENGTH, H_PARENT, H_SPANID, H_TRACEPARENT, H_TRANSFER_ENCODING,
        TraceCtx, byte, find_headers, hex_char, is_request_start, scan_lines, trace_of,
    },
    inject::inject,
    msg::{HEADS_SK_MSG, HeadBuf, MsgState, Plan, owned_heads},
};
use crate::{EVENTS, HEADS, MSG_PROGS, PROPAGATION, THREAD_CTX, TRACE_CTX, count};

/// Stage 1: copies the start of a send of a rewrite/inject process into the per-CPU work area.
#[sk_msg]
pub fn tracer_sk_msg(ctx: SkMsgContext) -> u32 {
    floor!(SK_PASS);
    if copy_msg(&ctx).is_some() {
        next_stage(&ctx, MSG_PLAN);
    }
    SK_PASS
}

/// Stage 2: scans the copied head and decides the edit.
#[sk_msg]
pub fn tracer_sk_msg_plan(ctx: SkMsgContext) -> u32 {
    floor!(SK_PASS);
    if plan_msg().is_some() {
        next_stage(&ctx, MSG_APPLY);
    }
    SK_PASS
}

/// Stage 3: edits the message as planned and reports what it did.
#[sk_msg]
pub fn tracer_sk_msg_apply(ctx: SkMsgContext) -> u32 {
    floor!(SK_PASS);
    // Off (the default), the verifier resolves the log test at load time and drops the branch.
    if apply_msg(&ctx) == Some(false) && level_enabled(Level::Info) {
        // SAFETY: `ctx` is this sk_msg program's context; `MSG_PROGS` holds sk_msg programs.
        let _ = unsafe { MSG_PROGS.tail_call(&ctx, MSG_LOG) };
    }
    SK_PASS
}

/// With `--kernel-log`, after stage 3 left a head unedited: says why. A program of its own,
/// with a stack of its own: in stage 3, whose stack is nearly full, the log record did not fit.
#[sk_msg]
pub fn tracer_sk_msg_log(ctx: SkMsgContext) -> u32 {
    floor!(SK_PASS);
    let id = bpf_get_current_pid_tgid();
    if let Some(hb) = owned_heads(id) {
        info!(
            &ctx,
            "pid {} tid {}: outgoing request head left unedited, reason {} (3 split over sends, 4 longer than the 1024 bytes examined, 5 inject without a known cause, 6 a context value of the wrong shape, 7 no context to rewrite, 8 a helper failed)",
            (id >> 32) as u32,
            id as u32,
            hb.plan.action
        );
    }
    SK_PASS
}

#[inline(always)]
fn next_stage(ctx: &SkMsgContext, slot: u32) {
    // SAFETY: `ctx` is this sk_msg program's context; `MSG_PROGS` holds sk_msg programs.
    let _ = unsafe { MSG_PROGS.tail_call(ctx, slot) };
    // Only reached when the next stage could not run: the send goes out unedited.
    count(counter::WRITE_SKIPPED);
}

#[inline(always)]
fn copy_msg(ctx: &SkMsgContext) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let mode = mode_of((id >> 32) as u32);
    if !edits(mode) {
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

/// Plans the edit of the send in the per-CPU work area, where the plan is kept (no copy of it
/// through the stack). No `memset`/`memcpy` call may come out of this stage: those are BPF
/// subprograms, whose frame 5.10's verifier adds to this one's 504 bytes (544 > 512).
#[inline(always)]
fn plan_msg() -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let hb = owned_heads(id)?;
    let MsgState {
        size, copied, mode, ..
    } = hb.msg;
    let copied = u64::from(copied);
    let HeadBuf {
        found: f,
        plan,
        buf,
        ..
    } = hb;
    let buf = buf.as_ptr();
    if copied < 16 || !is_request_start(buf) {
        return None;
    }
    scan_lines(buf, copied, f);
    // Field by field and volatile, for the reason `find_headers` zeroes that way.
    let zero = |p: *mut u32| {
        // SAFETY: `p` points into the per-CPU work area.
        unsafe { core::ptr::write_volatile(p, 0) };
    };
    plan.head_end = f.head_end;
    plan.line_end = f.lines[0];
    for p in [
        &raw mut plan.action,
        &raw mut plan.trace.wide,
        &raw mut plan.trace.sampled,
        &raw mut plan.body,
        &raw mut plan.span_at[0],
        &raw mut plan.span_at[1],
        &raw mut plan.span_at[2],
        &raw mut plan.parent_at[0],
        &raw mut plan.parent_at[1],
    ] {
        zero(p);
    }
    for p in [
        &raw mut plan.client,
        &raw mut plan.parent,
        &raw mut plan.trace.hi,
        &raw mut plan.trace.lo,
    ] {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(p, 0) };
    }
    if plan.head_end == 0 {
        plan.action = if u64::from(size) > copied {
            WRITE_SKIP_LONG
        } else {
            WRITE_SKIP_SPLIT
        };
    } else {
        find_headers(buf, f);
        plan_edit(buf, f, id, mode, plan);
    }
    // Still this thread's work area: the plan is its own.
    owned_heads(id).map(|_| ())
}

/// Edits the send as planned; whether a head was edited (`None`: not this thread's plan).
#[inline(always)]
fn apply_msg(ctx: &SkMsgContext) -> Option<bool> {
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
    // The outcome, for the log program.
    hb.plan.action = plan.action;
    report(id, &plan, added);
    Some(plan.action == WRITE_REWRITTEN || plan.action == WRITE_INJECTED)
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
        if !injects(mode) {
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
    let Some(found) = trace_of(buf, f, PROPAGATION.load()) else {
        plan.action = WRITE_SKIP_MALFORMED;
        return;
    };
    let trace = found.trace;
    if trace.hi | trace.lo == 0 {
        // A lone sampling decision: nothing to rewrite.
        plan.action = WRITE_SKIP_NO_CONTEXT;
        return;
    }
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
    }
    // Version 00 is 55 characters; a later version may add fields after a '-'.
    if tp.len == 55 || (tp.len > 55 && byte(buf, u64::from(tp.off) + 55) == b'-') {
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
            // plan ever pointed elsewhere. Plain loops, checked then written: one helper taking
            // a closure for both took the stage past the 512-byte stack.
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

/// Counts what the edit did and reports it to the agent, edited or not, so it can pair every
/// head it parses with the ids on the wire. With `--kernel-log`, says why a head was left alone.
#[inline(always)]
fn report(id: u64, plan: &Plan, added: u32) {
    let edited = plan.action == WRITE_REWRITTEN || plan.action == WRITE_INJECTED;
    match plan.action {
        WRITE_REWRITTEN => count(counter::WRITE_REWRITTEN),
        WRITE_INJECTED => count(counter::WRITE_INJECTED),
        _ => count(counter::WRITE_SKIPPED),
    }
    // Reserved in the ring buffer and filled in place: the BPF stack has no room for a copy.
    let Some(mut entry) = EVENTS.reserve::<WriteEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return;
    };
    let (client, parent) = if edited {
        (plan.client, plan.parent)
    } else {
        (0, 0)
    };
    // SAFETY: the reservation holds one WriteEvent; every field is written before submit.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    ev.kind = EventKind::Write as u32;
    ev.action = plan.action;
    ev.pid = (id >> 32) as u32;
    ev.tid = id as u32;
    ev.client_span = client.to_be_bytes();
    ev.parent_span = parent.to_be_bytes();
    ev.trace_id[..8].copy_from_slice(&plan.trace.hi.to_be_bytes());
    ev.trace_id[8..].copy_from_slice(&plan.trace.lo.to_be_bytes());
    ev.sampled = u32::from(plan.trace.sampled == 1);
    ev.added = added;
    entry.submit(0);
}
