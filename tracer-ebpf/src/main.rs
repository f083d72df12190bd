//! Kernel side of the tracer: maps, load-time globals and the probe families.
//!
//! - [`syscalls`]: syscall tracepoints (accept, connect, read/write families, close), the
//!   baseline that works on every kernel from 5.10 on.
//! - socket 4-tuple of the syscall in flight, one family chosen per kernel by the agent:
//!   [`sock`] (fentry, kprobe or tp_btf on the TCP send/receive path, both directions) or
//!   [`tcp`] (`tcp:tcp_rcv_space_adjust`, reads only, the fallback).
//!
//! Programs only classify, filter and copy a bounded prefix; parsing happens in the agent.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![no_main]

mod capture;
mod sock;
mod syscalls;
mod tcp;

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tracer_common::{
    ConnInfo, ConnKey, DEFAULT_CAPTURE, FILTER_ALL, FILTER_LISTED, SockOffsets, TcpTpOffsets,
    counter,
};

use crate::capture::{Scratch, SyscallArgs};

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

/// Records for the agent: `DataEvent` + payload, `ConnEvent`, `CloseEvent`.
/// The agent resizes it at load time (`--ring-buffer-size`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Syscalls in flight, by pid_tgid: the arguments seen at entry, used at exit.
#[map]
static ARGS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16384, 0);

/// Sockets seen by accept/connect or classified from their first bytes, by (tgid, fd).
/// LRU so that a missed close can never fill it.
#[map]
static CONNS: LruHashMap<ConnKey, ConnInfo> = LruHashMap::with_max_entries(65536, 0);

/// One bit per process id, maintained by the agent: with `FILTER_LISTED` a set bit means
/// traced, with `FILTER_ALL` it means excluded. An array, not a hash: the verifier inlines
/// array lookups, and this check runs on every read and write of every process on the node.
/// The agent sizes it to pid_max / 64 words at load time.
#[map]
static PROC_BITS: Array<u64> = Array::with_max_entries(65536, 0);

/// Per-CPU buffer where an event is assembled before it is copied to the ring buffer;
/// far too big for the 512-byte stack.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

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
