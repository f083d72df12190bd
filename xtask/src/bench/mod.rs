//! `cargo xtask bench`: what the agent costs, measured on this machine over loopback.
//!
//! Two "hello" services (Go net/http, Python http.server) take load with keep-alive and with a
//! new connection per request, at saturation (`wrk`) and at 1k and 5k requests/s (the open-loop
//! generator in [`load`]). Every scenario runs without the agent, then with it, round after
//! round (A B A B ...), so drift of the machine hits both sides alike; the figures are medians
//! with min-max over rounds, each "with" figure paired with the "without" run of its round.
//!
//! With the agent, each run starts a fresh agent tracing the service's pid and exporting over
//! OTLP to the counting receiver in [`receiver`]; the bench reads its CPU time and peak RSS from
//! /proc, its drops from /metrics and its eBPF programs' run time from the kernel's statistics
//! ([`agent`]), then stops it (it flushes) and compares the SERVER spans received with the
//! requests the load completed. [`report`] writes target/bench/results.md, latency.svg and
//! runs.tsv, prints the tables and which budgets of the README are met. A missed budget does not
//! fail the command; a broken run (a process died, no requests, a bad export) does.

mod agent;
mod budgets;
mod load;
mod plot;
mod procs;
mod receiver;
mod report;
mod rows;
mod run;

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup,
    util::{self, Outcome, Step},
};
use load::LoadResult;
use procs::Target;
use run::Bench;

#[derive(clap::Args)]
pub struct Options {
    /// Smoke run: one round of 2-second runs (about 2 minutes) instead of 3 rounds of 5 s.
    #[arg(long)]
    quick: bool,
    /// Rounds over all scenarios (each scenario once without and once with the agent per round).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: Option<u32>,
    /// Seconds of load per run.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=120))]
    duration: Option<u64>,
    /// Only the scenarios whose name contains each of these words, case-insensitive (e.g.
    /// `--only go,keep-alive`), to check one optimisation quickly; budgets of the others are n/a.
    #[arg(long, value_name = "WORDS", value_delimiter = ',')]
    only: Vec<String>,
    /// Extra agent argument for the runs with the agent (repeatable), e.g.
    /// `--agent-arg=--write-mode --agent-arg=rewrite` to measure the write side's read path.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
}

/// One cell of the matrix.
#[derive(Clone, Copy)]
pub struct Scenario {
    pub target: Target,
    /// A new connection per request (`Connection: close`) instead of keep-alive.
    pub close: bool,
    /// Fixed requests per second; `None` is saturation.
    pub rate: Option<u32>,
}

impl Scenario {
    fn matrix() -> Vec<Scenario> {
        let mut all = Vec::new();
        for target in Target::ALL {
            for close in [false, true] {
                for rate in [None, Some(1000), Some(5000)] {
                    all.push(Scenario {
                        target,
                        close,
                        rate,
                    });
                }
            }
        }
        all
    }

    pub fn conn_label(&self) -> &'static str {
        if self.close {
            "new conn/request"
        } else {
            "keep-alive"
        }
    }

    pub fn load_label(&self) -> String {
        match self.rate {
            None => "saturation".to_owned(),
            Some(r) => format!("{}k req/s", r / 1000),
        }
    }

    pub fn label(&self) -> String {
        format!(
            "{}, {}, {}",
            self.target.label(),
            self.conn_label(),
            self.load_label()
        )
    }
}

/// What the agent cost in one run.
pub struct AgentFigures {
    pub millicores: f64,
    pub peak_rss_kib: u64,
    /// Resident set at the end of the load (the peak may come from start-up).
    pub rss_kib: u64,
    /// eBPF run time and runs during the load, per program.
    pub progs: Vec<ProgRun>,
    /// eBPF run time per unrelated syscall of the micro-load (ns).
    pub syscall_bpf_ns: f64,
    /// What `kernel.bpf_stats_enabled` itself adds to an unrelated syscall (ns of wall time).
    pub stats_ns: f64,
    pub server_spans: u64,
    pub spans_built: u64,
    pub kernel_drops: u64,
    pub user_drops: u64,
}

impl AgentFigures {
    pub fn bpf_ns(&self) -> u64 {
        self.progs.iter().map(|p| p.ns).sum()
    }
}

/// One eBPF program's share of a run.
pub struct ProgRun {
    pub name: String,
    pub insns: u64,
    pub ns: u64,
    pub runs: u64,
}

/// One run of one scenario.
pub struct Run {
    pub scenario: usize,
    pub round: u32,
    pub load: LoadResult,
    /// Wall time of one unrelated syscall of the micro-load (ns), with or without the agent (and
    /// with the eBPF statistics off).
    pub syscall_wall_ns: f64,
    pub agent: Option<AgentFigures>,
}

/// Conditions of the invocation, for the report.
pub struct Conditions {
    pub rounds: u32,
    pub secs: u64,
    /// CPUs' worth of time other processes used just before and just after the runs.
    pub busy_before: f64,
    pub busy_after: f64,
}

pub fn bench(opts: &Options) -> Result<()> {
    util::require_root(
        "the bench loads the agent's eBPF programs and sets kernel.bpf_stats_enabled; \
         run `sudo -E cargo xtask bench`",
    )?;
    let scenarios: Vec<Scenario> = Scenario::matrix()
        .into_iter()
        .filter(|sc| {
            let label = sc.label().to_lowercase();
            opts.only.iter().all(|w| label.contains(&w.to_lowercase()))
        })
        .collect();
    if scenarios.is_empty() {
        bail!("no scenario matches --only {}", opts.only.join(","));
    }
    let started = Instant::now();
    let rounds = opts.rounds.unwrap_or(if opts.quick { 1 } else { 3 });
    let secs = opts.duration.unwrap_or(if opts.quick { 2 } else { 5 });
    setup::setup()?;
    let out = util::target_dir().join("bench");
    let agent_bin = build_agent(&out)?;
    let logs = out.join("logs");
    // Fresh logs per invocation: they are appended to by every run.
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let script = out.join("b3.lua");
    fs::write(&script, include_str!("b3.lua"))
        .with_context(|| format!("cannot write {}", script.display()))?;
    procs::catch_ctrl_c();
    let busy_before = quiet_machine()?;
    let _stats = agent::BpfStats::enable()?;
    let mut bench = Bench {
        agent_bin,
        receiver: receiver::Receiver::start()?,
        script,
        logs,
        secs,
        names: HashMap::new(),
        agent_args: opts.agent_args.clone(),
    };
    let mut services = bench.start_services(&scenarios)?;

    let total = scenarios.len() * 2 * rounds as usize;
    println!(
        "[bench] {total} runs of {secs} s: {} scenarios x without/with the agent x {rounds} round(s)",
        scenarios.len()
    );
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for (index, sc) in scenarios.iter().enumerate() {
            let svc = services
                .iter_mut()
                .find(|s| s.target == sc.target)
                .context("every target's service was started")?;
            for with_agent in [false, true] {
                procs::check_interrupt()?;
                let name = format!(
                    "round {round}/{rounds} {}, {} agent",
                    sc.label(),
                    if with_agent { "with" } else { "without" }
                );
                let mut result = None;
                Step::start("bench", name).run(|_| {
                    let run = bench.run(sc, svc, with_agent)?;
                    let summary = report::run_summary(sc, &run);
                    result = Some(Run {
                        scenario: index,
                        round,
                        ..run
                    });
                    Ok(Outcome::Info(summary))
                })?;
                runs.extend(result);
            }
        }
    }
    drop(services);
    bench.receiver.check()?;
    let strays = bench.receiver.other_spans();
    if strays > 0 {
        // Only tagged SERVER spans are expected: anything else means ids or kinds went wrong.
        println!(
            "[bench] warning: the receiver also got {strays} spans that are not SERVER spans of a run"
        );
    }
    let conditions = Conditions {
        rounds,
        secs,
        busy_before,
        busy_after: agent::busy_cpus(Duration::from_secs(1))?,
    };
    report::write(&out, &scenarios, &runs, &conditions)?;
    println!(
        "[bench] done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Measures how busy the machine is without us; warns when other work (a build, a VM, another
/// agent) will distort the figures. Returns the CPUs' worth of time in use.
fn quiet_machine() -> Result<f64> {
    let busy = agent::busy_cpus(Duration::from_secs(1))?;
    if busy > 0.1 {
        println!(
            "[bench] warning: other processes keep {busy:.1} CPUs busy; they compete with the \
             services, the load and the agent, so the figures will be noisy and worse"
        );
    }
    let others = agent::other_agents(None);
    if !others.is_empty() {
        println!(
            "[bench] warning: other tracer-agent processes run (pids {others:?}): their programs \
             also run on every traced syscall"
        );
    }
    Ok(busy)
}

/// `cargo build --release --locked -p tracer-agent` (only the agent, which is what is measured),
/// then a copy under target/bench/: every run of this invocation uses the same binary even if a
/// build replaces target/release/tracer-agent meanwhile.
fn build_agent(out: &Path) -> Result<PathBuf> {
    let bin = util::target_dir().join("release/tracer-agent");
    let copy = out.join("tracer-agent");
    Step::start("bench", "cargo build --release --locked -p tracer-agent").run(|s| {
        s.break_line();
        util::run(util::cargo().current_dir(util::workspace_root()).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "tracer-agent",
        ]))
        .context("the release build failed: the compiler errors are above")?;
        fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        fs::copy(&bin, &copy)
            .with_context(|| format!("cannot copy {} to {}", bin.display(), copy.display()))?;
        Ok(Outcome::Info(format!(
            "{} (run as {})",
            bin.display(),
            copy.display()
        )))
    })?;
    Ok(copy)
}
