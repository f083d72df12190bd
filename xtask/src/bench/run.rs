//! One run: the service under load without an agent, with a fresh floor agent or with a fresh
//! agent, and what the agent cost; in a statistics pass, also its programs' run time.

use std::{
    collections::HashMap,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{
    AgentFigures, Arm, IDLE_CONNS, ProgRun, Run, Scale, Scenario,
    agent::{self, Agent, f64_of},
    idle::IdleConns,
    load::{self, LoadResult, Spec},
    procs::{self, Proc, Target},
    profile, receiver,
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
    /// The floor build of the agent (programs that return at once).
    pub floor_bin: PathBuf,
    pub receiver: receiver::Receiver,
    pub script: PathBuf,
    pub logs: PathBuf,
    pub secs: u64,
    pub names: HashMap<String, String>,
    /// Extra arguments for the agent (`--agent-arg`).
    pub agent_args: Vec<String>,
    /// With `--profile`: where the recordings go, and those made so far (scenario label, file).
    pub profile_dir: Option<PathBuf>,
    pub profiles: Vec<(String, PathBuf)>,
}

/// A service under load for the whole bench.
pub struct Service {
    pub target: Target,
    port: u16,
    proc: Proc,
    /// Whether wrk can drive it with `Connection: close` (see [`load::answers_close`]; false
    /// for gRPC, which has no such scenario).
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
                let w = if target.is_grpc() {
                    load::grpc(&warm, &self.logs.join("grpc-latencies.txt"))?
                } else {
                    load::wrk(&warm, &self.script)?
                };
                proc.check_running()?;
                let wrk_close = !target.is_grpc() && load::answers_close(port)?;
                let info = format!(
                    "pid {}, warm-up {:.0} req/s{}",
                    proc.pid(),
                    w.rps(),
                    if wrk_close || target.is_grpc() {
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

    /// Starts `n` idle copies of `target`'s service (the 50-procs scenario), each on its own
    /// port, logging to services.log; stopped on drop.
    pub fn start_copies(&self, target: Target, n: usize) -> Result<Vec<Proc>> {
        let mut copies = Vec::with_capacity(n);
        Step::start(
            "bench",
            format!("start {n} idle copies of {}", target.label()),
        )
        .run(|_| {
            for _ in 0..n {
                procs::check_interrupt()?;
                copies.push(target.start(procs::free_port()?, &self.logs.join("services.log"))?);
            }
            Ok(Outcome::Done)
        })?;
        Ok(copies)
    }

    /// One run of `sc` in `arm`. With `stats`, `kernel.bpf_stats_enabled` is on from just before
    /// the agent's idle sample to the end of the load's accounting, and the programs' run time
    /// is what the run is for; otherwise it stays off.
    pub fn run(
        &mut self,
        sc: &Scenario,
        svc: &mut Service,
        arm: Arm,
        stats: bool,
        copies: &[u32],
    ) -> Result<Run> {
        svc.proc.check_running()?;
        let spec = Spec {
            port: svc.port,
            close: sc.close,
            rate: sc.rate,
            secs: self.secs,
            tag: procs::random_u32()?,
        };
        let agent = self.start_agent(arm, svc.proc.pid(), copies)?;
        // After the agent is ready, so it sees them accepted; closed when the run ends.
        let idle = match sc.scale {
            Scale::IdleConns => Some(IdleConns::open(svc.port, IDLE_CONNS)?),
            _ => None,
        };
        let _stats_on = if stats {
            Some(agent::StatsOn::new()?)
        } else {
            None
        };
        let mut baseline = None;
        if agent.is_none() && idle.is_some() {
            // As long as an agent's idle sample: the service settles after 10,000 accepts.
            thread::sleep(BACKGROUND);
        }
        if let Some(a) = &agent {
            let idle = agent::progs(a.pid())?;
            thread::sleep(BACKGROUND);
            baseline = Some(Baseline {
                idle,
                progs: agent::progs(a.pid())?,
                cpu: agent::cpu_secs(a.pid())?,
                at: Instant::now(),
            });
        }
        let label = sc.label();
        let recording = match (&self.profile_dir, &agent) {
            (Some(dir), Some(a))
                if arm == Arm::Agent
                    && !stats
                    && !self.profiles.iter().any(|(l, _)| *l == label) =>
            {
                let file = dir.join(format!("{}.data", self.profiles.len()));
                Some(profile::record(a.pid(), self.secs, &file)?)
            }
            _ => None,
        };
        let load = match sc.rate {
            _ if sc.target.is_grpc() => load::grpc(&spec, &self.logs.join("grpc-latencies.txt"))?,
            Some(_) => load::generate(&spec, load::RATE_WORKERS)?,
            None if sc.close && !svc.wrk_close => load::generate(&spec, load::CLOSE_WORKERS)?,
            None => load::wrk(&spec, &self.script)?,
        };
        if let Some(r) = recording {
            self.profiles.push((label, r.finish()?));
        }
        svc.proc.check_running()?;
        if load.requests == 0 {
            bail!(
                "no request succeeded ({} errors, first: {})",
                load.errors,
                load.first_error.as_deref().unwrap_or("none")
            );
        }
        let (Some(mut agent), Some(baseline)) = (agent, baseline) else {
            drop(idle);
            let (n, wall) = agent::unrelated_syscalls(MICRO_LOAD)?;
            return Ok(Run {
                scenario: 0,
                round: 0,
                arm,
                stats,
                syscall_wall_ns: wall.as_secs_f64() * 1e9 / f64_of(n),
                load,
                agent: None,
            });
        };
        let figures = self.measure(&mut agent, &load, &baseline)?;
        drop(idle);
        let (syscall_wall_ns, syscall_bpf_ns, stats_ns) = syscall_figures(&agent, stats)?;
        agent.stop()?;
        self.receiver.check()?;
        Ok(Run {
            scenario: 0,
            round: 0,
            arm,
            stats,
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

    /// A fresh agent for `arm` (none without), tracing the service and its idle copies.
    fn start_agent(&self, arm: Arm, pid: u32, copies: &[u32]) -> Result<Option<Agent>> {
        let (bin, log) = match arm {
            Arm::Without => return Ok(None),
            Arm::Floor => (&self.floor_bin, "floor-agent.log"),
            Arm::Agent => (&self.agent_bin, "agent.log"),
        };
        let pids: Vec<u32> = std::iter::once(pid).chain(copies.iter().copied()).collect();
        Agent::start(
            bin,
            &pids,
            &self.receiver.endpoint(),
            &self.logs.join(log),
            &self.agent_args,
        )
        .map(Some)
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
            prog_fds: progs.len(),
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

/// The micro-load with the agent running: wall time per unrelated syscall with the statistics
/// off (they cost two clock reads per program run, which must not count as the agent's); in a
/// statistics pass also the eBPF time per syscall with them on, and the wall-time difference,
/// what the statistics themselves cost here, reported so the figures can be read. Returns
/// (wall ns, eBPF ns, statistics ns) per syscall.
fn syscall_figures(agent: &Agent, stats: bool) -> Result<(f64, f64, f64)> {
    agent::set_bpf_stats(false)?;
    let (n, wall_off) = agent::unrelated_syscalls(MICRO_LOAD)?;
    let per = |d: Duration| d.as_secs_f64() * 1e9 / f64_of(n);
    if !stats {
        return Ok((per(wall_off), 0.0, 0.0));
    }
    agent::set_bpf_stats(true)?;
    let before = agent::progs(agent.pid())?;
    let wall_on = agent::unrelated_syscalls(MICRO_LOAD);
    let after = agent::progs(agent.pid());
    agent::set_bpf_stats(false)?;
    let (_, wall_on) = wall_on?;
    let ns: u64 = agent::delta(&before, &after?).iter().map(|d| d.1).sum();
    Ok((
        per(wall_off),
        f64_of(ns) / f64_of(n),
        per(wall_on) - per(wall_off),
    ))
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
