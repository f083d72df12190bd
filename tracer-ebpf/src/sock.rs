//! Socket 4-tuple of the read or write in flight, from the kernel's socket send and receive
//! paths, in both directions (the tracepoint fallback in `tcp.rs` only sees reads).
//!
//! Three families hand us the same `struct sock *` inside the syscall: fentry on
//! `tcp_sendmsg`/`tcp_recvmsg` (cheapest; needs BTF and ftrace), kprobes on the same functions
//! (any kernel with CONFIG_KPROBES), and the BTF tracepoints `sock_send_length`/
//! `sock_recv_length` (6.x). The agent attaches one family per kernel and says which. Rust eBPF
//! cannot emit CO-RE relocations, so the field offsets come from the kernel's BTF at load time
//! (`SOCK_OFF`). As with `tcp.rs`, the tuple is only attached to the syscall in flight
//! (`args::record_tuple`).

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel as probe_read_kernel_raw},
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use tracer_common::{AF_INET, AF_INET6, SockOffsets, SockTuple};

use crate::{SOCK_OFF, args};

#[fentry(function = "tcp_sendmsg")]
pub fn fentry_tcp_sendmsg(ctx: FEntryContext) -> u32 {
    floor!(0);
    record(ctx.arg::<u64>(0));
    0
}

#[fentry(function = "tcp_recvmsg")]
pub fn fentry_tcp_recvmsg(ctx: FEntryContext) -> u32 {
    floor!(0);
    record(ctx.arg::<u64>(0));
    0
}

#[kprobe]
pub fn kprobe_tcp_sendmsg(ctx: ProbeContext) -> u32 {
    floor!(0);
    if let Some(sk) = ctx.arg::<u64>(0) {
        record(sk);
    }
    0
}

#[kprobe]
pub fn kprobe_tcp_recvmsg(ctx: ProbeContext) -> u32 {
    floor!(0);
    if let Some(sk) = ctx.arg::<u64>(0) {
        record(sk);
    }
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn tp_btf_sock_send_length(ctx: BtfTracePointContext) -> u32 {
    floor!(0);
    record(ctx.arg::<u64>(0));
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn tp_btf_sock_recv_length(ctx: BtfTracePointContext) -> u32 {
    floor!(0);
    record(ctx.arg::<u64>(0));
    0
}

#[inline(always)]
pub fn read<T>(sk: u64, offset: u32) -> Option<T> {
    // SAFETY: the helper checks the kernel address; offsets come from this kernel's BTF.
    unsafe { bpf_probe_read_kernel((sk + u64::from(offset)) as *const T) }.ok()
}

#[inline(always)]
fn record(sk: u64) {
    args::record_tuple(|out| {
        let off = SOCK_OFF.load();
        sk != 0 && off.valid != 0 && read_tuple_into(sk, &off, out)
    });
}

/// Reads the tuple of `sk` straight into `out` (map memory: the syscall's slot or its event,
/// not the stack); false if it is not an IPv4/IPv6 socket or a read faults.
#[inline(always)]
pub fn read_tuple_into(sk: u64, off: &SockOffsets, out: &mut SockTuple) -> bool {
    let Some(family) = read::<u16>(sk, off.family) else {
        return false;
    };
    let (Some(sport), Some(dport)) = (read::<u16>(sk, off.num), read::<u16>(sk, off.dport)) else {
        return false;
    };
    let (src, dst, len) = match family {
        AF_INET => (off.rcv_saddr, off.daddr, 4),
        AF_INET6 if off.v6_daddr != 0 => (off.v6_rcv_saddr, off.v6_daddr, 16),
        _ => return false,
    };
    out.saddr = [0; 16];
    out.daddr = [0; 16];
    // SAFETY: the helper checks the kernel address and writes at most `len` (4 or 16) bytes
    // into the 16-byte arrays.
    let ok = unsafe {
        probe_read_kernel_raw(
            out.saddr.as_mut_ptr().cast(),
            len,
            (sk + u64::from(src)) as *const c_void,
        ) == 0
            && probe_read_kernel_raw(
                out.daddr.as_mut_ptr().cast(),
                len,
                (sk + u64::from(dst)) as *const c_void,
            ) == 0
    };
    out.family = family;
    out.sport = sport;
    out.dport = u16::from_be(dport);
    ok
}
