//! Request-head scanning for the write side, shared by the inbound path (which chooses the
//! SERVER span id and remembers the request's trace context) and the sk_msg program (which
//! edits outgoing heads).
//!
//! It works on a copy of the head in map memory, indexes masked so the verifier sees every read
//! in bounds, and keeps its running state in the map value too: a value loaded from a map is
//! unknown to the verifier, so the two sides of each branch meet in one state at the next loop
//! iteration instead of multiplying.
//!
//! Plain `core` Rust: the agent's tests compile this file for the host and check it against
//! real request heads.

/// Both buffers scanned are at least this big (a power of two).
const BUF_MASK: u64 = 4095;
/// Header lines remembered per head; context headers further down are not seen.
pub const MAX_LINES: usize = 32;

pub const H_TRACEID: usize = 0;
pub const H_SPANID: usize = 1;
pub const H_PARENT: usize = 2;
pub const H_SAMPLED: usize = 3;
pub const H_FLAGS: usize = 4;
pub const H_B3: usize = 5;
pub const H_TRACEPARENT: usize = 6;
pub const H_CONTENT_LENGTH: usize = 7;
pub const H_TRANSFER_ENCODING: usize = 8;
pub const H_COUNT: usize = 9;

/// Where a header's value starts and how long it is (0: absent).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Val {
    pub off: u32,
    pub len: u32,
}

/// What one scan found. Lives in a per-CPU map (`HEADS`).
#[repr(C)]
pub struct Found {
    /// Thread that owns this per-CPU value right now: a program that finds another owner after
    /// being preempted gives up instead of using someone else's offsets.
    pub owner: u32,
    /// Offset just past the blank line, 0 if the head did not end within the scanned bytes.
    pub head_end: u32,
    pub nlines: u32,
    /// Start of the line being scanned.
    pub cur: u32,
    /// Start offsets of the lines after the request line (`lines[0]` = end of the request line).
    /// 64 slots so that an index masked with 63 is always in bounds.
    pub lines: [u32; 64],
    pub pad: u32,
    pub vals: [Val; H_COUNT],
}

#[inline(always)]
pub fn byte(buf: *const u8, i: u64) -> u8 {
    // SAFETY: `buf` points at a map value of at least BUF_MASK + 1 bytes.
    unsafe { *buf.add((i & BUF_MASK) as usize) }
}

/// A request line (a known method and a space) starts `buf` (at least 8 valid bytes).
#[inline(always)]
pub fn is_request_start(buf: *const u8) -> bool {
    let mut b = [0u8; 8];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = byte(buf, i as u64);
    }
    tracer_common::http::is_request_start(&b)
}

/// Volatile access to the running state in map memory: LLVM would otherwise keep it in
/// registers, where the verifier tracks every distinct value as a distinct state.
#[inline(always)]
fn load(p: &u32) -> u32 {
    // SAFETY: valid reference.
    unsafe { core::ptr::read_volatile(p) }
}

#[inline(always)]
fn store(p: &mut u32, v: u32) {
    // SAFETY: valid reference.
    unsafe { core::ptr::write_volatile(p, v) }
}

/// Finds the line starts and the end of the head in `buf[..len]`.
#[inline(always)]
pub fn scan_lines(buf: *const u8, len: u64, f: &mut Found) {
    store(&mut f.nlines, 0);
    store(&mut f.head_end, 0);
    store(&mut f.cur, 0);
    for i in 0..tracer_common::WRITE_HEAD_MAX as u64 {
        if i >= len {
            break;
        }
        if byte(buf, i) != b'\n' {
            continue;
        }
        // A line of just "\r\n" ends the head.
        if i == u64::from(load(&f.cur)) + 1 && load(&f.nlines) > 0 {
            store(&mut f.head_end, (i + 1) as u32);
            break;
        }
        let n = load(&f.nlines) as usize;
        if n <= MAX_LINES {
            store(&mut f.lines[n & 63], (i + 1) as u32);
            store(&mut f.nlines, n as u32 + 1);
        }
        store(&mut f.cur, (i + 1) as u32);
    }
}

/// Eight bytes at `buf[at..]` (little-endian), any alignment.
#[inline(always)]
fn word(buf: *const u8, at: u64) -> u64 {
    // SAFETY: `buf` is a map value of at least 4096 bytes; `at & 2047` + 8 stays inside.
    unsafe { core::ptr::read_unaligned(buf.add((at & 2047) as usize).cast::<u64>()) }
}

/// The header names the scan records, by slot, as in `tracer_common::http`.
const NAMES: [&str; H_COUNT] = {
    use tracer_common::http::*;
    let mut n = [""; H_COUNT];
    n[H_TRACEID] = B3_TRACE_ID;
    n[H_SPANID] = B3_SPAN_ID;
    n[H_PARENT] = B3_PARENT_SPAN_ID;
    n[H_SAMPLED] = B3_SAMPLED;
    n[H_FLAGS] = B3_FLAGS;
    n[H_B3] = B3_SINGLE;
    n[H_TRACEPARENT] = TRACEPARENT;
    n[H_CONTENT_LENGTH] = CONTENT_LENGTH;
    n[H_TRANSFER_ENCODING] = TRANSFER_ENCODING;
    n
};

/// Each name followed by its colon, as up to three little-endian words and the masks of the
/// bytes that count: a line is compared a word at a time.
const NAME_WORDS: [[(u64, u64); 3]; H_COUNT] = {
    let mut out = [[(0u64, 0u64); 3]; H_COUNT];
    let mut slot = 0;
    while slot < H_COUNT {
        let name = NAMES[slot].as_bytes();
        assert!(
            name.len() < 24,
            "a header name must fit in three words with its colon"
        );
        let mut j = 0;
        while j <= name.len() {
            let c = if j < name.len() { name[j] } else { b':' };
            out[slot][j / 8].0 |= (c as u64) << (8 * (j % 8));
            out[slot][j / 8].1 |= 0xff << (8 * (j % 8));
            j += 1;
        }
        slot += 1;
    }
    out
};

/// Lower-cases the letters of a header name; leaves '-', digits and ':' as they are.
const LOWER: u64 = 0x2020_2020_2020_2020;

/// `buf[at..]` starts with the name of `slot` and its colon, compared case-insensitively, a
/// word at a time.
#[inline(always)]
fn has_name(buf: *const u8, at: u64, slot: usize) -> bool {
    let w = NAME_WORDS[slot];
    let mut diff = 0u64;
    let mut k = 0;
    while k < 3 {
        if w[k].1 != 0 {
            diff |= ((word(buf, at + 8 * k as u64) | LOWER) ^ w[k].0) & w[k].1;
        }
        k += 1;
    }
    diff == 0
}

/// The first of the `slots` whose name starts the line at `start`, and the length of that name
/// with its colon.
#[inline(always)]
fn which<const N: usize>(buf: *const u8, start: u64, slots: [usize; N]) -> Option<(usize, u64)> {
    let mut i = 0;
    while i < N {
        if has_name(buf, start, slots[i]) {
            return Some((slots[i], NAMES[slots[i]].len() as u64 + 1));
        }
        i += 1;
    }
    None
}

/// The slots by first letter: one letter test per line before any word compare.
const X_SLOTS: [usize; 5] = [H_TRACEID, H_SPANID, H_PARENT, H_SAMPLED, H_FLAGS];
const B_SLOTS: [usize; 1] = [H_B3];
const T_SLOTS: [usize; 2] = [H_TRACEPARENT, H_TRANSFER_ENCODING];
const C_SLOTS: [usize; 1] = [H_CONTENT_LENGTH];
const _: () = {
    let groups: [(&[usize], u8); 4] = [
        (&X_SLOTS, b'x'),
        (&B_SLOTS, b'b'),
        (&T_SLOTS, b't'),
        (&C_SLOTS, b'c'),
    ];
    let mut covered = 0;
    let mut g = 0;
    while g < groups.len() {
        let mut i = 0;
        while i < groups[g].0.len() {
            assert!(
                NAMES[groups[g].0[i]].as_bytes()[0] == groups[g].1,
                "a slot is under the wrong letter"
            );
            covered += 1;
            i += 1;
        }
        g += 1;
    }
    assert!(covered == H_COUNT, "every slot has a letter");
};

/// Records the value of header line `k` if it is one the write side cares about.
#[inline(always)]
fn classify(buf: *const u8, start: u64, end: u64, f: &mut Found) {
    let slot = match byte(buf, start) | 0x20 {
        b'x' => which(buf, start, X_SLOTS),
        b'b' => which(buf, start, B_SLOTS),
        b't' => which(buf, start, T_SLOTS),
        b'c' => which(buf, start, C_SLOTS),
        _ => None,
    };
    let Some((slot, name_len)) = slot else {
        return;
    };
    let v = start + name_len;
    // The first occurrence wins, even empty or malformed, as in the agent. Presence is the
    // offset (never 0: the request line comes first); the value is trimmed afterwards.
    if f.vals[slot].off == 0 {
        f.vals[slot] = Val {
            off: v as u32,
            len: if end > v { (end - v) as u32 } else { 0 },
        };
    }
}

/// Spaces and tabs (RFC 9110's OWS) around a value.
#[inline(always)]
fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Drops up to `CONTEXT_OWS_MAX` spaces and tabs from each end of every recorded value. The
/// running offset and length go through map memory (`load`/`store`), so each step leaves the
/// verifier one state whatever the byte was.
#[inline(always)]
fn trim_values(buf: *const u8, f: &mut Found) {
    for slot in 0..H_COUNT {
        for _ in 0..tracer_common::http::CONTEXT_OWS_MAX {
            let (off, len) = (load(&f.vals[slot].off), load(&f.vals[slot].len));
            if len > 0 && is_ows(byte(buf, u64::from(off))) {
                store(&mut f.vals[slot].off, off + 1);
                store(&mut f.vals[slot].len, len - 1);
            }
        }
        for _ in 0..tracer_common::http::CONTEXT_OWS_MAX {
            let (off, len) = (load(&f.vals[slot].off), load(&f.vals[slot].len));
            if len > 0 && is_ows(byte(buf, u64::from(off) + u64::from(len) - 1)) {
                store(&mut f.vals[slot].len, len - 1);
            }
        }
    }
}

/// Classifies every remembered header line (after `scan_lines`).
#[inline(always)]
pub fn find_headers(buf: *const u8, f: &mut Found) {
    // One store per value: zeroed as a block, it becomes a `memset` call, a BPF subprogram whose
    // frame 5.10's verifier adds to the caller's (sk_msg's plan stage then passes 512 bytes).
    for v in &mut f.vals {
        // SAFETY: a valid, aligned reference.
        unsafe { core::ptr::write_volatile(v, Val { off: 0, len: 0 }) };
    }
    for k in 0..MAX_LINES {
        if k + 1 >= f.nlines as usize {
            break;
        }
        let start = u64::from(f.lines[k]);
        let next = u64::from(f.lines[k + 1]);
        // "name: value\r\n": the value ends two bytes before the next line starts.
        if next < start + 4 {
            continue;
        }
        classify(buf, start, next - 2, f);
    }
    trim_values(buf, f);
}

/// Value of each byte as a hex digit: the digit for `0-9a-f`, `0x20 | digit` for `A-F` (B3
/// takes them, W3C does not), 0x10 for the bytes that are not one. A table rather than
/// comparisons: one load, no branch for the verifier to follow.
static HEX_VALUE: [u8; 256] = {
    let mut t = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 0x20 | (10 + i as u8);
        i += 1;
    }
    t
};

/// Bits of a `HEX_VALUE` entry that refuse it: any non-digit, and uppercase for W3C.
const NOT_HEX: u64 = 0x10;
const NOT_LOWER_HEX: u64 = 0x30;

#[inline(always)]
fn hex_digit(c: u8) -> u64 {
    // SAFETY: any u8 indexes the 256-entry table.
    u64::from(unsafe { core::ptr::read_volatile(HEX_VALUE.as_ptr().add(c as usize)) })
}

/// 16 hex digits at `buf[at..]` as a number; a digit with any of the `refuse` bits set
/// (`NOT_HEX`, `NOT_LOWER_HEX`) makes it `None`.
#[inline(always)]
fn hex64_of(buf: *const u8, at: u64, refuse: u64) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u64;
    for j in 0..16 {
        let d = hex_digit(byte(buf, at + j));
        bad |= d;
        v = (v << 4) | (d & 15);
    }
    (bad & refuse == 0).then_some(v)
}

/// 16 hex digits of either case at `buf[at..]` as a number.
#[inline(always)]
pub fn hex64(buf: *const u8, at: u64) -> Option<u64> {
    hex64_of(buf, at, NOT_HEX)
}

/// 16 hex digits at `buf[at..]`, not all zeros (a B3 or W3C id).
#[inline(always)]
fn id64(buf: *const u8, at: u64, refuse: u64) -> Option<u64> {
    hex64_of(buf, at, refuse).filter(|v| *v != 0)
}

/// Two lowercase hex digits at `buf[at..]` (a W3C version or flags field).
#[inline(always)]
fn hex8_lower(buf: *const u8, at: u64) -> Option<u64> {
    let (h, l) = (hex_digit(byte(buf, at)), hex_digit(byte(buf, at + 1)));
    ((h | l) & NOT_LOWER_HEX == 0).then_some((h << 4) | l)
}

/// The hex digit for the low four bits of `n`.
#[inline(always)]
pub fn hex_char(n: u64) -> u8 {
    let n = n & 15;
    if n < 10 {
        b'0' + n as u8
    } else {
        b'a' + (n - 10) as u8
    }
}

/// A request's trace context as the kernel understands it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TraceCtx {
    pub hi: u64,
    pub lo: u64,
    /// 1 for a 128-bit id on the wire, 0 for 64-bit (B3 only).
    pub wide: u32,
    /// 1 sampled (or debug), 0 not sampled, 2 no decision in the request.
    pub sampled: u32,
}

/// What `trace_of` read from a request head.
#[derive(Clone, Copy)]
pub struct HeadCtx {
    /// The trace; `hi` and `lo` both 0 when the head carried only a sampling decision
    /// (`b3: 0`, a lone `x-b3-sampled`).
    pub trace: TraceCtx,
    /// The sender's span id (the parent of this request's SERVER span); 0 with a decision only.
    /// The programs need only its validity; the host tests compare it with the agent's.
    #[cfg_attr(
        target_arch = "bpf",
        expect(dead_code, reason = "read by the host tests only")
    )]
    pub parent: u64,
}

/// A sampling decision without ids (`decision`: `TraceCtx::sampled`).
#[inline(always)]
fn decision_only(decision: u32) -> HeadCtx {
    HeadCtx {
        trace: TraceCtx {
            hi: 0,
            lo: 0,
            wide: 0,
            sampled: decision,
        },
        parent: 0,
    }
}

/// A B3 trace id of 32 (`wide`) or 16 hex digits of either case at `buf[at..]`, not all zeros:
/// high and low halves, width flag.
#[inline(always)]
fn trace_hex(buf: *const u8, at: u64, wide: bool) -> Option<(u64, u64, u32)> {
    let (hi, lo, w) = if wide {
        (hex64(buf, at)?, hex64(buf, at + 16)?, 1)
    } else {
        (0, hex64(buf, at)?, 0)
    };
    (hi | lo != 0).then_some((hi, lo, w))
}

/// `x-b3-sampled`: `1`/`true` sampled, `0`/`false` not, absent no decision (2); any other
/// value refuses the whole B3 multi-header context.
#[inline(always)]
fn b3_sampled(buf: *const u8, v: Val) -> Option<u32> {
    if v.off == 0 {
        return Some(2);
    }
    let at = u64::from(v.off);
    // The word is read in the arms that use it: read before the match, it was a value 5.10's
    // verifier saw read from an unwritten stack slot on the other paths.
    match v.len {
        1 => match byte(buf, at) {
            b'1' => Some(1),
            b'0' => Some(0),
            _ => None,
        },
        4 => (word(buf, at) & 0xffff_ffff == u64::from(u32::from_le_bytes(*b"true"))).then_some(1),
        5 => (word(buf, at) & 0xff_ffff_ffff == u64::from_le_bytes(*b"false\0\0\0")).then_some(0),
        _ => None,
    }
}

/// B3 multi-header: `x-b3-traceid` (16 or 32 hex) and `x-b3-spanid` (16 hex), both or neither;
/// `x-b3-flags: 1` (debug) samples whatever `x-b3-sampled` says.
#[inline(always)]
fn b3_multi(buf: *const u8, f: &Found) -> Option<HeadCtx> {
    let (t, s) = (f.vals[H_TRACEID], f.vals[H_SPANID]);
    let fl = f.vals[H_FLAGS];
    let mut sampled = b3_sampled(buf, f.vals[H_SAMPLED])?;
    if fl.len == 1 && byte(buf, u64::from(fl.off)) == b'1' {
        sampled = 1;
    }
    if t.off == 0 && s.off == 0 {
        let with_decision = f.vals[H_SAMPLED].off != 0 || fl.off != 0;
        return (with_decision && sampled != 2).then(|| decision_only(sampled));
    }
    if s.len != 16 || (t.len != 16 && t.len != 32) {
        return None;
    }
    let (hi, lo, wide) = trace_hex(buf, u64::from(t.off), t.len == 32)?;
    let parent = id64(buf, u64::from(s.off), NOT_HEX)?;
    Some(HeadCtx {
        trace: TraceCtx {
            hi,
            lo,
            wide,
            sampled,
        },
        parent,
    })
}

/// The single `b3` header: `{trace}-{span}[-{state}[-{parent}]]` with state `1`, `0` or `d`
/// (debug), or a lone state.
#[inline(always)]
fn b3_single(buf: *const u8, f: &Found) -> Option<HeadCtx> {
    let b = f.vals[H_B3];
    let at = u64::from(b.off);
    let len = u64::from(b.len);
    let state = |c: u8| match c {
        b'1' | b'd' => Some(1),
        b'0' => Some(0),
        _ => None,
    };
    if b.off == 0 || len == 0 {
        return None;
    }
    if len == 1 {
        return state(byte(buf, at)).map(decision_only);
    }
    let width = if byte(buf, at + 16) == b'-' {
        16
    } else if byte(buf, at + 32) == b'-' {
        32
    } else {
        return None;
    };
    // What follows the span id: nothing, "-{state}" or "-{state}-{parent}".
    let rest = len.checked_sub(width + 17)?;
    if rest != 0 && rest != 2 && rest != 19 {
        return None;
    }
    let (hi, lo, wide) = trace_hex(buf, at, width == 32)?;
    let parent = id64(buf, at + width + 1, NOT_HEX)?;
    let mut sampled = 2;
    if rest != 0 {
        if byte(buf, at + width + 17) != b'-' {
            return None;
        }
        sampled = state(byte(buf, at + width + 18))?;
    }
    if rest == 19
        && (byte(buf, at + width + 19) != b'-' || id64(buf, at + width + 20, NOT_HEX).is_none())
    {
        return None;
    }
    Some(HeadCtx {
        trace: TraceCtx {
            hi,
            lo,
            wide,
            sampled,
        },
        parent,
    })
}

/// W3C `traceparent`: `{version}-{trace-id}-{parent-id}-{flags}`, lowercase hex; version `ff`
/// refused, version `00` exactly 55 characters, a later version may continue after a `-`.
#[inline(always)]
fn traceparent(buf: *const u8, f: &Found) -> Option<HeadCtx> {
    let tp = f.vals[H_TRACEPARENT];
    let at = u64::from(tp.off);
    if tp.off == 0 || tp.len < 55 {
        return None;
    }
    let version = hex8_lower(buf, at)?;
    if version == 0xff
        || (version == 0 && tp.len != 55)
        || (tp.len > 55 && byte(buf, at + 55) != b'-')
    {
        return None;
    }
    if byte(buf, at + 2) != b'-' || byte(buf, at + 35) != b'-' || byte(buf, at + 52) != b'-' {
        return None;
    }
    let hi = hex64_of(buf, at + 3, NOT_LOWER_HEX)?;
    let lo = hex64_of(buf, at + 19, NOT_LOWER_HEX)?;
    let parent = id64(buf, at + 36, NOT_LOWER_HEX)?;
    let flags = hex8_lower(buf, at + 53)?;
    if hi | lo == 0 {
        return None;
    }
    Some(HeadCtx {
        trace: TraceCtx {
            hi,
            lo,
            wide: 1,
            sampled: (flags & 1) as u32,
        },
        parent,
    })
}

/// The context a request head carries, by the rules the agent's extractor follows
/// (`tracer-agent/src/trace/context.rs`, README "Trace context"): `order` is
/// `tracer_common::PROPAGATE_*` (from `OTEL_PROPAGATORS`). The B3 propagator reads the single
/// `b3` header first and falls back to `x-b3-*` when it is absent or malformed; the first
/// propagator in the order with a well-formed context wins.
#[inline(always)]
pub fn trace_of(buf: *const u8, f: &Found, order: u32) -> Option<HeadCtx> {
    use tracer_common::{PROPAGATE_B3, PROPAGATE_TRACECONTEXT, PROPAGATE_TRACECONTEXT_FIRST};
    // The `traceparent` context is kept across the B3 ones as a plain value, zeroed when absent:
    // an `Option` kept that way carries an unwritten payload when it is `None`, which 5.10's
    // verifier refuses to see copied. (One call site: inlined twice, it overflows sk_msg's stack.)
    let (w3c_ok, w3c) = match (order & PROPAGATE_TRACECONTEXT != 0)
        .then(|| traceparent(buf, f))
        .flatten()
    {
        Some(x) => (true, x),
        None => (false, decision_only(0)),
    };
    if w3c_ok && order & PROPAGATE_TRACECONTEXT_FIRST != 0 {
        return Some(w3c);
    }
    if order & PROPAGATE_B3 != 0 {
        if let Some(x) = b3_single(buf, f) {
            return Some(x);
        }
        if let Some(x) = b3_multi(buf, f) {
            return Some(x);
        }
    }
    w3c_ok.then_some(w3c)
}
