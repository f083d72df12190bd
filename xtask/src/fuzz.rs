//! `cargo xtask fuzz [TARGET...] [--time SECONDS] [--jobs N]`: builds the fuzz targets in
//! `fuzz/` with cargo-fuzz and runs each for the given time, one after another, then prints a
//! summary per target (runs, execs/s, corpus, coverage, peak RSS, crashes).
//!
//! The targets are built with the stable toolchain and `--sanitizer none`: sanitizers need
//! nightly's `-Zsanitizer`, while libFuzzer's coverage instrumentation (`-Cpasses=sancov-module`
//! and its `-Cllvm-args`) is stable. Debug assertions and overflow checks are on. `--asan` builds
//! with `AddressSanitizer` instead, through `RUSTC_BOOTSTRAP=1` (the stable compiler accepting
//! `-Zsanitizer=address`; the runtime ships with rustup's standard library, the standard
//! library itself is not instrumented): about half as fast, it catches out-of-bounds reads
//! in the unsafe code (the record decoder, the kernel's head scanner).
//!
//! Each target starts from its committed seeds (`fuzz/seeds/TARGET`, read only) and the corpus
//! it grew before (`target/fuzz/corpus/TARGET`); a crashing input lands in
//! `target/fuzz/artifacts/TARGET/`, libFuzzer's full output in `target/fuzz/logs/TARGET.log`.

use std::{
    fmt::Write as _,
    fs::{self, File},
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup,
    util::{self, Outcome, Step},
};

/// Every target, in the order they run.
pub const TARGETS: [&str; 6] = [
    "http1_assembly",
    "http2_assembly",
    "records",
    "context",
    "head_scanner",
    "hpack",
];
/// Seconds per target in `cargo xtask test`.
pub const CI_SECONDS: u64 = 15;
/// Targets whose input is an HTTP head or stream: they get the HTTP dictionary.
const HTTP_TARGETS: [&str; 2] = ["http1_assembly", "head_scanner"];
/// libFuzzer's memory limit per process: the targets' state is bounded, so more is a leak
/// (their peak is about 30 MB; with the sanitizer's shadow memory and quarantine about 500).
const RSS_LIMIT_MB: u32 = 1024;
const RSS_LIMIT_MB_ASAN: u32 = 2048;
/// An input that takes longer than this is reported as a hang.
const INPUT_TIMEOUT_SECS: u32 = 10;

#[derive(clap::Args)]
pub struct Options {
    /// Targets to run (default: all of them): `http1_assembly`, `http2_assembly`, `records`,
    /// `context`, `head_scanner`, `hpack`.
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Seconds to fuzz each target.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub time: u64,
    /// libFuzzer processes per target (`-fork=N`); the targets still run one after another.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: u32,
    /// Build with `AddressSanitizer` (see above).
    #[arg(long)]
    pub asan: bool,
}

/// What one target's run gave.
#[derive(Debug, Default, PartialEq)]
struct Status {
    runs: u64,
    cov: u64,
    ft: u64,
    corpus_units: u64,
    corpus_bytes: String,
}

struct Summary {
    target: &'static str,
    secs: f64,
    status: Status,
    peak_rss_mb: u64,
    /// The crashing input, if the target crashed.
    artifact: Option<String>,
}

pub fn fuzz(opts: &Options) -> Result<()> {
    let targets = select(&opts.targets)?;
    if opts.time == 0 || opts.jobs == 0 {
        bail!("--time and --jobs must be at least 1");
    }
    Step::start("fuzz", format!("cargo-fuzz {}", setup::CARGO_FUZZ_VERSION))
        .run(setup::cargo_fuzz)?;
    build(opts.asan)?;
    let mut summaries = Vec::new();
    for target in targets {
        summaries.push(run(target, opts)?);
        // Stop at the first crash: its input is what matters now.
        if summaries.last().is_some_and(|s| s.artifact.is_some()) {
            break;
        }
    }
    print!("{}", table(&summaries));
    if let Some(s) = summaries.iter().find(|s| s.artifact.is_some()) {
        bail!(
            "fuzz target {} crashed (output in target/fuzz/logs/{}.log); reproduce with `{} {}`",
            s.target,
            s.target,
            binary(s.target, opts.asan).display(),
            s.artifact.as_deref().unwrap_or_default(),
        );
    }
    Ok(())
}

fn select(names: &[String]) -> Result<Vec<&'static str>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    names
        .iter()
        .map(|n| {
            TARGETS
                .into_iter()
                .find(|t| t == n)
                .with_context(|| format!("no fuzz target `{n}`; the targets are {TARGETS:?}"))
        })
        .collect()
}

fn fuzz_dir() -> PathBuf {
    util::workspace_root().join("fuzz")
}

fn out_dir() -> PathBuf {
    util::target_dir().join("fuzz")
}

/// Where cargo-fuzz builds: one directory per sanitizer choice, so neither rebuilds the other.
fn build_dir(asan: bool) -> PathBuf {
    out_dir().join(if asan { "build-asan" } else { "build" })
}

/// `cargo fuzz build` of every target (instrumented, release, debug assertions).
fn build(asan: bool) -> Result<()> {
    let name = if asan {
        "build the fuzz targets with AddressSanitizer (cargo fuzz build)"
    } else {
        "build the fuzz targets (cargo fuzz build)"
    };
    Step::start("fuzz", name).run(|s| {
        s.break_line();
        let mut cmd = util::cargo();
        cmd.current_dir(fuzz_dir())
            .args(["fuzz", "build", "-O", "-a", "--sanitizer"])
            .arg(if asan { "address" } else { "none" })
            .arg("--target-dir")
            .arg(build_dir(asan));
        if asan {
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        util::run(&mut cmd)?;
        Ok(Outcome::Done)
    })
}

fn binary(target: &str, asan: bool) -> PathBuf {
    build_dir(asan)
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release")
        .join(target)
}

/// Fuzzes `target` for `opts.time` seconds, printing progress, and returns its figures.
fn run(target: &'static str, opts: &Options) -> Result<Summary> {
    let corpus = out_dir().join("corpus").join(target);
    let artifacts = out_dir().join("artifacts").join(target);
    let logs = out_dir().join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let seeds = fuzz_dir().join("seeds").join(target);
    let log_path = logs.join(format!("{target}.log"));
    let mut log =
        File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;

    let mut cmd = Command::new(binary(target, opts.asan));
    // New inputs go to the first directory; the seeds are only read.
    cmd.arg(&corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={}", opts.time))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!(
            "-rss_limit_mb={}",
            if opts.asan {
                RSS_LIMIT_MB_ASAN
            } else {
                RSS_LIMIT_MB
            }
        ))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1");
    if HTTP_TARGETS.contains(&target) {
        cmd.arg(format!("-dict={}", fuzz_dir().join("http.dict").display()));
    }
    if opts.jobs > 1 {
        cmd.arg(format!("-fork={}", opts.jobs));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = util::describe(&cmd);
    println!(
        "[fuzz] {target}: {}s, log in {}",
        opts.time,
        log_path.display()
    );
    println!("$ {line}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;

    let Followed {
        mut status,
        final_runs,
        artifact,
        last,
    } = follow(&mut child, target, opts, started, &mut log)?;
    let (exit, peak_rss_mb) = wait_with_rusage(&child)?;
    let secs = started.elapsed().as_secs_f64();
    if let Some(runs) = final_runs {
        status.runs = runs;
    }
    if exit != 0 && artifact.is_none() {
        for l in &last {
            println!("[fuzz] {target}: {l}");
        }
        bail!(
            "the fuzzer of {target} failed (exit code {exit}) without a crashing input: see {}",
            log_path.display()
        );
    }
    println!(
        "[fuzz] {target} done after {secs:.0}s: {}, peak RSS {peak_rss_mb} MB, {}",
        describe_status(&status, secs),
        if let Some(path) = &artifact {
            format!("CRASHED (exit code {exit}), input in {path}")
        } else {
            "no crash".to_owned()
        }
    );
    Ok(Summary {
        target,
        secs,
        status,
        peak_rss_mb,
        artifact,
    })
}

/// What a run's output told.
struct Followed {
    status: Status,
    /// libFuzzer's final count of runs (`-print_final_stats`).
    final_runs: Option<u64>,
    /// The crashing input libFuzzer wrote.
    artifact: Option<String>,
    /// The last lines, shown when libFuzzer fails without a crash (e.g. a bad option).
    last: std::collections::VecDeque<String>,
}

/// Reads the fuzzer's output to its end: all of it into `log`, a progress line now and then,
/// crash reports as they come.
fn follow(
    child: &mut std::process::Child,
    target: &str,
    opts: &Options,
    started: Instant,
    log: &mut File,
) -> Result<Followed> {
    // libFuzzer writes to stderr (the target's own output, e.g. a panic, to stdout): both are
    // read on threads so that progress is printed on time even when libFuzzer is quiet.
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let every = Duration::from_secs((opts.time / 10).clamp(5, 60));
    let mut next_report = started + every;
    let mut status = Status::default();
    let mut final_runs = None;
    let mut artifact = None;
    // The line after `panicked at` is the panic's message.
    let mut echo_next = false;
    let mut last = std::collections::VecDeque::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(l) => {
                writeln!(log, "{l}").context("writing the fuzz log")?;
                if last.len() == 20 {
                    last.pop_front();
                }
                last.push_back(l.clone());
                if let Some(path) = l.split("Test unit written to ").nth(1) {
                    artifact = Some(path.trim().to_owned());
                }
                if let Some(s) = parse_status(&l) {
                    status = s;
                } else if let Some(n) = l.strip_prefix("stat::number_of_executed_units:") {
                    final_runs = n.trim().parse().ok();
                } else if echo_next || is_crash_line(&l) {
                    println!("[fuzz] {target}: {l}");
                    echo_next = l.contains("panicked at");
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_report {
            next_report += every;
            println!(
                "[fuzz] {target} {:>4}s/{}s: {}",
                started.elapsed().as_secs(),
                opts.time,
                describe_status(&status, started.elapsed().as_secs_f64())
            );
        }
    }
    Ok(Followed {
        status,
        final_runs,
        artifact,
        last,
    })
}

/// Waits for the child and returns its exit code (128 + signal when killed) and the peak RSS of
/// it and its descendants (libFuzzer's fork mode), in MB.
fn wait_with_rusage(child: &std::process::Child) -> Result<(i32, u64)> {
    let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid out-pointers. The Child is not waited through
    // std afterwards.
    let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
    if r != pid {
        bail!(
            "waiting for the fuzzer: {}",
            std::io::Error::last_os_error()
        );
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // ru_maxrss is in KB on Linux.
    Ok((code, u64::try_from(usage.ru_maxrss).unwrap_or(0) / 1024))
}

/// A libFuzzer status line: `#4096 pulse cov: 120 ft: 300 corp: 40/1210b lim: 43 exec/s: 2048
/// rss: 31Mb`, or in fork mode `#12345: cov: 120 ft: 300 corp: 40 exec/s 2048 oom/timeout/crash:
/// 0/0/0 time: 5s job: 2 dft_time: 0`.
fn parse_status(line: &str) -> Option<Status> {
    let rest = line.strip_prefix('#')?;
    let mut words = rest.split_whitespace();
    let runs = words.next()?.trim_end_matches(':').parse().ok()?;
    let words: Vec<&str> = words.collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1).copied())
    };
    let cov = after("cov:")?.parse().ok()?;
    let ft = after("ft:").and_then(|v| v.parse().ok()).unwrap_or(0);
    let corp = after("corp:").unwrap_or("0");
    let (units, bytes) = corp.split_once('/').unwrap_or((corp, ""));
    Some(Status {
        runs,
        cov,
        ft,
        corpus_units: units.parse().unwrap_or(0),
        corpus_bytes: bytes.to_owned(),
    })
}

fn is_crash_line(line: &str) -> bool {
    line.contains("panicked")
        || line.starts_with("==")
        || line.contains("ERROR:")
        || line.starts_with("SUMMARY:")
        || line.contains("Test unit written to")
        || line.starts_with("Base64:")
}

fn describe_status(s: &Status, secs: f64) -> String {
    format!(
        "{} runs ({:.0}/s), cov {} ft {}, corpus {} units{}",
        s.runs,
        execs_per_sec(s.runs, secs),
        s.cov,
        s.ft,
        s.corpus_units,
        if s.corpus_bytes.is_empty() {
            String::new()
        } else {
            format!(" / {}", s.corpus_bytes)
        }
    )
}

#[expect(
    clippy::cast_precision_loss,
    reason = "a rate for display; runs stay far below 2^52"
)]
fn execs_per_sec(runs: u64, secs: f64) -> f64 {
    if secs > 0.0 { runs as f64 / secs } else { 0.0 }
}

/// The summary table, in Markdown so it can go in the README as it is.
fn table(summaries: &[Summary]) -> String {
    let mut out = String::from(
        "\n| target | time | runs | execs/s | corpus (units / size) | cov / ft | peak RSS | crashes |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in summaries {
        let _ = writeln!(
            out,
            "| {} | {:.0} s | {} | {:.0} | {} / {} | {} / {} | {} MB | {} |",
            s.target,
            s.secs,
            s.status.runs,
            execs_per_sec(s.status.runs, s.secs),
            s.status.corpus_units,
            if s.status.corpus_bytes.is_empty() {
                "?"
            } else {
                &s.status.corpus_bytes
            },
            s.status.cov,
            s.status.ft,
            s.peak_rss_mb,
            u8::from(s.artifact.is_some()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Status, parse_status};

    #[test]
    fn reads_libfuzzer_status_lines() {
        assert_eq!(
            parse_status(
                "#4096\tpulse  cov: 120 ft: 300 corp: 40/1210b lim: 43 exec/s: 2048 rss: 31Mb"
            ),
            Some(Status {
                runs: 4096,
                cov: 120,
                ft: 300,
                corpus_units: 40,
                corpus_bytes: "1210b".into()
            })
        );
        assert_eq!(
            parse_status(
                "#12345: cov: 120 ft: 300 corp: 40 exec/s 2048 oom/timeout/crash: 0/0/0 time: 5s job: 2 dft_time: 0"
            ),
            Some(Status {
                runs: 12345,
                cov: 120,
                ft: 300,
                corpus_units: 40,
                corpus_bytes: String::new()
            })
        );
        assert_eq!(parse_status("INFO: Seed: 1234"), None);
        assert_eq!(parse_status("#2\tINITED exec/s: 0 rss: 31Mb"), None);
    }
}
