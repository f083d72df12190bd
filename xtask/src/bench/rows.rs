//! The figures of each scenario over its rounds: medians with their range, the runs of each
//! round (without, floor, agent; statistics off), the statistics passes, and one table row per
//! scenario. The report prints them, the budgets judge them.

use super::{AgentFigures, Arm, Run, Scenario, agent::f64_of, load::percentile};

/// A fixed-rate scenario whose "without" run lagged this far behind the schedule (p99), or left
/// requests unsent, means the service alone cannot sustain the rate: its latencies measure a
/// queue, not the agent. (A busy machine delays wake-ups by a few ms; a queue grows far beyond.)
const SATURATED_LAG_NS: u64 = 20_000_000;

pub fn us(ns: u64) -> f64 {
    f64_of(ns) / 1000.0
}

pub fn mb(kib: u64) -> f64 {
    f64_of(kib) * 1024.0 / 1e6
}

/// Median and range of a few values.
#[derive(Clone, Copy)]
pub struct Stat {
    pub med: f64,
    pub min: f64,
    pub max: f64,
}

pub fn stat(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    };
    Some(Stat {
        med,
        min: v[0],
        max: v[n - 1],
    })
}

/// `median [min-max]`, or just the value when all rounds agree (or there was one).
pub fn show(s: Option<Stat>, prec: usize, signed: bool) -> String {
    let Some(s) = s else { return "-".to_owned() };
    let one = |x: f64| {
        if signed {
            format!("{x:+.prec$}")
        } else {
            format!("{x:.prec$}")
        }
    };
    if one(s.min) == one(s.max) {
        one(s.med)
    } else {
        format!("{} [{}..{}]", one(s.med), one(s.min), one(s.max))
    }
}

/// The runs of one round of one scenario, all with the eBPF statistics off.
pub struct Round<'a> {
    pub without: &'a Run,
    pub floor: Option<&'a Run>,
    pub agent: &'a Run,
}

/// The rounds of scenario `index` that have both a run without and one with the agent.
pub fn rounds(runs: &[Run], index: usize) -> Vec<Round<'_>> {
    let of = |arm: Arm| {
        runs.iter()
            .filter(move |r| r.scenario == index && r.arm == arm && !r.stats)
    };
    of(Arm::Without)
        .filter_map(|a| {
            Some(Round {
                without: a,
                floor: of(Arm::Floor).find(|f| f.round == a.round),
                agent: of(Arm::Agent).find(|b| b.round == a.round)?,
            })
        })
        .collect()
}

/// The statistics passes of scenario `index` in `arm`, with their agent's figures.
pub fn stats_passes(runs: &[Run], index: usize, arm: Arm) -> Vec<(&Run, &AgentFigures)> {
    runs.iter()
        .filter(|r| r.scenario == index && r.arm == arm && r.stats)
        .filter_map(|r| Some((r, r.agent.as_ref()?)))
        .collect()
}

/// eBPF run time per completed request of a statistics pass.
pub fn bpf_per_request(r: &Run, a: &AgentFigures) -> f64 {
    f64_of(a.bpf_ns()) / f64_of(r.load.requests)
}

/// Figures of one scenario over its rounds.
pub struct Row {
    pub sc: Scenario,
    pub saturated: bool,
    pub cells: Vec<String>,
    /// Agent throughput / without, per round.
    pub ratio: Option<Stat>,
    /// Floor throughput / without, per round.
    pub floor_ratio: Option<Stat>,
    pub p99_delta: Option<Stat>,
    pub millicores: Option<Stat>,
    /// eBPF ns per request, agent and floor, from the statistics passes.
    pub bpf_per_req: Option<Stat>,
    pub floor_bpf_per_req: Option<Stat>,
    pub drops: u64,
    pub span_mismatches: usize,
    pub runs: usize,
}

impl Row {
    /// The agent's eBPF time per request as a multiple of the floor's (medians).
    pub fn floor_multiple(&self) -> Option<f64> {
        let (a, f) = (self.bpf_per_req?, self.floor_bpf_per_req?);
        (f.med > 0.0).then(|| a.med / f.med)
    }
}

pub fn row(
    sc: Scenario,
    rounds: &[Round<'_>],
    agent_stats: &[(&Run, &AgentFigures)],
    floor_stats: &[(&Run, &AgentFigures)],
) -> Row {
    let agent = |f: &dyn Fn(&Run, &AgentFigures) -> f64| {
        stat(
            rounds
                .iter()
                .filter_map(|r| Some(f(r.agent, r.agent.agent.as_ref()?))),
        )
    };
    let lat = |r: &Run, q: f64| us(percentile(&r.load.latencies, q));
    let added = |arm: Arm, q: f64| {
        stat(rounds.iter().filter_map(|r| {
            let with = if arm == Arm::Floor { r.floor? } else { r.agent };
            Some(lat(with, q) - lat(r.without, q))
        }))
    };
    let rps_ratio = |arm: Arm| {
        stat(rounds.iter().filter_map(|r| {
            let with = if arm == Arm::Floor { r.floor? } else { r.agent };
            Some(with.load.rps() / r.without.load.rps())
        }))
    };
    let ratio = rps_ratio(Arm::Agent);
    let floor_ratio = rps_ratio(Arm::Floor);
    let p99_delta = added(Arm::Agent, 0.99);
    let millicores = agent(&|_, a| a.millicores);
    let bpf_per_req = stat(agent_stats.iter().map(|(r, a)| bpf_per_request(r, a)));
    let floor_bpf_per_req = stat(floor_stats.iter().map(|(r, a)| bpf_per_request(r, a)));
    let saturated = sc.rate.is_some()
        && rounds.iter().any(|r| {
            let a = r.without;
            a.load.lag_p99.unwrap_or(0) > SATURATED_LAG_NS || a.load.errors + a.load.unsent > 0
        });
    let pct = |s: Option<Stat>| show(s.map(|s| scale(s, 100.0)), 1, false) + " %";
    let mut cells = vec![sc.target.label().to_owned(), sc.conn_label()];
    if sc.rate.is_none() {
        cells.extend([
            show(stat(rounds.iter().map(|r| r.without.load.rps())), 0, false),
            pct(floor_ratio),
            show(stat(rounds.iter().map(|r| r.agent.load.rps())), 0, false),
            pct(ratio),
        ]);
    } else {
        cells.extend([
            sc.load_label() + if saturated { " (target saturated)" } else { "" },
            show(stat(rounds.iter().map(|r| lat(r.without, 0.5))), 0, false),
            show(added(Arm::Floor, 0.5), 0, true),
            show(added(Arm::Agent, 0.5), 0, true),
            show(stat(rounds.iter().map(|r| lat(r.without, 0.99))), 0, false),
            show(added(Arm::Floor, 0.99), 0, true),
            show(p99_delta, 0, true),
        ]);
    }
    let with_runs = || {
        rounds
            .iter()
            .filter_map(|r| Some((r.agent, r.agent.agent.as_ref()?)))
    };
    let mut row = Row {
        sc,
        saturated,
        cells: Vec::new(),
        ratio,
        floor_ratio,
        p99_delta,
        millicores,
        bpf_per_req,
        floor_bpf_per_req,
        drops: with_runs()
            .map(|(_, a)| a.kernel_drops + a.user_drops)
            .sum(),
        span_mismatches: with_runs()
            .filter(|(r, a)| a.server_spans != r.load.requests)
            .count(),
        runs: rounds.len(),
    };
    cells.extend(agent_cells(&row, rounds));
    row.cells = cells;
    row
}

/// The columns every table has: CPU, RSS, eBPF time, spans, drops.
fn agent_cells(row: &Row, rounds: &[Round<'_>]) -> [String; 8] {
    let agent = |f: &dyn Fn(&Run, &AgentFigures) -> f64| {
        stat(
            rounds
                .iter()
                .filter_map(|r| Some(f(r.agent, r.agent.agent.as_ref()?))),
        )
    };
    let floor = |f: &dyn Fn(&Run, &AgentFigures) -> f64| {
        stat(rounds.iter().filter_map(|r| {
            let run = r.floor?;
            Some(f(run, run.agent.as_ref()?))
        }))
    };
    [
        format!(
            "{} / {}",
            show(row.millicores, 0, false),
            show(floor(&|_, a| a.millicores), 0, false)
        ),
        show(agent(&|_, a| mb(a.peak_rss_kib)), 1, false),
        show(row.bpf_per_req, 0, false),
        show(row.floor_bpf_per_req, 0, false),
        row.floor_multiple()
            .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}x")),
        show(
            agent(&|r, a| f64_of(a.server_spans) / r.load.secs),
            0,
            false,
        ),
        format!(
            "{} / {}",
            show(agent(&|_, a| f64_of(a.kernel_drops)), 0, false),
            show(agent(&|_, a| f64_of(a.user_drops)), 0, false)
        ),
        show(
            stat(
                rounds
                    .iter()
                    .filter_map(|r| Some((r.agent, r.agent.agent.as_ref()?)))
                    .map(|(r, a)| f64_of(a.server_spans) - f64_of(r.load.requests)),
            ),
            0,
            true,
        ),
    ]
}

pub fn scale(s: Stat, k: f64) -> Stat {
    Stat {
        med: s.med * k,
        min: s.min * k,
        max: s.max * k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{ProgRun, Scale, load::LoadResult, procs::Target};

    fn run(arm: Arm, stats: bool, requests: u64, bpf_ns: u64) -> Run {
        Run {
            scenario: 0,
            round: 1,
            arm,
            stats,
            load: LoadResult {
                tool: "wrk",
                requests,
                errors: 0,
                unsent: 0,
                first_error: None,
                secs: 1.0,
                latencies: Vec::new(),
                lag_p99: None,
            },
            syscall_wall_ns: 0.0,
            agent: (arm != Arm::Without).then(|| AgentFigures {
                millicores: 100.0,
                peak_rss_kib: 1024,
                rss_kib: 1024,
                progs: vec![ProgRun {
                    name: "p".into(),
                    insns: 1,
                    ns: bpf_ns,
                    runs: requests,
                }],
                syscall_bpf_ns: 0.0,
                stats_ns: 0.0,
                prog_fds: 25,
                server_spans: if arm == Arm::Agent { requests } else { 0 },
                spans_built: 0,
                kernel_drops: 0,
                user_drops: 0,
            }),
        }
    }

    #[test]
    fn ratios_come_from_statistics_off_runs_and_ebpf_time_from_the_passes() {
        let runs = vec![
            run(Arm::Without, false, 1000, 0),
            run(Arm::Floor, false, 990, 0),
            run(Arm::Agent, false, 800, 0),
            // The passes' throughput must not count; only their eBPF time.
            run(Arm::Floor, true, 500, 50_000),
            run(Arm::Agent, true, 400, 400_000),
        ];
        let sc = Scenario {
            target: Target::Go,
            close: false,
            rate: None,
            scale: Scale::Plain,
        };
        let rounds = rounds(&runs, 0);
        assert_eq!(rounds.len(), 1);
        let r = row(
            sc,
            &rounds,
            &stats_passes(&runs, 0, Arm::Agent),
            &stats_passes(&runs, 0, Arm::Floor),
        );
        let near = |s: Option<Stat>, v: f64| (s.expect("measured").med - v).abs() < 1e-9;
        assert!(near(r.ratio, 0.8));
        assert!(near(r.floor_ratio, 0.99));
        assert!(near(r.bpf_per_req, 1000.0));
        assert!(near(r.floor_bpf_per_req, 100.0));
        assert!((r.floor_multiple().expect("both measured") - 10.0).abs() < 1e-9);
        assert_eq!(r.span_mismatches, 0);
    }
}
