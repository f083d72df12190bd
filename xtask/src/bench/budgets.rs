//! The budgets of the README, each checked against the measured figures: PASS, FAIL or n/a (no
//! scenario measured it). Each takes the worst plain scenario's median over rounds; the agent's
//! figures come from its runs with the eBPF statistics off, its eBPF time from its statistics
//! passes.

use super::{
    AgentFigures,
    rows::{Row, Stat, mb, scale},
};

/// The budget lines: name, measured figure, PASS/FAIL.
pub fn lines(rows: &[Row], with: &[&AgentFigures], syscall_bpf: Option<Stat>) -> Vec<Vec<String>> {
    let line = |name: &str, measured: String, pass: Option<bool>| {
        let verdict = match pass {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        };
        vec![name.to_owned(), measured, verdict.to_owned()]
    };
    let fixed = |r: &Row, rate: u32| r.sc.rate == Some(rate) && !r.saturated;
    let mut out = vec![
        worst(
            "throughput with agent >= 97% of without, saturation, keep-alive",
            rows.iter().filter(|r| r.sc.rate.is_none() && !r.sc.close),
            |r| r.ratio.map(|s| scale(s, 100.0)),
            (false, 97.0, " %"),
        ),
        worst(
            "p99 latency added <= 50 us at 1k req/s",
            rows.iter().filter(|r| fixed(r, 1000)),
            |r| r.p99_delta,
            (true, 50.0, " us"),
        ),
        worst(
            "agent CPU <= 100 millicores at 5k req/s",
            rows.iter().filter(|r| fixed(r, 5000)),
            |r| r.millicores,
            (true, 100.0, " mcores"),
        ),
    ];
    let peak = with.iter().map(|a| a.peak_rss_kib).max();
    out.push(line(
        "peak RSS <= 40 MB",
        peak.map_or("-".into(), |k| format!("max {:.1} MB over all runs", mb(k))),
        peak.map(|k| mb(k) <= 40.0),
    ));
    out.push(worst(
        "eBPF time <= 500 ns per traced request (statistics pass)",
        rows.iter(),
        |r| r.bpf_per_req,
        (true, 500.0, " ns"),
    ));
    out.push(line(
        "eBPF time <= 50 ns per unrelated syscall (statistics pass)",
        syscall_bpf.map_or("-".into(), |s| format!("{:.1} ns", s.med)),
        syscall_bpf.map(|s| s.med <= 50.0),
    ));
    let five: Vec<&Row> = rows.iter().filter(|r| fixed(r, 5000)).collect();
    let drops: u64 = five.iter().map(|r| r.drops).sum();
    out.push(line(
        "zero drops at 5k req/s",
        format!(
            "{drops} dropped in {} runs",
            five.iter().map(|r| r.runs).sum::<usize>()
        ),
        (!five.is_empty()).then_some(drops == 0),
    ));
    let sat_drops: u64 = rows
        .iter()
        .filter(|r| r.sc.rate.is_none())
        .map(|r| r.drops)
        .sum();
    out.push(line(
        "drops beyond saturation counted and reported",
        format!("{sat_drops} counted (kernel + user) in the saturation runs, in the table"),
        Some(true),
    ));
    let below: Vec<&Row> = rows
        .iter()
        .filter(|r| r.sc.rate.is_some() && !r.saturated)
        .collect();
    let bad: Vec<String> = below
        .iter()
        .filter(|r| r.span_mismatches > 0)
        .map(|r| format!("{} ({} runs)", r.sc.label(), r.span_mismatches))
        .collect();
    out.push(line(
        "exported SERVER spans = completed requests below saturation",
        if bad.is_empty() {
            format!(
                "equal in all {} runs",
                below.iter().map(|r| r.runs).sum::<usize>()
            )
        } else {
            format!("differ in {}", bad.join("; "))
        },
        (!below.is_empty()).then_some(bad.is_empty()),
    ));
    let saturated: Vec<String> = rows
        .iter()
        .filter(|r| r.saturated)
        .map(|r| r.sc.label())
        .collect();
    if !saturated.is_empty() {
        out.push(line(
            "(fixed-rate scenarios the service cannot sustain alone, not counted above)",
            saturated.join("; "),
            None,
        ));
    }
    out
}

/// A budget line from the worst median over `rows`: `(higher_is_worse, limit, unit)`.
fn worst<'a>(
    name: &str,
    rows: impl Iterator<Item = &'a Row>,
    value: impl Fn(&Row) -> Option<Stat>,
    (higher_is_worse, limit, unit): (bool, f64, &str),
) -> Vec<String> {
    let sign = if higher_is_worse { 1.0 } else { -1.0 };
    let w = rows
        .filter_map(|r| Some((r, value(r)?)))
        .max_by(|a, b| (sign * a.1.med).total_cmp(&(sign * b.1.med)));
    let Some((r, s)) = w else {
        return vec![name.to_owned(), "-".to_owned(), "n/a".to_owned()];
    };
    let pass = if higher_is_worse {
        s.med <= limit
    } else {
        s.med >= limit
    };
    vec![
        name.to_owned(),
        format!("worst {:.1}{unit} ({})", s.med, r.sc.label()),
        (if pass { "PASS" } else { "FAIL" }).to_owned(),
    ]
}
