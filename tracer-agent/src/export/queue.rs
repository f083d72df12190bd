//! The queue between the event loop and the OTLP exporter.
//!
//! Spans go over in batches, one per drain of the ring buffer (every 10 ms at most), so the
//! exporter task is woken a hundred times a second rather than once per span. The bound is in
//! spans (`OTEL_BSP_MAX_QUEUE_SIZE`) and covers both the batches in the channel and the spans
//! the exporter holds for its next request; what does not fit is dropped and counted by the
//! caller, never buffered.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering::Relaxed},
};

use tokio::sync::mpsc;

use crate::trace::span::Span;

pub struct SpanTx {
    tx: mpsc::UnboundedSender<Vec<Span>>,
    queued: Arc<AtomicUsize>,
    max: usize,
}

pub struct SpanRx {
    rx: mpsc::UnboundedReceiver<Vec<Span>>,
    queued: Arc<AtomicUsize>,
}

/// A queue holding at most `max` spans.
#[must_use]
pub fn span_queue(max: usize) -> (SpanTx, SpanRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        SpanTx {
            tx,
            queued: queued.clone(),
            max,
        },
        SpanRx { rx, queued },
    )
}

impl SpanTx {
    /// Queues what fits of `spans`; returns how many did not.
    pub fn send(&self, mut spans: Vec<Span>) -> usize {
        // One sender: the count can only fall between this load and the add below.
        let room = self.max.saturating_sub(self.queued.load(Relaxed));
        let dropped = spans.len().saturating_sub(room);
        spans.truncate(room);
        let n = spans.len();
        if n == 0 {
            return dropped;
        }
        self.queued.fetch_add(n, Relaxed);
        if self.tx.send(spans).is_err() {
            self.queued.fetch_sub(n, Relaxed);
            return dropped + n;
        }
        dropped
    }
}

impl SpanRx {
    /// The next batch; `None` once every sender is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<Vec<Span>> {
        self.rx.recv().await
    }

    /// `n` spans left the queue (they are in a request now).
    pub fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::trace::{
        ids::{SpanId, TraceId},
        span::{Resource, SpanKind, Status},
    };

    fn spans(n: usize) -> Vec<Span> {
        let resource = Arc::new(Resource {
            service_name: "s".into(),
            pid: 1,
            attributes: Vec::new(),
        });
        (0..n)
            .map(|_| Span {
                trace_id: TraceId([1; 16]),
                span_id: SpanId([1; 8]),
                parent_span_id: None,
                kind: SpanKind::Server,
                name: "GET".into(),
                start_unix_nanos: 0,
                end_unix_nanos: 0,
                attributes: Vec::new(),
                status: Status::Unset,
                resource: resource.clone(),
            })
            .collect()
    }

    #[tokio::test]
    async fn the_bound_covers_queued_and_unreleased_spans() {
        let (tx, mut rx) = span_queue(10);
        assert_eq!(tx.send(spans(6)), 0);
        assert_eq!(tx.send(spans(6)), 2, "only 4 fit");
        assert_eq!(tx.send(spans(1)), 1, "full");
        assert_eq!(rx.recv().await.unwrap().len(), 6);
        assert_eq!(rx.recv().await.unwrap().len(), 4);
        // Received but not released: still counted against the bound.
        assert_eq!(tx.send(spans(1)), 1);
        rx.release(7);
        assert_eq!(tx.send(spans(8)), 1, "7 released, 7 fit");
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().len(), 7);
        assert!(rx.recv().await.is_none(), "closed once the sender is gone");
    }
}
