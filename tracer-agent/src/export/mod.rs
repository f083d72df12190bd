//! Where finished spans go: the console printer (in the event loop, it is cheap) and the OTLP
//! exporter (its own task, behind a bounded queue whose overflow is counted).

pub mod console;
pub mod otlp;
pub mod queue;

use crate::{metrics::Metrics, trace::span::Span};

pub struct Outputs {
    console: console::Console,
    otlp: Option<queue::SpanTx>,
    metrics: &'static Metrics,
}

impl Outputs {
    #[must_use]
    pub fn new(
        console: console::Console,
        otlp: Option<queue::SpanTx>,
        metrics: &'static Metrics,
    ) -> Self {
        Self {
            console,
            otlp,
            metrics,
        }
    }

    /// Takes every span of `spans` (one drain's worth) to the outputs.
    pub fn emit(&mut self, spans: &mut Vec<Span>) {
        use std::sync::atomic::Ordering::Relaxed;
        if spans.is_empty() {
            return;
        }
        self.metrics
            .spans_built
            .fetch_add(spans.len() as u64, Relaxed);
        for span in spans.iter() {
            self.console.add(span);
        }
        match &self.otlp {
            Some(tx) => {
                let dropped = tx.send(std::mem::take(spans));
                self.metrics
                    .spans_queue_full
                    .fetch_add(dropped as u64, Relaxed);
            }
            None => spans.clear(),
        }
    }

    /// Periodic work: print traces that settled.
    pub fn tick(&mut self) {
        self.console.flush(false);
    }

    /// Shutdown: print everything, close the OTLP queue so the exporter drains and stops.
    pub fn close(&mut self) {
        self.console.flush(true);
        self.otlp = None;
    }
}
