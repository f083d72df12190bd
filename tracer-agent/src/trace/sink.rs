//! Where the protocols' exchanges become spans: each request is joined to its trace when it is
//! seen ([`Tracker`]), each exchange becomes a span when it ends ([`build_span`]), unless its
//! trace is not sampled.

use std::sync::Arc;

use super::{
    clock::Clock,
    semconv::{Exchange, PeerNames, SpanStart, build_span},
    span::{Resource, Span},
    tracker::Tracker,
};
use crate::protocol::{ExchangeSink, Role, http::Head};

/// Who a process is: the resource of its spans, from wherever the agent learns it.
pub trait Resources {
    fn resource(&mut self, pid: u32) -> Arc<Resource>;
}

pub struct SpanSink<R> {
    pub tracker: Tracker,
    pub resources: R,
    /// Kernel time to Unix time; refreshed by the owner.
    pub clock: Clock,
    /// Spans built since the owner last took them.
    pub spans: Vec<Span>,
    /// Exchanges not turned into spans because their trace is not sampled.
    pub unsampled: u64,
    peers: PeerNames,
}

impl<R> SpanSink<R> {
    #[must_use]
    pub fn new(tracker: Tracker, resources: R) -> Self {
        Self {
            tracker,
            resources,
            clock: Clock::now(),
            spans: Vec::new(),
            unsampled: 0,
            peers: PeerNames::default(),
        }
    }
}

impl<R: Resources> ExchangeSink for SpanSink<R> {
    type Started = SpanStart;

    fn request(&mut self, role: Role, pid: u32, tid: u32, head: &Head) -> SpanStart {
        let identity = match role {
            Role::Server => self.tracker.server_request(pid, tid, head),
            Role::Client => self.tracker.client_request(pid, tid, head),
        };
        SpanStart {
            identity,
            resource: self.resources.resource(pid),
        }
    }

    fn finish(&mut self, x: Exchange, end_ns: u64) {
        if x.role == Role::Server {
            self.tracker.server_done(x.pid, x.started.identity.span_id);
        }
        if x.started.identity.sampled {
            self.spans
                .push(build_span(&x, end_ns, self.clock, &mut self.peers));
        } else {
            self.unsampled += 1;
        }
    }
}
