//! The bench's figures: per-run progress summaries, the tables (printed and written to
//! target/bench/results.md), the budgets of the README with PASS/FAIL, runs.tsv and the plot.
//!
//! Every "with agent" figure is a median with [min-max] over rounds; deltas and ratios pair each
//! "with" run with the "without" run of the same round, which ran just before it.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context as _, Result};

use super::{
    AgentFigures, Conditions, ProgRun, Run, Scenario,
    agent::f64_of,
    load::{self, percentile},
    plot,
    rows::{Row, mb, pairs, row, show, stat, us},
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
    if let Some(a) = &run.agent {
        let _ = write!(
            s,
            "; agent {:.0} mcores, {:.1} MB, {:.0} ns eBPF/request, {} SERVER spans, drops {}/{}",
            a.millicores,
            mb(a.peak_rss_kib),
            f64_of(a.bpf_ns()) / f64_of(l.requests),
            a.server_spans,
            a.kernel_drops,
            a.user_drops
        );
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

const AGENT_COLS: [&str; 6] = [
    "agent CPU (mcores)",
    "peak RSS (MB)",
    "eBPF ns/request",
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
        let mut v: Vec<u64> = runs
            .iter()
            .filter(|r| r.scenario == i && r.agent.is_some() == with)
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
        .map(|(i, sc)| row(*sc, &pairs(runs, i)))
        .collect();
    let mut md = format!(
        "# cargo xtask bench\n\n{} round(s) of {} s per run, each scenario without then with the \
         agent; median [min..max] over rounds. Machine: {}; other processes kept {:.1} CPUs busy \
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
        "with (req/s)",
        "with/without",
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
        "p50 added (us)",
        "p99 without (us)",
        "p99 added (us)",
    ];
    header.extend(AGENT_COLS);
    if !cells(true).is_empty() {
        md +=
            "## Fixed rates (open-loop generator; latency from request write to response end)\n\n";
        md += &table(&header, &cells(true));
    }
    let with: Vec<&AgentFigures> = runs.iter().filter_map(|r| r.agent.as_ref()).collect();
    let syscall_bpf = stat(with.iter().map(|a| a.syscall_bpf_ns));
    let wall = |w: bool| {
        stat(
            runs.iter()
                .filter(|r| r.agent.is_some() == w)
                .map(|r| r.syscall_wall_ns),
        )
    };
    let _ = write!(
        md,
        "\nUnrelated syscalls (1-byte writes to /dev/null and reads from /dev/zero by an untraced \
         process, {} per run): eBPF {} ns per syscall; wall time per syscall {} ns without the \
         agent, {} ns with (eBPF statistics off; turning them on adds {} ns per syscall here, which \
         the with-agent runs also pay). Agent RSS at the end of the runs: {} MB (the peak is in \
         the tables).\n",
        2 * super::run::MICRO_LOAD,
        show(syscall_bpf, 1, false),
        show(wall(false), 0, false),
        show(wall(true), 0, false),
        show(stat(with.iter().map(|a| a.stats_ns)), 0, false),
        show(stat(with.iter().map(|a| mb(a.rss_kib))), 1, false),
    );
    md += &programs(scenarios, runs);
    md += "\n## Budgets\n\n";
    md += &table(
        &["budget", "measured", "result"],
        &super::budgets::lines(&rows, &with, syscall_bpf),
    );
    md += NOTES;
    md
}

const NOTES: &str = "\nColumns: `agent CPU` is the agent's user+system time from the start of \
the load until it had built the run's spans, per second of load; `peak RSS` is its VmHWM; `eBPF \
ns/request` is the run time of all its programs during the load (kernel.bpf_stats_enabled), less \
what they ran for other processes while the agent was idle just before, divided by the requests \
completed: it includes filtering out the load generator's own syscalls on this loopback setup; \
`spans - requests` compares the SERVER spans the bench's OTLP receiver got with the requests the \
load completed (at saturation wrk stops with requests in flight). Saturation runs use wrk, except \
where a service closes connections without saying so (Python), where the generator runs back to \
back on 4 connections.\n\n![latency](latency.svg)\n";

/// Where the eBPF time goes: per program, its size, its mean cost per run over all runs, and in
/// each fixed-rate scenario its time and runs per request (medians over rounds).
fn programs(scenarios: &[Scenario], runs: &[Run]) -> String {
    let fixed: Vec<usize> = (0..scenarios.len())
        .filter(|i| scenarios[*i].rate.is_some())
        .collect();
    let all = || runs.iter().filter_map(|r| Some((r, r.agent.as_ref()?)));
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
    let pooled = |name: &str, f: &dyn Fn(&ProgRun) -> u64| -> u64 {
        all()
            .flat_map(|(_, a)| &a.progs)
            .filter(|p| p.name == name)
            .map(f)
            .sum()
    };
    names.sort_by_key(|n| std::cmp::Reverse(pooled(&n.0, &|p| p.ns)));
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|(name, insns)| {
            let ns_per_run =
                f64_of(pooled(name, &|p| p.ns)) / f64_of(pooled(name, &|p| p.runs).max(1));
            let mut row = vec![name.clone(), insns.to_string(), format!("{ns_per_run:.0}")];
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
            let target = match sc.target {
                super::procs::Target::Go => "Go",
                super::procs::Target::Python => "Py",
            };
            format!(
                "{target} {} {}",
                if sc.close { "new" } else { "ka" },
                sc.load_label().replace(" req/s", "")
            )
        })
        .collect();
    let mut header = vec!["eBPF program", "verified insns", "ns/run"];
    header.extend(short.iter().map(String::as_str));
    format!(
        "\n## Where the eBPF time goes\n\nPer program: instructions the verifier processed, mean \
         run time over all runs, and per request in each fixed-rate scenario `ns (runs)` (ka: \
         keep-alive, new: a new connection per request). Runs include the load generator's own \
         syscalls, which the programs must filter out.\n\n{}",
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
        "round\tservice\tconnections\tload\tagent\ttool\trequests\terrors\tunsent\tsecs\treq_per_s\tp50_us\tp99_us\t\
         lag_p99_us\tagent_mcores\tpeak_rss_kib\trss_kib\tebpf_ns\tserver_spans\tspans_built\tkernel_drops\t\
         user_drops\tsyscall_wall_ns\tsyscall_ebpf_ns\tstats_ns\n",
    );
    for r in runs {
        let sc = &scenarios[r.scenario];
        let l = &r.load;
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.1}\t{:.1}\t{:.1}\t{:.1}",
            r.round,
            sc.target.label(),
            sc.conn_label(),
            sc.load_label(),
            u8::from(r.agent.is_some()),
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
                    "\t{:.1}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    a.millicores,
                    a.peak_rss_kib,
                    a.rss_kib,
                    a.bpf_ns(),
                    a.server_spans,
                    a.spans_built,
                    a.kernel_drops,
                    a.user_drops
                );
            }
            None => out.push_str("\t\t\t\t\t\t\t\t"),
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
