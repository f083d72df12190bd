//! `cargo xtask bench`: what the agent costs, measured on this machine over loopback.
//!
//! Two "hello" services (Go net/http, Python http.server) take load with keep-alive and with a
//! new connection per request, at saturation (`wrk`) and at 1k and 5k requests/s (the open-loop
//! generator in [`load`]); two scaling scenarios repeat Go keep-alive at saturation with 10,000
//! more connections held open and idle, and with the agent tracing 50 processes ([`Scale`]).
//! A Go gRPC service (HTTP/2 in clear text) takes unary calls at saturation and at 1k and 5k
//! calls/s from the demo's own load mode ([`load::grpc`]): 16 concurrent calls over 4 kept-alive
//! connections, each call with fresh B3 metadata.
//!
//! Three arms per scenario, round after round (A F B A F B ...), so drift of the machine hits
//! them alike: without the agent (A), the floor agent (F: the same binary built with the
//! eBPF feature `floor`, attached to the same points, whose programs return at once: what the
//! hooks alone cost) and the agent (B). These runs keep `kernel.bpf_stats_enabled` off: the
//! statistics add two clock reads per program run, which must not count as the agent's cost.
//! Throughput, latency, agent CPU, RSS and spans come from them; the figures are medians with
//! min-max over rounds, each F and B figure paired with the A run of its round. The eBPF time
//! per request comes from separate passes with the statistics on, one per scenario for each of
//! F and B, in the last round.
//!
//! With an agent, each run starts a fresh one tracing the service's pid (and the idle copies'
//! in the 50-process scenario) and exporting over OTLP to the counting receiver in
//! [`receiver`]; the bench reads its CPU time and peak RSS from /proc, its drops from /metrics
//! and its eBPF programs (their count, and in a stats pass their run time) from their fdinfo
//! ([`agent`]), then stops it (it flushes) and compares the SERVER spans received with the
//! requests the load completed. [`report`] writes target/bench/results.md, latency.svg and
//! runs.tsv, prints the tables and which budgets of the README are met. A missed budget does not
//! fail the command; a broken run (a process died, no requests, a bad export) does.

mod agent;
mod budgets;
mod idle;
mod load;
mod plot;
mod procs;
mod profile;
mod receiver;
mod report;
mod rows;
mod run;
pub mod soak;

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
    /// Smoke run: one round of 2-second runs (about 7 minutes once built) instead of 3 rounds of
    /// 5 s (about 25 minutes).
    #[arg(long)]
    quick: bool,
    /// Rounds over all scenarios (each scenario once without the agent, once with the floor
    /// agent and once with the agent per round; the eBPF statistics passes run in the last).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: Option<u32>,
    /// Seconds of load per run.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=120))]
    duration: Option<u64>,
    /// Only the scenarios whose name contains each of these words, case-insensitive (e.g.
    /// `--only go,keep-alive`), to check one optimisation quickly; budgets of the others are n/a.
    #[arg(long, value_name = "WORDS", value_delimiter = ',')]
    only: Vec<String>,
    /// Also record the agent with `perf` (installed on first use) during the first with-agent
    /// run of each scenario, and report its CPU by stage (event loop, HTTP assembly, span
    /// building, OTLP encoding, transport...) in results.md.
    #[arg(long)]
    profile: bool,
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
    pub scale: Scale,
}

/// What surrounds the load: the plain case, or one of the scaling scenarios.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Scale {
    /// The load's own connections (wrk: 16) and one traced process.
    Plain,
    /// [`IDLE_CONNS`] more connections to the same service, held open and idle during the run.
    IdleConns,
    /// The agent traces [`TRACED_PROCS`] processes: the service and idle copies of it.
    Procs,
}

/// Extra connections of [`Scale::IdleConns`].
pub const IDLE_CONNS: usize = 10_000;
/// Traced processes of [`Scale::Procs`], the loaded service included.
pub const TRACED_PROCS: usize = 50;

impl Scale {
    /// The words `--only` matches (`10k-conns`, `50-procs`).
    fn word(self) -> &'static str {
        match self {
            Scale::Plain => "",
            Scale::IdleConns => "10k-conns",
            Scale::Procs => "50-procs",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Scale::Plain => "16 connections, 1 traced process",
            Scale::IdleConns => "+10,000 idle connections (10k-conns)",
            Scale::Procs => "50 traced processes (50-procs)",
        }
    }
}

impl Scenario {
    fn matrix() -> Vec<Scenario> {
        let mut all = Vec::new();
        for target in Target::ALL {
            // gRPC keeps its connections: a connection per call is not how it is used.
            let closes: &[bool] = if target.is_grpc() {
                &[false]
            } else {
                &[false, true]
            };
            for &close in closes {
                for rate in [None, Some(1000), Some(5000)] {
                    all.push(Scenario {
                        target,
                        close,
                        rate,
                        scale: Scale::Plain,
                    });
                    // Scaling: does the cost grow with open connections or traced processes?
                    // Go keep-alive at saturation, next to its plain case.
                    if target == Target::Go && !close && rate.is_none() {
                        for scale in [Scale::IdleConns, Scale::Procs] {
                            all.push(Scenario {
                                target,
                                close,
                                rate,
                                scale,
                            });
                        }
                    }
                }
            }
        }
        all
    }

    /// How the load uses connections.
    fn conns(&self) -> &'static str {
        if self.target.is_grpc() {
            "keep-alive, 16 streams on 4 conns"
        } else if self.close {
            "new conn/request"
        } else {
            "keep-alive"
        }
    }

    pub fn conn_label(&self) -> String {
        let base = self.conns();
        match self.scale {
            Scale::Plain => base.to_owned(),
            Scale::IdleConns => format!("{base}, +10k idle conns"),
            Scale::Procs => format!("{base}, 50 traced procs"),
        }
    }

    pub fn load_label(&self) -> String {
        match self.rate {
            None => "saturation".to_owned(),
            Some(r) => format!("{}k req/s", r / 1000),
        }
    }

    /// Service, connections and load, without the scale.
    pub fn base_label(&self) -> String {
        format!(
            "{}, {}, {}",
            self.target.label(),
            self.conns(),
            self.load_label()
        )
    }

    pub fn label(&self) -> String {
        let mut label = self.base_label();
        if self.scale != Scale::Plain {
            label.push_str(", ");
            label.push_str(self.scale.word());
        }
        label
    }
}

/// Which agent runs, if any.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Arm {
    /// No agent (A).
    Without,
    /// The floor agent (F): same attach points, programs that return at once.
    Floor,
    /// The agent (B).
    Agent,
}

impl Arm {
    pub fn label(self) -> &'static str {
        match self {
            Arm::Without => "without agent",
            Arm::Floor => "floor agent",
            Arm::Agent => "with agent",
        }
    }

    /// Short name for runs.tsv.
    pub fn short(self) -> &'static str {
        match self {
            Arm::Without => "without",
            Arm::Floor => "floor",
            Arm::Agent => "agent",
        }
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
    /// eBPF program descriptors the agent held (every program it loaded).
    pub prog_fds: usize,
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
    pub arm: Arm,
    /// A statistics pass: `kernel.bpf_stats_enabled` was on during the load; only its eBPF
    /// figures are reported (its throughput, latency and CPU include the statistics' cost).
    pub stats: bool,
    pub load: LoadResult,
    /// Wall time of one unrelated syscall of the micro-load (ns), in this run's arm, with the
    /// eBPF statistics off.
    pub syscall_wall_ns: f64,
    /// `None` without the agent.
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
    if scenarios.iter().any(|sc| sc.scale == Scale::IdleConns) {
        idle::raise_nofile(IDLE_CONNS + 1024)?;
    }
    if opts.profile {
        setup::ensure_perf()?;
    }
    let out = util::target_dir().join("bench");
    let agent_bin = build_agent(&out, false)?;
    let floor_bin = build_agent(&out, true)?;
    let logs = out.join("logs");
    // Fresh logs per invocation: they are appended to by every run.
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let script = out.join("b3.lua");
    fs::write(&script, include_str!("b3.lua"))
        .with_context(|| format!("cannot write {}", script.display()))?;
    procs::catch_ctrl_c();
    let busy_before = quiet_machine()?;
    // Off for every run but the statistics passes, restored at the end (also after a failure).
    let _stats = agent::BpfStats::off()?;
    let mut bench = Bench {
        agent_bin,
        floor_bin,
        receiver: receiver::Receiver::start()?,
        script,
        logs,
        secs,
        names: HashMap::new(),
        agent_args: opts.agent_args.clone(),
        profile_dir: if opts.profile {
            Some(profile::dir(&out)?)
        } else {
            None
        },
        profiles: Vec::new(),
    };
    let mut services = bench.start_services(&scenarios)?;

    let per_scenario = 3 * rounds as usize + 2;
    let total = scenarios.len() * per_scenario;
    println!(
        "[bench] {total} runs of {secs} s: {} scenarios x (without / floor / with the agent x \
         {rounds} round(s) + one eBPF statistics pass each for the floor and the agent)",
        scenarios.len()
    );
    let runs = run_all(&mut bench, &scenarios, &mut services, rounds)?;
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
    if !bench.profiles.is_empty() {
        let section = profile::section(&bench.profiles)?;
        println!("\n{section}");
        let results = out.join("results.md");
        let mut md = fs::read_to_string(&results)
            .with_context(|| format!("cannot read {}", results.display()))?;
        md.push('\n');
        md.push_str(&section);
        fs::write(&results, md).with_context(|| format!("cannot write {}", results.display()))?;
    }
    println!(
        "[bench] done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Every run: per round, each scenario without the agent, with the floor agent and with the
/// agent (statistics off), and in the last round the two statistics passes.
fn run_all(
    bench: &mut Bench,
    scenarios: &[Scenario],
    services: &mut [run::Service],
    rounds: u32,
) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 1..=rounds {
        for (index, sc) in scenarios.iter().enumerate() {
            let svc = services
                .iter_mut()
                .find(|s| s.target == sc.target)
                .context("every target's service was started")?;
            // The 49 idle copies traced along with the service in the 50-process scenario,
            // only while it runs.
            let copies = match sc.scale {
                Scale::Procs => bench.start_copies(sc.target, TRACED_PROCS - 1)?,
                _ => Vec::new(),
            };
            let copy_pids: Vec<u32> = copies.iter().map(procs::Proc::pid).collect();
            let mut passes = vec![
                (Arm::Without, false),
                (Arm::Floor, false),
                (Arm::Agent, false),
            ];
            if round == rounds {
                passes.extend([(Arm::Floor, true), (Arm::Agent, true)]);
            }
            for (arm, stats) in passes {
                procs::check_interrupt()?;
                let name = format!(
                    "round {round}/{rounds} {}, {}{}",
                    sc.label(),
                    arm.label(),
                    if stats { ", eBPF statistics pass" } else { "" }
                );
                let mut result = None;
                Step::start("bench", name).run(|_| {
                    let run = bench.run(sc, svc, arm, stats, &copy_pids)?;
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
            drop(copies);
        }
    }
    Ok(runs)
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
///
/// With `floor`, the same build with `TRACER_EBPF_FEATURES=floor` (tracer-agent/build.rs: the
/// kernel programs return at their first line) in a target directory of its own,
/// target/bench/floor-target, so it never replaces the real binary; run as
/// target/bench/tracer-agent-floor. The first floor build compiles the agent's dependencies once
/// more (a few minutes on 2 cores); later ones only what changed.
fn build_agent(out: &Path, floor: bool) -> Result<PathBuf> {
    let (target, copy) = if floor {
        (out.join("floor-target"), out.join("tracer-agent-floor"))
    } else {
        (util::target_dir(), out.join("tracer-agent"))
    };
    let bin = target.join("release/tracer-agent");
    let what = if floor {
        "TRACER_EBPF_FEATURES=floor cargo build --release --locked -p tracer-agent (the floor agent)"
    } else {
        "cargo build --release --locked -p tracer-agent"
    };
    Step::start("bench", what).run(|s| {
        s.break_line();
        let mut cmd = util::cargo();
        cmd.current_dir(util::workspace_root()).args([
            "build",
            "--release",
            "--locked",
            "-p",
            "tracer-agent",
        ]);
        if floor {
            cmd.env("TRACER_EBPF_FEATURES", "floor")
                .env("CARGO_TARGET_DIR", &target);
        } else {
            // A floor build in the caller's shell must not leak into the real agent.
            cmd.env_remove("TRACER_EBPF_FEATURES");
        }
        util::run(&mut cmd).context("the release build failed: the compiler errors are above")?;
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
