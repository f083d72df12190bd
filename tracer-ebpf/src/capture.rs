//! What every syscall probe shares: remember the arguments at entry, and at exit decide whether
//! the bytes moved belong to an HTTP connection, copy a bounded prefix (and a short tail) of
//! them into a per-CPU scratch event and hand it to the ring buffer.
//!
//! A socket enters `CONNS` when accept/connect returns it, or when its first bytes in either
//! direction look like an HTTP/1.x request or status line. Its first payload decides the
//! protocol once; sockets that are not HTTP cost a map lookup from then on.

use core::{
    ptr::{read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_probe_read_user as probe_read_user_raw,
    },
};
use tracer_common::{
    AF_INET, AF_INET6, CloseEvent, ConnEvent, ConnInfo, ConnKey, DIR_INGRESS, DataEvent, EventKind,
    FLAG_HAS_TUPLE, FLAG_NEW_CONN, MAX_CAPTURE, MAX_IOV, MAX_IOV_COPY, PROTO_HTTP, PROTO_OTHER,
    PROTO_UNKNOWN, ROLE_ACCEPTED, ROLE_CONNECTED, SYS_READV, SYS_RECVMSG, SYS_SENDMSG, SYS_WRITEV,
    SockTuple, TAIL_LEN, counter,
};

use aya_ebpf::programs::TracePointContext;

use crate::{
    ARGS, CAPTURE_SIZE, CONNS, EVENTS, SCRATCH, SELF_TGID, WRITE_ACTIVE, WRITE_PROGS, count,
    is_traced,
};

const EINPROGRESS: i64 = 115;
const HDR_LEN: usize = size_of::<DataEvent>();

/// Arguments of a syscall in flight, saved at entry for the exit probe.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallArgs {
    pub fd: u32,
    pub syscall: u32,
    /// Buffer, iovec array, msghdr or sockaddr, depending on `syscall`.
    pub buf: u64,
    /// iovcnt for readv/writev.
    pub count: u64,
    pub enter_ns: u64,
    /// Set by the tcp probe when it saw this read's socket.
    pub has_tuple: u32,
    pub pad: u32,
    pub tuple: SockTuple,
}

/// Slots of the in-flight table (a power of two: the index is the thread id masked).
pub const ARGS_SLOTS: u32 = 32768;

/// One thread's syscall in flight. `id` is the owner's pid_tgid, 0 when the slot is free.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArgsSlot {
    pub id: u64,
    pub args: SyscallArgs,
}

/// The saved arguments of the syscall thread `id` has in flight, if its slot still holds them.
#[inline(always)]
pub fn args_of(id: u64) -> Option<*mut SyscallArgs> {
    let slot = ARGS.get_ptr_mut((id as u32) & (ARGS_SLOTS - 1))?;
    // SAFETY: pointer into the array value; a racing owner of the same slot is detected by the
    // tag, checked again by `take_args` after copying.
    unsafe {
        if read_volatile(&raw const (*slot).id) != id {
            return None;
        }
        Some(&raw mut (*slot).args)
    }
}

/// A data event being assembled: the header and room for the payload. The payload area is four
/// times the capture bound so that `offset + length`, each masked below twice the bound, is
/// provably in bounds for the verifier.
#[repr(C)]
pub struct Scratch {
    pub event: DataEvent,
    pub data: [u8; 4 * MAX_CAPTURE],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// Where the bytes of a syscall live in user memory.
#[derive(Clone, Copy)]
enum Source {
    Plain(u64),
    Vector { iov: u64, count: u64 },
}

#[inline(always)]
pub fn on_enter(fd: u64, syscall: u32, buf: u64, count_arg: u64) {
    let id = bpf_get_current_pid_tgid();
    if !is_traced((id >> 32) as u32) {
        return;
    }
    let args = SyscallArgs {
        fd: fd as u32,
        syscall,
        buf,
        count: count_arg,
        // SAFETY: helper without preconditions.
        enter_ns: unsafe { bpf_ktime_get_ns() },
        has_tuple: 0,
        pad: 0,
        tuple: SockTuple::default(),
    };
    let Some(slot) = ARGS.get_ptr_mut((id as u32) & (ARGS_SLOTS - 1)) else {
        return;
    };
    // SAFETY: pointer into the array value. A slot held by another live thread (same thread id
    // modulo the size, both in a syscall) is taken over: that thread's syscall is then not
    // followed, and counted.
    unsafe {
        let owner = read_volatile(&raw const (*slot).id);
        if owner != 0 && owner != id {
            count(counter::ARGS_FULL);
        }
        write_volatile(&raw mut (*slot).id, 0);
        compiler_fence(Ordering::SeqCst);
        (*slot).args = args;
        compiler_fence(Ordering::SeqCst);
        write_volatile(&raw mut (*slot).id, id);
    }
}

/// Takes the saved arguments of the current thread's syscall, if the entry probe kept them.
#[inline(always)]
fn take_args(id: u64) -> Option<SyscallArgs> {
    let slot = ARGS.get_ptr_mut((id as u32) & (ARGS_SLOTS - 1))?;
    // SAFETY: pointer into the array value; the copy is used only if the tag still matches after
    // it was made (no other thread took the slot meanwhile).
    unsafe {
        if read_volatile(&raw const (*slot).id) != id {
            return None;
        }
        compiler_fence(Ordering::SeqCst);
        let args = (*slot).args;
        compiler_fence(Ordering::SeqCst);
        if read_volatile(&raw const (*slot).id) != id {
            return None;
        }
        write_volatile(&raw mut (*slot).id, 0);
        Some(args)
    }
}

/// `syscall` is the constant of the probe that calls this, so LLVM keeps only the buffer
/// shape (plain, iovec, msghdr) that syscall uses: the verifier never sees the others.
#[inline(always)]
pub fn on_exit_data(ctx: &TracePointContext, ret: i64, direction: u32, syscall: u32) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    // Cheaper than the ARGS lookup that would miss for every process we do not trace.
    if !is_traced((id >> 32) as u32) {
        return None;
    }
    let mut args = take_args(id)?;
    args.syscall = syscall;
    if ret <= 0 {
        return None;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: args.fd,
    };
    let source = source_of(&args)?;
    let mut flags = 0;
    match CONNS.get_ptr_mut(key) {
        Some(conn) => {
            // SAFETY: pointer into the map value; concurrent writers only ever store a final proto.
            let proto = unsafe { (*conn).proto };
            if proto == PROTO_OTHER {
                return None;
            }
            if proto == PROTO_UNKNOWN {
                let http = looks_like_http(source, ret);
                // SAFETY: as above.
                unsafe { (*conn).proto = if http { PROTO_HTTP } else { PROTO_OTHER } };
                if !http {
                    return None;
                }
                flags |= FLAG_NEW_CONN;
            }
        }
        None => {
            if !looks_like_http(source, ret) {
                return None;
            }
            let info = ConnInfo {
                proto: PROTO_HTTP,
                role: 0,
            };
            if CONNS.insert(key, info, 0).is_err() {
                count(counter::CONNS_FULL);
            }
            flags |= FLAG_NEW_CONN;
        }
    }
    emit_data(ctx, id, &args, source, ret as u64, direction, flags)
}

#[inline(always)]
fn source_of(args: &SyscallArgs) -> Option<Source> {
    match args.syscall {
        SYS_READV | SYS_WRITEV => Some(Source::Vector {
            iov: args.buf,
            count: args.count,
        }),
        SYS_RECVMSG | SYS_SENDMSG => {
            // struct msghdr: msg_iov at 16, msg_iovlen at 24 on 64-bit.
            // SAFETY: reading user memory through the helper, which checks the address.
            let iov = unsafe { bpf_probe_read_user((args.buf + 16) as *const u64) }.ok()?;
            let count = unsafe { bpf_probe_read_user((args.buf + 24) as *const u64) }.ok()?;
            Some(Source::Vector { iov, count })
        }
        _ => Some(Source::Plain(args.buf)),
    }
}

#[inline(always)]
fn read_iov(iov: u64, index: u64) -> Option<IoVec> {
    // SAFETY: the helper validates the user address.
    unsafe { bpf_probe_read_user((iov + index * 16) as *const IoVec) }.ok()
}

/// The first bytes of an HTTP/1.x request line (a known method and a space) or status line.
#[inline(always)]
fn looks_like_http(source: Source, len: i64) -> bool {
    if len < 8 {
        return false;
    }
    let start = match source {
        Source::Plain(buf) => buf,
        Source::Vector { iov, count } => {
            if count == 0 {
                return false;
            }
            match read_iov(iov, 0) {
                Some(v) if v.len >= 8 => v.base,
                _ => return false,
            }
        }
    };
    // SAFETY: the helper validates the user address.
    let Ok(head) = (unsafe { bpf_probe_read_user(start as *const [u8; 8]) }) else {
        count(counter::READ_FAULT);
        return false;
    };
    is_http_start(&head)
}

/// A read that completes a request line whose first byte came alone in the previous read of the
/// same socket (Go's server reads one byte ahead between keep-alive requests).
#[inline(always)]
fn continues_request(key: ConnKey, buf: *const u8) -> bool {
    let Some(first) = crate::write::take_first_byte(key) else {
        return false;
    };
    let mut b = [first; 8];
    for (i, slot) in b.iter_mut().enumerate().skip(1) {
        *slot = crate::head::byte(buf, i as u64 - 1);
    }
    is_request_line(&b)
}

/// A request line starts the map buffer `buf` (at least 8 valid bytes).
#[inline(always)]
pub fn is_request_start(buf: *const u8) -> bool {
    let mut b = [0u8; 8];
    for (i, slot) in b.iter_mut().enumerate() {
        *slot = crate::head::byte(buf, i as u64);
    }
    is_request_line(&b)
}

/// The first 8 bytes of a request line (not a status line, which `is_http_start` also accepts).
#[inline(always)]
fn is_request_line(b: &[u8; 8]) -> bool {
    b[0] != b'H' && is_http_start(b) || b[..4] == *b"HEAD"
}

#[inline(always)]
fn is_http_start(b: &[u8; 8]) -> bool {
    match [b[0], b[1], b[2], b[3]] {
        [b'G', b'E', b'T', b' '] | [b'P', b'U', b'T', b' '] => true,
        [b'P', b'O', b'S', b'T'] | [b'H', b'E', b'A', b'D'] => b[4] == b' ',
        [b'D', b'E', b'L', b'E'] => b[6] == b' ',
        [b'P', b'A', b'T', b'C'] | [b'T', b'R', b'A', b'C'] => b[5] == b' ',
        [b'O', b'P', b'T', b'I'] | [b'C', b'O', b'N', b'N'] => b[7] == b' ',
        [b'H', b'T', b'T', b'P'] => b[4] == b'/' && b[5] == b'1',
        _ => false,
    }
}

/// Bit mask that leaves every real offset and length (all at most `MAX_CAPTURE`) unchanged.
pub const BOUND_MASK: u64 = (2 * MAX_CAPTURE as u64) - 1;

/// `v & BOUND_MASK`, computed in assembly so that LLVM cannot drop it as redundant: the
/// verifier needs to see the bound on the very register passed to a helper. A mask rather than
/// a compare-and-clamp, because a clamp the verifier already knows to be true leaves an
/// impossible branch that older verifiers (5.10, 6.1) walk with contradictory bounds.
#[inline(always)]
pub fn bounded(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: pure register arithmetic.
    unsafe {
        core::arch::asm!(
            "{v} &= {mask}",
            v = inout(reg) v,
            mask = const BOUND_MASK,
        );
    }
    v
}

/// Copies `len` user bytes from `src` to `data[offset..]`; returns the bytes copied.
#[inline(always)]
fn copy_user(data: *mut u8, offset: u64, src: u64, len: u64) -> u64 {
    // The verifier sees offset and len each below 2 * MAX; the buffer holds 4 * MAX.
    let offset = bounded(offset);
    let len = bounded(len);
    if len == 0 {
        return 0;
    }
    // SAFETY: data points at a 4 * MAX_CAPTURE buffer and offset + len stays inside it.
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

#[inline(always)]
fn emit_data(
    ctx: &TracePointContext,
    id: u64,
    args: &SyscallArgs,
    source: Source,
    total: u64,
    direction: u32,
    mut flags: u32,
) -> Option<()> {
    let scratch = SCRATCH.get_ptr_mut(args.syscall)?;
    // SAFETY: this program's own per-CPU scratch (indexed by its syscall constant): the kernel
    // does not run a program twice at once on one CPU. The owner tag set here and checked
    // before sending would still notice a kernel that does.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: valid reference into the map value.
    unsafe { core::ptr::write_volatile(&raw mut scratch.event.owner, id as u32) };
    let limit = {
        let configured = u64::from(CAPTURE_SIZE.load());
        if configured > MAX_CAPTURE as u64 {
            MAX_CAPTURE as u64
        } else {
            configured
        }
    };
    let want = if total < limit { total } else { limit };
    let data = scratch.data.as_mut_ptr();
    let (captured, tail_src) = match source {
        Source::Plain(buf) => (copy_user(data, 0, buf, want), buf + total),
        Source::Vector { iov, count } => copy_vector(data, iov, count, want, total),
    };
    let captured = bounded(captured);
    scratch.event.tail_len = 0;
    if total > captured {
        count(counter::TRUNCATED);
        if tail_src != 0 && total >= TAIL_LEN as u64 {
            // SAFETY: the helper validates the user address.
            if let Ok(tail) =
                unsafe { bpf_probe_read_user((tail_src - TAIL_LEN as u64) as *const [u8; 16]) }
            {
                scratch.event.tail = tail;
                scratch.event.tail_len = TAIL_LEN as u32;
            }
        }
    }
    if args.has_tuple != 0 {
        flags |= FLAG_HAS_TUPLE;
    }
    let ev = &mut scratch.event;
    ev.kind = EventKind::Data as u32;
    ev.direction = direction;
    ev.pid = (id >> 32) as u32;
    ev.tid = id as u32;
    ev.fd = args.fd;
    ev.flags = flags;
    ev.enter_ns = args.enter_ns;
    // SAFETY: helper without preconditions.
    ev.exit_ns = unsafe { bpf_ktime_get_ns() };
    ev.total_len = total;
    ev.captured_len = captured as u32;
    ev.syscall = args.syscall;
    ev.tuple = args.tuple;

    if WRITE_ACTIVE.load() != 0 {
        let data = scratch.data.as_ptr();
        let key = ConnKey {
            tgid: (id >> 32) as u32,
            fd: args.fd,
        };
        if direction == DIR_INGRESS {
            let head = (captured >= 8 && is_request_start(data))
                || (captured >= 7 && continues_request(key, data));
            if head {
                // The write side chooses the SERVER span id and sends the event itself; if the
                // tail call cannot run, the event goes out without it.
                // SAFETY: `ctx` is this tracepoint program's context.
                unsafe { WRITE_PROGS.tail_call(ctx, 0) };
            } else if captured == 1 {
                crate::write::first_byte(key, crate::head::byte(data, 0));
            }
        } else if captured >= 8
            && crate::head::byte(data, 0) == b'H'
            && crate::head::byte(data, 4) == b'/'
        {
            crate::write::server_response(id);
        }
    }
    output_scratch(scratch, id);
    Some(())
}

/// Sends the data event assembled in the scratch buffer by thread `id`, unless another run took
/// the buffer over meanwhile (then the loss is counted).
#[inline(always)]
pub fn output_scratch(scratch: &mut Scratch, id: u64) {
    // SAFETY: valid reference into the map value.
    if unsafe { core::ptr::read_volatile(&raw const scratch.event.owner) } != id as u32 {
        count(counter::SCRATCH_BUSY);
        return;
    }
    let size = HDR_LEN + bounded(u64::from(scratch.event.captured_len)) as usize;
    // SAFETY: size <= HDR_LEN + 2 * MAX_CAPTURE <= size_of::<Scratch>().
    let bytes = unsafe { core::slice::from_raw_parts((&raw const *scratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
        count(counter::RINGBUF_FULL);
    } else {
        count(counter::EVENTS);
    }
    // Released: the tail-called inbound scan finds its caller's buffer as the one its thread
    // owns, so no buffer may keep the tag of a run that is over.
    // SAFETY: valid reference into the map value (its owner field only).
    unsafe { core::ptr::write_volatile(&raw mut scratch.event.owner, 0) };
}

/// Copies up to `want` bytes from an iovec array. Returns the bytes copied and the user address
/// just past the last byte of the message (for the tail), or 0 if it lies beyond `MAX_IOV`.
#[inline(always)]
fn copy_vector(data: *mut u8, iov: u64, count_arg: u64, want: u64, total: u64) -> (u64, u64) {
    let mut copied = 0u64;
    for i in 0..MAX_IOV_COPY as u64 {
        if i >= count_arg || copied >= want {
            break;
        }
        let Some(v) = read_iov(iov, i) else { break };
        let take = if v.len < want - copied {
            v.len
        } else {
            want - copied
        };
        copied += copy_user(data, copied, v.base, take);
    }
    if copied >= total {
        // Everything moved was captured: no tail is needed.
        return (copied, 0);
    }
    (copied, tail_address(iov, count_arg, total))
}

/// Where the `total`-th byte of an iovec array ends, walking only the lengths.
#[inline(always)]
fn tail_address(iov: u64, count_arg: u64, total: u64) -> u64 {
    let mut seen = 0u64;
    for i in 0..MAX_IOV as u64 {
        if i >= count_arg {
            break;
        }
        let Some(v) = read_iov(iov, i) else { break };
        if seen + v.len >= total {
            return v.base + (total - seen);
        }
        seen += v.len;
    }
    0
}

/// accept/accept4 and connect exits: track the socket and report the peer address.
#[inline(always)]
pub fn on_exit_conn(ret: i64, role: u32) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let args = take_args(id)?;
    let fd = if role == ROLE_ACCEPTED {
        if ret < 0 {
            return None;
        }
        ret as u32
    } else {
        if ret != 0 && ret != -EINPROGRESS {
            return None;
        }
        args.fd
    };
    let (family, port, addr) = read_sockaddr(args.buf);
    if role == ROLE_CONNECTED && family != AF_INET && family != AF_INET6 {
        return None;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd,
    };
    let info = ConnInfo {
        proto: PROTO_UNKNOWN,
        role,
    };
    if CONNS.insert(key, info, 0).is_err() {
        count(counter::CONNS_FULL);
    }
    let mut entry = EVENTS.reserve::<ConnEvent>(0).or_else(|| {
        count(counter::RINGBUF_FULL);
        None
    })?;
    entry.write(ConnEvent {
        kind: EventKind::Conn as u32,
        role,
        pid: key.tgid,
        tid: id as u32,
        fd,
        family,
        port,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        addr,
    });
    entry.submit(wakeup_flags());
    count(counter::CONN_EVENTS);
    Some(())
}

/// Bytes waiting in the ring buffer above which the agent is woken at once.
const WAKEUP_THRESHOLD: u64 = 256 * 1024;

/// Ring-buffer submit flags. Waking the agent for every event costs an interrupt and a
/// context switch per event (measured: half the events raised one, 7-12 us each); instead the
/// agent drains the buffer on a short timer, and is only woken early when the buffer fills.
#[inline(always)]
fn wakeup_flags() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) > WAKEUP_THRESHOLD {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Family, port (host order) and address of a user `sockaddr_in`/`sockaddr_in6`, zeros if absent.
#[inline(always)]
fn read_sockaddr(ptr: u64) -> (u16, u16, [u8; 16]) {
    let mut addr = [0u8; 16];
    if ptr == 0 {
        return (0, 0, addr);
    }
    // SAFETY: the helper validates the user address.
    let Ok(raw) = (unsafe { bpf_probe_read_user(ptr as *const [u8; 24]) }) else {
        return (0, 0, addr);
    };
    let family = u16::from_ne_bytes([raw[0], raw[1]]);
    let port = u16::from_be_bytes([raw[2], raw[3]]);
    match family {
        AF_INET => addr[..4].copy_from_slice(&raw[4..8]),
        AF_INET6 => addr.copy_from_slice(&raw[8..24]),
        _ => return (family, 0, addr),
    }
    (family, port, addr)
}

/// close: forget a tracked socket and tell the agent.
#[inline(always)]
pub fn on_close(fd: u64) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if tgid == SELF_TGID.load() {
        return None;
    }
    let key = ConnKey {
        tgid,
        fd: fd as u32,
    };
    // SAFETY: only tested for presence.
    unsafe { CONNS.get(key) }?;
    let _ = CONNS.remove(key);
    let mut entry = EVENTS.reserve::<CloseEvent>(0).or_else(|| {
        count(counter::RINGBUF_FULL);
        None
    })?;
    entry.write(CloseEvent {
        kind: EventKind::Close as u32,
        pid: tgid,
        tid: id as u32,
        fd: fd as u32,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
    entry.submit(wakeup_flags());
    count(counter::CONN_EVENTS);
    Some(())
}
