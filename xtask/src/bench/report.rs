//! The bench's figures: per-run progress summaries, the tables (printed and written to
//! target/bench/results.md), the budgets of the README with PASS/FAIL, runs.tsv and the plot.
//!
//! Every "with agent" figure is a median with [min-max] over rounds; deltas and ratios pair each
//! floor or agent run with the run without the agent of the same round, which ran just before
//! it. Throughput, latency, CPU, RSS and spans come from runs with the eBPF statistics off;
//! eBPF time per request and per program from the statistics passes only.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    AgentFigures, Arm, Conditions, ProgRun, Run, Scale, Scenario,
    agent::f64_of,
    load::{self, percentile},
    plot,
    rows::{Row, bpf_per_request, mb, rounds, row, show, stat, stats_passes, us},
};

/// One line after each run's progress line.
pub fn run_summary(sc: &Scenario, run: &Run) -> String {
    let l = &run.load;
    let mut s = format!("{:.0} req/s ({})", l.rps(), l.tool);
    if sc.rate.is_some() {
        let _ = write!(
            s,
            ", p50 {:.0} us, p99 {:.0} us, lag p99 {:.0} us",
            us(percentile(&l.latencies, 0.5)),
            us(percentile(&l.latencies, 0.99)),
            us(l.lag_p99.unwrap_or(0))
        );
    }
    if l.unsent > 0 {
        let _ = write!(s, ", {} not sent (the service fell behind)", l.unsent);
    }
    if l.errors > 0 {
        let _ = write!(
            s,
            ", {} errors ({})",
            l.errors,
            l.first_error.as_deref().unwrap_or("?")
        );
    }
    match &run.agent {
        Some(a) if run.stats => {
            let _ = write!(
                s,
                "; eBPF {:.0} ns/request over {} programs (statistics on: throughput not used)",
                bpf_per_request(run, a),
                a.prog_fds
            );
        }
        Some(a) => {
            let _ = write!(
                s,
                "; {} {:.0} mcores, {:.1} MB, {} programs, {} SERVER spans, drops {}/{}",
                if run.arm == Arm::Floor {
                    "floor agent"
                } else {
                    "agent"
                },
                a.millicores,
                mb(a.peak_rss_kib),
                a.prog_fds,
                a.server_spans,
                a.kernel_drops,
                a.user_drops
            );
        }
        None => {}
    }
    s
}

/// A Markdown table with padded columns, readable as printed text too.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::from("|");
        for (c, w) in cells.zip(&widths) {
            let _ = write!(s, " {c:<w$} |");
        }
        s.push('\n');
        s
    };
    let dashes = "-".repeat(widths.iter().copied().max().unwrap_or(0));
    let dashes = dashes.as_str();
    let mut out = line(&mut header.iter().copied());
    out += &line(&mut widths.iter().map(|w| dashes.get(..*w).unwrap_or(dashes)));
    for r in rows {
        out += &line(&mut r.iter().map(String::as_str));
    }
    out
}

const AGENT_COLS: [&str; 8] = [
    "CPU agent / floor (mcores)",
    "peak RSS (MB)",
    "eBPF ns/request (stats pass)",
    "floor eBPF ns/request",
    "x floor",
    "spans/s",
    "drops kernel / user",
    "spans - requests",
];

/// Writes results.md, latency.svg and runs.tsv under `out` and prints the tables and budgets.
pub fn write(out: &Path, scenarios: &[Scenario], runs: &[Run], cond: &Conditions) -> Result<()> {
    let md = markdown(scenarios, runs, cond);
    print!("\n{md}");
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("results.md", &md)?;
    write("runs.tsv", &tsv(scenarios, runs))?;
    let pooled = |i: usize, with: bool| {
        let arm = if with { Arm::Agent } else { Arm::Without };
        let mut v: Vec<u64> = runs
            .iter()
            .filter(|r| r.scenario == i && r.arm == arm && !r.stats)
            .flat_map(|r| r.load.latencies.iter().copied())
            .collect();
        v.sort_unstable();
        v
    };
    let panels: Vec<plot::Panel> = scenarios
        .iter()
        .enumerate()
        .filter(|(_, sc)| sc.rate.is_some())
        .map(|(i, sc)| plot::Panel {
            title: sc.label(),
            without: pooled(i, false),
            with: pooled(i, true),
        })
        .collect();
    write("latency.svg", &plot::svg(&panels))
}

fn markdown(scenarios: &[Scenario], runs: &[Run], cond: &Conditions) -> String {
    let rows: Vec<Row> = scenarios
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            row(
                *sc,
                &rounds(runs, i),
                &stats_passes(runs, i, Arm::Agent),
                &stats_passes(runs, i, Arm::Floor),
            )
        })
        .collect();
    let mut md = format!(
        "# cargo xtask bench\n\n{} round(s) of {} s per run; in each round every scenario runs \
         without the agent, with the floor agent (the same attach points, programs that return at \
         once) and with the agent, all with kernel.bpf_stats_enabled off; median [min..max] over \
         rounds, floor and agent figures paired with the run without the agent of their round. \
         eBPF time comes from one more pass per scenario for each of the floor and the agent, with \
         the statistics on, in the last round. Machine: {}; other processes kept {:.1} CPUs busy \
         before the runs and {:.1} after.\n\n",
        cond.rounds,
        cond.secs,
        machine(),
        cond.busy_before,
        cond.busy_after
    );
    let cells = |fixed: bool| -> Vec<Vec<String>> {
        rows.iter()
            .filter(|r| r.sc.rate.is_some() == fixed)
            .map(|r| r.cells.clone())
            .collect()
    };
    let mut header = vec![
        "service",
        "connections",
        "without (req/s)",
        "floor % of without",
        "agent (req/s)",
        "agent % of without",
    ];
    header.extend(AGENT_COLS);
    // A section only for what ran (`--only` may leave one out).
    if !cells(false).is_empty() {
        md += "## Saturation (throughput)\n\n";
        md += &table(&header, &cells(false));
        md += "\n";
    }
    let mut header = vec![
        "service",
        "connections",
        "rate",
        "p50 without (us)",
        "p50 added, floor (us)",
        "p50 added, agent (us)",
        "p99 without (us)",
        "p99 added, floor (us)",
        "p99 added, agent (us)",
    ];
    header.extend(AGENT_COLS);
    if !cells(true).is_empty() {
        md +=
            "## Fixed rates (open-loop generator; latency from request write to response end)\n\n";
        md += &table(&header, &cells(true));
    }
    md += &scaling(&rows);
    md += &floor_check(runs);
    md += &unrelated(runs);
    md += &programs(scenarios, runs);
    let of = |arm: Arm, stats: bool| {
        runs.iter()
            .filter(move |r| r.arm == arm && r.stats == stats)
            .filter_map(|r| r.agent.as_ref())
    };
    let syscall_bpf = stat(of(Arm::Agent, true).map(|a| a.syscall_bpf_ns));
    // Budgets judge the agent (statistics-off runs, eBPF time from its statistics passes) in
    // the plain scenarios; the scaling ones are in their own table.
    let plain: Vec<Row> = rows
        .into_iter()
        .filter(|r| r.sc.scale == Scale::Plain)
        .collect();
    let with: Vec<&AgentFigures> = of(Arm::Agent, false).collect();
    md += "\n## Budgets\n\n";
    md += &table(
        &["budget", "measured", "result"],
        &super::budgets::lines(&plain, &with, syscall_bpf),
    );
    md += NOTES;
    md
}

/// The micro-load's figures: wall time per unrelated syscall in each arm, eBPF time per syscall
/// from the statistics passes, and what the statistics themselves add.
fn unrelated(runs: &[Run]) -> String {
    let of = |arm: Arm, stats: bool| {
        runs.iter()
            .filter(move |r| r.arm == arm && r.stats == stats)
            .filter_map(|r| r.agent.as_ref())
    };
    let syscall_bpf = |arm: Arm| stat(of(arm, true).map(|a| a.syscall_bpf_ns));
    let wall = |arm: Arm| {
        stat(
            runs.iter()
                .filter(|r| r.arm == arm && !r.stats)
                .map(|r| r.syscall_wall_ns),
        )
    };
    format!(
        "\nUnrelated syscalls (1-byte writes to /dev/null and reads from /dev/zero by an untraced \
         process, {} per run): wall time per syscall {} ns without the agent, {} ns with the floor \
         agent, {} ns with the agent (statistics off); eBPF {} ns per syscall for the agent, {} ns \
         for the floor (statistics passes; turning the statistics on adds {} ns per syscall here, \
         which no figure but these two includes). Agent RSS at the end of the runs: {} MB (the \
         peak is in the tables).\n",
        2 * super::run::MICRO_LOAD,
        show(wall(Arm::Without), 0, false),
        show(wall(Arm::Floor), 0, false),
        show(wall(Arm::Agent), 0, false),
        show(syscall_bpf(Arm::Agent), 1, false),
        show(syscall_bpf(Arm::Floor), 1, false),
        show(stat(of(Arm::Agent, true).map(|a| a.stats_ns)), 0, false),
        show(stat(of(Arm::Agent, false).map(|a| mb(a.rss_kib))), 1, false),
    )
}

/// The scaling scenarios next to their plain case: does the cost grow with open connections or
/// traced processes?
fn scaling(rows: &[Row]) -> String {
    let scaled: Vec<&Row> = rows.iter().filter(|r| r.sc.scale != Scale::Plain).collect();
    if scaled.is_empty() {
        return String::new();
    }
    let mut shown: Vec<&Row> = Vec::new();
    for s in &scaled {
        let plain = rows.iter().find(|r| {
            r.sc.scale == Scale::Plain
                && r.sc.target == s.sc.target
                && r.sc.close == s.sc.close
                && r.sc.rate == s.sc.rate
        });
        for r in plain.into_iter().chain([*s]) {
            if !shown.iter().any(|x| std::ptr::eq(*x, r)) {
                shown.push(r);
            }
        }
    }
    let pct = |s: Option<super::rows::Stat>| {
        show(s.map(|s| super::rows::scale(s, 100.0)), 1, false) + " %"
    };
    let lines: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.sc.base_label(),
                r.sc.scale.label().to_owned(),
                pct(r.ratio),
                pct(r.floor_ratio),
                show(r.millicores, 0, false),
                show(r.bpf_per_req, 0, false),
                r.floor_multiple()
                    .map_or_else(|| "-".to_owned(), |m| format!("{m:.1}x")),
            ]
        })
        .collect();
    format!(
        "\n## Scaling\n\nThe same load with {} more connections held open and idle (opened after \
         the agent is ready, so it saw them accepted; they send nothing), and with the agent \
         tracing {} processes (the service and {} idle copies of it), next to the plain case. \
         Agent CPU and throughput from the runs with the statistics off, eBPF time from the \
         statistics passes.\n\n{}",
        thousands(super::IDLE_CONNS),
        super::TRACED_PROCS,
        super::TRACED_PROCS - 1,
        table(
            &[
                "scenario",
                "scale",
                "agent % of without",
                "floor % of without",
                "agent CPU (mcores)",
                "eBPF ns/request (stats pass)",
                "x floor",
            ],
            &lines,
        )
    )
}

/// `10000` as `10,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Verified instructions above which a floor program was evidently not emptied (an emptied one
/// is a handful: a global's load, a test, a return).
const FLOOR_MAX_INSNS: u64 = 64;

/// The floor arm's checks: no spans, as many programs as the agent, every program emptied.
fn floor_check(runs: &[Run]) -> String {
    // (min, max) over the arm's runs.
    let held = |arm: Arm| {
        let counts = || {
            runs.iter()
                .filter(move |r| r.arm == arm)
                .filter_map(|r| r.agent.as_ref())
                .map(|a| a.prog_fds)
        };
        Some((counts().min()?, counts().max()?))
    };
    let range = |h: Option<(usize, usize)>| match h {
        None => "-".to_owned(),
        Some((lo, hi)) if lo == hi => lo.to_string(),
        Some((lo, hi)) => format!("{lo}..{hi}"),
    };
    let floor: Vec<&AgentFigures> = runs
        .iter()
        .filter(|r| r.arm == Arm::Floor)
        .filter_map(|r| r.agent.as_ref())
        .collect();
    if floor.is_empty() {
        return String::new();
    }
    let spans: u64 = floor.iter().map(|a| a.spans_built + a.server_spans).sum();
    let mut full: Vec<String> = floor
        .iter()
        .flat_map(|a| &a.progs)
        .filter(|p| p.insns > FLOOR_MAX_INSNS)
        .map(|p| format!("{} ({} insns)", p.name, p.insns))
        .collect();
    full.sort();
    full.dedup();
    let insns = floor
        .iter()
        .flat_map(|a| &a.progs)
        .map(|p| p.insns)
        .max()
        .unwrap_or(0);
    let (a, f) = (held(Arm::Agent), held(Arm::Floor));
    let same = matches!((a, f), (Some(a), Some(f)) if a.0 == f.1 && a.1 == f.0);
    format!(
        "\n## The floor arm\n\nThe floor agent is the agent built with the eBPF feature `floor`: \
         every program returns at its first line, attached to the same points in the same \
         configuration. Programs held (bpf-prog descriptors): agent {}, floor {}{}. Spans the \
         floor built or exported: {spans}{}. Largest floor program: {insns} verified \
         instructions; programs that could not be emptied: {}.\n",
        range(a),
        range(f),
        if same {
            " (the same)"
        } else {
            " (DIFFERENT: the floor does not cost what the agent's hooks cost)"
        },
        if spans == 0 {
            " (as expected)"
        } else {
            " (expected 0)"
        },
        if full.is_empty() {
            "none".to_owned()
        } else {
            full.join(", ")
        },
    )
}

const NOTES: &str = "\nColumns: throughput, latency, `CPU` (user+system time of the agent, and of \
the floor agent, from the start of the load until it had built the run's spans, per second of \
load), `peak RSS` (VmHWM), spans and drops come from runs with kernel.bpf_stats_enabled off. \
`eBPF ns/request` is the run time of all the agent's programs during the load of its statistics \
pass (the statistics on), less what they ran for other processes while the agent was idle just \
before, divided by the requests completed; it includes filtering out the load generator's own \
syscalls on this loopback setup. `floor eBPF ns/request` is the same for the floor agent, whose \
programs return at once, and `x floor` the agent's figure as a multiple of it; neither includes \
what the kernel spends reaching the hooks, which only the floor's throughput and latency show. \
`spans - requests` compares the SERVER spans the bench's OTLP receiver got with the requests the \
load completed (at saturation wrk stops with requests in flight). Saturation runs use wrk (2 \
threads, 16 connections), except where a service closes connections without saying so (Python), \
where the generator runs back to back on 4 connections. Budgets consider the plain scenarios \
only.\n\n![latency](latency.svg)\n";

/// Where the eBPF time goes: per program, its size, its mean cost per run over all runs, and in
/// each fixed-rate scenario its time and runs per request (medians over rounds).
fn programs(scenarios: &[Scenario], runs: &[Run]) -> String {
    let fixed: Vec<usize> = (0..scenarios.len())
        .filter(|i| scenarios[*i].rate.is_some())
        .collect();
    let pass = |arm: Arm| {
        runs.iter()
            .filter(move |r| r.arm == arm && r.stats)
            .filter_map(|r| Some((r, r.agent.as_ref()?)))
    };
    let all = || pass(Arm::Agent);
    let mut names: Vec<(String, u64)> = Vec::new();
    for p in all().flat_map(|(_, a)| &a.progs).filter(|p| p.runs > 0) {
        if !names.iter().any(|n| n.0 == p.name) {
            names.push((p.name.clone(), p.insns));
        }
    }
    let per_request = |name: &str, i: usize, f: &dyn Fn(&ProgRun) -> u64| {
        stat(all().filter(|(r, _)| r.scenario == i).filter_map(|(r, a)| {
            let p = a.progs.iter().find(|p| p.name == name)?;
            Some(f64_of(f(p)) / f64_of(r.load.requests))
        }))
        .map_or(0.0, |s| s.med)
    };
    let pooled_in = |arm: Arm, name: &str, f: &dyn Fn(&ProgRun) -> u64| -> u64 {
        pass(arm)
            .flat_map(|(_, a)| &a.progs)
            .filter(|p| p.name == name)
            .map(f)
            .sum()
    };
    let pooled = |name: &str, f: &dyn Fn(&ProgRun) -> u64| pooled_in(Arm::Agent, name, f);
    names.sort_by_key(|n| std::cmp::Reverse(pooled(&n.0, &|p| p.ns)));
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|(name, insns)| {
            let ns_per_run =
                f64_of(pooled(name, &|p| p.ns)) / f64_of(pooled(name, &|p| p.runs).max(1));
            let floor_runs = pooled_in(Arm::Floor, name, &|p| p.runs);
            let floor = if floor_runs == 0 {
                "-".to_owned()
            } else {
                format!(
                    "{:.0}",
                    f64_of(pooled_in(Arm::Floor, name, &|p| p.ns)) / f64_of(floor_runs)
                )
            };
            let mut row = vec![
                name.clone(),
                insns.to_string(),
                format!("{ns_per_run:.0}"),
                floor,
            ];
            for i in &fixed {
                row.push(format!(
                    "{:.0} ({:.1})",
                    per_request(name, *i, &|p| p.ns),
                    per_request(name, *i, &|p| p.runs)
                ));
            }
            row
        })
        .collect();
    let short: Vec<String> = fixed
        .iter()
        .map(|i| {
            let sc = &scenarios[*i];
            let target = sc.target.short();
            format!(
                "{target} {} {}",
                if sc.close { "new" } else { "ka" },
                sc.load_label().replace(" req/s", "")
            )
        })
        .collect();
    let mut header = vec!["eBPF program", "verified insns", "ns/run", "floor ns/run"];
    header.extend(short.iter().map(String::as_str));
    format!(
        "\n## Where the eBPF time goes\n\nPer program of the agent, from its statistics passes: \
         instructions the verifier processed, mean run time over all its runs, the same for the \
         floor's program of that name (empty: what the statistics and the call cost), and per \
         request in each fixed-rate scenario `ns (runs)` (ka: keep-alive, new: a new connection \
         per request). Runs include the load generator's own syscalls, which the programs must \
         filter out.\n\n{}",
        table(&header, &rows)
    )
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim().to_owned())
            })
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

fn tsv(scenarios: &[Scenario], runs: &[Run]) -> String {
    let mut out = String::from(
        "round\tservice\tconnections\tload\tarm\tstats_pass\ttool\trequests\terrors\tunsent\tsecs\treq_per_s\tp50_us\tp99_us\t\
         lag_p99_us\tagent_mcores\tpeak_rss_kib\trss_kib\tebpf_ns\tserver_spans\tspans_built\tkernel_drops\t\
         user_drops\tprog_fds\tsyscall_wall_ns\tsyscall_ebpf_ns\tstats_ns\n",
    );
    for r in runs {
        let sc = &scenarios[r.scenario];
        let l = &r.load;
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.1}\t{:.1}\t{:.1}\t{:.1}",
            r.round,
            sc.target.label(),
            sc.conn_label(),
            sc.load_label(),
            r.arm.short(),
            u8::from(r.stats),
            l.tool,
            l.requests,
            l.errors,
            l.unsent,
            l.secs,
            l.rps(),
            us(load::percentile(&l.latencies, 0.5)),
            us(load::percentile(&l.latencies, 0.99)),
            us(l.lag_p99.unwrap_or(0)),
        );
        match &r.agent {
            Some(a) => {
                let _ = write!(
                    out,
                    "\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    a.millicores,
                    a.peak_rss_kib,
                    a.rss_kib,
                    a.bpf_ns(),
                    a.server_spans,
                    a.spans_built,
                    a.kernel_drops,
                    a.user_drops,
                    a.prog_fds
                );
            }
            None => out.push_str("\t\t\t\t\t\t\t\t\t"),
        }
        let _ = writeln!(
            out,
            "\t{:.1}\t{}",
            r.syscall_wall_ns,
            r.agent.as_ref().map_or(String::from("\t"), |a| format!(
                "{:.1}\t{:.1}",
                a.syscall_bpf_ns, a.stats_ns
            ))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
