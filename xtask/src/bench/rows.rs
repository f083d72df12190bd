//! The figures of each scenario over its rounds: medians with their range, the with/without
//! pairs of each round, and one table row per scenario. The report prints them, the budgets
//! judge them.

use super::{AgentFigures, Run, Scenario, agent::f64_of, load::percentile};

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

/// The (without, with) runs of scenario `index`, one pair per round.
pub fn pairs(runs: &[Run], index: usize) -> Vec<(&Run, &Run)> {
    let of = |with: bool| {
        runs.iter()
            .filter(move |r| r.scenario == index && r.agent.is_some() == with)
    };
    of(false)
        .filter_map(|a| Some((a, of(true).find(|b| b.round == a.round)?)))
        .collect()
}

/// Figures of one scenario over its rounds.
pub struct Row {
    pub sc: Scenario,
    pub saturated: bool,
    pub cells: Vec<String>,
    pub ratio: Option<Stat>,
    pub p99_delta: Option<Stat>,
    pub millicores: Option<Stat>,
    pub bpf_per_req: Option<Stat>,
    pub drops: u64,
    pub span_mismatches: usize,
    pub runs: usize,
}

pub fn row(sc: Scenario, pairs: &[(&Run, &Run)]) -> Row {
    let agent = |f: &dyn Fn(&Run, &AgentFigures) -> f64| {
        stat(
            pairs
                .iter()
                .filter_map(|(_, b)| Some(f(b, b.agent.as_ref()?))),
        )
    };
    let lat = |r: &Run, q: f64| us(percentile(&r.load.latencies, q));
    let ratio = stat(pairs.iter().map(|(a, b)| b.load.rps() / a.load.rps()));
    let p99_delta = stat(pairs.iter().map(|(a, b)| lat(b, 0.99) - lat(a, 0.99)));
    let millicores = agent(&|_, a| a.millicores);
    let bpf_per_req = agent(&|r, a| f64_of(a.bpf_ns()) / f64_of(r.load.requests));
    let saturated = sc.rate.is_some()
        && pairs.iter().any(|(a, _)| {
            a.load.lag_p99.unwrap_or(0) > SATURATED_LAG_NS || a.load.errors + a.load.unsent > 0
        });
    let mut cells = vec![sc.target.label().to_owned(), sc.conn_label().to_owned()];
    if sc.rate.is_none() {
        cells.extend([
            show(stat(pairs.iter().map(|(a, _)| a.load.rps())), 0, false),
            show(stat(pairs.iter().map(|(_, b)| b.load.rps())), 0, false),
            show(ratio.map(|s| scale(s, 100.0)), 1, false) + " %",
        ]);
    } else {
        cells.extend([
            sc.load_label() + if saturated { " (target saturated)" } else { "" },
            show(stat(pairs.iter().map(|(a, _)| lat(a, 0.5))), 0, false),
            show(
                stat(pairs.iter().map(|(a, b)| lat(b, 0.5) - lat(a, 0.5))),
                0,
                true,
            ),
            show(stat(pairs.iter().map(|(a, _)| lat(a, 0.99))), 0, false),
            show(p99_delta, 0, true),
        ]);
    }
    let with_runs = || {
        pairs
            .iter()
            .filter_map(|(_, b)| Some((b, b.agent.as_ref()?)))
    };
    cells.extend([
        show(millicores, 0, false),
        show(agent(&|_, a| mb(a.peak_rss_kib)), 1, false),
        show(bpf_per_req, 0, false),
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
            stat(with_runs().map(|(r, a)| f64_of(a.server_spans) - f64_of(r.load.requests))),
            0,
            true,
        ),
    ]);
    Row {
        sc,
        saturated,
        cells,
        ratio,
        p99_delta,
        millicores,
        bpf_per_req,
        drops: with_runs()
            .map(|(_, a)| a.kernel_drops + a.user_drops)
            .sum(),
        span_mismatches: with_runs()
            .filter(|(r, a)| a.server_spans != r.load.requests)
            .count(),
        runs: pairs.len(),
    }
}

pub fn scale(s: Stat, k: f64) -> Stat {
    Stat {
        med: s.med * k,
        min: s.min * k,
        max: s.max * k,
    }
}
