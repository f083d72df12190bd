//! The event loop: ring buffer -> decode -> connection table -> spans -> outputs, plus the
//! periodic work (idle sweep, clock refresh, counters, settled console traces).
//!
//! One task owns all per-connection state, so nothing on the hot path takes a lock.

use std::{
    future::Future,
    path::PathBuf,
    sync::Arc,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use std::collections::HashMap;
use tokio::io::unix::AsyncFd;

use tracer_common::{
    DIR_INGRESS, DataEvent, FLAG_HAS_TUPLE, FLAG_KERNEL_TRACE, FLAG_SERVER_SPAN, WriteEvent,
    counter,
};
use tracing::{debug, info, trace, warn};

use crate::{
    clock::Clock,
    config::Config,
    conn::{ConnTable, DataIn, SpanFactory, socket_addr},
    context::{SpanId, TraceId},
    events::{self, Event},
    export::Outputs,
    k8s::PodStore,
    kstats,
    metrics::Metrics,
    process::{ProcessCache, host_name},
    span::Span,
    tracker::{KernelIds, Tracker},
};

/// Threads with sk_msg records waiting for their syscall's data event; beyond this many, the
/// records are stale (their data events were lost) and are dropped.
const MAX_PENDING_WRITES: usize = 4096;

/// How often the ring buffer is drained when the kernel did not wake us.
const DRAIN: Duration = Duration::from_millis(10);
const TICK: Duration = Duration::from_millis(250);
const HOUSEKEEPING: Duration = Duration::from_secs(1);

pub struct Pipeline {
    table: ConnTable,
    factory: SpanFactory,
    outputs: Outputs,
    metrics: &'static Metrics,
    counters: PerCpuArray<MapData, u64>,
    pods: Option<Arc<PodStore>>,
    idle_timeout: Duration,
    stats_interval: Option<Duration>,
    spans: Vec<Span>,
    /// sk_msg records by (pid, tid), until the data event of the same send arrives.
    pending_writes: HashMap<(u32, u32), Vec<KernelIds>>,
    kernel_ids: Vec<KernelIds>,
}

/// The ids the kernel put on a read (the SERVER span it chose).
fn server_ids(header: &DataEvent) -> Option<KernelIds> {
    (header.flags & FLAG_SERVER_SPAN != 0).then(|| KernelIds::Server {
        span_id: SpanId(header.server_span),
        started: (header.flags & FLAG_KERNEL_TRACE != 0).then_some(TraceId(header.trace_id)),
    })
}

/// What the sk_msg program did with one outgoing head.
fn client_ids(w: &WriteEvent) -> KernelIds {
    let nonzero_span = |b: [u8; 8]| (b != [0; 8]).then_some(SpanId(b));
    KernelIds::Client {
        action: w.action,
        span_id: SpanId(w.client_span),
        parent: nonzero_span(w.parent_span),
        trace_id: (w.trace_id != [0; 16]).then_some(TraceId(w.trace_id)),
        sampled: w.sampled != 0,
    }
}

impl Pipeline {
    #[must_use]
    pub fn new(
        cfg: &Config,
        pods: Option<Arc<PodStore>>,
        outputs: Outputs,
        counters: PerCpuArray<MapData, u64>,
        metrics: &'static Metrics,
    ) -> Self {
        // In a pod the agent's own host name is the pod's; the node's name is what users mean.
        let host = cfg
            .kubernetes
            .as_ref()
            .map_or_else(host_name, |k| k.node_name.clone());
        Self {
            table: ConnTable::new(cfg.max_connections),
            factory: SpanFactory {
                tracker: Tracker::new(cfg.propagators.clone(), cfg.sampler),
                processes: ProcessCache::new(PathBuf::from("/proc"), host, pods.clone()),
                clock: Clock::now(),
            },
            outputs,
            metrics,
            counters,
            pods,
            idle_timeout: cfg.idle_timeout,
            stats_interval: cfg.stats_interval,
            spans: Vec::new(),
            pending_writes: HashMap::new(),
            kernel_ids: Vec::new(),
        }
    }

    fn handle(&mut self, record: &[u8]) {
        self.metrics.records.fetch_add(1, Relaxed);
        let event = match events::decode(record) {
            Ok(e) => e,
            Err(e) => {
                self.metrics.decode_errors.fetch_add(1, Relaxed);
                debug!("dropped a ring-buffer record: {e}");
                return;
            }
        };
        match event {
            Event::Data { header, payload } => {
                let ingress = header.direction == DIR_INGRESS;
                trace!(
                    pid = header.pid,
                    tid = header.tid,
                    fd = header.fd,
                    dir = if ingress { "in" } else { "out" },
                    len = header.total_len,
                    captured = header.captured_len,
                    "{}",
                    payload
                        .iter()
                        .take(120)
                        .flat_map(|b| std::ascii::escape_default(*b))
                        .map(char::from)
                        .collect::<String>()
                );
                let mut kernel_ids = std::mem::take(&mut self.kernel_ids);
                kernel_ids.clear();
                if ingress {
                    kernel_ids.extend(server_ids(&header));
                } else if let Some(w) = self.pending_writes.remove(&(header.pid, header.tid)) {
                    kernel_ids.extend(w);
                }
                let data = DataIn {
                    pid: header.pid,
                    tid: header.tid,
                    fd: header.fd,
                    direction: header.direction,
                    tuple: (header.flags & FLAG_HAS_TUPLE != 0).then_some(header.tuple),
                    chunk: crate::http::Chunk {
                        data: payload,
                        gap: header.total_len - u64::from(header.captured_len),
                        tail: Event::tail(&header),
                        // A read's data arrived when the syscall returned; a write's left when it began.
                        start_ns: if ingress {
                            header.exit_ns
                        } else {
                            header.enter_ns
                        },
                        end_ns: header.exit_ns,
                        kernel: &kernel_ids,
                    },
                };
                self.table
                    .on_data(&data, &mut self.factory, &mut self.spans);
                self.kernel_ids = kernel_ids;
            }
            Event::Conn(c) => {
                let peer = socket_addr(c.family, c.port, &c.addr);
                self.table.on_connect(
                    c.pid,
                    c.fd,
                    peer,
                    c.ts_ns,
                    &mut self.factory,
                    &mut self.spans,
                );
            }
            Event::Close(c) => self
                .table
                .on_close(c.pid, c.fd, &mut self.factory, &mut self.spans),
            Event::Write(w) => {
                debug!(
                    pid = w.pid,
                    tid = w.tid,
                    action = w.action,
                    added = w.added,
                    "sk_msg saw a request head"
                );
                if self.pending_writes.len() >= MAX_PENDING_WRITES {
                    self.pending_writes.clear();
                }
                self.pending_writes
                    .entry((w.pid, w.tid))
                    .or_default()
                    .push(client_ids(&w));
            }
        }
    }

    fn flush_spans(&mut self) {
        for span in self.spans.drain(..) {
            self.outputs.emit(span);
        }
    }

    fn housekeeping(&mut self) {
        self.factory.clock = Clock::now();
        let idle_before = Clock::monotonic_ns()
            .saturating_sub(u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX));
        self.table
            .sweep(idle_before, &mut self.factory, &mut self.spans);
        self.flush_spans();
        for i in 0..counter::COUNT {
            if let Ok(values) = self.counters.get(&i, 0) {
                self.metrics.kernel[i as usize].store(values.iter().sum(), Relaxed);
            }
        }
        let skipped: u64 = kstats::own_programs()
            .iter()
            .map(|p| p.recursion_misses)
            .sum();
        self.metrics.kernel_skipped.store(skipped, Relaxed);
        self.metrics.set_conn_stats(self.table.stats);
        self.metrics
            .connections
            .store(self.table.len() as u64, Relaxed);
        if let Some(pods) = &self.pods {
            self.metrics.k8s_pods.store(pods.len() as u64, Relaxed);
        }
        self.metrics
            .inflight_server_requests
            .store(self.factory.tracker.inflight_count() as u64, Relaxed);
    }

    /// Handles every record waiting in the ring buffer.
    fn drain(&mut self, rb: &mut RingBuf<MapData>) {
        while let Some(item) = rb.next() {
            self.handle(&item);
        }
        self.flush_spans();
    }

    /// Runs until `shutdown` resolves, then flushes every connection and the outputs.
    pub async fn run(
        mut self,
        ring: RingBuf<MapData>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        // SAFETY: the ring buffer map owns its fd and keeps it open while the AsyncFd lives.
        let mut ring = unsafe { AsyncFd::register(ring)? };
        // The kernel side only wakes us when the buffer fills up; otherwise it is drained here.
        let mut drain = tokio::time::interval(DRAIN);
        drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_tick = Instant::now();
        let mut last_housekeeping = Instant::now();
        let mut last_stats = Instant::now();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = drain.tick() => {
                    self.drain(ring.get_mut());
                    if last_tick.elapsed() >= TICK {
                        last_tick = Instant::now();
                        self.outputs.tick();
                    }
                    if last_housekeeping.elapsed() >= HOUSEKEEPING {
                        last_housekeeping = Instant::now();
                        self.housekeeping();
                    }
                    if let Some(every) = self.stats_interval
                        && last_stats.elapsed() >= every {
                            last_stats = Instant::now();
                            info!("stats: {}", self.metrics.summary());
                        }
                }
                () = &mut shutdown => break,
            }
        }
        self.drain(ring.get_mut());
        self.table.drain(&mut self.factory, &mut self.spans);
        self.flush_spans();
        self.housekeeping();
        self.outputs.close();
        for p in kstats::own_programs()
            .iter()
            .filter(|p| p.recursion_misses > 0)
        {
            warn!(
                "the kernel skipped {} runs of {} (another BPF program was running on that CPU)",
                p.recursion_misses, p.name
            );
        }
        info!("final stats: {}", self.metrics.summary());
        Ok(())
    }
}
