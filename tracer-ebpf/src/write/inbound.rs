//! The read path's part of the write side: when a process that edits reads a request head, the
//! kernel chooses the request's SERVER span id (and its trace id when it carried none), puts
//! them on the data event for the agent, and remembers the request's context for the reading
//! thread and, by trace id, for the process: the parent of the requests it causes.
//!
//! The head scan is a program of its own (`tracer_server_ctx`, tail-called by the read-side
//! capture programs), so it costs the read programs nothing when no process edits.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{ConnKey, DataEvent, FLAG_KERNEL_TRACE, FLAG_SERVER_SPAN, counter};

use super::{
    ctx::{ServerCtx, TraceKey, edits, mode_of, random_id, sample},
    head::{HeadCtx, TraceCtx, find_headers, scan_lines, trace_of},
};
use crate::{
    FIRST_BYTE, HEADS, PROPAGATION, SCRATCH, THREAD_CTX, TRACE_CTX, count,
    event::{SYS_INGRESS_COUNT, bounded, output_scratch},
};

/// `HEADS` slot of the inbound scan of the read-side capture program `SYS_*` (slot 0 is the
/// sk_msg program's): no two programs that can run interleaved on a CPU share one.
pub const HEADS_INBOUND: u32 = 1;

/// Chooses the SERVER span id of the request whose head starts `buf` (`len` bytes), read by
/// thread `id` with the capture program `slot`, and remembers its context. Fills the event's id
/// fields; returns the event flags to add.
#[inline(always)]
fn server_request(id: u64, slot: u32, buf: *const u8, len: u64, ev: &mut DataEvent) -> u32 {
    let tgid = (id >> 32) as u32;
    if !edits(mode_of(tgid)) {
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
    let found = trace_of(buf, f, PROPAGATION.load());
    if f.owner != id as u32 {
        return 0;
    }
    let mut flags = FLAG_SERVER_SPAN;
    // A decision without ids (`b3: 0`) starts a trace as no context does, with that decision.
    let decision = found.map_or(2, |c| c.trace.sampled);
    let trace = match found {
        Some(HeadCtx { mut trace, .. }) if trace.hi | trace.lo != 0 => {
            if trace.sampled == 2 {
                trace.sampled = sample(trace.lo);
            }
            trace
        }
        _ => {
            let (hi, lo) = (random_id(), random_id());
            flags |= FLAG_KERNEL_TRACE;
            ev.trace_id[..8].copy_from_slice(&hi.to_be_bytes());
            ev.trace_id[8..].copy_from_slice(&lo.to_be_bytes());
            TraceCtx {
                hi,
                lo,
                wide: 1,
                sampled: if decision == 2 { sample(lo) } else { decision },
            }
        }
    };
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
    floor!(0);
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
    let captured = bounded(u64::from(scratch.event.captured_len));
    let data = scratch.data.as_ptr();
    let flags = server_request(id, slot, data, captured, &mut scratch.event);
    scratch.event.flags |= flags;
    output_scratch(scratch, id);
    0
}

/// A read of one byte on a socket of a write-side process: maybe the first byte of the next
/// request, whose rest the next read brings.
#[inline(always)]
pub fn first_byte(key: ConnKey, b: u8) {
    if b.is_ascii_uppercase() && edits(mode_of(key.tgid)) {
        let _ = FIRST_BYTE.insert(&key, &b, u64::from(BPF_ANY));
    }
}

/// The byte `first_byte` kept for this socket, if any (taken).
#[inline(always)]
pub fn take_first_byte(key: ConnKey) -> Option<u8> {
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
