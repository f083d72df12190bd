//! `tcp:tcp_rcv_space_adjust`: called from tcp_recvmsg in the context of the reading thread,
//! it carries the socket's 4-tuple. We hook it only to attach that tuple to the read in flight
//! (`args::record_tuple`), so every read-side event knows both ends of its socket without a
//! /proc scan. The record layout changed across kernels (family and the socket
//! cookie were added later), so the agent reads the field offsets from tracefs and passes
//! them in `TCP_TP`.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{AF_INET, AF_INET6, SockTuple};

use crate::{TCP_TP, args};

#[tracepoint]
pub fn tcp_rcv_space_adjust(ctx: TracePointContext) -> u32 {
    floor!(0);
    args::record_tuple(|out| match read_tuple(&ctx) {
        Ok(tuple) => {
            *out = tuple;
            true
        }
        Err(_) => false,
    });
    0
}

fn read_tuple(ctx: &TracePointContext) -> Result<SockTuple, i32> {
    let off = TCP_TP.load();
    if off.sport == 0 {
        return Err(0);
    }
    // SAFETY: offsets come from the tracepoint's own format description.
    let (sport, dport) = unsafe {
        (
            ctx.read_at::<u16>(off.sport as usize)?,
            ctx.read_at::<u16>(off.dport as usize)?,
        )
    };
    let mut tuple = SockTuple {
        sport,
        dport,
        ..SockTuple::default()
    };
    let family = if off.family != 0 {
        // SAFETY: as above.
        unsafe { ctx.read_at::<u16>(off.family as usize)? }
    } else {
        AF_INET6
    };
    if family == AF_INET {
        // SAFETY: as above.
        unsafe {
            tuple.saddr[..4].copy_from_slice(&ctx.read_at::<[u8; 4]>(off.saddr as usize)?);
            tuple.daddr[..4].copy_from_slice(&ctx.read_at::<[u8; 4]>(off.daddr as usize)?);
        }
    } else {
        // SAFETY: as above.
        unsafe {
            tuple.saddr = ctx.read_at::<[u8; 16]>(off.saddr_v6 as usize)?;
            tuple.daddr = ctx.read_at::<[u8; 16]>(off.daddr_v6 as usize)?;
        }
    }
    tuple.family = family;
    Ok(tuple)
}
