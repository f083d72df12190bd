//! The inject edit: B3 multi, B3 single or W3C headers rendered into the per-CPU work area and
//! pushed into the message after the request line. Pushed bytes that cannot all be written are
//! taken out again: a request is never sent with a hole in it.

use aya_ebpf::{helpers::generated::bpf_msg_pull_data, programs::SkMsgContext};
use tracer_common::{
    INJECT_B3_SINGLE, INJECT_TRACEPARENT, WRITE_HEAD_MAX, WRITE_SKIP_FAILED, http,
};

use super::{
    head::{TraceCtx, hex_char},
    msg::{HeadBuf, Plan},
};
use crate::INJECT_FORMAT;

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

    /// `name: `
    #[inline(always)]
    fn header(&mut self, name: &'static str) {
        self.text(name.as_bytes());
        self.text(b": ");
    }

    /// `-` and 16 hex digits.
    #[inline(always)]
    fn dash_hex(&mut self, v: u64) {
        self.put(b'-');
        self.hex(v);
    }

    #[inline(always)]
    fn end_line(&mut self) {
        self.text(b"\r\n");
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
            out.header(http::B3_SINGLE);
            out.trace(&plan.trace, wide);
            out.dash_hex(plan.client);
            out.put(b'-');
            out.put(sampled);
            out.dash_hex(plan.parent);
        }
        INJECT_TRACEPARENT => {
            out.header(http::TRACEPARENT);
            out.text(b"00-");
            out.trace(&plan.trace, true);
            out.dash_hex(plan.client);
            out.text(b"-0");
            out.put(sampled);
        }
        _ => {
            out.header(http::B3_TRACE_ID);
            out.trace(&plan.trace, wide);
            out.end_line();
            out.header(http::B3_SPAN_ID);
            out.hex(plan.client);
            out.end_line();
            out.header(http::B3_PARENT_SPAN_ID);
            out.hex(plan.parent);
            out.end_line();
            out.header(http::B3_SAMPLED);
            out.put(sampled);
        }
    }
    out.end_line();
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

/// Injects the planned context after the request line; returns the bytes added.
#[inline(always)]
pub fn inject(ctx: &SkMsgContext, hb: &mut HeadBuf, plan: &mut Plan) -> u32 {
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
