//! Syscalls in flight: what a `sys_enter_*` probe saw, kept for the `sys_exit_*` probe of the
//! same thread, and the socket tuple the tuple probes (`sock`, `tcp`) add while the syscall
//! runs. The socket-level capture (`socket`) keeps its sends and receives in flight here too.
//!
//! One slot per thread id modulo `ARGS_SLOTS` in an array, tagged with the owner's pid_tgid:
//! saving and taking the arguments are plain stores, where a hash map would take a bucket lock
//! for every insert and delete, twice per traced syscall. A thread whose id collides with
//! another's while both are in a syscall takes the slot over; the loser's syscall is not
//! followed, and counted (`ARGS_FULL`).

use core::{
    ptr::{read_volatile, write_volatile},
    sync::atomic::{Ordering, compiler_fence},
};

use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use tracer_common::{SockTuple, counter};

use crate::{ARGS, count};

/// Arguments of a syscall in flight, saved at entry for the exit probe.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SyscallArgs {
    pub fd: u32,
    /// `event::SYS_*` of a data syscall, `SYS_ACCEPT`/`SYS_CONNECT` of the others.
    pub syscall: u32,
    /// Buffer, iovec array, msghdr or sockaddr, depending on `syscall`.
    pub buf: u64,
    /// iovcnt for readv/writev.
    pub count: u64,
    pub enter_ns: u64,
    /// The `struct sock` of a socket-level capture (`socket`), 0 for a syscall.
    pub sk: u64,
    /// Set by a tuple probe that saw this syscall's socket.
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

#[inline(always)]
fn slot_of(id: u64) -> Option<*mut ArgsSlot> {
    ARGS.get_ptr_mut((id as u32) & (ARGS_SLOTS - 1))
}

/// Keeps `args` for thread `id`'s exit probe.
#[inline(always)]
pub fn save(id: u64, args: SyscallArgs) {
    let Some(slot) = slot_of(id) else {
        return;
    };
    // SAFETY: pointer into the array value. A slot held by another live thread is taken over
    // (see the module comment); the tag is cleared while the arguments are written, so a
    // reader never takes half of them.
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

/// Takes the saved arguments of thread `id`'s syscall, if its slot still holds them.
#[inline(always)]
pub fn take(id: u64) -> Option<SyscallArgs> {
    let slot = slot_of(id)?;
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

/// Gives the current thread's syscall in flight the socket tuple `read` writes into the slot
/// (returning whether it found one), unless it has one already (a send or receive path can be
/// entered more than once per syscall) or the thread has no traced syscall in flight (then
/// `read` is not called).
#[inline(always)]
pub fn record_tuple(read: impl FnOnce(&mut SockTuple) -> bool) {
    let id = bpf_get_current_pid_tgid();
    let Some(slot) = slot_of(id) else {
        return;
    };
    // SAFETY: pointer into the array value; only the owning thread, inside its syscall, writes
    // the tuple fields.
    unsafe {
        if read_volatile(&raw const (*slot).id) != id || (*slot).args.has_tuple != 0 {
            return;
        }
        if read(&mut (*slot).args.tuple) {
            (*slot).args.has_tuple = 1;
        }
    }
}
