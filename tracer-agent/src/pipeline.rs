//! The event loop: kernel records ([`kernel::records`]) -> connection table and protocols
//! ([`protocol`]) -> trace join and spans ([`trace`]) -> outputs ([`export`]), plus the
//! periodic work (idle sweep, clock refresh, counters, settled console traces).
//!
//! One task owns all per-connection state, so nothing on the hot path takes a lock.
//!
//! [`kernel::records`]: crate::kernel::records
//! [`protocol`]: crate::protocol
//! [`trace`]: crate::trace
//! [`export`]: crate::export

use std::{
    future::Future,
    path::PathBuf,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use tokio::io::unix::AsyncFd;
use tracer_common::{DIR_INGRESS, FLAG_H2_FRAMES, FLAG_HAS_TUPLE, counter};
use tracing::{debug, info, trace, warn};

use crate::{
    config::Config,
    export::Outputs,
    kernel::{
        records::{self, Event, peer_of, socket_addr},
        stats,
        write::ids::WritePairing,
    },
    metrics::Metrics,
    procs::{
        k8s::PodStore,
        resource::{ProcessCache, host_name},
    },
    protocol::{
        Chunk, Direction, http2,
        table::{ConnTable, DataIn},
    },
    trace::{clock::Clock, sink::SpanSink, tracker::Tracker},
};

/// How often the ring buffer is drained when the kernel did not wake us.
const DRAIN: Duration = Duration::from_millis(10);
/// Records handled per drain at most (about 10 ms of work).
const DRAIN_MAX: usize = 16 * 1024;
const TICK: Duration = Duration::from_millis(250);
const HOUSEKEEPING: Duration = Duration::from_secs(1);

type Sink = SpanSink<ProcessCache>;

pub struct Pipeline {
    table: ConnTable<Sink>,
    sink: Sink,
    writes: WritePairing,
    outputs: Outputs,
    metrics: &'static Metrics,
    counters: PerCpuArray<MapData, u64>,
    pods: Option<Arc<PodStore>>,
    idle_timeout: Duration,
    stats_interval: Option<Duration>,
    /// The most connections tracked since memory was last handed back to the system.
    conns_high: usize,
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
            sink: SpanSink::new(
                Tracker::new(cfg.propagators.clone(), cfg.sampler),
                ProcessCache::new(PathBuf::from("/proc"), host, pods.clone()),
            ),
            writes: WritePairing::default(),
            outputs,
            metrics,
            counters,
            pods,
            idle_timeout: cfg.idle_timeout,
            stats_interval: cfg.stats_interval,
            conns_high: 0,
        }
    }

    fn handle(&mut self, record: &[u8]) {
        self.metrics.records.fetch_add(1, Relaxed);
        let event = match records::decode(record) {
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
                let frames = header.flags & FLAG_H2_FRAMES != 0;
                trace!(
                    pid = header.pid,
                    tid = header.tid,
                    fd = header.fd,
                    dir = if ingress { "in" } else { "out" },
                    len = header.total_len,
                    captured = header.captured_len,
                    "{}",
                    if frames {
                        http2::records::summary(payload)
                    } else {
                        loggable_start(payload)
                    }
                );
                let data = DataIn {
                    pid: header.pid,
                    tid: header.tid,
                    fd: header.fd,
                    direction: if ingress {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    seq: Some(header.seq),
                    frames,
                    peer: if header.flags & FLAG_HAS_TUPLE != 0 {
                        peer_of(&header.tuple)
                    } else {
                        None
                    },
                    chunk: Chunk {
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
                        kernel: self.writes.ids_of(&header, ingress),
                    },
                };
                self.table.on_data(&data, &mut self.sink);
            }
            Event::Conn(c) => {
                let peer = socket_addr(c.family, c.port, &c.addr);
                self.table
                    .on_connect(c.pid, c.fd, peer, c.ts_ns, &mut self.sink);
            }
            Event::Close(c) => self.table.on_close(c.pid, c.fd, &mut self.sink),
            Event::Write(w) => {
                debug!(
                    pid = w.pid,
                    tid = w.tid,
                    action = w.action,
                    added = w.added,
                    "sk_msg saw a request head"
                );
                self.writes.on_send(&w);
            }
        }
    }

    fn flush_spans(&mut self) {
        self.outputs.emit(&mut self.sink.spans);
    }

    /// Once the table has shrunk to half of its size since the last time (and that size was
    /// worth it), hands the freed heap back to the system: the allocator keeps freed memory for
    /// reuse, so after a flood of connections the resident set would otherwise stay at its peak.
    fn give_back_memory(&mut self) {
        let len = self.table.len();
        self.conns_high = self.conns_high.max(len);
        if self.conns_high >= TRIM_AFTER_CONNS && len <= self.conns_high / 2 {
            release_free_heap();
            self.conns_high = len;
        }
    }

    fn housekeeping(&mut self) {
        self.sink.clock = Clock::now();
        let idle_before = Clock::monotonic_ns()
            .saturating_sub(u64::try_from(self.idle_timeout.as_nanos()).unwrap_or(u64::MAX));
        self.table.sweep(idle_before, &mut self.sink);
        self.table.sweep_exited(process_alive, &mut self.sink);
        self.flush_spans();
        self.give_back_memory();
        for i in 0..counter::COUNT {
            if let Ok(values) = self.counters.get(&i, 0) {
                self.metrics.kernel[i as usize].store(values.iter().sum(), Relaxed);
            }
        }
        let skipped: u64 = stats::own_programs()
            .iter()
            .map(|p| p.recursion_misses)
            .sum();
        self.metrics.kernel_skipped.store(skipped, Relaxed);
        self.metrics.set_conn_stats(self.table.stats);
        self.metrics
            .spans_unsampled
            .store(self.sink.unsampled, Relaxed);
        self.metrics
            .connections
            .store(self.table.len() as u64, Relaxed);
        self.metrics
            .connection_buffered_bytes
            .store(self.table.buffered() as u64, Relaxed);
        if let Some(pods) = &self.pods {
            self.metrics.k8s_pods.store(pods.len() as u64, Relaxed);
        }
        self.metrics
            .inflight_server_requests
            .store(self.sink.tracker.inflight_count() as u64, Relaxed);
        self.metrics
            .inflight_forgotten
            .store(self.sink.tracker.forgotten, Relaxed);
    }

    /// Handles the records waiting in the ring buffer, at most `DRAIN_MAX` of them: the other
    /// tasks of the thread (the exporter above all) get their turn even when the kernel keeps
    /// writing; the rest waits for the next drain.
    /// Returns whether records were left.
    fn drain(&mut self, rb: &mut RingBuf<MapData>) -> bool {
        let mut n = 0;
        while n < DRAIN_MAX {
            let Some(item) = rb.next() else {
                self.flush_spans();
                return false;
            };
            self.handle(&item);
            n += 1;
        }
        self.flush_spans();
        true
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
                    let _ = self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = drain.tick() => {
                    let _ = self.drain(ring.get_mut());
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
        while self.drain(ring.get_mut()) {}
        self.table.drain(&mut self.sink);
        self.flush_spans();
        self.housekeeping();
        self.outputs.close();
        for p in stats::own_programs()
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

/// What the trace log shows of a payload: its first line up to the query, at most 80 bytes,
/// escaped. Never the headers or the body (credentials, cookies), nor the query (tokens).
/// (Of HTTP/2 frame records, `http2::records::summary`: frame types, streams and lengths.)
fn loggable_start(payload: &[u8]) -> String {
    let end = payload
        .iter()
        .take(80)
        .position(|b| matches!(b, b'\r' | b'\n' | b'?'))
        .unwrap_or(payload.len().min(80));
    payload[..end]
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// Connections the table must have held before its shrinking is worth a heap trim.
const TRIM_AFTER_CONNS: usize = 4096;

/// Returns the heap's free pages to the system (glibc keeps them otherwise).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Whether process `pid` (of the host's pid namespace, as the kernel reports it) still runs.
fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::loggable_start;

    #[test]
    fn trace_log_shows_no_headers_query_or_body() {
        let request = b"GET /orders?token=s3cr3t HTTP/1.1\r\nAuthorization: Bearer abc\r\n\r\n";
        assert_eq!(loggable_start(request), "GET /orders");
        let response = b"HTTP/1.1 200 OK\r\nSet-Cookie: id=s3cr3t\r\n\r\nbody";
        assert_eq!(loggable_start(response), "HTTP/1.1 200 OK");
        // A body or the rest of a split head: 80 bytes at most, escaped.
        let body = [b'x'; 200];
        assert_eq!(loggable_start(&body).len(), 80);
        assert_eq!(loggable_start(b"\x01ab"), "\\x01ab");
    }
}
