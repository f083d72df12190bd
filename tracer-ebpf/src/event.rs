//! Where data events are assembled and how they reach the agent: one per-CPU buffer per capture
//! program (`SCRATCH`, indexed by the program's `SYS_*` constant), copied into the ring buffer
//! in one piece, without waking the agent unless the buffer fills up.
//!
//! Some kernels (seen on 7.2) preempt a tracing program, and while it is off the CPU a
//! *different* program may run there (the kernel only keeps a program from running twice on one
//! CPU); a shared buffer would then mix two events without any check noticing, so each program
//! has its own, and the owner tag still catches a kernel that runs one program twice.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use tracer_common::{DataEvent, MAX_CAPTURE, counter};

use crate::{EVENTS, count};

/// The data syscalls, each the index of its capture program's buffer: the read side (inbound)
/// ones first.
pub const SYS_READ: u32 = 0;
pub const SYS_READV: u32 = 1;
pub const SYS_RECVFROM: u32 = 2;
pub const SYS_RECVMSG: u32 = 3;
pub const SYS_WRITE: u32 = 4;
pub const SYS_WRITEV: u32 = 5;
pub const SYS_SENDTO: u32 = 6;
pub const SYS_SENDMSG: u32 = 7;
/// The socket-level capture's receive and send (`socket`), after the syscalls.
pub const SYS_SOCK_FIRST: u32 = 8;
pub const SOCK_RECV: u32 = 8;
pub const SOCK_SEND: u32 = 9;
/// How many capture programs have a buffer, and how many of the syscalls read (the inbound
/// head scan of the write side, which only runs with syscall capture, has one per reading
/// syscall).
pub const SYS_COUNT: u32 = 10;
pub const SYS_INGRESS_COUNT: u32 = 4;

/// A data event being assembled: the header and room for the payload. The payload area is four
/// times the capture bound so that `offset + length`, each masked below twice the bound, is
/// provably in bounds for the verifier.
#[repr(C)]
pub struct Scratch {
    pub event: DataEvent,
    pub data: [u8; 4 * MAX_CAPTURE],
    /// The HTTP/2 frame walk's variables (not sent).
    pub walk: Walk,
}

/// The variables of one HTTP/2 frame walk (`h2`), in the per-CPU event buffer: they outlive a run (tail calls), and
/// the stack is short.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Walk {
    /// The walk's inputs, from the capture program: the socket (tgid << 32 | fd), where the
    /// bytes are (buffer or iovec array), `VECTOR`/`KERNEL`/direction bits and the iovec count,
    /// the bytes moved.
    pub key: u64,
    pub base: u64,
    pub meta: u64,
    pub total: u64,
    /// Where the walk is among the bytes moved, and in the records written.
    pub pos: u64,
    pub out: u64,
    /// The buffer being walked: its user address, where it starts among the bytes moved, its
    /// length, and the index of the next iovec element.
    pub seg_base: u64,
    pub seg_start: u64,
    pub seg_len: u64,
    pub seg_idx: u64,
    /// Something this event does not report: a frame that matters found no room, or the walk
    /// lost the boundaries.
    pub missed: u64,
    /// Runs of `tracer_h2_frames` so far.
    pub runs: u64,
}

const HDR_LEN: usize = size_of::<DataEvent>();

/// Bit mask that leaves every real offset and length (all at most `MAX_CAPTURE`) unchanged.
pub const BOUND_MASK: u64 = (2 * MAX_CAPTURE as u64) - 1;

/// `v & BOUND_MASK`, computed in assembly so that LLVM cannot drop it as redundant: the
/// verifier needs to see the bound on the very register passed to a helper. A mask rather than
/// a compare-and-clamp, because a clamp the verifier already knows to be true leaves an
/// impossible branch that older verifiers (5.10, 6.1) walk with contradictory bounds.
#[inline(always)]
pub fn bounded(v: u64) -> u64 {
    let mut v = v;
    // SAFETY: pure register arithmetic.
    unsafe {
        core::arch::asm!(
            "{v} &= {mask}",
            v = inout(reg) v,
            mask = const BOUND_MASK,
        );
    }
    v
}

/// Sends the data event assembled in the scratch buffer by thread `id`, unless another run took
/// the buffer over meanwhile (then the loss is counted).
#[inline(always)]
pub fn output_scratch(scratch: &mut Scratch, id: u64) {
    // SAFETY: valid reference into the map value.
    if unsafe { core::ptr::read_volatile(&raw const scratch.event.owner) } != id as u32 {
        count(counter::SCRATCH_BUSY);
        return;
    }
    let size = HDR_LEN + bounded(u64::from(scratch.event.captured_len)) as usize;
    // SAFETY: size <= HDR_LEN + 2 * MAX_CAPTURE <= size_of::<Scratch>().
    let bytes = unsafe { core::slice::from_raw_parts((&raw const *scratch).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
        count(counter::RINGBUF_FULL);
    } else {
        count(counter::EVENTS);
    }
    // Released: the tail-called inbound scan finds its caller's buffer as the one its thread
    // owns, so no buffer may keep the tag of a run that is over.
    // SAFETY: valid reference into the map value (its owner field only).
    unsafe { core::ptr::write_volatile(&raw mut scratch.event.owner, 0) };
}

/// Writes a fixed-size record (`ConnEvent`, `CloseEvent`) to the ring buffer; false (and
/// counted) when it is full.
#[inline(always)]
pub fn output_conn_event<T: 'static>(record: T) -> bool {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(counter::RINGBUF_FULL);
        return false;
    };
    entry.write(record);
    entry.submit(wakeup_flags());
    count(counter::CONN_EVENTS);
    true
}

/// Bytes waiting in the ring buffer above which the agent is woken at once.
const WAKEUP_THRESHOLD: u64 = 256 * 1024;

/// Ring-buffer submit flags. Waking the agent for every event costs an interrupt and a
/// context switch per event (measured: half the events raised one, 7-12 us each); instead the
/// agent drains the buffer on a short timer, and is only woken early when the buffer fills.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) > WAKEUP_THRESHOLD {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
