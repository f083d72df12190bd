//! The ids the kernel's write side chose, as the agent pairs them with the heads it parses.
//!
//! A read that starts a request head carries the SERVER span id the kernel chose (and the trace
//! it started) in its own data event. A send is different: the `sk_msg` program reports each
//! request head it saw in a `WriteEvent` of its own, before the data event of the same syscall
//! (same thread) reaches the ring buffer; the records wait here, by thread, for that event.

use crate::idhash::IdMap;
use tracer_common::{DataEvent, FLAG_KERNEL_TRACE, FLAG_SERVER_SPAN, WriteEvent};

/// Threads with `sk_msg` records waiting for their syscall's data event; beyond this many, the
/// records are stale (their data events were lost) and are dropped.
const MAX_PENDING_THREADS: usize = 4096;

/// What the kernel decided for one request head. Ids are as on the wire (big-endian bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelIds {
    /// The SERVER span id the kernel chose when it read the head (it may be on the wire as the
    /// parent of the requests this one causes), and the trace it started when the request
    /// carried none.
    Server {
        span_id: [u8; 8],
        started: Option<[u8; 16]>,
    },
    /// What the `sk_msg` program did with an outgoing head (`tracer_common::WRITE_*`); the ids
    /// are those written to the wire when it edited the head.
    Client {
        action: u32,
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        trace_id: Option<[u8; 16]>,
        sampled: bool,
    },
}

impl KernelIds {
    /// The ids the kernel put on a read (the SERVER span it chose), if any.
    #[must_use]
    pub fn of_read(ev: &DataEvent) -> Option<Self> {
        (ev.flags & FLAG_SERVER_SPAN != 0).then(|| Self::Server {
            span_id: ev.server_span,
            started: (ev.flags & FLAG_KERNEL_TRACE != 0).then_some(ev.trace_id),
        })
    }

    /// What the `sk_msg` program did with one outgoing head.
    #[must_use]
    pub fn of_send(w: &WriteEvent) -> Self {
        Self::Client {
            action: w.action,
            span_id: w.client_span,
            parent: (w.parent_span != [0; 8]).then_some(w.parent_span),
            trace_id: (w.trace_id != [0; 16]).then_some(w.trace_id),
            sampled: w.sampled != 0,
        }
    }
}

/// `sk_msg` records waiting for the data event of their send.
#[derive(Default)]
pub struct WritePairing {
    pending: IdMap<(u32, u32), Vec<KernelIds>>,
    /// The ids of the data event being handled (reused between events).
    current: Vec<KernelIds>,
}

impl WritePairing {
    /// The `sk_msg` program saw a request head in a send of thread `(pid, tid)`.
    pub fn on_send(&mut self, w: &WriteEvent) {
        if self.pending.len() >= MAX_PENDING_THREADS {
            self.pending.clear();
        }
        self.pending
            .entry((w.pid, w.tid))
            .or_default()
            .push(KernelIds::of_send(w));
    }

    /// The kernel's ids for the heads that start in this data event, in order: the SERVER span
    /// of a read, or the `sk_msg` records of the thread's send.
    pub fn ids_of(&mut self, ev: &DataEvent, ingress: bool) -> &[KernelIds] {
        self.current.clear();
        if ingress {
            self.current.extend(KernelIds::of_read(ev));
        } else if let Some(sent) = self.pending.remove(&(ev.pid, ev.tid)) {
            self.current.extend(sent);
        }
        &self.current
    }
}
