//! tracer-agent: eBPF HTTP tracing for service meshes. `main` only wires the parts together.
//!
//! A captured byte travels [`kernel`] (the programs, their ring buffer and the records decoded
//! from it) -> [`protocol`] (connections, HTTP/1.x assembly into exchanges) -> [`trace`] (trace
//! context, the join, spans) -> [`export`] (OTLP, console), driven by [`pipeline`]. On the
//! side, [`procs`] decides which processes the kernel follows and who they are (resource,
//! Kubernetes pod); [`config`] and [`metrics`] serve everything.

mod config;
mod export;
mod idhash;
mod kernel;
mod metrics;
mod pipeline;
mod procs;
mod protocol;
mod trace;

use std::{
    collections::HashSet,
    future::Future,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
};

use anyhow::Context as _;
use clap::Parser as _;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::{
    config::{Cli, Config, KubernetesConfig},
    export::{
        Outputs,
        console::Console,
        otlp::OtlpExporter,
        queue::{SpanTx, span_queue},
    },
    kernel::loader::{self, LoadOptions, Probes},
    metrics::Metrics,
    pipeline::Pipeline,
    procs::{
        k8s::{self, PodStore},
        resource::host_name,
        selection::{Selection, Selector},
    },
};

/// Longest wait for the final OTLP flush at shutdown.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// `SCHED_BATCH` for this thread and every thread it starts later (they inherit it): the agent
/// keeps its fair share of CPU, but its wake-ups (the ring-buffer drain, the exporter) do not
/// preempt the application threads it observes, which shows in their tail latency.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscall on the calling thread with a valid parameter block.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) } != 0 {
        warn!(
            "could not switch to SCHED_BATCH ({}); running with the normal policy",
            std::io::Error::last_os_error()
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .with_env_filter(EnvFilter::try_new(&cli.log_level).unwrap_or_else(|e| {
            eprintln!(
                "--log-level {:?} is not a valid filter ({e}); using info",
                cli.log_level
            );
            EnvFilter::new("info")
        }))
        .init();
    if cli.cpu_policy == "batch" {
        batch_scheduling();
    }
    // One thread: the event loop, the exporter and the small tasks take turns. Spans and their
    // shared text never cross cores, and no task wakes another thread (with two workers,
    // context switches and the refcounts of shared text bouncing between cores showed in the
    // profile).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let check_only = cli.check_config;
    let cfg = Config::resolve(cli, &|k| std::env::var(k).ok()).context("invalid configuration")?;
    if check_only {
        println!("{}", cfg.describe());
        return Ok(());
    }
    let metrics: &'static Metrics = Box::leak(Box::default());

    let tracefs = kernel::preflight::preflight()?;
    let (mut probes, maps) = loader::load(
        &tracefs,
        &LoadOptions {
            capture: cfg.capture,
            attach: cfg.attach,
            capture_size: cfg.capture_size,
            filter_listed: cfg.selects_processes(),
            ring_buffer_bytes: cfg.ring_buffer_bytes,
            write: cfg.write_modes.any_edits(),
            inject_format: cfg.inject_format,
            sample_bound: cfg.sampler.bound(),
            propagation: trace::context::propagation_flags(&cfg.propagators),
            kernel_log: cfg.kernel_log,
        },
    )?;
    if let Some(log) = maps.kernel_log {
        info!("--kernel-log: the kernel programs' diagnostics follow in this log");
        tokio::spawn(kernel::log::forward(log));
    }
    metrics.set_attach_plan(probes.plan.to_string());
    // Loading parsed the kernel's BTF and the object: hand that memory back now.
    // SAFETY: glibc's malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    if let Some(reason) = &probes.plan.socket_capture_rejected {
        info!("socket-level capture passed over: {reason}");
    }
    for (family, reason) in &probes.plan.rejected {
        info!("socket tuple via {family} passed over: {reason}");
    }

    let pods = match &cfg.kubernetes {
        Some(k) => Some(start_pod_watch(k, metrics).await?),
        None => None,
    };
    let selection = selection(&cfg, pods.clone());
    // The first scan is applied before "ready": a request sent right after must be seen.
    let mut selector = Selector::new(
        maps.proc_bits,
        maps.write_mode,
        selection.clone(),
        PathBuf::from("/proc"),
    );
    let (traced, excluded) = selector.apply();
    // Inject in Go programs follows goroutines (uprobes on the executable): the executables
    // selected now, and later those of processes that start in inject mode (within a scan, 1 s).
    let mut go_exes = HashSet::new();
    for exe in selector.inject_executables() {
        attach_go(&mut probes, &exe, false);
        go_exes.insert(exe);
    }
    let attached = probes.plan.attached();
    let plan = probes.plan.to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let selector = {
        let stop = stop.clone();
        // The selection thread owns the programs from now on: they are detached when it ends.
        std::thread::Builder::new()
            .name("procsel".into())
            .spawn(move || {
                selector.run(&stop, go_exes, |exe| attach_go(&mut probes, exe, true));
            })
            .context("starting the process selection thread")?
    };

    if let Some(addr) = cfg.metrics_addr {
        metrics::start(addr, metrics);
    }
    let stop_exporting = Arc::new(AtomicBool::new(false));
    let (otlp_tx, exporter) = start_exporter(&cfg, metrics, &stop_exporting)?;
    let outputs = Outputs::new(Console::new(cfg.stdout), otlp_tx, metrics);
    let pipeline = Pipeline::new(&cfg, pods, outputs, maps.counters, metrics);

    metrics.ready.store(true, Relaxed);
    info!(
        "agent ready: {attached} programs attached; {plan}; tracing {} ({traced} processes selected, {excluded} excluded)",
        describe_selection(&selection)
    );
    let shutdown = shutdown_signal(stop_exporting)?;
    pipeline
        .run(maps.events, shutdown)
        .await
        .context("reading the ring buffer")?;
    stop.store(true, Relaxed);
    if let Some(handle) = exporter {
        // One attempt per queued batch, and never longer than this: a dead collector must not
        // hold up a rolling update.
        if tokio::time::timeout(SHUTDOWN_FLUSH, handle).await.is_err() {
            warn!(
                "the OTLP collector did not take the last spans within {}s; they are dropped",
                SHUTDOWN_FLUSH.as_secs()
            );
        }
    }
    let _ = selector.join();
    Ok(())
}

/// Goroutine tracking for the Go executable `exe` of a process in inject mode; a program
/// that is not Go (or lacks net/http) just goes without it.
fn attach_go(probes: &mut Probes, exe: &Path, later: bool) {
    match probes.attach_go(exe) {
        Ok(()) if later => info!(
            "goroutine tracking attached to {} (a process started in inject mode)",
            exe.display()
        ),
        Ok(()) => info!("goroutine tracking attached to {}", exe.display()),
        Err(e) => debug!("no goroutine tracking: {e}"),
    }
}

/// What the kernel programs follow: the flags' processes, the selected pods, and never the
/// process listening on a local OTLP endpoint.
fn selection(cfg: &Config, pods: Option<Arc<PodStore>>) -> Selection {
    Selection {
        pids: cfg.pids.clone(),
        exes: cfg.exes.clone(),
        ports: cfg.ports.clone(),
        exclude_exes: cfg.exclude_exes.clone(),
        pods: pods.zip(cfg.kubernetes.as_ref().map(|k| k.filter.clone())),
        exclude_ports: cfg
            .otlp
            .as_ref()
            .and_then(|o| local_port(&o.endpoint))
            .into_iter()
            .collect(),
        write: cfg.write_modes.clone(),
    }
}

type ExporterTask = tokio::task::JoinHandle<()>;

/// The OTLP exporter task and the queue feeding it, when OTLP is on.
fn start_exporter(
    cfg: &Config,
    metrics: &'static Metrics,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Option<SpanTx>, Option<ExporterTask>)> {
    let Some(o) = &cfg.otlp else {
        return Ok((None, None));
    };
    let (tx, rx) = span_queue(cfg.batch.max_queue);
    let exporter = OtlpExporter::new(o.clone(), cfg.batch, metrics, stop.clone())?;
    Ok((Some(tx), Some(tokio::spawn(exporter.run(rx)))))
}

/// Resolves on SIGINT or SIGTERM, after telling the exporter to stop retrying.
fn shutdown_signal(stop_exporting: Arc<AtomicBool>) -> anyhow::Result<impl Future<Output = ()>> {
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = sigterm.recv() => {},
        }
        info!("shutting down: flushing spans");
        stop_exporting.store(true, Relaxed);
    })
}

/// Starts the watch of this node's pods. The API server is never waited for: spans go out with
/// what is known while it is slow or away. Only an unusable client configuration stops the
/// agent, and only with `--kubernetes on`.
async fn start_pod_watch(
    k: &KubernetesConfig,
    metrics: &'static Metrics,
) -> anyhow::Result<Arc<PodStore>> {
    let store = Arc::new(PodStore::default());
    match kube::Client::try_default().await {
        Ok(client) => {
            info!("kubernetes: watching the pods of node {}", k.node_name);
            tokio::spawn(k8s::watch::run(
                client,
                k.node_name.clone(),
                store.clone(),
                metrics,
            ));
        }
        Err(e) if k.required => {
            return Err(anyhow::anyhow!(e)).context(
                "no usable Kubernetes client configuration (in a pod: mount the service account token)",
            );
        }
        Err(e) => warn!("kubernetes metadata off: no usable client configuration: {e}"),
    }
    Ok(store)
}

/// The port of an endpoint URL on this host, whose listener must not be traced.
fn local_port(url: &str) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    let local =
        matches!(host, "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0") || host == host_name();
    if local { port.parse().ok() } else { None }
}

fn describe_selection(sel: &Selection) -> String {
    if !sel.is_listed() {
        let mut s = "all processes except this agent".to_owned();
        if !sel.exclude_exes.is_empty() {
            s.push_str(" and ");
            s.push_str(&sel.exclude_exes.join(", "));
        }
        return s;
    }
    let mut parts = Vec::new();
    if !sel.pids.is_empty() {
        parts.push(format!("pids {:?} and their children", sel.pids));
    }
    if !sel.exes.is_empty() {
        parts.push(format!("executables {}", sel.exes.join(", ")));
    }
    if !sel.ports.is_empty() {
        parts.push(format!("listeners on ports {:?}", sel.ports));
    }
    if let Some((_, filter)) = &sel.pods {
        parts.push(format!("pods of this node matching {filter:?}"));
    }
    parts.join("; ")
}
