//! Socket-level capture: fentry/fexit on `tcp_sendmsg`, `tcp_recvmsg` and `tcp_close`, the
//! alternative to the syscall tracepoints on kernels that allow BPF trampolines.
//!
//! Why here: enabling any syscall tracepoint sends every syscall of every task on the node
//! through the kernel's tracing slow path, files and pipes included. A trampoline on the TCP
//! send and receive functions is only entered by TCP sends and receives, so the rest of the
//! node pays nothing. What is lost: the write side (its inbound head scan is a tail call that
//! only a tracepoint program can make) and HTTP over anything but TCP; the agent then keeps
//! the tracepoints. HTTP/2 frames are walked by fexit copies of the frame walk ([`h2`]).
//!
//! Entry: for a traced process, where the user bytes are (the `iov_iter` of the `msghdr`; its
//! layout comes from BTF in `ITER_OFF`) goes into the thread's in-flight slot ([`args`]).
//! Exit: with the byte count the function returned, the same classification and event as a
//! syscall exit ([`capture`]), the tuple read straight from the `struct sock` on a connection's
//! first event. A connection is keyed by its socket, not by a descriptor (the functions never
//! see one): [`sock_id`].

use aya_ebpf::{
    EbpfContext,
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use tracer_common::{
    ConnKey, DIR_EGRESS, DIR_INGRESS, FLAG_H2_RAW, FLAG_HAS_TUPLE, MSG_PEEK, SockTuple, counter,
};

use crate::{
    H2_RECV_PROGS, H2_SEND_PROGS, ITER_OFF, SOCK_OFF, TCP_RECVMSG_ARGS,
    args::{self, SyscallArgs},
    capture, count,
    event::{SOCK_RECV, SOCK_SEND, output_scratch},
    h2, is_traced, sock,
    source::Source,
};

#[fentry(function = "tcp_sendmsg")]
pub fn fentry_cap_tcp_sendmsg(ctx: FEntryContext) -> u32 {
    floor!(0);
    on_entry(
        number(ctx.arg::<u64>(0)),
        ctx.arg::<u64>(1),
        SOCK_SEND,
        false,
    );
    0
}

#[fexit(function = "tcp_sendmsg")]
pub fn fexit_cap_tcp_sendmsg(ctx: FExitContext) -> u32 {
    floor!(0);
    // int tcp_sendmsg(struct sock *sk, struct msghdr *msg, size_t size)
    let _ = on_exit(&ctx, i64::from(ctx.arg::<i32>(3)), DIR_EGRESS);
    0
}

#[fentry(function = "tcp_recvmsg")]
pub fn fentry_cap_tcp_recvmsg(ctx: FEntryContext) -> u32 {
    floor!(0);
    // A peek leaves the bytes for the read that follows (see `syscalls::data_syscall`).
    // `flags` is the fifth parameter up to 5.18 (after `nonblock`), the fourth since.
    let flags = if TCP_RECVMSG_ARGS.load() == 6 {
        ctx_word::<4>(ctx.as_ptr())
    } else {
        ctx_word::<3>(ctx.as_ptr())
    };
    let peek = flags & MSG_PEEK != 0;
    on_entry(
        number(ctx.arg::<u64>(0)),
        ctx.arg::<u64>(1),
        SOCK_RECV,
        peek,
    );
    0
}

#[fexit(function = "tcp_recvmsg")]
pub fn fexit_cap_tcp_recvmsg(ctx: FExitContext) -> u32 {
    floor!(0);
    // The return value follows the parameters: 6 of them up to 5.18, 5 once `nonblock` went
    // into `flags`, 4 once `addr_len` went too (6.x). The global is read-only: the verifier
    // only walks the branch this kernel takes, so the others' context offsets are never checked
    // against its prototype.
    let ret = match TCP_RECVMSG_ARGS.load() {
        6 => ctx_word::<6>(ctx.as_ptr()),
        5 => ctx_word::<5>(ctx.as_ptr()),
        _ => ctx_word::<4>(ctx.as_ptr()),
    };
    let _ = on_exit(&ctx, i64::from(ret as i32), DIR_INGRESS);
    0
}

#[fentry(function = "tcp_close")]
pub fn fentry_cap_tcp_close(ctx: FEntryContext) -> u32 {
    floor!(0);
    let _ = capture::on_close(sock_id(number(ctx.arg::<u64>(0))));
    0
}

/// Word `N` of a tracing program's context, loaded at a constant offset in assembly: from
/// `ctx.arg(n)` in several branches LLVM makes one load at a computed offset, which the
/// verifier refuses for a context pointer.
#[inline(always)]
fn ctx_word<const N: usize>(ctx: *mut c_void) -> u64 {
    let word: u64;
    // SAFETY: a load from the context; the verifier checks the offset against the traced
    // function's prototype.
    unsafe {
        core::arch::asm!(
            "{word} = *(u64 *)({ctx} + {off})",
            word = out(reg) word,
            ctx = in(reg) ctx,
            off = const N * 8,
        );
    }
    word
}

/// A pointer argument as a plain number. The verifier types an fentry argument as a pointer
/// into kernel memory and refuses any arithmetic on it but addition; a copy read back through
/// the helper is a number.
#[inline(always)]
fn number(ptr: u64) -> u64 {
    let copy = ptr;
    // SAFETY: reads our own stack slot.
    unsafe { bpf_probe_read_kernel(&raw const copy) }.unwrap_or(0)
}

/// The connection key of a socket where no descriptor is known. Sockets are slab objects of
/// over 1 KiB, cache-line aligned, in the kernel's direct map: bits 8..40 of their addresses
/// tell apart any two live sockets that lie within 1 TiB of each other.
#[inline(always)]
fn sock_id(sk: u64) -> u32 {
    (sk >> 8) as u32
}

/// Keeps where the bytes of this send or receive are, for the exit; a `peek` is not followed
/// (as `capture::on_enter`).
#[inline(always)]
fn on_entry(sk: u64, msg: u64, slot: u32, peek: bool) {
    let id = bpf_get_current_pid_tgid();
    if sk == 0 || msg == 0 || !is_traced((id >> 32) as u32) {
        return;
    }
    if peek {
        let _ = args::take(id);
        return;
    }
    let Some((buf, segments)) = user_bytes(msg) else {
        count(counter::UNREADABLE_BUFFER);
        return;
    };
    args::save(
        id,
        SyscallArgs {
            fd: sock_id(sk),
            syscall: slot,
            buf,
            count: segments,
            // As for the syscalls, only a send's start is used.
            enter_ns: if slot == SOCK_SEND {
                // SAFETY: helper without preconditions.
                unsafe { bpf_ktime_get_ns() }
            } else {
                0
            },
            sk,
            has_tuple: 0,
            pad: 0,
            tuple: SockTuple::default(),
        },
    );
}

/// Where a `msghdr`'s user bytes start: a single buffer (`ITER_UBUF`; segments 0) or a kernel
/// array of user iovecs (`ITER_IOVEC`; its length). `None` for anything else (kernel pages of
/// sendfile and splice, kernel callers) and for an iterator already part-consumed.
#[inline(always)]
fn user_bytes(msg: u64) -> Option<(u64, u64)> {
    let off = ITER_OFF.load();
    if off.valid == 0 {
        return None;
    }
    let iter = msg + u64::from(off.msg_iter);
    let kind = sock::read::<u32>(iter, off.kind)? & off.kind_mask;
    let ptr: u64 = sock::read(iter, off.ptr)?;
    let consumed: u64 = sock::read(iter, off.iov_offset)?;
    if kind == off.ubuf {
        return Some((ptr + consumed, 0));
    }
    if kind != off.iovec || consumed != 0 {
        return None;
    }
    let segments: u64 = sock::read(iter, off.nr_segs)?;
    (segments != 0).then_some((ptr, segments))
}

#[inline(always)]
fn on_exit<C: EbpfContext>(ctx: &C, ret: i64, direction: u32) -> Option<()> {
    let id = bpf_get_current_pid_tgid();
    if !is_traced((id >> 32) as u32) {
        return None;
    }
    let args = args::take(id)?;
    if ret <= 0 {
        return None;
    }
    let source = if args.count == 0 {
        Source::Plain(args.buf)
    } else {
        Source::Vector {
            iov: args.buf,
            count: args.count,
            kernel: true,
        }
    };
    let key = ConnKey {
        tgid: (id >> 32) as u32,
        fd: args.fd,
    };
    let tracked = capture::track(ctx, key, source, ret, direction)?;
    let scratch = capture::fill_event(id, &args, source, ret as u64, direction)?;
    scratch.event.seq = tracked.seq;
    if tracked.want_tuple
        && sock::read_tuple_into(args.sk, &SOCK_OFF.load(), &mut scratch.event.tuple)
    {
        scratch.event.flags |= FLAG_HAS_TUPLE;
    }
    if tracked.h2 || capture::upgraded(key, scratch, direction) {
        // The frame walk of this function's exit sends the event; if it cannot be reached (not
        // loaded), the agent walks the frames of the captured bytes.
        scratch.event.flags |= FLAG_H2_RAW;
        let progs = if direction == DIR_EGRESS {
            &H2_SEND_PROGS
        } else {
            &H2_RECV_PROGS
        };
        h2::walk_and_send(ctx, progs, scratch, key, source, ret as u64, direction);
    }
    output_scratch(scratch, id);
    Some(())
}
