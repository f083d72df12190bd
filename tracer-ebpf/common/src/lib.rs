//! Types shared by the kernel programs (`tracer-ebpf`) and the agent (`tracer-agent`).
//!
//! Every struct that crosses the kernel/user boundary is defined once, here, with `#[repr(C)]`,
//! explicit padding and a const assertion on its size, so the two sides cannot drift apart.
//! The `user` feature adds `aya::Pod` so the agent can read and write them through aya's maps.
#![no_std]

pub mod h2;
pub mod http;

/// Upper bound, fixed at compile time, of the bytes copied from one syscall's buffer.
/// The effective limit is the `CAPTURE_SIZE` global set by the agent at load time (`--capture-size`).
pub const MAX_CAPTURE: usize = 4096;
/// Default for `CAPTURE_SIZE`: a request line plus the dozen headers a mesh sidecar adds fit easily.
pub const DEFAULT_CAPTURE: u32 = 2048;
/// Bytes copied from the end of a message whose middle was not captured (chunked-body terminator).
pub const TAIL_LEN: usize = 16;
/// Most iovec elements copied from per readv/writev/recvmsg/sendmsg.
pub const MAX_IOV_COPY: usize = 8;
/// Most iovec elements walked to find where the message ends (for its tail). Node writes a
/// chunked response as one writev of a dozen or more elements.
pub const MAX_IOV: usize = 32;

/// First field of every ring-buffer record: tells the agent which struct follows.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Data = 1,
    Conn = 2,
    Close = 3,
    Write = 4,
}

impl EventKind {
    #[must_use]
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Data),
            2 => Some(Self::Conn),
            3 => Some(Self::Close),
            4 => Some(Self::Write),
            _ => None,
        }
    }
}

/// Direction of a data event, seen from the traced process.
pub const DIR_INGRESS: u32 = 0;
pub const DIR_EGRESS: u32 = 1;

/// `DataEvent::flags`
pub const FLAG_HAS_TUPLE: u32 = 1 << 0;
/// `DataEvent::server_span` holds the SERVER span id the kernel chose for the request whose
/// head starts in this event (write side on: the id may reach the wire as a parent id).
pub const FLAG_SERVER_SPAN: u32 = 1 << 2;
/// The request carried no trace id the kernel could read: `DataEvent::trace_id` is the one it
/// chose (and will inject).
pub const FLAG_KERNEL_TRACE: u32 = 1 << 3;
/// The socket speaks HTTP/2: the event's data is a sequence of frame records (`h2`), not the
/// bytes the syscall moved.
pub const FLAG_H2_FRAMES: u32 = 1 << 4;
/// The socket speaks HTTP/2 but the kernel could not walk its frames (the walk program of the
/// capture in use did not load): the event carries the bytes moved, as for HTTP/1, and the
/// agent walks the frames it holds (`h2::COPY_OF` and the record rules alike).
pub const FLAG_H2_RAW: u32 = 1 << 5;

pub const AF_INET: u16 = 2;
/// `recv` flag: look at the data without consuming it.
pub const MSG_PEEK: u64 = 2;
pub const AF_INET6: u16 = 10;

/// A TCP 4-tuple as the traced process sees it: `s*` is the local end, `d*` the peer.
/// IPv4 addresses are stored in the first four bytes of the 16-byte fields.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockTuple {
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}
const _: () = assert!(size_of::<SockTuple>() == 40);

/// One read-side or write-side syscall on a socket of interest. The captured bytes follow the
/// header in the same ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataEvent {
    pub kind: u32,
    pub direction: u32,
    pub pid: u32,
    pub tid: u32,
    pub fd: u32,
    pub flags: u32,
    /// When a write began (`bpf_ktime_get_ns`); 0 for reads, whose data arrived at `exit_ns`.
    pub enter_ns: u64,
    pub exit_ns: u64,
    /// Bytes the syscall moved (its return value).
    pub total_len: u64,
    /// Bytes following this header (<= `total_len`, <= the capture size).
    pub captured_len: u32,
    /// Valid bytes in `tail`: set only when `total_len > captured_len`.
    pub tail_len: u32,
    /// Kernel-side use only: the thread filling the per-CPU buffer the event is built in.
    pub owner: u32,
    /// The event's number among its socket's data events in its direction, counted from the
    /// socket's first tracked event; an event lost on the way (ring buffer full) leaves a jump.
    pub seq: u32,
    pub tail: [u8; TAIL_LEN],
    pub tuple: SockTuple,
    /// With `FLAG_SERVER_SPAN`: the SERVER span id, big-endian (as written in hex).
    pub server_span: [u8; 8],
    /// With `FLAG_KERNEL_TRACE`: the trace id, big-endian.
    pub trace_id: [u8; 16],
}
const _: () = assert!(size_of::<DataEvent>() == 144);

/// A socket was accepted or connected: its fd and the peer address from the syscall arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnEvent {
    pub kind: u32,
    pub pid: u32,
    pub fd: u32,
    pub family: u16,
    pub port: u16,
    /// When the socket was accepted or connected (the connection's first activity).
    pub ts_ns: u64,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<ConnEvent>() == 40);

/// A socket the kernel side tracked was closed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseEvent {
    pub kind: u32,
    pub pid: u32,
    pub fd: u32,
}
const _: () = assert!(size_of::<CloseEvent>() == 12);

/// Write side, per process (`WRITE_MODE` map, absent = read-only): what the `sk_msg` program may
/// do to the HTTP/1.x requests the process sends.
pub const WRITE_OFF: u32 = 0;
pub const WRITE_READ_ONLY: u32 = 1;
/// Replace the span id (and parent id) of a request's B3/W3C context in place, same length.
pub const WRITE_REWRITE: u32 = 2;
/// Rewrite, and add B3/W3C headers to requests that carry none when the causing request is known.
pub const WRITE_INJECT: u32 = 3;

/// The sampling rule the kernel (for the traces it starts) and the agent's ratio sampler share:
/// a trace is sampled when the low 63 bits of its id's low half are below `bound` (the
/// `SAMPLE_BOUND` global; `u64::MAX` keeps every trace, 0 none).
#[expect(
    clippy::inline_always,
    reason = "kernel programs call it: no calls there"
)]
#[inline(always)]
#[must_use]
pub fn sampled_by_bound(trace_id_low: u64, bound: u64) -> bool {
    (trace_id_low >> 1) < bound
}

/// `PROPAGATION` global: which trace-context propagators the kernel reads, and in which order,
/// as the agent's `OTEL_PROPAGATORS` list says (`b3` and `b3multi` both name the B3 propagator).
pub const PROPAGATE_B3: u32 = 1;
pub const PROPAGATE_TRACECONTEXT: u32 = 2;
/// `tracecontext` comes before `b3`/`b3multi` in the list.
pub const PROPAGATE_TRACECONTEXT_FIRST: u32 = 4;

/// `INJECT_FORMAT` global: the headers injected.
pub const INJECT_B3_MULTI: u32 = 0;
pub const INJECT_B3_SINGLE: u32 = 1;
pub const INJECT_TRACEPARENT: u32 = 2;

/// `WriteEvent::action`: what the `sk_msg` program did with one request head. One record per head
/// it saw, edited or not, in send order, so the agent can pair them with the heads it parses.
pub const WRITE_REWRITTEN: u32 = 1;
pub const WRITE_INJECTED: u32 = 2;
/// The head did not end within the send (split over several sends): left unmodified.
pub const WRITE_SKIP_SPLIT: u32 = 3;
/// Longer than the part of a send the program examines (`WRITE_HEAD_MAX`): left unmodified.
pub const WRITE_SKIP_LONG: u32 = 4;
/// Inject mode, no context in the request and no known causing request: left unmodified.
pub const WRITE_SKIP_NO_CAUSE: u32 = 5;
/// A context header whose value is not the expected shape (length, hex): left unmodified.
pub const WRITE_SKIP_MALFORMED: u32 = 6;
/// Rewrite mode and no context header to rewrite: nothing to do.
pub const WRITE_SKIP_NO_CONTEXT: u32 = 7;
/// A helper (pull/push) failed: left unmodified or, after a push, see the counters.
pub const WRITE_SKIP_FAILED: u32 = 8;

/// Bytes of a send the `sk_msg` program examines for a request head.
pub const WRITE_HEAD_MAX: usize = 1024;

/// `MSG_PROGS` slots: the `sk_msg` edit's later stages, tail-called by `tracer_sk_msg` in turn
/// (the agent fills them before attaching it), and the kernel log of a head left unedited
/// (`--kernel-log`), tail-called by the last stage.
pub const MSG_PLAN: u32 = 0;
pub const MSG_APPLY: u32 = 1;
pub const MSG_LOG: u32 = 2;
/// Slots of `MSG_PROGS`.
pub const MSG_STAGES: u32 = 3;

/// One request head seen by the `sk_msg` program, in the thread that sent it (the data event of
/// the same syscall follows it in the ring buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WriteEvent {
    pub kind: u32,
    pub action: u32,
    pub pid: u32,
    pub tid: u32,
    /// The CLIENT span id written to the wire (edited heads only), big-endian.
    pub client_span: [u8; 8],
    /// The parent written to the wire, zero if the kernel knew none.
    pub parent_span: [u8; 8],
    /// The trace id of the request as sent, zero if unknown.
    pub trace_id: [u8; 16],
    /// 1 if the injected context says sampled.
    pub sampled: u32,
    /// Bytes added to the head (inject), 0 for an in-place rewrite.
    pub added: u32,
}
const _: () = assert!(size_of::<WriteEvent>() == 56);

/// Key of the kernel's connection map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}
const _: () = assert!(size_of::<ConnKey>() == 8);

/// `ConnInfo::proto`
pub const PROTO_UNKNOWN: u32 = 0;
pub const PROTO_HTTP: u32 = 1;
pub const PROTO_OTHER: u32 = 2;
/// HTTP/2: by its client preface, a server's first SETTINGS frame, or (a socket older than the
/// agent) a HEADERS frame; or an HTTP/1 connection whose next bytes are the preface (h2c upgrade).
pub const PROTO_HTTP2: u32 = 3;

/// Value of the kernel's connection map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// `PROTO_*`, decided from the socket's first payload.
    pub proto: u32,
    /// Non-zero once the agent was given the socket's peer: by accept/connect arguments, or
    /// by one data event carrying the tuple read from the file table (`FdOffsets`).
    pub peer_sent: u32,
    /// The next data event's `DataEvent::seq`, per direction (`DIR_*`).
    pub seq: [u32; 2],
}
const _: () = assert!(size_of::<ConnInfo>() == 16);

/// A process's verdict, as the agent decides it; the kernel keeps one bit of it (`PROC_BITS`).
pub const PROC_TRACE: u32 = 1;
pub const PROC_EXCLUDE: u32 = 2;

/// `FILTER_MODE` global: trace every process but the excluded ones (bits mark the excluded),
/// or only the listed ones (bits mark the traced).
pub const FILTER_ALL: u32 = 0;
pub const FILTER_LISTED: u32 = 1;

/// Indexes of the per-CPU `COUNTERS` array. The agent names them in its self-metrics.
pub mod counter {
    /// Data events written to the ring buffer.
    pub const EVENTS: u32 = 0;
    /// Events lost because the ring buffer was full.
    pub const RINGBUF_FULL: u32 = 1;
    /// Messages longer than the capture size (the rest is counted by length only).
    pub const TRUNCATED: u32 = 2;
    /// Syscalls not followed because another thread took their in-flight slot (same thread id
    /// modulo the table size, both in a syscall).
    pub const ARGS_FULL: u32 = 3;
    /// Connections not tracked because the connection map was full.
    pub const CONNS_FULL: u32 = 4;
    /// `bpf_probe_read_user` failures (unmapped or paged-out buffers).
    pub const READ_FAULT: u32 = 5;
    /// Connection (accept/connect) and close events written.
    pub const CONN_EVENTS: u32 = 6;
    /// Client sockets of write-side processes put into the socket hash.
    pub const WRITE_SOCKETS: u32 = 7;
    /// Request heads whose context the `sk_msg` program rewrote in place.
    pub const WRITE_REWRITTEN: u32 = 8;
    /// Request heads that got injected headers.
    pub const WRITE_INJECTED: u32 = 9;
    /// Request heads left unmodified (split, too long, malformed, no cause, helper failure).
    pub const WRITE_SKIPPED: u32 = 10;
    /// Inbound requests whose SERVER span id the kernel chose (write-side processes).
    pub const SERVER_CONTEXTS: u32 = 11;
    /// Events dropped because another program run took the per-CPU scratch buffer while this
    /// one was filling it (program runs are preemptible on some kernels, e.g. 7.x syscall
    /// tracepoints): sending it would have sent the other run's bytes.
    pub const SCRATCH_BUSY: u32 = 12;
    /// Socket-level capture: sends and receives of traced processes whose bytes were not in
    /// user memory (sendfile and splice pages, kernel users of a socket) or not at the start
    /// of their buffer: not captured.
    pub const UNREADABLE_BUFFER: u32 = 13;
    /// HTTP/2 frame boundaries lost (an implausible frame header, more frames in one syscall
    /// than a walk takes): frames are not reported until a syscall starts with a plausible one.
    pub const H2_LOST: u32 = 14;
    /// HTTP/2 events that end with a `REC_LOST` record: frames (or parts of header blocks)
    /// not reported, for lost boundaries or for want of room in the capture size.
    pub const H2_MISSED: u32 = 15;
    pub const COUNT: u32 = 16;
}

/// Byte offsets of the fields of the `tcp:tcp_rcv_space_adjust` tracepoint record, read by the
/// agent from tracefs (they differ between kernel versions). Zero means absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpTpOffsets {
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub saddr: u32,
    pub daddr: u32,
    pub saddr_v6: u32,
    pub daddr_v6: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<TcpTpOffsets>() == 32);

/// Byte offsets of the fields that lead from the current task to the `struct sock` of one of
/// its file descriptors (`task->files->fdt->fd[fd]->private_data->sk`), read by the agent from
/// the kernel's BTF; `valid` is 0 when any is missing. With them the socket tuple is read once
/// per connection, at its first data event, instead of by a probe on every send and receive.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdOffsets {
    pub valid: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.max_fds`
    pub fdt_max_fds: u32,
    /// `fdtable.fd`
    pub fdt_fd: u32,
    /// `file.private_data` (the `struct socket` of a socket file)
    pub file_private_data: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `sock.sk_socket`: points back at the socket, which tells a socket from any other file.
    pub sk_socket: u32,
}
const _: () = assert!(size_of::<FdOffsets>() == 32);

/// Byte offsets of `struct sock_common` fields (the first member of `struct sock`) on the
/// running kernel, read by the agent from its BTF. `valid` is 0 when they could not be found.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOffsets {
    pub valid: u32,
    pub family: u32,
    /// `skc_num`: local port, host byte order.
    pub num: u32,
    /// `skc_dport`: remote port, network byte order.
    pub dport: u32,
    pub rcv_saddr: u32,
    pub daddr: u32,
    pub v6_rcv_saddr: u32,
    pub v6_daddr: u32,
}
const _: () = assert!(size_of::<SockOffsets>() == 32);

/// How the socket-level capture finds the user bytes of a send or receive: the `struct iov_iter`
/// inside the `struct msghdr` that `tcp_sendmsg`/`tcp_recvmsg` get, whose layout and kind values
/// changed across kernels (a bit set in a `type` word up to 5.13, a `u8` enum after, reordered
/// in 6.x, `ITER_UBUF` from 6.0). Read by the agent from the kernel's BTF; `valid` is 0 when
/// something is missing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IterOffsets {
    pub valid: u32,
    /// `msghdr.msg_iter`
    pub msg_iter: u32,
    /// `iov_iter.iter_type` (5.14+) or `iov_iter.type` (read as a 32-bit word, then masked).
    pub kind: u32,
    /// Leaves the kind: `0xff` for the `u8` enum, all but the direction bit for `type`.
    pub kind_mask: u32,
    /// `iov_iter.iov_offset`: bytes of the current buffer already consumed.
    pub iov_offset: u32,
    /// The union of `iov`/`__iov` (a kernel array of user `struct iovec`) and `ubuf`.
    pub ptr: u32,
    /// `iov_iter.nr_segs`
    pub nr_segs: u32,
    /// The kind values: `ITER_IOVEC`, and `ITER_UBUF` (`u32::MAX` where it does not exist).
    pub iovec: u32,
    pub ubuf: u32,
    pub pad: u32,
}
const _: () = assert!(size_of::<IterOffsets>() == 40);

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::SockOffsets {}
    unsafe impl aya::Pod for super::IterOffsets {}
    unsafe impl aya::Pod for super::FdOffsets {}
    // SAFETY: all of these are `#[repr(C)]`, made of integers and byte arrays, with explicit padding.
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnInfo {}
    unsafe impl aya::Pod for super::TcpTpOffsets {}
    unsafe impl aya::Pod for super::DataEvent {}
    unsafe impl aya::Pod for super::ConnEvent {}
    unsafe impl aya::Pod for super::CloseEvent {}
    unsafe impl aya::Pod for super::WriteEvent {}
}
