//! Where the bytes of a syscall (or of a socket-level send or receive) live in user memory: one
//! buffer, or an array of them, and how to read that array's elements.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_user};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct IoVec {
    pub base: u64,
    pub len: u64,
}

/// Where the bytes of a syscall live in user memory.
#[derive(Clone, Copy)]
pub enum Source {
    Plain(u64),
    /// An array of `count` user buffers; the array itself is in kernel memory (`kernel`: the
    /// copy the kernel made of a readv/writev/sendmsg argument, as the socket-level probes see
    /// it) or in user memory (the syscall's argument).
    Vector {
        iov: u64,
        count: u64,
        kernel: bool,
    },
}

/// Entry `index` of an iovec array in user memory, or in kernel memory (`kernel`, a constant
/// of each caller: only one of the two helpers is compiled into a program).
#[inline(always)]
pub fn read_iov(iov: u64, index: u64, kernel: bool) -> Option<IoVec> {
    let at = (iov + index * 16) as *const IoVec;
    // SAFETY: the helpers validate the address.
    if kernel {
        unsafe { bpf_probe_read_kernel(at) }.ok()
    } else {
        unsafe { bpf_probe_read_user(at) }.ok()
    }
}
