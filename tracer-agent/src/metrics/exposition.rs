//! The Prometheus exposition of [`Metrics`]: a prometheus-client [`Collector`] that reads the
//! agent's atomics when a scrape encodes it, so counting costs the hot path nothing more than
//! the atomic add it always did.
//!
//! Two encodings, chosen from the request's `Accept` header as Prometheus's own Go client does:
//! `OpenMetrics` text (`# EOF` at the end, counter families named without `_total`) for a client
//! that lists `application/openmetrics-text` (Prometheus does), else the Prometheus text format
//! 0.0.4 (curl, the kubelet, the tests' scrapers). Both carry the same samples under the same
//! names. The tables below name counters as they are scraped, with `_total`; prometheus-client
//! appends that suffix itself, so the family handed to it is the name without it.

use std::{fmt, sync::atomic::Ordering::Relaxed};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, prometheus_text, text},
    metrics::{counter::ConstCounter, gauge::ConstGauge, info::Info},
    registry::Registry,
};
use tracer_common::counter;

use super::Metrics;

/// `Content-Type` of the `OpenMetrics` text format that prometheus-client writes.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
    (
        counter::H2_LOST,
        "tracer_kernel_http2_boundaries_lost_total",
        "HTTP/2 frame boundaries the kernel lost (implausible frame header, too many frames in one syscall); frames unreported until a syscall starts with a plausible header.",
    ),
    (
        counter::H2_MISSED,
        "tracer_kernel_http2_events_missing_frames_total",
        "HTTP/2 events that could not report every frame that matters (lost boundaries, or no room left in the capture size).",
    ),
];

/// User-space counters: (name, help, value).
#[expect(clippy::too_many_lines, reason = "one entry per counter")]
fn user_counters(m: &Metrics) -> Vec<(&'static str, &'static str, u64)> {
    let conn = *m.conn.lock().expect("metrics lock");
    vec![
        (
            "tracer_ringbuf_records_total",
            "Ring-buffer records read by the agent.",
            m.records.load(Relaxed),
        ),
        (
            "tracer_dropped_decode_errors_total",
            "Ring-buffer records that could not be decoded.",
            m.decode_errors.load(Relaxed),
        ),
        (
            "tracer_spans_built_total",
            "Spans built from HTTP exchanges (sampled).",
            m.spans_built.load(Relaxed),
        ),
        (
            "tracer_spans_unsampled_total",
            "Exchanges not exported because their trace is not sampled.",
            m.spans_unsampled.load(Relaxed),
        ),
        (
            "tracer_dropped_spans_queue_full_total",
            "Spans dropped because the export queue was full.",
            m.spans_queue_full.load(Relaxed),
        ),
        (
            "tracer_spans_exported_total",
            "Spans accepted by the OTLP collector.",
            m.spans_exported.load(Relaxed),
        ),
        (
            "tracer_dropped_spans_export_failed_total",
            "Spans given up after export retries failed.",
            m.spans_export_failed.load(Relaxed),
        ),
        (
            "tracer_export_errors_total",
            "Failed OTLP export attempts.",
            m.export_errors.load(Relaxed),
        ),
        (
            "tracer_export_retries_total",
            "OTLP export attempts that were retries.",
            m.export_retries.load(Relaxed),
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
            "tracer_connections_evicted_memory_total",
            "Connections flushed because the table held more than its buffer budget.",
            conn.evicted_memory,
        ),
        (
            "tracer_connections_exited_closed_total",
            "Connections flushed because their process exited.",
            conn.exited_closed,
        ),
        (
            "tracer_http_lost_events_total",
            "Data events lost on the way (seen as sequence gaps); their streams resynchronised.",
            conn.http1.streams.lost_events,
        ),
        (
            "tracer_http_abandoned_requests_total",
            "Requests given up without a response (lost in a gap, or too many waiting on one connection).",
            conn.http1.abandoned_requests,
        ),
        (
            "tracer_http_pending_full_total",
            "Times a connection had more requests waiting for a response than it may keep.",
            conn.http1.pending_full,
        ),
        (
            "tracer_http_oversized_heads_total",
            "Heads longer than the 16 KiB a connection buffers, parsed as truncated.",
            conn.http1.streams.oversized_heads,
        ),
        (
            "tracer_http_orphan_responses_total",
            "Responses with no request waiting for them.",
            conn.http1.orphan_responses,
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
        (
            "tracer_http2_streams_total",
            "HTTP/2 requests seen (streams opened by a request header block).",
            conn.http2.streams,
        ),
        (
            "tracer_http2_exchanges_total",
            "HTTP/2 exchanges reported (ended by the response's end, a reset, a GOAWAY or the connection's end).",
            conn.http2.exchanges,
        ),
        (
            "tracer_http2_hpack_unknown_refs_total",
            "HTTP/2 header fields that referred to an HPACK dynamic-table entry the agent never saw (connection picked up mid-way, or after a loss): method, path or status may be unknown.",
            conn.http2.hpack.unknown_refs,
        ),
        (
            "tracer_http2_hpack_desyncs_total",
            "Times a direction's HPACK decoder lost track of its dynamic table (lost events, a header block cut by the capture or over 16 KiB, a PUSH_PROMISE, a block it refused).",
            conn.http2.hpack.desyncs,
        ),
        (
            "tracer_http2_hpack_resyncs_total",
            "Times a desynchronised HPACK decoder knew its whole dynamic table again.",
            conn.http2.hpack.resyncs,
        ),
        (
            "tracer_http2_hpack_errors_total",
            "HTTP/2 header blocks the HPACK decoder refused (malformed, or cut by the capture or a loss inside a field).",
            conn.http2.hpack.errors,
        ),
        (
            "tracer_http2_hpack_oversize_strings_total",
            "HPACK strings over the 16 KiB the decoder accepts (each also an error).",
            conn.http2.hpack.oversize_strings,
        ),
        (
            "tracer_http2_hpack_capped_size_updates_total",
            "HPACK dynamic-table size updates above the decoder's cap (the table keeps to the cap).",
            conn.http2.hpack.capped_size_updates,
        ),
        (
            "tracer_http2_streams_given_up_total",
            "HTTP/2 streams given up because their connection had 256 open: their spans end without a response.",
            conn.http2.streams_given_up,
        ),
        (
            "tracer_http2_malformed_records_total",
            "Frame-record chunks from the kernel that could not be parsed; the rest of the chunk counts as lost.",
            conn.http2.malformed_records,
        ),
        (
            "tracer_http2_resets_total",
            "RST_STREAM frames seen.",
            conn.http2.resets,
        ),
        (
            "tracer_http2_goaways_total",
            "GOAWAY frames seen.",
            conn.http2.goaways,
        ),
        (
            "tracer_http2_upgrades_total",
            "HTTP/1 connections that continued as HTTP/2 (Upgrade: h2c).",
            conn.http2.upgrades,
        ),
        (
            "tracer_http2_lost_events_total",
            "HTTP/2 data events lost on the way (sequence gaps); the direction's HPACK decoder was desynchronised.",
            conn.http2.lost_events,
        ),
        (
            "tracer_http2_oversized_blocks_total",
            "HTTP/2 header blocks longer than the 16 KiB a direction buffers, decoded as far as they go.",
            conn.http2.oversized_blocks,
        ),
        (
            "tracer_http2_reordered_responses_total",
            "HTTP/2 response header blocks reported before the write of their request, put back in order.",
            conn.http2.reordered,
        ),
        (
            "tracer_http2_orphan_headers_total",
            "HTTP/2 header blocks of streams whose request was not seen (begun before the agent, or lost).",
            conn.http2.orphan_headers,
        ),
    ]
}

/// Counters outside the two tables: (name, help, value).
fn other_counters(m: &Metrics) -> [(&'static str, &'static str, u64); 5] {
    [
        (
            "tracer_inflight_server_requests_forgotten_total",
            "SERVER requests forgotten because their process had 4096 in flight.",
            m.inflight_forgotten.load(Relaxed),
        ),
        (
            "tracer_kernel_dropped_skipped_total",
            "Program runs the kernel skipped because another BPF program was running on that CPU.",
            m.kernel_skipped.load(Relaxed),
        ),
        (
            "tracer_k8s_watch_errors_total",
            "Failed Kubernetes pod list/watch calls (retried with backoff).",
            m.k8s_watch_errors.load(Relaxed),
        ),
        (
            "tracer_metrics_connections_rejected_total",
            "Connections to the metrics endpoint closed at once because the concurrent-connection limit was reached.",
            m.endpoint_rejected.load(Relaxed),
        ),
        (
            "tracer_metrics_connections_timed_out_total",
            "Connections to the metrics endpoint cut because the request head was not complete within the head timeout or the connection outlived its lifetime limit.",
            m.endpoint_timed_out.load(Relaxed),
        ),
    ]
}

/// Gauges: (name, help, value).
fn gauges(m: &Metrics) -> [(&'static str, &'static str, u64); 4] {
    [
        (
            "tracer_connection_buffered_bytes",
            "Bytes held by tracked connections beyond their entries (waiting requests, partial heads).",
            m.connection_buffered_bytes.load(Relaxed),
        ),
        (
            "tracer_k8s_pods",
            "Pods of this node known to the agent.",
            m.k8s_pods.load(Relaxed),
        ),
        (
            "tracer_connections",
            "Connections currently tracked.",
            m.connections.load(Relaxed),
        ),
        (
            "tracer_inflight_server_requests",
            "SERVER requests waiting for their response.",
            m.inflight_server_requests.load(Relaxed),
        ),
    ]
}

/// `tracer_attach_info{plan="..."} 1`: an info metric, whose family prometheus-client names
/// without the `_info` it appends (typed `gauge` in the 0.0.4 format, as before).
const ATTACH_INFO: (&str, &str) = ("tracer_attach", "Attach plan chosen for this kernel.");

/// The encoding a scraper gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// The Prometheus text format 0.0.4.
    Text,
}

impl Format {
    /// `OpenMetrics` when `accept` lists `application/openmetrics-text` with a non-zero quality.
    #[must_use]
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_openmetrics = accept.is_some_and(|accept| {
            accept.split(',').any(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next().unwrap_or_default();
                let quality = parts
                    .filter_map(|p| p.strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                media.eq_ignore_ascii_case("application/openmetrics-text") && quality > 0.0
            })
        });
        if wants_openmetrics {
            Self::OpenMetrics
        } else {
            Self::Text
        }
    }

    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Self::Text => prometheus_text::CONTENT_TYPE,
        }
    }
}

/// The registry that `/metrics` encodes: one collector over the agent's [`Metrics`].
#[derive(Debug)]
pub struct Exposition(Registry);

impl Exposition {
    #[must_use]
    pub fn new(metrics: &'static Metrics) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SelfMetrics(metrics)));
        Self(registry)
    }

    /// The metrics as they are now, in `format`.
    #[must_use]
    pub fn render(&self, format: Format) -> String {
        let mut out = String::with_capacity(8192);
        let encoded = match format {
            Format::OpenMetrics => text::encode(&mut out, &self.0),
            Format::Text => prometheus_text::encode(&mut out, &self.0),
        };
        // Writing into a String cannot fail, and our collector returns only the writer's errors.
        encoded.expect("encoding metrics into a String");
        out
    }
}

/// Reads [`Metrics`] at each scrape.
struct SelfMetrics(&'static Metrics);

impl fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SelfMetrics")
    }
}

impl Collector for SelfMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let m = self.0;
        let kernel = KERNEL_COUNTERS
            .iter()
            .map(|(idx, name, help)| (*name, *help, m.kernel[*idx as usize].load(Relaxed)));
        for (name, help, value) in kernel.chain(user_counters(m)).chain(other_counters(m)) {
            let family = counter_family(name);
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(
                family,
                help,
                None,
                metric.metric_type(),
            )?)?;
        }
        for (name, help, value) in gauges(m) {
            let metric = ConstGauge::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let plan = m.attach_plan.lock().expect("metrics lock").clone();
        let metric = Info::new(vec![("plan", plan)]);
        let (family, help) = ATTACH_INFO;
        metric.encode(encoder.encode_descriptor(family, help, None, metric.metric_type())?)
    }
}

/// The family name prometheus-client wants for the counter scraped as `name`.
fn counter_family(name: &str) -> &str {
    name.strip_suffix("_total")
        .unwrap_or_else(|| panic!("counter {name} must be named with its _total suffix"))
}

#[cfg(test)]
mod tests;
