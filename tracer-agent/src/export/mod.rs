//! Where finished spans go: the console printer (in the event loop, it is cheap) and the OTLP
//! exporter (its own task, behind a bounded queue whose overflow is counted).

pub mod console;
pub mod otlp;

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::{metrics::Metrics, trace::span::Span};

pub struct Outputs {
    console: console::Console,
    otlp: Option<mpsc::Sender<Span>>,
    metrics: &'static Metrics,
}

impl Outputs {
    #[must_use]
    pub fn new(
        console: console::Console,
        otlp: Option<mpsc::Sender<Span>>,
        metrics: &'static Metrics,
    ) -> Self {
        Self {
            console,
            otlp,
            metrics,
        }
    }

    pub fn emit(&mut self, span: Span) {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.spans_built.fetch_add(1, Relaxed);
        self.console.add(&span);
        if let Some(tx) = &self.otlp {
            match tx.try_send(span) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => {
                    self.metrics.spans_queue_full.fetch_add(1, Relaxed);
                }
            }
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
