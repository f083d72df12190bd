//! The per-CPU work area the three sk_msg stages (`sk_msg`, `inject`) pass along: the copy of
//! the head, what the scan found, the state of the send and the plan of the edit.

use super::head::{Found, TraceCtx};
use crate::HEADS;

/// `HEADS` slot of the sk_msg program (the read path's inbound scans use the ones after it).
pub const HEADS_SK_MSG: u32 = 0;

/// Per-CPU work area: what the scan found and the head bytes it scanned (sk_msg only; the
/// inbound path scans the captured bytes in place).
#[repr(C)]
pub struct HeadBuf {
    pub found: Found,
    pub msg: MsgState,
    pub plan: Plan,
    pub buf: [u8; 4096],
}

/// The send being edited, as stage 1 leaves it for the next ones.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MsgState {
    pub size: u32,
    pub copied: u32,
    pub mode: u32,
    /// Stage 3: a field to overwrite does not hold 16 hex digits.
    pub bad: u32,
}

/// What the edit will do. Kept in the per-CPU work area between stages 2 and 3, which copies
/// it to its stack (checking the owner before and after) before writing anything.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Plan {
    /// `tracer_common::WRITE_*`: rewritten, injected or why not.
    pub action: u32,
    pub head_end: u32,
    pub client: u64,
    pub parent: u64,
    pub trace: TraceCtx,
    pub line_end: u32,
    pub body: u32,
    /// Offsets of the fields to overwrite (0: none).
    pub span_at: [u32; 3],
    pub parent_at: [u32; 2],
    pub pad: u32,
}

/// The work area of the thread running now, if it still owns it.
#[inline(always)]
pub fn owned_heads(id: u64) -> Option<&'static mut HeadBuf> {
    let heads = HEADS.get_ptr_mut(HEADS_SK_MSG)?;
    // SAFETY: per-CPU value; the owner tag is checked before anything in it is used.
    let hb = unsafe { &mut *heads };
    // SAFETY: valid reference into the map value.
    (unsafe { core::ptr::read_volatile(&raw const hb.found.owner) } == id as u32).then_some(hb)
}
