//! One run: the service under load without or with a fresh agent, and what the agent cost.

use std::{
    collections::HashMap,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{
    AgentFigures, ProgRun, Run, Scenario,
    agent::{self, Agent, f64_of},
    load::{self, LoadResult, Spec},
    procs::{self, Proc, Target},
    receiver,
};
use crate::util::{Outcome, Step};

/// Iterations of the unrelated-syscall micro-load (two syscalls each).
pub const MICRO_LOAD: u32 = 50_000;
/// How long the agent's idle eBPF time is sampled before each load: other processes' syscalls
/// run its programs too, and that background is subtracted from the per-request figure.
const BACKGROUND: Duration = Duration::from_millis(500);

/// Everything a run needs that lives for the whole bench.
pub struct Bench {
    pub agent_bin: PathBuf,
    pub receiver: receiver::Receiver,
    pub script: PathBuf,
    pub logs: PathBuf,
    pub secs: u64,
    pub names: HashMap<String, String>,
    /// Extra arguments for the agent (`--agent-arg`).
    pub agent_args: Vec<String>,
}

/// A service under load for the whole bench.
pub struct Service {
    pub target: Target,
    port: u16,
    proc: Proc,
    /// Whether wrk can drive it with `Connection: close` (see [`load::answers_close`]).
    wrk_close: bool,
}

impl Bench {
    /// Starts both services, warms each up with wrk and checks how it answers `Connection: close`.
    pub fn start_services(&self, scenarios: &[Scenario]) -> Result<Vec<Service>> {
        let mut services = Vec::new();
        for target in Target::ALL
            .into_iter()
            .filter(|t| scenarios.iter().any(|sc| sc.target == *t))
        {
            let port = procs::free_port()?;
            Step::start("bench", format!("start {} on port {port}", target.label())).run(|_| {
                let mut proc = target.start(port, &self.logs.join("services.log"))?;
                // Unmeasured warm-up: connection pools, caches and the scheduler settle.
                let warm = Spec {
                    port,
                    close: false,
                    rate: None,
                    secs: 1,
                    tag: procs::random_u32()?,
                };
                let w = load::wrk(&warm, &self.script)?;
                proc.check_running()?;
                let wrk_close = load::answers_close(port)?;
                let info = format!(
                    "pid {}, warm-up {:.0} req/s{}",
                    proc.pid(),
                    w.rps(),
                    if wrk_close {
                        ""
                    } else {
                        "; it closes without saying `Connection: close`, so its new-connection \
                         saturation runs use the bench's generator instead of wrk"
                    }
                );
                services.push(Service {
                    target,
                    port,
                    proc,
                    wrk_close,
                });
                Ok(Outcome::Info(info))
            })?;
        }
        Ok(services)
    }

    pub fn run(&mut self, sc: &Scenario, svc: &mut Service, with_agent: bool) -> Result<Run> {
        svc.proc.check_running()?;
        let spec = Spec {
            port: svc.port,
            close: sc.close,
            rate: sc.rate,
            secs: self.secs,
            tag: procs::random_u32()?,
        };
        let mut agent = None;
        let mut baseline = None;
        if with_agent {
            let log = self.logs.join("agent.log");
            let a = Agent::start(
                &self.agent_bin,
                svc.proc.pid(),
                &self.receiver.endpoint(),
                &log,
                &self.agent_args,
            )?;
            let idle = agent::progs(a.pid())?;
            thread::sleep(BACKGROUND);
            baseline = Some(Baseline {
                idle,
                progs: agent::progs(a.pid())?,
                cpu: agent::cpu_secs(a.pid())?,
                at: Instant::now(),
            });
            agent = Some(a);
        }
        let load = match sc.rate {
            Some(_) => load::generate(&spec, load::RATE_WORKERS)?,
            None if sc.close && !svc.wrk_close => load::generate(&spec, load::CLOSE_WORKERS)?,
            None => load::wrk(&spec, &self.script)?,
        };
        svc.proc.check_running()?;
        if load.requests == 0 {
            bail!(
                "no request succeeded ({} errors, first: {})",
                load.errors,
                load.first_error.as_deref().unwrap_or("none")
            );
        }
        let (Some(mut agent), Some(baseline)) = (agent, baseline) else {
            let (n, wall) = agent::unrelated_syscalls(MICRO_LOAD)?;
            return Ok(Run {
                scenario: 0,
                round: 0,
                syscall_wall_ns: wall.as_secs_f64() * 1e9 / f64_of(n),
                load,
                agent: None,
            });
        };
        let figures = self.measure(&mut agent, &load, &baseline)?;
        // The wall time is taken with the statistics off: they cost two clock reads per program
        // run, which must not count as the agent's. The eBPF time needs them on; the difference
        // is what the statistics themselves cost here, reported so the figures can be read.
        agent::set_bpf_stats(false)?;
        let wall_off = agent::unrelated_syscalls(MICRO_LOAD);
        agent::set_bpf_stats(true)?;
        let (n, wall_off) = wall_off?;
        let before = agent::progs(agent.pid())?;
        let (_, wall_on) = agent::unrelated_syscalls(MICRO_LOAD)?;
        let after = agent::progs(agent.pid())?;
        let ns: u64 = agent::delta(&before, &after).iter().map(|d| d.1).sum();
        let per = |d: Duration| d.as_secs_f64() * 1e9 / f64_of(n);
        let (syscall_wall_ns, syscall_bpf_ns) = (per(wall_off), f64_of(ns) / f64_of(n));
        let stats_ns = per(wall_on) - per(wall_off);
        agent.stop()?;
        self.receiver.check()?;
        Ok(Run {
            scenario: 0,
            round: 0,
            syscall_wall_ns,
            agent: Some(AgentFigures {
                syscall_bpf_ns,
                stats_ns,
                // Final: the agent exported everything before it exited.
                server_spans: self.receiver.server_spans(spec.tag),
                ..figures
            }),
            load,
        })
    }

    /// Waits until the agent has built the run's spans (its count reaches the requests or stops
    /// moving), then reads its CPU time since the load started, RSS, drops and eBPF time.
    fn measure(
        &mut self,
        agent: &mut Agent,
        load: &LoadResult,
        baseline: &Baseline,
    ) -> Result<AgentFigures> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = (-1.0, Instant::now());
        let metrics = loop {
            procs::check_interrupt()?;
            agent.check_running()?;
            let m = agent.metrics()?;
            let built = m.get("tracer_spans_built_total").copied().unwrap_or(0.0);
            if built >= f64_of(load.requests) {
                break m;
            }
            if built > last.0 {
                last = (built, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(1) || Instant::now() > deadline {
                break m;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let pid = agent.pid();
        let cpu = agent::cpu_secs(pid)? - baseline.cpu;
        let progs = agent::progs(pid)?;
        let window = baseline.at.elapsed();
        if progs.is_empty() {
            bail!("the agent holds no eBPF program descriptors");
        }
        if progs.iter().any(|p| !self.names.contains_key(&p.tag)) {
            self.names = agent::prog_names()?;
        }
        let count = |prefix: &str| {
            // Counters are integers; the sum of a few of them is exact in f64.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let n = agent::sum_prefix(&metrics, prefix).round() as u64;
            n
        };
        let background = agent::delta(&baseline.idle, &baseline.progs);
        let scale = window.as_secs_f64() / BACKGROUND.as_secs_f64();
        Ok(AgentFigures {
            millicores: cpu * 1000.0 / load.secs,
            peak_rss_kib: agent::rss_kib(pid, "VmHWM")?,
            rss_kib: agent::rss_kib(pid, "VmRSS")?,
            progs: agent::delta(&baseline.progs, &progs)
                .into_iter()
                .map(|(p, ns, cnt)| {
                    // Minus what the program ran for other processes while the agent was idle,
                    // scaled to the measured window.
                    let idle = background.iter().find(|b| b.0.id == p.id);
                    let less = |v: u64, bg: u64| v.saturating_sub(scaled(bg, scale));
                    let ns = less(ns, idle.map_or(0, |b| b.1));
                    let cnt = less(cnt, idle.map_or(0, |b| b.2));
                    ProgRun {
                        name: self.names.get(&p.tag).cloned().unwrap_or(p.tag),
                        insns: p.insns,
                        ns,
                        runs: cnt,
                    }
                })
                .collect(),
            syscall_bpf_ns: 0.0,
            stats_ns: 0.0,
            server_spans: 0,
            spans_built: count("tracer_spans_built_total"),
            kernel_drops: count("tracer_kernel_dropped_"),
            user_drops: count("tracer_dropped_"),
        })
    }
}

/// The agent's state just before a load.
struct Baseline {
    /// Program statistics at the start and the end of the idle sample.
    idle: Vec<agent::Prog>,
    progs: Vec<agent::Prog>,
    cpu: f64,
    at: Instant,
}

/// `v * k`, rounded (counts far below 2^52).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn scaled(v: u64, k: f64) -> u64 {
    (f64_of(v) * k).round() as u64
}
