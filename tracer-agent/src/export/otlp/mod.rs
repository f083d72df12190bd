//! OTLP export over gRPC or HTTP/protobuf.
//!
//! Spans arrive on a bounded queue and leave in batches (`OTEL_BSP_*`). A batch becomes one
//! `ExportTraceServiceRequest`, encoded straight from our spans by [`proto`] with one
//! `ResourceSpans` per traced process, and goes out through [`transport`]. A failure the OTLP
//! specification calls retryable (unavailable, overloaded, timed out) is retried with exponential
//! backoff within the export timeout; any other failure, or running out of time, drops the batch
//! and counts it. While a collector is down the queue fills and further spans are counted as
//! dropped, never buffered without bound.
//!
//! Why not opentelemetry-otlp's exporter: it takes only the SDK's `SpanData`, and converting our
//! spans into it, then into prost structs, then encoding and dropping both, was a third of the
//! agent's CPU at saturation (the README's profile). The wire format is the same; the tests decode
//! it with opentelemetry-proto's generated types and receive it with a tonic server.

pub mod proto;
pub mod tls;
mod transport;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tracing::{info, warn};

use crate::{
    config::{BatchConfig, OtlpConfig, OtlpProtocol},
    export::queue::SpanRx,
    metrics::Metrics,
    trace::span::Span,
};
use transport::{SendError, Transport};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one export warning per this interval, with a count of the ones suppressed.
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid OTLP endpoint {0}: {1}")]
    Endpoint(String, String),
    #[error(
        "OTLP header `{0}` (OTEL_EXPORTER_OTLP_[TRACES_]HEADERS) is not a valid header name or value"
    )]
    Header(String),
}

pub struct OtlpExporter {
    config: OtlpConfig,
    batch: BatchConfig,
    transport: Transport,
    metrics: &'static Metrics,
    last_warn: Option<Instant>,
    suppressed: u64,
    /// Size of the last request, to allocate the next one in one go.
    last_size: usize,
    /// Set at shutdown: queued batches get one attempt each, no retries.
    stopping: Arc<AtomicBool>,
}

impl OtlpExporter {
    /// Prepares the transport; nothing connects until the first export.
    pub fn new(
        config: OtlpConfig,
        batch: BatchConfig,
        metrics: &'static Metrics,
        stopping: Arc<AtomicBool>,
    ) -> Result<Self, ExportError> {
        Ok(Self {
            transport: Transport::new(&config)?,
            config,
            batch,
            metrics,
            last_warn: None,
            suppressed: 0,
            last_size: 0,
            stopping,
        })
    }

    /// Runs until the queue is closed and drained.
    pub async fn run(mut self, mut rx: SpanRx) {
        info!(
            "exporting spans over OTLP {} to {} ({})",
            match self.config.protocol {
                OtlpProtocol::Grpc => "grpc",
                OtlpProtocol::HttpProtobuf => "http/protobuf",
            },
            self.config.endpoint,
            self.config
                .tls
                .as_ref()
                .map_or_else(|| "clear text".to_owned(), tls::OtlpTls::describe)
        );
        let max = self.batch.max_batch;
        let mut pending: Vec<Span> = Vec::new();
        let mut closed = false;
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(spans) => pending = spans,
                    None => break,
                }
            }
            // A batch leaves when full, or `schedule_delay` after its first span came.
            let deadline = tokio::time::Instant::now() + self.batch.schedule_delay;
            while !closed && pending.len() < max {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(mut spans)) => pending.append(&mut spans),
                    Ok(None) => closed = true,
                    Err(_) => break,
                }
            }
            let mut batch = if pending.len() <= max {
                std::mem::take(&mut pending)
            } else {
                pending.drain(..max).collect()
            };
            let count = batch.len();
            rx.release(count);
            let body = self.encode(&mut batch);
            // The spans (and the request heads their text points into) go before the wait.
            drop(batch);
            self.export(body, count as u64).await;
            if closed && pending.is_empty() {
                break;
            }
        }
        info!("OTLP exporter stopped");
    }

    /// One request for the batch: spans of one process side by side under its resource.
    fn encode(&mut self, batch: &mut [Span]) -> Bytes {
        // Usually one process: then there is nothing to sort.
        if !batch
            .windows(2)
            .all(|w| Arc::ptr_eq(&w[0].resource, &w[1].resource))
        {
            batch.sort_by_key(|s| Arc::as_ptr(&s.resource) as usize);
        }
        let mut buf = Vec::with_capacity(self.last_size + self.last_size / 8);
        proto::encode_request(
            &mut buf,
            &proto::SCOPE,
            batch
                .chunk_by(|a, b| Arc::ptr_eq(&a.resource, &b.resource))
                .map(|group| (&*group[0].resource, group)),
        );
        self.last_size = buf.len();
        Bytes::from(buf)
    }

    async fn export(&mut self, body: Bytes, count: u64) {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            let error = match self.transport.send(body.clone()).await {
                Ok(rejected) => {
                    let rejected = u64::try_from(rejected).unwrap_or(0).min(count);
                    self.metrics
                        .spans_exported
                        .fetch_add(count - rejected, Relaxed);
                    if rejected > 0 {
                        self.metrics
                            .spans_export_failed
                            .fetch_add(rejected, Relaxed);
                        self.warn(&format!(
                            "the collector at {} rejected {rejected} of {count} span(s)",
                            self.config.endpoint
                        ));
                    }
                    return;
                }
                Err(e) => e,
            };
            self.metrics.export_errors.fetch_add(1, Relaxed);
            let (retryable, why) = match error {
                SendError::Retryable(why) => (true, why),
                SendError::Permanent(why) => (false, why),
            };
            let give_up = !retryable
                || self.stopping.load(Relaxed)
                || started.elapsed() + backoff > self.batch.export_timeout;
            if give_up {
                self.metrics.spans_export_failed.fetch_add(count, Relaxed);
                self.warn(&format!(
                    "OTLP export to {} failed after {} attempt(s), {count} span(s) dropped: {why}",
                    self.config.endpoint,
                    attempt + 1
                ));
                return;
            }
            attempt += 1;
            self.metrics.export_retries.fetch_add(1, Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn warn(&mut self, msg: &str) {
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            warn!("{msg} ({} similar messages suppressed)", self.suppressed);
        } else {
            warn!("{msg}");
        }
        self.suppressed = 0;
        self.last_warn = Some(now);
    }
}

#[cfg(test)]
mod tests;
