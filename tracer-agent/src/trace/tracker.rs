//! The join: which trace a request belongs to and which span is its parent.
//!
//! SERVER: trace id from the request's context, parent = the span id the caller sent (the
//! inbound sidecar's span). CLIENT: parent = the SERVER span of the same process that caused
//! it, found (a) by the trace id the app forwarded in the outgoing request, else (b) by the
//! thread that sends it, for thread-per-request servers. An outgoing request with its own
//! context and no matching server request keeps that context; one with neither starts a trace.

use tracer_common::{WRITE_INJECTED, WRITE_REWRITTEN};

use super::{
    context::{self, Propagator, Sampling},
    ids::{SpanId, TraceId},
    sampler::Sampler,
};
use std::collections::VecDeque;

use crate::idhash::IdMap;
use crate::{kernel::write::ids::KernelIds, protocol::http::Head};

/// Most in-flight SERVER requests remembered per process.
const MAX_INFLIGHT_PER_PROCESS: usize = 4096;

/// The ids a span will carry, fixed when its request is seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub sampled: bool,
    pub source: Option<Propagator>,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    identity: Identity,
    tid: u32,
    start_ns: u64,
}

pub struct Tracker {
    propagators: Vec<Propagator>,
    sampler: Sampler,
    inflight: IdMap<u32, VecDeque<InFlight>>,
    /// SERVER requests forgotten because their process had [`MAX_INFLIGHT_PER_PROCESS`] in
    /// flight: CLIENT calls they cause can no longer join them by thread.
    pub forgotten: u64,
}

impl Tracker {
    #[must_use]
    pub fn new(propagators: Vec<Propagator>, sampler: Sampler) -> Self {
        Self {
            propagators,
            sampler,
            inflight: IdMap::default(),
            forgotten: 0,
        }
    }

    fn decide(&self, sampling: Sampling, trace_id: TraceId) -> bool {
        match sampling {
            Sampling::Sampled | Sampling::Debug => true,
            Sampling::NotSampled => false,
            Sampling::Deferred => self.sampler.should_sample(trace_id),
        }
    }

    /// Identity of a context-carried or new trace.
    fn identity_from_context(&self, head: &Head) -> Identity {
        let extracted = context::extract(&head.context, &self.propagators);
        let (trace_id, parent) = match extracted.and_then(|e| e.ids) {
            Some((t, s)) => (t, Some(s)),
            None => (TraceId::random(), None),
        };
        let sampling = extracted.map_or(Sampling::Deferred, |e| e.sampling);
        Identity {
            trace_id,
            span_id: SpanId::random(),
            parent,
            sampled: self.decide(sampling, trace_id),
            source: extracted.map(|e| e.source),
        }
    }

    /// An inbound request of process `pid` was read by thread `tid`.
    pub fn server_request(&mut self, pid: u32, tid: u32, head: &Head) -> Identity {
        let mut identity = self.identity_from_context(head);
        if let Some(KernelIds::Server { span_id, started }) = head.kernel {
            // The kernel's choice is the one that may be on the wire.
            identity.span_id = SpanId(span_id);
            if let (None, Some(trace_id)) = (identity.parent, started.map(TraceId)) {
                identity.trace_id = trace_id;
                if identity.source.is_none() {
                    identity.sampled = self.sampler.should_sample(trace_id);
                }
            }
        }
        let list = self.inflight.entry(pid).or_default();
        if list.len() >= MAX_INFLIGHT_PER_PROCESS {
            list.pop_front();
            self.forgotten += 1;
        }
        list.push_back(InFlight {
            identity,
            tid,
            start_ns: head.start_ns,
        });
        identity
    }

    /// The response to a SERVER request is complete (or will never come).
    pub fn server_done(&mut self, pid: u32, span_id: SpanId) {
        if let Some(list) = self.inflight.get_mut(&pid) {
            list.retain(|f| f.identity.span_id != span_id);
            if list.is_empty() {
                self.inflight.remove(&pid);
            }
        }
    }

    /// An outbound request of process `pid` was written by thread `tid`.
    pub fn client_request(&mut self, pid: u32, tid: u32, head: &Head) -> Identity {
        let found = self.client_cause(pid, tid, head);
        match head.kernel {
            // The span id (and parent) the downstream sees: the kernel wrote them.
            Some(KernelIds::Client {
                action: WRITE_REWRITTEN,
                span_id,
                parent,
                ..
            }) => Identity {
                span_id: SpanId(span_id),
                parent: parent.map(SpanId).or(found.parent),
                ..found
            },
            Some(KernelIds::Client {
                action: WRITE_INJECTED,
                span_id,
                parent,
                trace_id: Some(trace_id),
                sampled,
            }) => Identity {
                trace_id: TraceId(trace_id),
                span_id: SpanId(span_id),
                parent: parent.map(SpanId),
                sampled,
                source: None,
            },
            _ => found,
        }
    }

    /// The identity of an outbound request as the read side alone sees it.
    fn client_cause(&self, pid: u32, tid: u32, head: &Head) -> Identity {
        let own = self.identity_from_context(head);
        let carried = own.parent.map(|_| own.trace_id);
        let list = self.inflight.get(&pid);
        let cause = match carried {
            Some(trace) => list.and_then(|l| l.iter().rev().find(|f| f.identity.trace_id == trace)),
            None => list.and_then(|l| l.iter().filter(|f| f.tid == tid).max_by_key(|f| f.start_ns)),
        };
        match cause {
            Some(server) => Identity {
                trace_id: server.identity.trace_id,
                span_id: own.span_id,
                parent: Some(server.identity.span_id),
                sampled: server.identity.sampled,
                source: own.source,
            },
            None => own,
        }
    }

    #[must_use]
    pub fn inflight_count(&self) -> usize {
        self.inflight.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{
        Chunk,
        http1::stream::{HalfStream, Output},
    };

    fn head(raw: &str, t: u64) -> Head {
        let mut s = HalfStream::default();
        let mut out = Vec::new();
        let chunk = Chunk {
            data: raw.as_bytes(),
            gap: 0,
            tail: &[],
            start_ns: t,
            end_ns: t,
            kernel: &[],
        };
        s.feed(&chunk, &mut |h: &Head| h.request_body(), &mut out);
        match out.into_iter().next() {
            Some(Output::Head(h)) => *h,
            other => panic!("no head parsed from {raw:?}: {other:?}"),
        }
    }

    fn tracker() -> Tracker {
        Tracker::new(Propagator::ALL.to_vec(), Sampler::AlwaysOn)
    }

    const B3_IN: &str = "GET /in HTTP/1.1\r\nx-b3-traceid: 463ac35c9f6413ad\r\nx-b3-spanid: a2fb4a1d1a96d312\r\nx-b3-sampled: 1\r\n\r\n";

    #[test]
    fn server_parent_is_incoming_span_and_client_joins_by_trace_id() {
        let mut t = tracker();
        let server = t.server_request(10, 11, &head(B3_IN, 1));
        assert_eq!(
            server.trace_id.to_string(),
            "0000000000000000463ac35c9f6413ad"
        );
        assert_eq!(server.parent.unwrap().to_string(), "a2fb4a1d1a96d312");
        assert!(server.sampled);
        // The app forwards the headers unchanged from another thread (Go).
        let client = t.client_request(10, 99, &head(&B3_IN.replace("/in", "/down"), 2));
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent, Some(server.span_id));
        assert_ne!(client.span_id, server.span_id);
        t.server_done(10, server.span_id);
        assert_eq!(t.inflight_count(), 0);
    }

    #[test]
    fn client_without_context_joins_by_thread() {
        let mut t = tracker();
        let server = t.server_request(10, 11, &head(B3_IN, 1));
        let other = t.server_request(10, 12, &head("GET /x HTTP/1.1\r\n\r\n", 2));
        let client = t.client_request(10, 11, &head("GET /d HTTP/1.1\r\n\r\n", 3));
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent, Some(server.span_id));
        let client2 = t.client_request(10, 12, &head("GET /d HTTP/1.1\r\n\r\n", 4));
        assert_eq!(client2.parent, Some(other.span_id));
    }

    #[test]
    fn unrelated_client_starts_a_trace_and_other_processes_do_not_join() {
        let mut t = tracker();
        let server = t.server_request(10, 11, &head(B3_IN, 1));
        let elsewhere = t.client_request(20, 11, &head("GET /d HTTP/1.1\r\n\r\n", 2));
        assert_eq!(elsewhere.parent, None);
        assert_ne!(elsewhere.trace_id, server.trace_id);
        // Own context, not matching any server request: kept as is.
        let instrumented = t.client_request(
            10,
            50,
            &head(
                "GET /d HTTP/1.1\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
                3,
            ),
        );
        assert_eq!(
            instrumented.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(instrumented.parent.unwrap().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn sampling_decisions_flow_to_children() {
        let mut t = tracker();
        let denied = t.server_request(
            1,
            1,
            &head(&B3_IN.replace("x-b3-sampled: 1", "x-b3-sampled: 0"), 1),
        );
        assert!(!denied.sampled);
        let child = t.client_request(
            1,
            1,
            &head(&B3_IN.replace("x-b3-sampled: 1", "x-b3-sampled: 0"), 2),
        );
        assert!(!child.sampled);
        let debug = t.server_request(
            2,
            1,
            &head(&B3_IN.replace("x-b3-sampled: 1", "x-b3-flags: 1"), 1),
        );
        assert!(debug.sampled);
        let mut off = Tracker::new(vec![Propagator::B3Multi], Sampler::AlwaysOff);
        assert!(
            !off.server_request(3, 1, &head("GET / HTTP/1.1\r\n\r\n", 1))
                .sampled
        );
        assert!(
            off.server_request(3, 1, &head(B3_IN, 1)).sampled,
            "explicit decision wins"
        );
    }
}
