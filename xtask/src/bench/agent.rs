//! The agent under test and what it costs: CPU and peak RSS from /proc, drops and span counts
//! from its /metrics, and the kernel's run-time statistics of its eBPF programs.
//!
//! The programs' statistics come from `/proc/<agent>/fdinfo` of its `bpf-prog` descriptors
//! (`run_time_ns`, `run_cnt`; counted only while `kernel.bpf_stats_enabled` is 1, which the
//! bench turns on for its statistics passes only), and their
//! names from /proc/kallsyms (`bpf_prog_<tag>_<name>`), so no bpftool and no bpf(2) calls.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::procs::{self, Proc};

pub struct Agent {
    proc: Proc,
    metrics_port: u16,
}

impl Agent {
    /// Starts the agent (or the floor agent: `bin`) tracing `pids` only, exporting to
    /// `endpoint` over OTLP http/protobuf with the default batching, and waits for `agent ready`.
    pub fn start(
        bin: &Path,
        pids: &[u32],
        endpoint: &str,
        log: &Path,
        extra: &[String],
    ) -> Result<Self> {
        let metrics_port = procs::free_port()?;
        let mut cmd = Command::new(bin);
        // The defaults a user gets, except what the bench needs: its own receiver, its own
        // metrics port, no periodic stats line. Stray OTEL_* settings of the caller's shell (a
        // compression, a batch delay) must not change what is measured.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                cmd.env_remove(key);
            }
        }
        cmd.env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .arg("--pid")
            .arg(
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .args([
                "--otlp-endpoint",
                endpoint,
                "--otlp-protocol",
                "http/protobuf",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--stats-interval", "0"])
            .args(extra);
        let mut proc = Proc::spawn(cmd, "tracer-agent", log)?;
        proc.wait_line("agent ready", Duration::from_secs(30))?;
        Ok(Self { proc, metrics_port })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn check_running(&mut self) -> Result<()> {
        self.proc.check_running()
    }

    /// The agent's Prometheus metrics, `name{labels}` -> value.
    pub fn metrics(&self) -> Result<HashMap<String, f64>> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port))
            .context("cannot connect to the agent's /metrics")?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        stream
            .read_to_string(&mut text)
            .context("reading the agent's /metrics")?;
        let body = text
            .split_once("\r\n\r\n")
            .filter(|(head, _)| head.starts_with("HTTP/1.") && head.contains(" 200 "))
            .context("the agent's /metrics did not answer 200")?
            .1;
        Ok(tracer_test_support::observe::prometheus_samples(body))
    }

    /// SIGTERM (the agent flushes its queue) and a clean exit, else a broken run.
    pub fn stop(mut self) -> Result<()> {
        let status = self.proc.terminate(Duration::from_secs(20))?;
        if !status.success() {
            bail!("the agent exited with {status} on SIGTERM");
        }
        Ok(())
    }
}

/// Sum of the metrics whose name starts with `prefix`.
pub fn sum_prefix(metrics: &HashMap<String, f64>, prefix: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// User plus system CPU time of the whole process (all threads, live or exited), in seconds.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which may contain spaces: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        Ok(fields.get(i - 3).context("short /proc/PID/stat")?.parse()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u32::try_from(hz).context("sysconf(_SC_CLK_TCK) failed")?;
    Ok(f64_of(ticks(14)? + ticks(15)?) / f64::from(hz))
}

/// A memory figure of /proc/PID/status in KiB: `VmHWM` (peak resident set) or `VmRSS`.
pub fn rss_kib(pid: u32, field: &str) -> Result<u64> {
    tracer_test_support::observe::proc_status_kib(pid, field).map_err(anyhow::Error::msg)
}

/// CPUs' worth of time the whole machine spends busy (not idle, not waiting for I/O) over
/// `window`, from /proc/stat.
pub fn busy_cpus(window: Duration) -> Result<f64> {
    let sample = || -> Result<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let cpu = stat.lines().next().context("empty /proc/stat")?;
        let ticks: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context("malformed /proc/stat")?;
        // user nice system idle iowait irq softirq steal ...; guest time is inside user already.
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        let total: u64 = ticks.iter().take(8).sum();
        Ok((total - idle, total))
    };
    let (b0, t0) = sample()?;
    thread::sleep(window);
    let (b1, t1) = sample()?;
    let cpus = thread::available_parallelism().map_or(1, std::num::NonZero::get);
    Ok(f64_of(b1 - b0) / f64_of((t1 - t0).max(1)) * f64_of(cpus as u64))
}

/// One eBPF program's cumulative run-time statistics.
#[derive(Clone)]
pub struct Prog {
    pub id: u32,
    pub tag: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// Instructions the verifier processed: how big the program is, after unrolling.
    pub insns: u64,
}

/// The statistics of every eBPF program the process `pid` holds a descriptor of, by id.
pub fn progs(pid: u32) -> Result<Vec<Prog>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out: Vec<Prog> = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let entry = entry?;
        if fs::read_link(entry.path()).ok().as_deref() != Some(Path::new("anon_inode:bpf-prog")) {
            continue;
        }
        // A descriptor closed since the listing is simply skipped.
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let number = |name: &str| -> Result<u64> {
            field(name)
                .with_context(|| format!("no {name} in bpf-prog fdinfo (kernel too old?)"))?
                .parse()
                .with_context(|| format!("bad {name} in bpf-prog fdinfo"))
        };
        let id = u32::try_from(number("prog_id")?)?;
        if out.iter().any(|p| p.id == id) {
            continue;
        }
        out.push(Prog {
            id,
            tag: field("prog_tag").unwrap_or_default().to_owned(),
            run_time_ns: number("run_time_ns")?,
            run_cnt: number("run_cnt")?,
            insns: number("verified_insns").unwrap_or(0),
        });
    }
    Ok(out)
}

/// `after - before` per program, as (id, ns, runs); programs are matched by id.
pub fn delta(before: &[Prog], after: &[Prog]) -> Vec<(Prog, u64, u64)> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            let ns = a.run_time_ns - b.map_or(0, |b| b.run_time_ns);
            let cnt = a.run_cnt - b.map_or(0, |b| b.run_cnt);
            (a.clone(), ns, cnt)
        })
        .collect()
}

/// Program names by tag, from /proc/kallsyms (`bpf_prog_<tag>_<name> [bpf]`). Programs with the
/// same code share a tag (e.g. the exits of accept and accept4): their names are joined by `/`.
pub fn prog_names() -> Result<HashMap<String, String>> {
    let syms = fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
    let mut names: HashMap<String, String> = HashMap::new();
    for line in syms.lines().filter(|l| l.ends_with("[bpf]")) {
        let Some(sym) = line.split_whitespace().nth(2) else {
            continue;
        };
        let Some((tag, name)) = sym
            .strip_prefix("bpf_prog_")
            .and_then(|s| s.split_once('_'))
        else {
            continue;
        };
        let entry = names.entry(tag.to_owned()).or_default();
        if !entry.split('/').any(|n| n == name) {
            if !entry.is_empty() {
                entry.push('/');
            }
            entry.push_str(name);
        }
    }
    // Sorted: kallsyms lists them in load order, which changes from one agent to the next, and
    // the report matches programs of different runs by name.
    for joined in names.values_mut() {
        let mut parts: Vec<&str> = joined.split('/').collect();
        parts.sort_unstable();
        *joined = parts.join("/");
    }
    Ok(names)
}

/// Sets `kernel.bpf_stats_enabled` to 0 while alive and restores the previous value on drop
/// (also after a failure or Ctrl-C). The statistics cost two clock reads per program run, so
/// they stay off except in the statistics passes ([`StatsOn`]).
pub struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn off() -> Result<Self> {
        let previous = fs::read_to_string(BPF_STATS)
            .with_context(|| format!("cannot read {BPF_STATS}"))?
            .trim()
            .to_owned();
        set_bpf_stats(false)?;
        Ok(Self { previous })
    }
}

/// Turns the kernel's eBPF run-time statistics on or off (while a [`BpfStats`] guard lives).
pub fn set_bpf_stats(on: bool) -> Result<()> {
    fs::write(BPF_STATS, if on { "1" } else { "0" })
        .with_context(|| format!("cannot write {BPF_STATS}"))
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = fs::write(BPF_STATS, &self.previous) {
            eprintln!(
                "warning: could not restore {BPF_STATS} to {}: {e}",
                self.previous
            );
        }
    }
}

/// The statistics on for one statistics pass, off again on drop.
pub struct StatsOn(());

impl StatsOn {
    pub fn new() -> Result<Self> {
        set_bpf_stats(true)?;
        Ok(Self(()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let Err(e) = set_bpf_stats(false) {
            eprintln!("warning: could not turn {BPF_STATS} off: {e}");
        }
    }
}

/// Syscalls of the micro-load: `n` one-byte writes to /dev/null and `n` one-byte reads from
/// /dev/zero, made by a thread of the bench, which the agent does not trace (it follows only the
/// service's pid) but whose write and read syscalls still run its tracepoint programs. Returns
/// the number of syscalls and the wall time they took.
pub fn unrelated_syscalls(n: u32) -> Result<(u64, Duration)> {
    thread::spawn(move || -> Result<(u64, Duration)> {
        let mut null = File::options().write(true).open("/dev/null")?;
        let mut zero = File::open("/dev/zero")?;
        let mut byte = [0u8; 1];
        let started = Instant::now();
        for _ in 0..n {
            // Unbuffered std Files: each call is exactly one syscall.
            null.write_all(&byte)?;
            zero.read_exact(&mut byte)?;
        }
        Ok((2 * u64::from(n), started.elapsed()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the syscall micro-load thread panicked"))?
}

/// Lossless enough for counters and durations far below 2^52.
#[allow(clippy::cast_precision_loss)]
pub fn f64_of(n: u64) -> f64 {
    n as f64
}

/// Other tracer-agent processes: their programs would run on the bench's syscalls too.
pub fn other_agents(ours: Option<u32>) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| Some(*pid) != ours)
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "tracer-agent")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_prefix() {
        let m = tracer_test_support::observe::prometheus_samples(
            "# HELP x y\n# TYPE x counter\ntracer_kernel_dropped_ringbuf_full_total 3\n\
             tracer_attach_info{plan=\"a b\"} 1\ntracer_dropped_spans_queue_full_total 2\n",
        );
        assert!((sum_prefix(&m, "tracer_kernel_dropped_") - 3.0).abs() < 1e-9);
        assert!((sum_prefix(&m, "tracer_dropped_") - 2.0).abs() < 1e-9);
    }
}
