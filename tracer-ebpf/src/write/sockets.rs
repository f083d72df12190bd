//! Which sockets the sk_msg program sees: the client sockets of processes whose requests are
//! edited, and no others.
//!
//! - `tracer_connect4/6` (cgroup connect hooks, in the connecting process): a socket being
//!   connected by a process in rewrite or inject mode is remembered by its cookie.
//! - `tracer_sockops` (cgroup sock_ops): when such a socket is established it enters `SOCKS`,
//!   the socket hash the sk_msg program is attached to. Only in the write-side object: creating
//!   the socket hash needs CAP_NET_ADMIN.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_ANY,
    helpers::{bpf_get_current_pid_tgid, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};

use super::ctx::{edits, mode_of};
use crate::PENDING_SOCKS;

#[cgroup_sock_addr(connect4)]
pub fn tracer_connect4(ctx: SockAddrContext) -> i32 {
    floor!(1);
    mark_socket(&ctx);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn tracer_connect6(ctx: SockAddrContext) -> i32 {
    floor!(1);
    mark_socket(&ctx);
    1
}

#[inline(always)]
fn mark_socket(ctx: &SockAddrContext) {
    let mode = mode_of((bpf_get_current_pid_tgid() >> 32) as u32);
    if !edits(mode) {
        return;
    }
    // SAFETY: the sock_addr context is a valid argument for the cookie helper.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let _ = PENDING_SOCKS.insert(&cookie, &mode, u64::from(BPF_ANY));
}

#[cfg(feature = "write-side")]
#[aya_ebpf::macros::sock_ops]
pub fn tracer_sockops(ctx: aya_ebpf::programs::SockOpsContext) -> u32 {
    floor!(1);
    use tracer_common::counter;

    use crate::{SOCKS, count};

    const BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: u32 = 4;
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // SAFETY: the sock_ops context is a valid argument for the cookie helper.
    let mut cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: presence test only.
    if unsafe { PENDING_SOCKS.get(&cookie) }.is_none() {
        return 1;
    }
    let _ = PENDING_SOCKS.remove(&cookie);
    // SAFETY: `ops` is the program's context.
    if SOCKS
        .update(&mut cookie, unsafe { &mut *ctx.ops }, u64::from(BPF_ANY))
        .is_ok()
    {
        count(counter::WRITE_SOCKETS);
    }
    1
}
