//! Kernel side of the tracer: maps, load-time globals and the probe families.
//!
//! - [`syscalls`]: syscall tracepoints (accept, connect, read/write families, close), the
//!   baseline that works on every kernel from 5.10 on; what they do is in [`capture`], the
//!   syscalls in flight in [`args`], the event buffers and the ring buffer in [`event`].
//! - [`socket`]: the same capture at the TCP send/receive functions (fentry/fexit), chosen by
//!   the agent where the kernel allows it: the node's other syscalls then pay nothing.
//! - socket 4-tuple of the syscall in flight, one family chosen per kernel by the agent:
//!   [`sock`] (fentry, kprobe or tp_btf on the TCP send/receive path, both directions) or
//!   [`tcp`] (`tcp:tcp_rcv_space_adjust`, reads only, the fallback).
//! - [`write`]: the write side (cgroup connect + sock_ops select the client sockets of
//!   processes in rewrite/inject mode, sk_msg edits their outgoing request heads, uprobes
//!   follow a Go program's requests across goroutines).
//!
//! Programs only classify, filter and copy a bounded prefix; parsing happens in the agent.
//! With `--kernel-log` the agent turns on their diagnostics (aya-log, `AYA_LOG_LEVEL`); off,
//! the verifier removes the logging code.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![no_main]

/// The first line of every program: with the `floor` feature (the bench's "floor" arm, see
/// `cargo xtask bench`) the program returns `$verdict` at once, so only the cost of the hooks
/// themselves remains. The test reads a load-time global rather than being a constant: the
/// compiler then keeps every program body, map and global as in the real object (the agent
/// loads and configures the floor object exactly like the real one), and the verifier, which
/// knows the value of the read-only global, removes the rest of the program at load time.
/// Without the feature it expands to nothing.
#[cfg(feature = "floor")]
macro_rules! floor {
    ($verdict:expr) => {
        if crate::FLOOR.load() != 0 {
            return $verdict;
        }
    };
}
#[cfg(not(feature = "floor"))]
macro_rules! floor {
    ($verdict:expr) => {};
}

mod args;
mod capture;
mod event;
mod h2;
mod sock;
mod socket;
mod source;
mod syscalls;
mod tcp;
mod write;

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use tracer_common::{
    ConnInfo, ConnKey, DEFAULT_CAPTURE, FILTER_ALL, FILTER_LISTED, FdOffsets, IterOffsets,
    MSG_STAGES, SockOffsets, TcpTpOffsets, counter,
};

use crate::{
    args::{ARGS_SLOTS, ArgsSlot},
    event::{SYS_COUNT, SYS_INGRESS_COUNT, Scratch},
    write::{
        ctx::{ServerCtx, TraceKey},
        inbound::HEADS_INBOUND,
        msg::HeadBuf,
    },
};

/// The agent's own process id: never traced.
#[unsafe(no_mangle)]
static SELF_TGID: Global<u32> = Global::new(0);
/// `FILTER_ALL` or `FILTER_LISTED` (see `PROC_BITS`).
#[unsafe(no_mangle)]
static FILTER_MODE: Global<u32> = Global::new(FILTER_ALL);
/// Bytes copied per syscall, at most `MAX_CAPTURE`.
#[unsafe(no_mangle)]
static CAPTURE_SIZE: Global<u32> = Global::new(DEFAULT_CAPTURE);
/// Field offsets of `tcp:tcp_rcv_space_adjust` on the running kernel.
#[unsafe(no_mangle)]
static TCP_TP: Global<TcpTpOffsets> = Global::new(TcpTpOffsets {
    sport: 0,
    dport: 0,
    family: 0,
    saddr: 0,
    daddr: 0,
    saddr_v6: 0,
    daddr_v6: 0,
    pad: 0,
});

/// `struct sock_common` field offsets on the running kernel, for the [`sock`] programs.
#[unsafe(no_mangle)]
static SOCK_OFF: Global<SockOffsets> = Global::new(SockOffsets {
    valid: 0,
    family: 0,
    num: 0,
    dport: 0,
    rcv_saddr: 0,
    daddr: 0,
    v6_rcv_saddr: 0,
    v6_daddr: 0,
});

/// Offsets for reading a socket's tuple through the file table (`capture::fill_tuple_of_fd`).
#[unsafe(no_mangle)]
static FD_OFF: Global<FdOffsets> = Global::new(FdOffsets {
    valid: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    sk_socket: 0,
});

/// Where a `msghdr`'s user bytes are, for the [`socket`] capture.
#[unsafe(no_mangle)]
static ITER_OFF: Global<IterOffsets> = Global::new(IterOffsets {
    valid: 0,
    msg_iter: 0,
    kind: 0,
    kind_mask: 0,
    iov_offset: 0,
    ptr: 0,
    nr_segs: 0,
    iovec: 0,
    ubuf: 0,
    pad: 0,
});
/// Parameters of `tcp_recvmsg` on the running kernel (6 up to 5.18, then 5, then 4).
#[unsafe(no_mangle)]
static TCP_RECVMSG_ARGS: Global<u32> = Global::new(5);

/// Non-zero when some process has write mode rewrite or inject: the read path then chooses
/// SERVER span ids for them (one global test instead of a map lookup per request otherwise).
#[unsafe(no_mangle)]
static WRITE_ACTIVE: Global<u32> = Global::new(0);
/// `tracer_common::INJECT_*`: the headers the sk_msg program injects.
#[unsafe(no_mangle)]
static INJECT_FORMAT: Global<u32> = Global::new(0);
/// `tracer_common::PROPAGATE_*`: the trace-context propagators the write side reads, in the
/// agent's order.
#[unsafe(no_mangle)]
static PROPAGATION: Global<u32> = Global::new(3);
/// Sampling of traces the kernel starts or that arrive without a decision: sampled when the low
/// 63 bits of the trace id are below this bound (the agent's ratio sampler, same rule).
#[unsafe(no_mangle)]
static SAMPLE_BOUND: Global<u64> = Global::new(u64::MAX);

/// 1 in the floor build: every program returns at its first line ([`floor!`]).
#[cfg(feature = "floor")]
#[unsafe(no_mangle)]
static FLOOR: Global<u32> = Global::new(1);

/// Records for the agent: `DataEvent` + payload, `ConnEvent`, `CloseEvent`, `WriteEvent`.
/// The agent resizes it at load time (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Syscalls in flight ([`args`]): the arguments seen at entry, used at exit, in the slot of the
/// thread id modulo the size.
#[map]
static ARGS: Array<ArgsSlot> = Array::with_max_entries(ARGS_SLOTS, 0);

/// Sockets seen by accept/connect or classified from their first bytes, by (tgid, fd).
/// LRU so that a missed close can never fill it.
#[map]
static CONNS: LruHashMap<ConnKey, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

/// The frame state of HTTP/2 sockets ([`h2`]), by (tgid, fd) as `CONNS`. LRU: a socket whose
/// state is gone is picked up again at its next HEADERS frame.
#[map]
static H2_CONNS: LruHashMap<ConnKey, h2::H2State> = LruHashMap::with_max_entries(16384, 0);

/// One bit per process id, maintained by the agent: with `FILTER_LISTED` a set bit means
/// traced, with `FILTER_ALL` it means excluded. An array, not a hash: the verifier inlines
/// array lookups, and this check runs on every read and write of every process on the node.
/// The agent sizes it to pid_max / 64 words at load time.
#[map]
static PROC_BITS: Array<u64> = Array::with_max_entries(65536, 0);

/// Write mode (`tracer_common::WRITE_*`) by process id, for processes above read-only.
#[map]
static WRITE_MODE: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);

/// Sockets being connected by write-side processes, by socket cookie, until sock_ops sees them
/// established. LRU: a connect that fails leaves its entry behind.
#[map]
static PENDING_SOCKS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16384, 0);

/// The client sockets whose sends the sk_msg program sees, by socket cookie. The kernel removes
/// a socket when it closes. Only in the write-side object (creating it needs CAP_NET_ADMIN).
#[cfg(feature = "write-side")]
#[map]
static SOCKS: aya_ebpf::maps::SockHash<u64> = aya_ebpf::maps::SockHash::with_max_entries(65536, 0);

/// The request each thread of a write-side process is serving, by thread id.
#[map]
static THREAD_CTX: LruHashMap<u32, ServerCtx> = LruHashMap::with_max_entries(16384, 0);

/// Requests in flight in write-side processes, by (process, trace id): the parent of an outgoing
/// request that carries the same trace id, whichever thread sends it.
#[map]
static TRACE_CTX: LruHashMap<TraceKey, ServerCtx> = LruHashMap::with_max_entries(16384, 0);

/// Slot 0: `tracer_server_ctx`, tail-called by the read path for an inbound request head of a
/// write-side process (a separate program, so the head scan costs the read programs nothing).
#[map]
static WRITE_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: `tracer_h2_frames`, tail-called by the syscall capture programs for an HTTP/2
/// socket's syscall ([`h2`]).
#[map]
static H2_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// Slot 0: `tracer_h2_frames_send` and `tracer_h2_frames_recv`, the frame walk tail-called by
/// the socket-level capture's `tcp_sendmsg` and `tcp_recvmsg` exits (a tail call stays within
/// one traced function, so one array each).
#[map]
static H2_SEND_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);
#[map]
static H2_RECV_PROGS: ProgramArray = ProgramArray::with_max_entries(1, 0);

/// The later stages of the sk_msg edit (`tracer_common::MSG_PLAN`, `MSG_APPLY`, `MSG_LOG`), tail-called
/// in turn by `tracer_sk_msg`.
#[map]
static MSG_PROGS: ProgramArray = ProgramArray::with_max_entries(MSG_STAGES, 0);

/// Go programs in inject mode ([`write::goroutines`]): the request each goroutine serves, by `g`
/// pointer; each goroutine's creator; the creator a thread's `newproc1` is making a goroutine
/// for; the cause of each outgoing `*http.Request`.
#[map]
static G_CTX: LruHashMap<u64, ServerCtx> = LruHashMap::with_max_entries(16384, 0);
#[map]
static G_PARENT: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);
#[map]
static PENDING_G: LruHashMap<u32, u64> = LruHashMap::with_max_entries(4096, 0);
#[map]
static REQ_CTX: LruHashMap<u64, ServerCtx> = LruHashMap::with_max_entries(16384, 0);

/// Write-side processes: the lone first byte a read returned on a socket (Go reads one byte
/// ahead between keep-alive requests), until the next read brings the rest of the request line.
#[map]
static FIRST_BYTE: LruHashMap<ConnKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU work areas of the head scan: slot 0 for sk_msg, `1 + SYS_*` for the inbound scan
/// tail-called by each read-side capture program (see `SCRATCH`).
#[map]
static HEADS: PerCpuArray<HeadBuf> =
    PerCpuArray::with_max_entries(HEADS_INBOUND + SYS_INGRESS_COUNT, 0);

/// Per-CPU buffers where an event is assembled before it is copied to the ring buffer (far too
/// big for the 512-byte stack): one per capture program, indexed by its `SYS_*` constant (see
/// [`event`] for why not one shared buffer).
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(SYS_COUNT, 0);

/// Per-CPU counters, indexed by `tracer_common::counter`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Whether the process `tgid` is one the agent wants to see.
#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    if tgid == SELF_TGID.load() {
        return false;
    }
    let marked = PROC_BITS
        .get(tgid >> 6)
        .is_some_and(|word| (*word >> (tgid & 63)) & 1 == 1);
    marked == (FILTER_MODE.load() == FILTER_LISTED)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
