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
    let mut v = start + name_len;
    if byte(buf, v) == b' ' || byte(buf, v) == b'\t' {
        v += 1;
    }
    if byte(buf, v) == b' ' {
        v += 1;
    }
    // The first occurrence wins, as in the agent.
    if f.vals[slot].len == 0 && end > v {
        f.vals[slot] = Val {
            off: v as u32,
            len: (end - v) as u32,
        };
    }
}

/// Classifies every remembered header line (after `scan_lines`).
#[inline(always)]
pub fn find_headers(buf: *const u8, f: &mut Found) {
    f.vals = [Val { off: 0, len: 0 }; H_COUNT];
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
}

/// Value of each byte as a hex digit, 0x10 for the bytes that are not one. A table rather than
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
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[inline(always)]
fn hex_digit(c: u8) -> u64 {
    // SAFETY: any u8 indexes the 256-entry table.
    u64::from(unsafe { core::ptr::read_volatile(HEX_VALUE.as_ptr().add(c as usize)) })
}

/// 16 hex digits at `buf[at..]` as a number.
#[inline(always)]
pub fn hex64(buf: *const u8, at: u64) -> Option<u64> {
    let mut v = 0u64;
    let mut bad = 0u64;
    for j in 0..16 {
        let d = hex_digit(byte(buf, at + j));
        bad |= d;
        v = (v << 4) | (d & 15);
    }
    (bad & 0x10 == 0).then_some(v)
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

/// A B3 trace id of 32 (`wide`) or 16 hex digits at `buf[at..]`: high and low halves, width flag.
#[inline(always)]
fn trace_hex(buf: *const u8, at: u64, wide: bool) -> Option<(u64, u64, u32)> {
    if wide {
        Some((hex64(buf, at)?, hex64(buf, at + 16)?, 1))
    } else {
        Some((0, hex64(buf, at)?, 0))
    }
}

/// The trace id and sampling decision a request head carries: B3 multi, then B3 single, then
/// W3C traceparent. Each branch reads the id before the decision and returns its own context:
/// shared code (a helper taking the decision, or filling it in afterwards) cost the verifier
/// 15% more instructions on the inbound scan (measured on 6.18).
#[inline(always)]
pub fn trace_of(buf: *const u8, f: &Found) -> Option<TraceCtx> {
    let t = f.vals[H_TRACEID];
    if t.len == 16 || t.len == 32 {
        let at = u64::from(t.off);
        let (hi, lo, wide) = trace_hex(buf, at, t.len == 32)?;
        let mut sampled = 2;
        let s = f.vals[H_SAMPLED];
        if s.len > 0 {
            let c = byte(buf, u64::from(s.off));
            sampled = u32::from(c == b'1' || c == b't');
        }
        let fl = f.vals[H_FLAGS];
        if fl.len == 1 && byte(buf, u64::from(fl.off)) == b'1' {
            sampled = 1;
        }
        return Some(TraceCtx {
            hi,
            lo,
            wide,
            sampled,
        });
    }
    let b = f.vals[H_B3];
    if b.len >= 33 {
        let at = u64::from(b.off);
        let width = if byte(buf, at + 16) == b'-' { 16 } else { 32 };
        let (hi, lo, wide) = trace_hex(buf, at, width == 32)?;
        let mut sampled = 2;
        if u64::from(b.len) >= width + 19 {
            let c = byte(buf, at + width + 18);
            sampled = u32::from(c == b'1' || c == b'd');
        }
        return Some(TraceCtx {
            hi,
            lo,
            wide,
            sampled,
        });
    }
    let tp = f.vals[H_TRACEPARENT];
    if tp.len >= 55 {
        let at = u64::from(tp.off);
        let flags = hex_digit(byte(buf, at + 54));
        return Some(TraceCtx {
            hi: hex64(buf, at + 3)?,
            lo: hex64(buf, at + 19)?,
            wide: 1,
            sampled: (flags & 1) as u32,
        });
    }
    None
}
