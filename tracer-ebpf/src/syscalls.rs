//! Syscall tracepoints: the capture path that works on every kernel from 5.10 on, with or
//! without kprobes, fentry or BTF.
//!
//! Every language runtime ends in these syscalls: Go's net package uses read/write, Python
//! recvfrom/sendto, Node (libuv) read/write/writev, Envoy readv/writev, curl recvfrom/sendto.
//! Entry probes save the arguments of traced processes by thread; exit probes see the result,
//! copy what was transferred and send it up. Program names are the tracepoint names, so the
//! agent attaches each program to `syscalls/<program name>`.

use aya_ebpf::{EbpfContext, macros::tracepoint, programs::TracePointContext};
use tracer_common::{DIR_EGRESS, DIR_INGRESS, MSG_PEEK};

use crate::{
    capture::{on_close, on_enter, on_exit_conn, on_exit_data},
    event::{
        SYS_READ, SYS_READV, SYS_RECVFROM, SYS_RECVMSG, SYS_SENDMSG, SYS_SENDTO, SYS_WRITE,
        SYS_WRITEV,
    },
};

/// Pseudo-syscall ids for the entries that are not data transfers.
const SYS_ACCEPT: u32 = 100;
const SYS_CONNECT: u32 = 101;

/// Syscall argument `n` of a `sys_enter_*` record (after the 8-byte common header and the
/// 8-byte syscall number slot).
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: constant offset inside the tracepoint record, which the verifier checks.
    unsafe { *ctx.as_ptr().cast::<u8>().add(16 + 8 * n).cast::<u64>() }
}

/// Return value of a `sys_exit_*` record.
#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as for `arg`.
    unsafe { *ctx.as_ptr().cast::<u8>().add(16).cast::<i64>() }
}

/// `$flags`: the argument holding a receive's flags, if the syscall has one. A peek (`MSG_PEEK`,
/// as Envoy's listener inspectors do before reading) leaves the bytes in the socket for the read
/// that follows, so it is not followed: captured too, the same bytes would reach the agent twice.
macro_rules! data_syscall {
    ($enter:ident, $exit:ident, $sys:expr, $dir:expr) => {
        data_syscall!($enter, $exit, $sys, $dir, None);
    };
    ($enter:ident, $exit:ident, $sys:expr, $dir:expr, $flags:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            floor!(0);
            let flags: Option<usize> = $flags;
            let peek = flags.is_some_and(|n| arg(&ctx, n) & MSG_PEEK != 0);
            on_enter(arg(&ctx, 0), $sys, arg(&ctx, 1), arg(&ctx, 2), peek);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            floor!(0);
            let _ = on_exit_data(&ctx, ret(&ctx), $dir, $sys);
            0
        }
    };
}

data_syscall!(sys_enter_read, sys_exit_read, SYS_READ, DIR_INGRESS);
data_syscall!(sys_enter_readv, sys_exit_readv, SYS_READV, DIR_INGRESS);
// recvfrom(fd, buf, len, flags, ...), recvmsg(fd, msg, flags).
data_syscall!(
    sys_enter_recvfrom,
    sys_exit_recvfrom,
    SYS_RECVFROM,
    DIR_INGRESS,
    Some(3)
);
data_syscall!(
    sys_enter_recvmsg,
    sys_exit_recvmsg,
    SYS_RECVMSG,
    DIR_INGRESS,
    Some(2)
);
data_syscall!(sys_enter_write, sys_exit_write, SYS_WRITE, DIR_EGRESS);
data_syscall!(sys_enter_writev, sys_exit_writev, SYS_WRITEV, DIR_EGRESS);
data_syscall!(sys_enter_sendto, sys_exit_sendto, SYS_SENDTO, DIR_EGRESS);
data_syscall!(sys_enter_sendmsg, sys_exit_sendmsg, SYS_SENDMSG, DIR_EGRESS);

macro_rules! conn_syscall {
    ($enter:ident, $exit:ident, $sys:expr, $accepted:expr) => {
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            floor!(0);
            on_enter(arg(&ctx, 0), $sys, arg(&ctx, 1), 0, false);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            floor!(0);
            let _ = on_exit_conn(ret(&ctx), $accepted);
            0
        }
    };
}

conn_syscall!(sys_enter_accept, sys_exit_accept, SYS_ACCEPT, true);
conn_syscall!(sys_enter_accept4, sys_exit_accept4, SYS_ACCEPT, true);
conn_syscall!(sys_enter_connect, sys_exit_connect, SYS_CONNECT, false);

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    floor!(0);
    let _ = on_close(arg(&ctx, 0) as u32);
    0
}
