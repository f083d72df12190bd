//! HTTP/2 capture: the frames of an HTTP/2 socket's syscall, walked by their headers and handed
//! over as records (`tracer_common::h2`): HEADERS and CONTINUATION payloads as far as the
//! records of one event allow, the first bytes of DATA (the gRPC message prefix), RST_STREAM and
//! GOAWAY payloads, only the header of the rest. A 1 MiB gRPC response costs the copy of a few
//! dozen bytes, and the trailers after it are still seen.
//!
//! Frames do not respect syscall boundaries: each direction of a connection keeps, in
//! `H2_CONNS`, how much of the current frame is still to come (and how much of that is
//! copied), and the bytes of a frame header cut by the end of a syscall or of an iovec element.
//! A walk that meets an implausible frame header, or a syscall with more frames than it walks,
//! loses the boundaries; it looks for a plausible header at the start of later syscalls again.
//! Either way, and when the capture size leaves no room for a frame that matters, the event
//! ends with a `REC_LOST` record, so the agent knows its HPACK state may be behind.
//!
//! The walk runs in `tracer_h2_frames`, reached by a tail call from the syscall capture
//! programs and chaining to itself every few frames: each run is verified on its own, so the
//! verifier's work does not grow with the frames one syscall may hold. The socket-level capture
//! has two copies of it, `tracer_h2_frames_send` and `tracer_h2_frames_recv`: a tracing program
//! can only tail-call a program of its own type, and newer kernels also require the same
//! traced function, so each is loaded as an fexit program of the function its caller traces
//! (and never attached), in a program array of its own.

use aya_ebpf::{
    EbpfContext,
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user as probe_read_user_raw},
    macros::{fexit, tracepoint},
    maps::ProgramArray,
    programs::{FExitContext, TracePointContext},
};
use tracer_common::{
    ConnKey, FLAG_H2_FRAMES, FLAG_H2_RAW, counter,
    h2::{
        self, FRAME_HEADER_LEN, FrameHeader, PREFACE, REC_CONT, REC_FRAME, REC_LOST,
        RECORD_HEADER_LEN,
    },
};

use crate::{
    CONNS, H2_CONNS, H2_RECV_PROGS, H2_SEND_PROGS, SCRATCH, count,
    event::{SOCK_RECV, SOCK_SEND, SYS_SOCK_FIRST, Scratch, Walk, bounded, output_scratch},
    source::{Source, read_iov},
};

/// One direction of an HTTP/2 connection, between two syscalls.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct H2Dir {
    /// Payload bytes of the current frame still to come.
    left: u32,
    /// Of those, how many are copied.
    copy: u32,
    /// Where in the current frame's payload the next byte belongs.
    offset: u32,
    /// Bytes of a frame header already seen, in `part`.
    part_len: u32,
    /// Non-zero once the frame boundaries are lost.
    lost: u32,
    pad: u32,
    part: [u8; 32],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct H2State {
    dir: [H2Dir; 2],
}

/// Starts following the frames of socket `key`. `preface`: the direction whose next bytes are
/// the client preface, which is stepped over like a frame payload.
#[inline(always)]
pub fn start(key: ConnKey, preface: Option<usize>) {
    let mut state = H2State::default();
    if let Some(dir) = preface {
        state.dir[dir & 1].left = PREFACE.len() as u32;
    }
    if H2_CONNS.insert(key, state, 0).is_err() {
        count(counter::CONNS_FULL);
    }
}

/// Forgets socket `key`.
#[inline(always)]
pub fn stop(key: ConnKey) {
    let _ = H2_CONNS.remove(key);
}

#[inline(always)]
fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

/// Writes a record header at `data[out..out + 8]`.
#[inline(always)]
fn record(data: *mut u8, out: u64, kind: u8, len: u64, offset: u64) {
    let at = bounded(out) as usize;
    let len = (len as u16).to_le_bytes();
    let offset = (offset as u32).to_le_bytes();
    // SAFETY: `at + 8` is inside the 4 * MAX_CAPTURE buffer (at < 2 * MAX_CAPTURE).
    unsafe {
        let p = data.add(at);
        *p = kind;
        *p.add(1) = 0;
        *p.add(2) = len[0];
        *p.add(3) = len[1];
        *p.add(4) = offset[0];
        *p.add(5) = offset[1];
        *p.add(6) = offset[2];
        *p.add(7) = offset[3];
    }
}

/// Copies `len` user bytes from `src` to `data[offset..]`; returns the bytes copied.
#[inline(always)]
fn copy_user(data: *mut u8, offset: u64, src: u64, len: u64) -> u64 {
    let offset = bounded(offset);
    let len = bounded(len);
    if len == 0 {
        return 0;
    }
    // SAFETY: offset and len are each below 2 * MAX_CAPTURE, the buffer holds 4 * MAX_CAPTURE.
    let ret = unsafe {
        probe_read_user_raw(
            data.add(offset as usize).cast::<c_void>(),
            len as u32,
            src as *const c_void,
        )
    };
    if ret < 0 {
        count(counter::READ_FAULT);
        return 0;
    }
    len
}

/// `Walk::meta`: the direction (bit 0), a vector source (bit 1) whose iovec array is in kernel
/// memory (bit 2), of `meta >> 8` elements.
const VECTOR: u64 = 2;
const KERNEL: u64 = 4;

/// Hands the event being built in `scratch` (header and captured bytes) to the frame walk in
/// slot 0 of `progs` (`tracer_h2_frames` for the syscall capture), which walks the frames of
/// the `total` bytes moved from `source` in direction `dir` on socket `key` and sends it. A
/// program of its own, reached by a tail call: the walk's loop needs the verifier's whole
/// budget and a stack frame of its own. Returns only if the tail call failed (then the caller
/// sends the bytes themselves, `FLAG_H2_RAW`).
#[inline(always)]
pub fn walk_and_send<C: EbpfContext>(
    ctx: &C,
    progs: &ProgramArray,
    scratch: &mut Scratch,
    key: ConnKey,
    source: Source,
    total: u64,
    dir: u32,
) {
    let dir = u64::from(dir & 1);
    let (base, meta) = match source {
        Source::Plain(buf) => (buf, dir),
        Source::Vector { iov, count, kernel } => (
            iov,
            dir | VECTOR | if kernel { KERNEL } else { 0 } | (count & 0xffff) << 8,
        ),
    };
    let w = &mut scratch.walk;
    w.key = u64::from(key.tgid) << 32 | u64::from(key.fd);
    w.base = base;
    w.meta = meta;
    w.total = total;
    w.pos = 0;
    w.out = 0;
    w.seg_base = 0;
    w.seg_start = 0;
    w.seg_len = 0;
    w.seg_idx = 0;
    w.missed = 0;
    w.runs = 0;
    // SAFETY: `ctx` is the calling program's context.
    unsafe { progs.tail_call(ctx, 0) };
}

/// Tail-called by a syscall capture program (slot 0 of `H2_PROGS`) with the event of an
/// HTTP/2 socket's syscall in its per-CPU buffer: writes the frame records, [`STEPS`] steps per
/// run, tail-calling itself for more (each run is verified on its own, so the verifier's work
/// does not grow with the frames a syscall may hold), and sends the event.
#[tracepoint]
pub fn tracer_h2_frames(ctx: TracePointContext) -> u32 {
    floor!(0);
    // The caller's buffer: the one syscall buffer of this CPU that this thread owns (a run
    // releases its buffer when it sends, so no other one keeps this thread's tag).
    walk_run(&ctx, &crate::H2_PROGS, 0, SYS_SOCK_FIRST)
}

/// The frame walk of the socket-level capture's sends: `tracer_h2_frames` as an fexit program
/// of `tcp_sendmsg` (slot 0 of `H2_SEND_PROGS`), loaded but never attached.
#[fexit(function = "tcp_sendmsg")]
pub fn tracer_h2_frames_send(ctx: FExitContext) -> u32 {
    floor!(0);
    walk_run(&ctx, &H2_SEND_PROGS, SOCK_SEND, SOCK_SEND + 1)
}

/// The same for the socket-level capture's receives (`tcp_recvmsg`, `H2_RECV_PROGS`).
#[fexit(function = "tcp_recvmsg")]
pub fn tracer_h2_frames_recv(ctx: FExitContext) -> u32 {
    floor!(0);
    walk_run(&ctx, &H2_RECV_PROGS, SOCK_RECV, SOCK_RECV + 1)
}

/// One run of the walk, in the buffer among `SCRATCH[first..end]` that this thread owns; the
/// next run is slot 0 of `progs`.
#[inline(always)]
fn walk_run<C: EbpfContext>(ctx: &C, progs: &ProgramArray, first: u32, end: u32) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let mut slot = end;
    for s in first..end {
        if SCRATCH.get(s).is_some_and(|b| b.event.owner == id as u32) {
            slot = s;
        }
    }
    if slot >= end {
        count(counter::SCRATCH_BUSY);
        return 0;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(slot) else {
        return 0;
    };
    // SAFETY: this run's per-CPU value; the calling program (or the previous run) filled it just
    // before the tail call.
    let scratch = unsafe { &mut *scratch };
    let key = ConnKey {
        tgid: (scratch.walk.key >> 32) as u32,
        fd: scratch.walk.key as u32,
    };
    let Some(state) = H2_CONNS.get_ptr_mut(key) else {
        // The frame state is gone (LRU): the socket is picked up again at its next HEADERS
        // frame, as one older than the agent.
        let _ = CONNS.remove(key);
        // SAFETY: valid reference into the map value (its owner field only).
        unsafe { core::ptr::write_volatile(&raw mut scratch.event.owner, 0) };
        return 0;
    };
    let meta = scratch.walk.meta;
    // SAFETY: pointer into the map value; one thread at a time moves bytes one way on a socket
    // in practice, and a race only garbles this connection's records, which the agent checks.
    let d = unsafe { &mut (*state).dir[(meta & 1) as usize] };
    let data = scratch.data.as_mut_ptr();
    let w = &mut scratch.walk;

    let mut done = false;
    if w.runs == 0 && d.lost != 0 && !resync(d, w) {
        // Still no frame boundary: nothing of this syscall is reported.
        done = true;
    }
    let mut i = 0;
    while i < STEPS && !done {
        i += 1;
        done = step(d, w, data);
    }
    w.runs += 1;
    if !done {
        if w.runs < MAX_RUNS {
            // SAFETY: `ctx` is this program's context.
            unsafe { progs.tail_call(ctx, 0) };
        }
        // More frames than the runs walk: where the next one starts is unknown.
        d.lost = 1;
        count(counter::H2_LOST);
    }
    if w.pos < w.total && d.lost == 0 {
        // More iovec elements than a walk takes.
        d.lost = 1;
        count(counter::H2_LOST);
    }
    if d.lost != 0 {
        d.left = 0;
        d.copy = 0;
        d.part_len = 0;
        if w.total > 0 && w.pos > 0 {
            w.missed = 1;
        }
    }
    if w.missed != 0 {
        count(counter::H2_MISSED);
        record(data, w.out, REC_LOST, 0, 0);
        w.out += RECORD_HEADER_LEN as u64;
    }
    scratch.event.captured_len = bounded(scratch.walk.out) as u32;
    scratch.event.tail_len = 0;
    scratch.event.flags = (scratch.event.flags & !FLAG_H2_RAW) | FLAG_H2_FRAMES;
    output_scratch(scratch, id);
    0
}

/// Steps per run of `tracer_h2_frames`, and runs per syscall (tail calls: the kernel allows 33
/// in a chain, the capture program's is the first).
const STEPS: u32 = 16;
const MAX_RUNS: u64 = 30;
/// Most iovec elements walked (`IOV_MAX`).
const SEGMENTS: u64 = 1024;

/// Boundaries were lost: a syscall that starts with a plausible frame header ends that. True
/// when it does.
#[inline(always)]
fn resync(d: &mut H2Dir, w: &mut Walk) -> bool {
    let start = if w.meta & VECTOR == 0 {
        if w.total < FRAME_HEADER_LEN as u64 {
            return false;
        }
        w.base
    } else {
        match read_iov(w.base, 0, w.meta & KERNEL != 0) {
            Some(v) if v.len >= FRAME_HEADER_LEN as u64 => v.base,
            _ => return false,
        }
    };
    if !read_header(d, start, 0, FRAME_HEADER_LEN as u64) || !plausible(d) {
        return false;
    }
    *d = H2Dir::default();
    true
}

/// One step of the walk at `w.pos`: the next buffer, the rest of a frame, a frame header (with
/// what its buffer holds of its payload), or the part of a frame header its buffer holds. True
/// when the walk is over.
#[inline(always)]
fn step(d: &mut H2Dir, w: &mut Walk, data: *mut u8) -> bool {
    if w.pos >= w.total {
        return true;
    }
    if w.pos >= w.seg_start + w.seg_len {
        // The next buffer.
        if w.meta & VECTOR == 0 {
            if w.seg_len != 0 {
                return true;
            }
            w.seg_base = w.base;
            w.seg_len = w.total;
            return false;
        }
        if w.seg_idx >= w.meta >> 8 || w.seg_idx >= SEGMENTS {
            return true;
        }
        let Some(v) = read_iov(w.base, w.seg_idx, w.meta & KERNEL != 0) else {
            return true;
        };
        w.seg_start += w.seg_len;
        w.seg_base = v.base;
        w.seg_len = v.len;
        w.seg_idx += 1;
        return false;
    }
    let seg_end = min(w.seg_start + w.seg_len, w.total);
    let avail = seg_end - w.pos;
    let addr = w.seg_base + (w.pos - w.seg_start);

    if d.part_len != 0 || (d.left == 0 && avail < FRAME_HEADER_LEN as u64) {
        // A frame header cut by the end of a buffer: gather what this buffer holds of it.
        let have = u64::from(d.part_len);
        if have >= FRAME_HEADER_LEN as u64 {
            d.lost = 1;
            return true;
        }
        let n = min(FRAME_HEADER_LEN as u64 - have, avail);
        if !read_header(d, addr, have, n) {
            return true;
        }
        w.pos += n;
        if have + n < FRAME_HEADER_LEN as u64 {
            d.part_len = (have + n) as u32;
            return false;
        }
        d.part_len = 0;
        return !on_header(d, w, data, seg_end);
    }

    if d.left > 0 {
        // The rest of a frame that started earlier.
        let take = min(u64::from(d.left), avail);
        let wanted = min(u64::from(d.copy), take);
        if wanted > 0 {
            if w.out + RECORD_HEADER_LEN as u64 + wanted <= room(w) {
                record(data, w.out, REC_CONT, wanted, u64::from(d.offset));
                w.out += RECORD_HEADER_LEN as u64
                    + copy_user(data, w.out + RECORD_HEADER_LEN as u64, addr, wanted);
            } else {
                w.missed = 1;
            }
            d.copy -= wanted as u32;
        }
        d.left -= take as u32;
        d.offset += take as u32;
        w.pos += take;
        return false;
    }

    if !read_header(d, addr, 0, FRAME_HEADER_LEN as u64) {
        return true;
    }
    w.pos += FRAME_HEADER_LEN as u64;
    !on_header(d, w, data, seg_end)
}

/// Room for records: `h2::MAX_RECORDS`, less the 8 bytes kept for a final `REC_LOST`.
#[inline(always)]
fn room(_w: &Walk) -> u64 {
    (h2::MAX_RECORDS - RECORD_HEADER_LEN) as u64
}

/// Reads `len` (at most 9) bytes of a frame header at user address `addr` into `d.part` from
/// `at` (map memory: the stack is short). False if the memory was unreadable (counted).
#[inline(always)]
fn read_header(d: &mut H2Dir, addr: u64, at: u64, len: u64) -> bool {
    let at = below_16(at) as usize;
    let len = below_16(len);
    if len == 0 {
        return true;
    }
    // SAFETY: `part` holds 32 bytes and at + len < 32; the helper validates the user address.
    let ret = unsafe {
        probe_read_user_raw(
            d.part.as_mut_ptr().add(at).cast::<c_void>(),
            len as u32,
            addr as *const c_void,
        )
    };
    if ret < 0 {
        count(counter::READ_FAULT);
        return false;
    }
    true
}

/// `v & 15`, in assembly so that LLVM cannot drop the mask where it knows `v` to be smaller:
/// older verifiers (5.10) do not follow that reasoning and must see the bound on the register
/// passed to the helper (as `event::bounded`).
#[inline(always)]
fn below_16(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: pure register arithmetic.
    unsafe {
        core::arch::asm!("{v} &= 15", v = inout(reg) v);
    }
    v
}

/// Whether `d.part` holds the first 9 bytes of the client preface.
#[inline(always)]
fn is_preface(d: &H2Dir) -> bool {
    let p = &d.part;
    tracer_common::h2::is_preface_start(&[p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]])
        && p[8] == PREFACE[8]
}

/// Whether the frame header in `d.part` is plausible (`FrameHeader::is_plausible`).
#[inline(always)]
fn plausible(d: &H2Dir) -> bool {
    header_of(d).is_plausible()
}

/// The frame header in `d.part` was just read, up to `w.pos`: records it and the part of its
/// payload this buffer holds (up to `seg_end`), and leaves in `d` what is still to come. False
/// when the header is not plausible (the boundaries are lost).
#[inline(always)]
fn on_header(d: &mut H2Dir, w: &mut Walk, data: *mut u8, seg_end: u64) -> bool {
    if is_preface(d) {
        // The client preface where a frame would start (the server wrote first, or the
        // connection was upgraded from HTTP/1): stepped over.
        let rest = (PREFACE.len() - FRAME_HEADER_LEN) as u64;
        let take = min(rest, seg_end - w.pos);
        d.left = (rest - take) as u32;
        d.copy = 0;
        w.pos += take;
        return true;
    }
    if !plausible(d) {
        d.lost = 1;
        count(counter::H2_LOST);
        return false;
    }
    // Read again from memory, so that no path-dependent copy of the header's bytes outlives
    // the plausibility test (the verifier would tell the paths apart by them).
    // SAFETY: reads of the map value.
    let (len, kind) = unsafe {
        let p = d.part.as_ptr();
        (
            u64::from(core::ptr::read_volatile(p)) << 16
                | u64::from(core::ptr::read_volatile(p.add(1))) << 8
                | u64::from(core::ptr::read_volatile(p.add(2))),
            core::ptr::read_volatile(p.add(3)),
        )
    };
    let want = min(len, u64::from(h2::COPY_OF[(kind & 15) as usize]));
    let take = min(len, seg_end - w.pos);
    let first = min(want, take);
    let header_room = (RECORD_HEADER_LEN + FRAME_HEADER_LEN) as u64;
    let room = room(w);
    if w.out + header_room <= room {
        let c = min(first, room - w.out - header_room);
        record(data, w.out, REC_FRAME, c, 0);
        let at = bounded(w.out + RECORD_HEADER_LEN as u64) as usize;
        // SAFETY: `at + 9` is inside the buffer (at < 2 * MAX_CAPTURE); `part` holds 32 bytes.
        unsafe {
            core::ptr::copy_nonoverlapping(d.part.as_ptr(), data.add(at), FRAME_HEADER_LEN);
        }
        let addr = w.seg_base + (w.pos - w.seg_start);
        w.out += header_room + copy_user(data, w.out + header_room, addr, c);
        if c < first {
            w.missed = 1;
        }
    } else if want > 0 {
        w.missed = 1;
    }
    d.left = (len - take) as u32;
    d.copy = (want - first) as u32;
    d.offset = take as u32;
    w.pos += take;
    true
}

/// The frame header gathered in `d.part`.
#[inline(always)]
fn header_of(d: &H2Dir) -> FrameHeader {
    let p = &d.part;
    FrameHeader::parse(&[p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8]])
}
