//! Self-metrics: what the agent saw, dropped and exported, kept in atomics that the hot path
//! bumps and nothing else. Read at scrape time into Prometheus exposition by
//! [`exposition`] (prometheus-client), served with `/healthz` and `/readyz` (ready once the
//! probes are attached) by [`server`], and summarised periodically in the log ([`Metrics::summary`]).

mod exposition;
mod server;

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

use tracer_common::counter;

use crate::protocol::table::ConnStats;

pub use server::start;

#[derive(Default)]
pub struct Metrics {
    pub ready: AtomicBool,
    pub kernel: [AtomicU64; counter::COUNT as usize],
    pub records: AtomicU64,
    pub decode_errors: AtomicU64,
    pub spans_built: AtomicU64,
    /// Exchanges not exported because their trace is not sampled.
    pub spans_unsampled: AtomicU64,
    pub spans_queue_full: AtomicU64,
    pub spans_exported: AtomicU64,
    pub spans_export_failed: AtomicU64,
    pub export_errors: AtomicU64,
    pub export_retries: AtomicU64,
    pub connections: AtomicU64,
    /// Bytes the connection table holds beyond its entries (`ConnTable::buffered`).
    pub connection_buffered_bytes: AtomicU64,
    pub k8s_watch_errors: AtomicU64,
    /// Runs of our programs the kernel skipped because another BPF program was running on
    /// that CPU (fdinfo `recursion_misses`): events lost without our counters seeing them.
    pub kernel_skipped: AtomicU64,
    pub k8s_pods: AtomicU64,
    pub inflight_server_requests: AtomicU64,
    pub inflight_forgotten: AtomicU64,
    /// Connections to this endpoint closed on accept: the concurrent-connection limit was reached.
    pub endpoint_rejected: AtomicU64,
    /// Connections to this endpoint cut by the request-head timeout or the lifetime limit.
    pub endpoint_timed_out: AtomicU64,
    conn: Mutex<ConnStats>,
    attach_plan: Mutex<String>,
}

impl Metrics {
    pub fn set_conn_stats(&self, stats: ConnStats) {
        *self.conn.lock().expect("metrics lock") = stats;
    }

    pub fn set_attach_plan(&self, plan: String) {
        *self.attach_plan.lock().expect("metrics lock") = plan;
    }

    /// Every loss the user should know about, kernel and user space.
    #[must_use]
    pub fn kernel_drops(&self) -> u64 {
        [
            counter::RINGBUF_FULL,
            counter::ARGS_FULL,
            counter::CONNS_FULL,
            counter::SCRATCH_BUSY,
        ]
        .iter()
        .map(|c| self.kernel[*c as usize].load(Relaxed))
        .sum()
    }

    #[must_use]
    pub fn user_drops(&self) -> u64 {
        self.decode_errors.load(Relaxed)
            + self.spans_queue_full.load(Relaxed)
            + self.spans_export_failed.load(Relaxed)
    }

    #[must_use]
    pub fn summary(&self) -> String {
        let conn = *self.conn.lock().expect("metrics lock");
        let kernel = |c: u32| self.kernel[c as usize].load(Relaxed);
        format!(
            "events={} kernel_drops={} user_drops={} (decode={} queue_full={} export_failed={}) spans built={} exported={} unsampled={} export_errors={} connections={} truncated_captures={} read_faults={} http: orphan_responses={} reordered_responses={} skipped_bytes={} malformed_heads={} lost_sync={} http2: streams={} unknown_refs={} desyncs={} streams_given_up={} malformed_records={} orphan_headers={} reordered={} lost_events={}",
            self.records.load(Relaxed),
            self.kernel_drops(),
            self.user_drops(),
            self.decode_errors.load(Relaxed),
            self.spans_queue_full.load(Relaxed),
            self.spans_export_failed.load(Relaxed),
            self.spans_built.load(Relaxed),
            self.spans_exported.load(Relaxed),
            self.spans_unsampled.load(Relaxed),
            self.export_errors.load(Relaxed),
            self.connections.load(Relaxed),
            kernel(counter::TRUNCATED),
            kernel(counter::READ_FAULT),
            conn.http1.orphan_responses,
            conn.http1.reordered_responses,
            conn.http1.streams.skipped_bytes,
            conn.http1.streams.malformed_heads,
            conn.http1.streams.lost_sync,
            conn.http2.streams,
            conn.http2.hpack.unknown_refs,
            conn.http2.hpack.desyncs,
            conn.http2.streams_given_up,
            conn.http2.malformed_records,
            conn.http2.orphan_headers,
            conn.http2.reordered,
            conn.http2.lost_events,
        )
    }
}
