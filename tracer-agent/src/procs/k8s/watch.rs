//! Keeps the [`PodStore`] in step with the API server: a list-then-watch of the pods scheduled
//! on this node, restarted with backoff when the API server is slow, gone or answers 410.
//!
//! It runs as its own task and only ever writes the store; nothing on the span path waits
//! for it. While the API server is unreachable the last known pods stay in the store.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use tracing::{info, warn};

use super::PodStore;
use crate::metrics::Metrics;

const WARN_EVERY: Duration = Duration::from_mins(1);

/// Watches the pods of `node` until the process ends.
pub async fn run(client: Client, node: String, store: Arc<PodStore>, metrics: &'static Metrics) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut relist: Vec<Pod> = Vec::new();
    let mut last_warn: Option<Instant> = None;
    loop {
        match events.try_next().await {
            Ok(Some(event)) => match event {
                watcher::Event::Init => relist.clear(),
                watcher::Event::InitApply(pod) => relist.push(pod),
                watcher::Event::InitDone => {
                    let first = !store.synced();
                    store.replace_all(&std::mem::take(&mut relist));
                    if first {
                        info!("kubernetes: {} pods on node {node}", store.len());
                    }
                }
                watcher::Event::Apply(pod) => store.apply(&pod),
                watcher::Event::Delete(pod) => store.delete(&pod),
            },
            Ok(None) => break,
            Err(e) => {
                metrics.k8s_watch_errors.fetch_add(1, Relaxed);
                if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    warn!(
                        "kubernetes pod watch: {e} (retrying with backoff; spans keep flowing with the metadata known)"
                    );
                    last_warn = Some(Instant::now());
                }
            }
        }
    }
    warn!("kubernetes pod watch ended");
}
