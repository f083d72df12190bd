//! OTLP export with opentelemetry-otlp, over gRPC or HTTP/protobuf.
//!
//! Spans arrive on a bounded queue and leave in batches (`OTEL_BSP_*`). Each traced process has
//! its own resource, and an OTLP exporter carries one resource, so there is one exporter per
//! process, all sharing a single gRPC channel or HTTP client. A failed batch is retried with
//! exponential backoff within the export timeout, then dropped and counted; while a collector
//! is down the queue fills and further spans are counted as dropped, never buffered unbounded.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use opentelemetry::{
    InstrumentationScope, KeyValue, Value,
    trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState},
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource as SdkResource,
    trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks},
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{BatchConfig, OtlpConfig, OtlpProtocol},
    metrics::Metrics,
    trace::span::{self, AttrValue, Resource, Span},
};

/// Exporters of processes that sent nothing for this long are dropped.
const EXPORTER_IDLE: Duration = Duration::from_mins(10);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one export warning per this interval, with a count of the ones suppressed.
const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid OTLP endpoint {0}: {1}")]
    Endpoint(String, String),
    #[error("building the OTLP exporter failed: {0}")]
    Build(#[from] opentelemetry_otlp::ExporterBuildError),
}

enum Transport {
    Grpc(tonic::transport::Channel),
    Http(reqwest::Client),
}

struct PerProcess {
    resource: Arc<Resource>,
    exporter: opentelemetry_otlp::SpanExporter,
    used: Instant,
}

pub struct OtlpExporter {
    config: OtlpConfig,
    batch: BatchConfig,
    transport: Transport,
    exporters: HashMap<usize, PerProcess>,
    metrics: &'static Metrics,
    scope: InstrumentationScope,
    last_warn: Option<Instant>,
    suppressed: u64,
    /// Set at shutdown: queued batches get one attempt each, no retries.
    stopping: Arc<AtomicBool>,
}

impl OtlpExporter {
    /// Prepares the shared transport; nothing connects until the first export.
    pub fn new(
        config: OtlpConfig,
        batch: BatchConfig,
        metrics: &'static Metrics,
        stopping: Arc<AtomicBool>,
    ) -> Result<Self, ExportError> {
        let transport = match config.protocol {
            OtlpProtocol::Grpc => {
                let channel = tonic::transport::Channel::from_shared(config.endpoint.clone())
                    .map_err(|e| ExportError::Endpoint(config.endpoint.clone(), e.to_string()))?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_lazy();
                Transport::Grpc(channel)
            }
            OtlpProtocol::HttpProtobuf => Transport::Http(reqwest::Client::new()),
        };
        Ok(Self {
            config,
            batch,
            transport,
            exporters: HashMap::new(),
            metrics,
            scope: InstrumentationScope::builder("tracer-agent")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            last_warn: None,
            suppressed: 0,
            stopping,
        })
    }

    fn exporter_for(
        &mut self,
        resource: &Arc<Resource>,
    ) -> Result<&opentelemetry_otlp::SpanExporter, ExportError> {
        let key = Arc::as_ptr(resource) as usize;
        if !self.exporters.contains_key(&key) {
            let mut exporter = match &self.transport {
                Transport::Grpc(channel) => opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_channel(channel.clone())
                    .with_timeout(self.batch.export_timeout)
                    .build()?,
                Transport::Http(client) => opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(self.config.endpoint.clone())
                    .with_http_client(client.clone())
                    .with_timeout(self.batch.export_timeout)
                    .build()?,
            };
            exporter.set_resource(&sdk_resource(resource));
            self.exporters.insert(
                key,
                PerProcess {
                    resource: resource.clone(),
                    exporter,
                    used: Instant::now(),
                },
            );
        }
        let entry = self.exporters.get_mut(&key).expect("inserted above");
        entry.used = Instant::now();
        Ok(&entry.exporter)
    }

    /// Runs until the queue is closed and drained.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Span>) {
        info!(
            "exporting spans over OTLP {} to {}",
            match self.config.protocol {
                OtlpProtocol::Grpc => "grpc",
                OtlpProtocol::HttpProtobuf => "http/protobuf",
            },
            self.config.endpoint
        );
        let mut batch = Vec::with_capacity(self.batch.max_batch);
        loop {
            let Some(first) = rx.recv().await else { break };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.batch.schedule_delay;
            let mut closed = false;
            while batch.len() < self.batch.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(s)) => batch.push(s),
                    Ok(None) => {
                        closed = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.export(std::mem::take(&mut batch)).await;
            self.exporters.retain(|_, p| {
                p.used.elapsed() < EXPORTER_IDLE || Arc::strong_count(&p.resource) > 1
            });
            if closed {
                break;
            }
        }
        info!("OTLP exporter stopped");
    }

    async fn export(&mut self, batch: Vec<Span>) {
        let mut groups: HashMap<usize, (Arc<Resource>, Vec<Span>)> = HashMap::new();
        for s in batch {
            let key = Arc::as_ptr(&s.resource) as usize;
            groups
                .entry(key)
                .or_insert_with(|| (s.resource.clone(), Vec::new()))
                .1
                .push(s);
        }
        for (_, (resource, spans)) in groups {
            self.export_group(&resource, &spans).await;
        }
    }

    /// Converted to the SDK's form once per attempt: the success path copies nothing.
    async fn export_group(&mut self, resource: &Arc<Resource>, spans: &[Span]) {
        let count = spans.len() as u64;
        let started = Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            let data: Vec<SpanData> = spans.iter().map(|s| span_data(s, &self.scope)).collect();
            let result = match self.exporter_for(resource) {
                Ok(exporter) => exporter.export(data).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(()) => {
                    self.metrics.spans_exported.fetch_add(count, Relaxed);
                    return;
                }
                Err(e) => {
                    self.metrics.export_errors.fetch_add(1, Relaxed);
                    let give_up = self.stopping.load(Relaxed)
                        || started.elapsed() + backoff > self.batch.export_timeout;
                    if give_up {
                        self.metrics.spans_export_failed.fetch_add(count, Relaxed);
                        self.warn(&format!(
                            "OTLP export to {} failed after {} attempt(s), {count} span(s) dropped: {e}",
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

fn otel_value(v: &AttrValue) -> Value {
    match v {
        AttrValue::Str(s) => Value::String(s.clone().into()),
        AttrValue::Static(s) => Value::from(*s),
        AttrValue::Int(i) => Value::from(*i),
        AttrValue::Bool(b) => Value::from(*b),
    }
}

fn sdk_resource(r: &Resource) -> SdkResource {
    SdkResource::builder_empty()
        .with_attributes(
            r.attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), otel_value(v))),
        )
        .build()
}

fn time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

fn span_data(s: &Span, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id.0),
            SpanId::from_bytes(s.span_id.0),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: s
            .parent_span_id
            .map_or(SpanId::INVALID, |p| SpanId::from_bytes(p.0)),
        parent_span_is_remote: s.kind == span::SpanKind::Server && s.parent_span_id.is_some(),
        span_kind: match s.kind {
            span::SpanKind::Server => SpanKind::Server,
            span::SpanKind::Client => SpanKind::Client,
        },
        name: Cow::Borrowed(s.name),
        start_time: time(s.start_unix_nanos),
        end_time: time(s.end_unix_nanos),
        attributes: s
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::new(*k, otel_value(v)))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match &s.status {
            span::Status::Unset => Status::Unset,
            span::Status::Error(msg) => Status::error(msg.clone()),
        },
        instrumentation_scope: scope.clone(),
    }
}
