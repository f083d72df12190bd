//! What the write side's programs share: each process's write mode, the context of the request
//! a thread (or a trace) is serving, ids and the sampling rule.

use aya_ebpf::helpers::bpf_get_prandom_u32;
use tracer_common::{WRITE_INJECT, WRITE_REWRITE, sampled_by_bound};

use super::head::TraceCtx;
use crate::{SAMPLE_BOUND, WRITE_MODE};

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

/// The write mode of process `tgid` (`tracer_common::WRITE_*`; absent from `WRITE_MODE`, it is
/// read-only).
#[inline(always)]
pub fn mode_of(tgid: u32) -> u32 {
    // SAFETY: read-only lookup, copied out at once.
    unsafe { WRITE_MODE.get(&tgid) }
        .copied()
        .unwrap_or(tracer_common::WRITE_READ_ONLY)
}

/// Whether a process in `mode` has its outgoing requests edited (rewrite or inject).
#[inline(always)]
pub fn edits(mode: u32) -> bool {
    mode >= WRITE_REWRITE
}

/// Whether a process in `mode` gets context injected where it sends none.
#[inline(always)]
pub fn injects(mode: u32) -> bool {
    mode >= WRITE_INJECT
}

/// A random non-zero 64-bit id.
#[inline(always)]
pub fn random_id() -> u64 {
    // SAFETY: helper without preconditions.
    let hi = u64::from(unsafe { bpf_get_prandom_u32() });
    let lo = u64::from(unsafe { bpf_get_prandom_u32() });
    let id = (hi << 32) | lo;
    if id == 0 { 1 } else { id }
}

/// Sampling decision for a trace whose request carried none: the agent's ratio sampler, on
/// the same bits.
#[inline(always)]
pub fn sample(lo: u64) -> u32 {
    u32::from(sampled_by_bound(lo, SAMPLE_BOUND.load()))
}
