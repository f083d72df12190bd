//! What every syscall probe shares: remember the arguments at entry, and at exit decide whether
//! the bytes moved belong to an HTTP connection, copy a bounded prefix (and a short tail) of
//! them into the program's per-CPU event buffer and hand it to the ring buffer.
//!
//! A socket enters `CONNS` when accept/connect returns it, or when its first bytes in either
//! direction look like an HTTP/1.x request or status line. Its first payload decides the
//! protocol once; sockets that are not HTTP cost a map lookup from then on.

use aya_ebpf::{
    EbpfContext,
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_probe_read_user as probe_read_user_raw,
    },
    programs::TracePointContext,
};
use aya_log_ebpf::info;
use tracer_common::{
    AF_INET, AF_INET6, CloseEvent, ConnEvent, ConnInfo, ConnKey, DIR_INGRESS, EventKind,
    FLAG_H2_RAW, FLAG_HAS_TUPLE, FdOffsets, MAX_CAPTURE, MAX_IOV, MAX_IOV_COPY, PROTO_HTTP,
    PROTO_HTTP2, PROTO_OTHER, PROTO_UNKNOWN, SockTuple, TAIL_LEN, counter, h2, http,
};

use crate::{
    CAPTURE_SIZE, CONNS, FD_OFF, SCRATCH, SELF_TGID, SOCK_OFF, WRITE_ACTIVE, WRITE_PROGS,
    args::{self, SyscallArgs},
    count,
    event::{
        SYS_READV, SYS_RECVMSG, SYS_SENDMSG, SYS_WRITE, SYS_WRITEV, Scratch, bounded,
        output_conn_event, output_scratch,
    },
    h2 as kernel_h2, is_traced, sock,
    source::{Source, read_iov},
    write::{head, inbound},
};

const EINPROGRESS: i64 = 115;

/// Every `sys_enter_*` probe: keep the arguments of a traced process's syscall for its exit.
/// A `peek` is not followed, and must not leave an older syscall's arguments for its exit.
#[inline(always)]
pub fn on_enter(fd: u64, syscall: u32, buf: u64, count_arg: u64, peek: bool) {
    let id = bpf_get_current_pid_tgid();
    if !is_traced((id >> 32) as u32) {
        return;
    }
    if peek {
        let _ = args::take(id);
        return;
    }
    args::save(
        id,
        SyscallArgs {
            fd: fd as u32,
            syscall,
            buf,
            count: count_arg,
            // Only a write's start is used (a read's data arrived when it returned): reads, and
            // Go's many reads that end in EAGAIN, skip the clock. `syscall` is a constant of the
            // calling probe, so the test is compiled away.
            enter_ns: if syscall >= SYS_WRITE && syscall <= SYS_SENDMSG {
                // SAFETY: helper without preconditions.
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
            sk: 0,
            has_tuple: 0,
            pad: 0,
            tuple: SockTuple::default(),
        },
    );
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
    let mut args = args::take(id)?;
    args.syscall = syscall;
    if ret <= 0 {
        return None;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: args.fd,
    };
    let source = source_of(&args)?;
    let tracked = track(ctx, key, source, ret, direction)?;
    let scratch = fill_event(id, &args, source, ret as u64, direction)?;
    scratch.event.seq = tracked.seq;
    if tracked.want_tuple
        && args.has_tuple == 0
        && fill_tuple_of_fd(args.fd, &mut scratch.event.tuple)
    {
        scratch.event.flags |= FLAG_HAS_TUPLE;
    }
    if tracked.h2 || upgraded(key, scratch, direction) {
        // The bytes go out as they are (for the agent to walk) only if the walk, which
        // replaces them with frame records, cannot be reached.
        scratch.event.flags |= FLAG_H2_RAW;
        kernel_h2::walk_and_send(
            ctx,
            &crate::H2_PROGS,
            scratch,
            key,
            source,
            ret as u64,
            direction,
        );
        output_scratch(scratch, id);
        return Some(());
    }
    if WRITE_ACTIVE.load() != 0 {
        let captured = u64::from(scratch.event.captured_len);
        write_side(ctx, id, args.fd, direction, scratch, captured);
    }
    output_scratch(scratch, id);
    Some(())
}

/// What `track` decided for an event of a followed connection.
pub struct Tracked {
    /// The event must carry the socket tuple (the connection's first one does, unless
    /// accept/connect gave the peer).
    pub want_tuple: bool,
    /// `DataEvent::seq`: taken whether or not the event then reaches the ring buffer, so that
    /// a lost one shows as a jump.
    pub seq: u32,
    /// The socket speaks HTTP/2: the event carries frame records ([`h2`]).
    pub h2: bool,
}

/// What a socket's first payload makes of it.
#[inline(always)]
fn classify(head: Option<[u8; 9]>, reported: bool) -> u32 {
    let Some(head) = head else {
        return PROTO_OTHER;
    };
    let first8 = [
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ];
    if http::is_message_start(&first8) {
        PROTO_HTTP
    } else if h2::is_preface_start(&first8) || (reported && h2::is_server_preface_start(&head)) {
        PROTO_HTTP2
    } else {
        PROTO_OTHER
    }
}

/// Whether the connection `key`, whose syscall moved `len` bytes from `source` in `direction`,
/// is one we follow (`None`: not HTTP, or decided earlier not to be), and what its event
/// carries.
#[inline(always)]
pub fn track<C: EbpfContext>(
    ctx: &C,
    key: ConnKey,
    source: Source,
    ret: i64,
    direction: u32,
) -> Option<Tracked> {
    let mut want_tuple = false;
    let dir = (direction & 1) as usize;
    let seq;
    let proto;
    match CONNS.get_ptr_mut(key) {
        Some(conn) => {
            // SAFETY: pointer into the map value; concurrent writers only ever store a final proto.
            let mut known = unsafe { (*conn).proto };
            if known == PROTO_OTHER {
                return None;
            }
            if known == PROTO_UNKNOWN {
                // A socket accept/connect reported: its first payload decides, once.
                let head = first_bytes(source, ret);
                known = classify(head, true);
                // SAFETY: as above.
                unsafe { (*conn).proto = known };
                if known == PROTO_OTHER {
                    log_not_http(ctx, key, head, ret);
                    return None;
                }
                if known == PROTO_HTTP2 {
                    kernel_h2::start(key, head.is_some_and(|h| h[0] == b'P').then_some(dir));
                }
            }
            proto = known;
            // SAFETY: as above; a lost race only reads the tuple twice.
            if unsafe { (*conn).peer_sent } == 0 {
                want_tuple = true;
                // SAFETY: as above.
                unsafe { (*conn).peer_sent = 1 };
            }
            // SAFETY: as above. Not atomic (5.10 has no fetching atomics): two threads sending
            // on one socket at once can take the same number, which the agent tolerates; a
            // number is never skipped without an event being lost.
            unsafe {
                seq = (*conn).seq[dir];
                (*conn).seq[dir] = seq.wrapping_add(1);
            }
        }
        None => {
            // A socket older than the agent, one whose accept/connect the capture does not see
            // (socket-level), or no socket at all (a pipe, an eventfd): only an HTTP/1 start,
            // the HTTP/2 client preface or a server's first SETTINGS, or an HTTP/2 HEADERS frame
            // or connection frame (PING, SETTINGS ack, WINDOW_UPDATE) that fits the syscall
            // makes it one of ours.
            let head = first_bytes(source, ret)?;
            let first8 = [
                head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
            ];
            if http::is_message_start(&first8) {
                proto = PROTO_HTTP;
            } else if h2::is_preface_start(&first8) {
                // A connection's start the agent saw no accept/connect for (the socket-level
                // capture sees none).
                proto = PROTO_HTTP2;
                kernel_h2::start(key, Some(dir));
            } else if h2::is_midway_headers(&head, ret as u64)
                || h2::is_midway_control(&head, ret as u64)
                || h2::is_server_preface_start(&head)
            {
                proto = PROTO_HTTP2;
                kernel_h2::start(key, None);
            } else {
                return None;
            }
            want_tuple = true;
            seq = 0;
            let mut info = ConnInfo {
                proto,
                peer_sent: 1,
                seq: [0; 2],
            };
            info.seq[dir] = 1;
            if CONNS.insert(key, info, 0).is_err() {
                count(counter::CONNS_FULL);
            }
        }
    }
    Some(Tracked {
        want_tuple,
        seq,
        h2: proto == PROTO_HTTP2,
    })
}

/// An HTTP/1 connection whose event starts with the client preface (h2c by `Upgrade`, after the
/// 101): from now on it is followed as HTTP/2. True when it switched.
#[inline(always)]
pub fn upgraded(key: ConnKey, scratch: &Scratch, direction: u32) -> bool {
    if scratch.event.captured_len < 8 {
        return false;
    }
    let d = &scratch.data;
    let first8 = [d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]];
    if !h2::is_preface_start(&first8) {
        return false;
    }
    let Some(conn) = CONNS.get_ptr_mut(key) else {
        return false;
    };
    // SAFETY: pointer into the map value.
    unsafe { (*conn).proto = PROTO_HTTP2 };
    kernel_h2::start(key, Some((direction & 1) as usize));
    true
}

/// Writes the tuple of socket `fd` of the current task into `out` (the event in its per-CPU
/// buffer: nothing of it goes through the stack, which the capture programs have little of
/// left), read through the file table: `current->files->fdt->fd[fd]->private_data->sk`. False
/// for a descriptor that is not an IPv4/IPv6 socket, or when the offsets are unknown. Called
/// once per connection, at its first data event, when accept/connect did not give the peer
/// (a socket older than the agent, or accepted without an address, as libuv does) and no tuple
/// probe did.
#[inline(always)]
fn fill_tuple_of_fd(fd: u32, out: &mut SockTuple) -> bool {
    let off = FD_OFF.load();
    if off.valid == 0 {
        return false;
    }
    // SAFETY: helper without preconditions; the result is only ever read through the
    // fault-checking helper.
    let task = unsafe { bpf_get_current_task() };
    let Some(sk) = sock_of_fd(task, fd, &off) else {
        return false;
    };
    sock::read_tuple_into(sk, &SOCK_OFF.load(), out)
}

#[inline(always)]
fn sock_of_fd(task: u64, fd: u32, off: &FdOffsets) -> Option<u64> {
    let files: u64 = sock::read(task, off.task_files)?;
    let fdt: u64 = sock::read(files, off.files_fdt)?;
    let max_fds: u32 = sock::read(fdt, off.fdt_max_fds)?;
    if fd >= max_fds {
        return None;
    }
    let fds: u64 = sock::read(fdt, off.fdt_fd)?;
    let file: u64 = sock::read(fds, fd * 8)?;
    let socket: u64 = sock::read(file, off.file_private_data)?;
    let sk: u64 = sock::read(socket, off.socket_sk)?;
    // Any other file's private data leads elsewhere: only a socket's sock points back at it.
    let back: u64 = sock::read(sk, off.sk_socket)?;
    (socket != 0 && back == socket).then_some(sk)
}

#[inline(always)]
fn source_of(args: &SyscallArgs) -> Option<Source> {
    match args.syscall {
        SYS_READV | SYS_WRITEV => Some(Source::Vector {
            iov: args.buf,
            count: args.count,
            kernel: false,
        }),
        SYS_RECVMSG | SYS_SENDMSG => {
            // struct msghdr: msg_iov at 16, msg_iovlen at 24 on 64-bit.
            // SAFETY: reading user memory through the helper, which checks the address.
            let iov = unsafe { bpf_probe_read_user((args.buf + 16) as *const u64) }.ok()?;
            let count = unsafe { bpf_probe_read_user((args.buf + 24) as *const u64) }.ok()?;
            Some(Source::Vector {
                iov,
                count,
                kernel: false,
            })
        }
        _ => Some(Source::Plain(args.buf)),
    }
}

/// With `--kernel-log`: why a socket's first payload did not make it an HTTP/1 connection.
#[inline(always)]
fn log_not_http<C: EbpfContext>(ctx: &C, key: ConnKey, head: Option<[u8; 9]>, len: i64) {
    match head {
        Some(head) => info!(
            ctx,
            "pid {} fd {}: first bytes {:x} are no HTTP/1 request or status line, no HTTP/2 preface: not traced",
            key.tgid,
            key.fd,
            &head
        ),
        None => info!(
            ctx,
            "pid {} fd {}: first payload of {} bytes shorter than 9 or unreadable: not traced",
            key.tgid,
            key.fd,
            len
        ),
    }
}

/// The first 9 bytes a syscall moved (an HTTP/1 message start, or an HTTP/2 frame header), when
/// it moved at least that many in its first buffer.
#[inline(always)]
fn first_bytes(source: Source, len: i64) -> Option<[u8; 9]> {
    if len < 9 {
        return None;
    }
    let start = match source {
        Source::Plain(buf) => buf,
        Source::Vector { iov, count, kernel } => {
            if count == 0 {
                return None;
            }
            match read_iov(iov, 0, kernel) {
                Some(v) if v.len >= 9 => v.base,
                _ => return None,
            }
        }
    };
    // SAFETY: the helper validates the user address.
    let head = unsafe { bpf_probe_read_user(start as *const [u8; 9]) };
    if head.is_err() {
        count(counter::READ_FAULT);
    }
    head.ok()
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

/// This program's per-CPU event buffer, tagged as being filled by thread `id`.
#[inline(always)]
fn scratch_for(id: u64, args: &SyscallArgs) -> Option<&'static mut Scratch> {
    let scratch = SCRATCH.get_ptr_mut(args.syscall)?;
    // SAFETY: this program's own per-CPU scratch (indexed by its syscall constant): the kernel
    // does not run a program twice at once on one CPU. The owner tag set here and checked
    // before sending would still notice a kernel that does.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: valid reference into the map value.
    unsafe { core::ptr::write_volatile(&raw mut scratch.event.owner, id as u32) };
    Some(scratch)
}

/// The header of the event of thread `id`'s syscall, which moved `total` bytes, `captured` of
/// which (or of whose records) follow.
#[inline(always)]
fn set_header(
    scratch: &mut Scratch,
    id: u64,
    args: &SyscallArgs,
    total: u64,
    captured: u64,
    direction: u32,
) {
    let ev = &mut scratch.event;
    ev.kind = EventKind::Data as u32;
    ev.direction = direction;
    ev.pid = (id >> 32) as u32;
    ev.tid = id as u32;
    ev.fd = args.fd;
    ev.flags = if args.has_tuple != 0 {
        FLAG_HAS_TUPLE
    } else {
        0
    };
    ev.enter_ns = args.enter_ns;
    // SAFETY: helper without preconditions.
    ev.exit_ns = unsafe { bpf_ktime_get_ns() };
    ev.total_len = total;
    ev.captured_len = captured as u32;
    ev.tuple = args.tuple;
}

/// Builds the data event of thread `id`'s syscall in the calling program's per-CPU buffer:
/// header, a bounded prefix of the bytes moved and, when they were cut, their last bytes. The
/// caller adds what it knows (the tuple, the write side) and sends it with `output_scratch`.
#[inline(always)]
pub fn fill_event(
    id: u64,
    args: &SyscallArgs,
    source: Source,
    total: u64,
    direction: u32,
) -> Option<&'static mut Scratch> {
    let scratch = scratch_for(id, args)?;
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
        Source::Vector { iov, count, kernel } => copy_vector(data, iov, count, kernel, want, total),
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
    set_header(scratch, id, args, total, captured, direction);
    Some(scratch)
}

/// What the write side needs from a read or write of a traced process: an inbound request head
/// goes to the tail-called program that chooses its SERVER span id (and sends the event itself),
/// a lone first byte is kept for the next read, and a response ends the thread's request.
#[inline(always)]
fn write_side(
    ctx: &TracePointContext,
    id: u64,
    fd: u32,
    direction: u32,
    scratch: &Scratch,
    captured: u64,
) {
    let data = scratch.data.as_ptr();
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd,
    };
    if direction == DIR_INGRESS {
        let request = (captured >= 8 && head::is_request_start(data))
            || (captured >= 7 && continues_request(key, data));
        if request {
            // If the tail call cannot run, the event goes out without the ids.
            // SAFETY: `ctx` is this tracepoint program's context.
            unsafe { WRITE_PROGS.tail_call(ctx, 0) };
        } else if captured == 1 {
            inbound::first_byte(key, head::byte(data, 0));
        }
    } else if captured >= 8 && head::byte(data, 0) == b'H' && head::byte(data, 4) == b'/' {
        inbound::server_response(id);
    }
}

/// A read that completes a request line whose first byte came alone in the previous read of the
/// same socket (Go's server reads one byte ahead between keep-alive requests).
#[inline(always)]
fn continues_request(key: ConnKey, buf: *const u8) -> bool {
    let Some(first) = inbound::take_first_byte(key) else {
        return false;
    };
    let mut b = [first; 8];
    for (i, slot) in b.iter_mut().enumerate().skip(1) {
        *slot = head::byte(buf, i as u64 - 1);
    }
    http::is_request_start(&b)
}

/// Copies up to `want` bytes from an iovec array. Returns the bytes copied and the user address
/// just past the last byte of the message (for the tail), or 0 if it lies beyond `MAX_IOV`.
#[inline(always)]
fn copy_vector(
    data: *mut u8,
    iov: u64,
    count_arg: u64,
    kernel: bool,
    want: u64,
    total: u64,
) -> (u64, u64) {
    let mut copied = 0u64;
    for i in 0..MAX_IOV_COPY as u64 {
        if i >= count_arg || copied >= want {
            break;
        }
        let Some(v) = read_iov(iov, i, kernel) else {
            break;
        };
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
    (copied, tail_address(iov, count_arg, kernel, total))
}

/// Where the `total`-th byte of an iovec array ends, walking only the lengths.
#[inline(always)]
fn tail_address(iov: u64, count_arg: u64, kernel: bool, total: u64) -> u64 {
    let mut seen = 0u64;
    for i in 0..MAX_IOV as u64 {
        if i >= count_arg {
            break;
        }
        let Some(v) = read_iov(iov, i, kernel) else {
            break;
        };
        if seen + v.len >= total {
            return v.base + (total - seen);
        }
        seen += v.len;
    }
    0
}

/// accept/accept4 (`accepted`: the new socket is the return value) and connect (the socket is
/// the first argument) exits: track the socket and report the peer address.
#[inline(always)]
pub fn on_exit_conn(ret: i64, accepted: bool) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    let args = args::take(id)?;
    let fd = if accepted {
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
    if !accepted && family != AF_INET && family != AF_INET6 {
        return None;
    }
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd,
    };
    let info = ConnInfo {
        proto: PROTO_UNKNOWN,
        // The agent has the peer from the arguments (libuv accepts without an address).
        peer_sent: u32::from(family == AF_INET || family == AF_INET6),
        seq: [0; 2],
    };
    if CONNS.insert(key, info, 0).is_err() {
        count(counter::CONNS_FULL);
    }
    output_conn_event(ConnEvent {
        kind: EventKind::Conn as u32,
        pid: key.tgid,
        fd,
        family,
        port,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        addr,
    });
    Some(())
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

/// close: forget a tracked socket (`fd`: its descriptor, or its id with socket-level capture)
/// and tell the agent.
#[inline(always)]
pub fn on_close(fd: u32) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == SELF_TGID.load() {
        return None;
    }
    let key = ConnKey { tgid, fd };
    // SAFETY: only tested for presence.
    unsafe { CONNS.get(key) }?;
    let _ = CONNS.remove(key);
    kernel_h2::stop(key);
    output_conn_event(CloseEvent {
        kind: EventKind::Close as u32,
        pid: tgid,
        fd,
    });
    Some(())
}
