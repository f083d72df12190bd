//! Self-metrics: what the agent saw, dropped and exported. Rendered as Prometheus text on
//! `/metrics`, summarised periodically in the log; `/healthz` and `/readyz` serve Kubernetes
//! probes (ready once the probes are attached).

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracer_common::counter;
use tracing::{debug, info, warn};

use crate::protocol::table::ConnStats;

/// Names of the kernel counters, indexed like `tracer_common::counter`.
const KERNEL_COUNTERS: [(u32, &str, &str); counter::COUNT as usize] = [
    (
        counter::EVENTS,
        "tracer_kernel_events_total",
        "Data events written to the ring buffer.",
    ),
    (
        counter::RINGBUF_FULL,
        "tracer_kernel_dropped_ringbuf_full_total",
        "Events lost because the ring buffer was full.",
    ),
    (
        counter::TRUNCATED,
        "tracer_kernel_truncated_total",
        "Syscalls that moved more bytes than the capture size.",
    ),
    (
        counter::ARGS_FULL,
        "tracer_kernel_dropped_args_full_total",
        "Syscalls not followed because another thread with the same thread id modulo 32768 took their in-flight slot.",
    ),
    (
        counter::CONNS_FULL,
        "tracer_kernel_dropped_conns_full_total",
        "Connections not tracked because the connection map was full.",
    ),
    (
        counter::READ_FAULT,
        "tracer_kernel_read_faults_total",
        "User buffers that could not be read.",
    ),
    (
        counter::CONN_EVENTS,
        "tracer_kernel_conn_events_total",
        "Connect, accept and close events written.",
    ),
    (
        counter::WRITE_SOCKETS,
        "tracer_write_sockets_total",
        "Client sockets of rewrite/inject processes handed to the sk_msg program.",
    ),
    (
        counter::WRITE_REWRITTEN,
        "tracer_write_rewritten_total",
        "Outgoing request heads whose B3/W3C span id was rewritten in place.",
    ),
    (
        counter::WRITE_INJECTED,
        "tracer_write_injected_total",
        "Outgoing request heads that got injected context headers.",
    ),
    (
        counter::WRITE_SKIPPED,
        "tracer_write_skipped_total",
        "Outgoing request heads left unmodified (no context, no cause, split, too long, malformed).",
    ),
    (
        counter::SERVER_CONTEXTS,
        "tracer_write_server_contexts_total",
        "Inbound requests whose SERVER span id the kernel chose (rewrite/inject processes).",
    ),
    (
        counter::SCRATCH_BUSY,
        "tracer_kernel_dropped_scratch_busy_total",
        "Events dropped because a preempting program run took the per-CPU event buffer.",
    ),
    (
        counter::UNREADABLE_BUFFER,
        "tracer_kernel_unreadable_buffers_total",
        "Socket-level capture: sends and receives whose bytes were not in user memory (sendfile, splice, kernel users): not captured.",
    ),
];

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
    pub k8s_watch_errors: AtomicU64,
    /// Runs of our programs the kernel skipped because another BPF program was running on
    /// that CPU (fdinfo `recursion_misses`): events lost without our counters seeing them.
    pub kernel_skipped: AtomicU64,
    pub k8s_pods: AtomicU64,
    pub inflight_server_requests: AtomicU64,
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
            "events={} kernel_drops={} user_drops={} (decode={} queue_full={} export_failed={}) spans built={} exported={} unsampled={} export_errors={} connections={} truncated_captures={} read_faults={} http: orphan_responses={} reordered_responses={} skipped_bytes={} malformed_heads={} lost_sync={}",
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
        )
    }

    /// User-space counters: (name, help, value).
    fn user_counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let conn = *self.conn.lock().expect("metrics lock");
        vec![
            (
                "tracer_ringbuf_records_total",
                "Ring-buffer records read by the agent.",
                self.records.load(Relaxed),
            ),
            (
                "tracer_dropped_decode_errors_total",
                "Ring-buffer records that could not be decoded.",
                self.decode_errors.load(Relaxed),
            ),
            (
                "tracer_spans_built_total",
                "Spans built from HTTP exchanges (sampled).",
                self.spans_built.load(Relaxed),
            ),
            (
                "tracer_spans_unsampled_total",
                "Exchanges not exported because their trace is not sampled.",
                self.spans_unsampled.load(Relaxed),
            ),
            (
                "tracer_dropped_spans_queue_full_total",
                "Spans dropped because the export queue was full.",
                self.spans_queue_full.load(Relaxed),
            ),
            (
                "tracer_spans_exported_total",
                "Spans accepted by the OTLP collector.",
                self.spans_exported.load(Relaxed),
            ),
            (
                "tracer_dropped_spans_export_failed_total",
                "Spans given up after export retries failed.",
                self.spans_export_failed.load(Relaxed),
            ),
            (
                "tracer_export_errors_total",
                "Failed OTLP export attempts.",
                self.export_errors.load(Relaxed),
            ),
            (
                "tracer_export_retries_total",
                "OTLP export attempts that were retries.",
                self.export_retries.load(Relaxed),
            ),
            (
                "tracer_connections_opened_total",
                "Connections added to the table.",
                conn.opened,
            ),
            (
                "tracer_connections_evicted_total",
                "Connections flushed because the table was full.",
                conn.evicted,
            ),
            (
                "tracer_connections_idle_closed_total",
                "Connections flushed after the idle timeout.",
                conn.idle_closed,
            ),
            (
                "tracer_http_orphan_responses_total",
                "Responses with no request waiting for them.",
                conn.http1.orphan_responses,
            ),
            (
                "tracer_http_abandoned_requests_total",
                "Requests ended without a response: their connection had too many newer ones waiting.",
                conn.http1.abandoned_requests,
            ),
            (
                "tracer_http_reordered_responses_total",
                "Responses reported before the write of their request, put back in order.",
                conn.http1.reordered_responses,
            ),
            (
                "tracer_http_malformed_heads_total",
                "HTTP heads that could not be parsed.",
                conn.http1.streams.malformed_heads,
            ),
            (
                "tracer_http_skipped_bytes_total",
                "Bytes outside any HTTP message the agent could follow.",
                conn.http1.streams.skipped_bytes,
            ),
            (
                "tracer_http_lost_sync_total",
                "Chunked bodies whose framing was hidden by the capture limit.",
                conn.http1.streams.lost_sync,
            ),
        ]
    }

    /// Prometheus text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        for (idx, name, help) in KERNEL_COUNTERS {
            metric(
                name,
                "counter",
                help,
                self.kernel[idx as usize].load(Relaxed),
            );
        }
        for (name, help, value) in self.user_counters() {
            metric(name, "counter", help, value);
        }
        metric(
            "tracer_kernel_dropped_skipped_total",
            "counter",
            "Program runs the kernel skipped because another BPF program was running on that CPU.",
            self.kernel_skipped.load(Relaxed),
        );
        metric(
            "tracer_k8s_watch_errors_total",
            "counter",
            "Failed Kubernetes pod list/watch calls (retried with backoff).",
            self.k8s_watch_errors.load(Relaxed),
        );
        metric(
            "tracer_k8s_pods",
            "gauge",
            "Pods of this node known to the agent.",
            self.k8s_pods.load(Relaxed),
        );
        metric(
            "tracer_connections",
            "gauge",
            "Connections currently tracked.",
            self.connections.load(Relaxed),
        );
        metric(
            "tracer_inflight_server_requests",
            "gauge",
            "SERVER requests waiting for their response.",
            self.inflight_server_requests.load(Relaxed),
        );
        let plan = self.attach_plan.lock().expect("metrics lock").clone();
        let _ = writeln!(
            out,
            "# HELP tracer_attach_info Attach plan chosen for this kernel.\n# TYPE tracer_attach_info gauge\ntracer_attach_info{{plan=\"{}\"}} 1",
            plan.replace('"', "'")
        );
        out
    }
}

/// Serves /metrics, /healthz and /readyz until the process ends.
pub async fn serve(addr: SocketAddr, metrics: &'static Metrics) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(
                "metrics endpoint not started: cannot listen on {addr}: {e} (use --metrics-addr to change or \"off\")"
            );
            return;
        }
    };
    info!(
        "metrics on http://{}/metrics, health on /healthz and /readyz",
        listener.local_addr().map_or(addr, |a| a)
    );
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let read = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await;
            let Ok(Ok(n)) = read else { return };
            let line = String::from_utf8_lossy(&buf[..n]);
            let path = line.split(' ').nth(1).unwrap_or("/");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" if metrics.ready.load(Relaxed) => ("200 OK", "ready\n".to_owned()),
                "/readyz" => (
                    "503 Service Unavailable",
                    "probes not attached yet\n".to_owned(),
                ),
                _ => (
                    "404 Not Found",
                    "try /metrics, /healthz or /readyz\n".to_owned(),
                ),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if let Err(e) = sock.write_all(response.as_bytes()).await {
                debug!("metrics client went away: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_counter_once() {
        let m = Metrics::default();
        m.kernel[counter::RINGBUF_FULL as usize].store(3, Relaxed);
        m.spans_queue_full.store(2, Relaxed);
        let text = m.render();
        assert!(text.contains("tracer_kernel_dropped_ringbuf_full_total 3"));
        assert!(text.contains("tracer_dropped_spans_queue_full_total 2"));
        assert_eq!(m.kernel_drops(), 3);
        assert_eq!(m.user_drops(), 2);
        for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let name = line.split(' ').nth(2).unwrap();
            assert_eq!(
                text.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name} twice"
            );
        }
    }
}
