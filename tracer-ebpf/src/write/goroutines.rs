//! Goroutine tracking for the write side's inject mode in Go programs (uprobes, entry only:
//! uretprobes crash Go programs when a goroutine's stack moves).
//!
//! A Go server reads a request on some thread and the handler may call out from a goroutine it
//! started, whose request a different goroutine (the transport's write loop) writes on yet another
//! thread. So the cause travels with goroutines and requests instead of threads:
//! - `net/http.serverHandler.ServeHTTP` (the connection's goroutine, right after it read the
//!   request on this thread): the thread's request context becomes the goroutine's;
//! - `runtime.newproc1` then `runtime.runqput` on the same thread: the new goroutine's parent;
//! - `net/http.(*Transport).roundTrip`: the request being sent gets the context of the calling
//!   goroutine or its nearest ancestor that has one;
//! - `net/http.(*Request).write` (the write loop): the writing thread gets that context, which is
//!   what the sk_msg program looks up when the request leaves.
//!
//! Arguments and the goroutine are read through [`go_abi`](super::go_abi), per architecture.

use aya_ebpf::{
    bindings::BPF_ANY, helpers::bpf_get_current_pid_tgid, macros::uprobe, programs::ProbeContext,
};

use super::{
    ctx::{ServerCtx, injects, mode_of},
    go_abi,
};
use crate::{G_CTX, G_PARENT, PENDING_G, REQ_CTX, THREAD_CTX};

/// Ancestors walked to find a goroutine's request.
const MAX_DEPTH: usize = 8;

/// The probe's register block.
#[inline(always)]
fn regs(ctx: &ProbeContext) -> *const u64 {
    ctx.regs.cast::<u64>().cast_const()
}

/// The current thread's id, if its process injects.
#[inline(always)]
fn injecting() -> Option<u32> {
    let id = bpf_get_current_pid_tgid();
    injects(mode_of((id >> 32) as u32)).then_some(id as u32)
}

#[uprobe]
pub fn go_serve_http(ctx: ProbeContext) -> u32 {
    floor!(0);
    let Some(tid) = injecting() else { return 0 };
    let g = go_abi::goroutine(regs(&ctx));
    // The context the read path left for this thread is this request's, once: a second request
    // served without a new read (two heads read at once) gets none rather than the first's.
    // SAFETY: copied out at once.
    match unsafe { THREAD_CTX.get(&tid) }.copied() {
        Some(c) => {
            let _ = G_CTX.insert(&g, &c, u64::from(BPF_ANY));
            let _ = THREAD_CTX.remove(&tid);
        }
        None => {
            let _ = G_CTX.remove(&g);
        }
    }
    0
}

#[uprobe]
pub fn go_newproc1(ctx: ProbeContext) -> u32 {
    floor!(0);
    let Some(tid) = injecting() else { return 0 };
    // newproc1(fn, callergp, ...): the creating goroutine.
    let parent = go_abi::arg(regs(&ctx), 1);
    let _ = PENDING_G.insert(&tid, &parent, u64::from(BPF_ANY));
    0
}

#[uprobe]
pub fn go_runqput(ctx: ProbeContext) -> u32 {
    floor!(0);
    let Some(tid) = injecting() else { return 0 };
    // SAFETY: copied out at once.
    let Some(parent) = (unsafe { PENDING_G.get(&tid) }).copied() else {
        return 0;
    };
    let _ = PENDING_G.remove(&tid);
    // runqput(pp, gp, next): the goroutine newproc1 just made (a reused g loses its old request).
    let g = go_abi::arg(regs(&ctx), 1);
    let _ = G_CTX.remove(&g);
    let _ = G_PARENT.insert(&g, &parent, u64::from(BPF_ANY));
    0
}

#[uprobe]
pub fn go_round_trip(ctx: ProbeContext) -> u32 {
    floor!(0);
    if injecting().is_none() {
        return 0;
    }
    // (*Transport).roundTrip(t, req)
    let (req, mut g) = (go_abi::arg(regs(&ctx), 1), go_abi::goroutine(regs(&ctx)));
    for _ in 0..MAX_DEPTH {
        // SAFETY: copied out at once.
        if let Some(c) = unsafe { G_CTX.get(&g) }.copied() {
            let _ = REQ_CTX.insert(&req, &c, u64::from(BPF_ANY));
            return 0;
        }
        // SAFETY: copied out at once.
        match unsafe { G_PARENT.get(&g) }.copied() {
            Some(p) => g = p,
            None => return 0,
        }
    }
    0
}

#[uprobe]
pub fn go_request_write(ctx: ProbeContext) -> u32 {
    floor!(0);
    let Some(tid) = injecting() else { return 0 };
    // (*Request).write(r, w, ...)
    let req = go_abi::arg(regs(&ctx), 0);
    // SAFETY: copied out at once.
    let Some(c): Option<ServerCtx> = (unsafe { REQ_CTX.get(&req) }).copied() else {
        return 0;
    };
    let _ = REQ_CTX.remove(&req);
    let _ = THREAD_CTX.insert(&tid, &c, u64::from(BPF_ANY));
    0
}
