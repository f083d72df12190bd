//! Load: `wrk` at saturation, and an open-loop generator of our own at fixed rates.
//!
//! wrk2 (fixed rates) is not in Debian and `hey` is closed-loop, so fixed rates come from the
//! generator here: blocking std threads, each with its own connection, take the next slot of a
//! shared schedule (slot i is due at start + i / rate), sleep until it and send. A worker that
//! falls behind sends late instead of skipping, so the achieved count is exact, and the lateness
//! is reported (a target that cannot keep up at that rate shows as lag, not as a lower rate).
//! Latency is measured from the write of the request to the end of the response, so the
//! generator's own wake-up jitter stays out of it.
//!
//! Every request of both tools carries B3 headers with a random id tagged with the run (see
//! `b3.lua` and receiver.rs), so the agent does the same work as for mesh traffic.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{agent::f64_of, procs};
use crate::util;

/// wrk's shape: two threads (one per core of the reference machine) and 16 connections, enough
/// to saturate either service on loopback.
const WRK_THREADS: &str = "-t2";
const WRK_CONNECTIONS: &str = "-c16";
/// Connections of the fixed-rate generator: enough that at 5k requests/s a worker has 3 ms per
/// request, so only a stalled target makes requests wait for a free connection.
pub const RATE_WORKERS: usize = 16;
/// Connections of the generator at saturation with a new connection per request (Python's
/// http.server has a listen backlog of 5: more concurrent connects only measure SYN retries).
pub const CLOSE_WORKERS: usize = 4;

/// How long past its planned end a fixed-rate run may still send its late requests.
const LATE_GRACE: Duration = Duration::from_secs(1);

/// What one load run did.
pub struct LoadResult {
    pub tool: &'static str,
    /// Requests answered with 200 within the run.
    pub requests: u64,
    pub errors: u64,
    /// Requests of the fixed-rate schedule never sent because the target fell too far behind.
    pub unsent: u64,
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub secs: f64,
    /// Latencies in nanoseconds, sorted (generator runs only).
    pub latencies: Vec<u64>,
    /// 99th percentile of how late requests left against the schedule (fixed rates only).
    pub lag_p99: Option<u64>,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        f64_of(self.requests) / self.secs
    }
}

/// One run's load.
pub struct Spec {
    pub port: u16,
    /// A new connection per request (`Connection: close`).
    pub close: bool,
    /// Requests per second; `None` is saturation.
    pub rate: Option<u32>,
    pub secs: u64,
    pub tag: u32,
}

/// Runs wrk with the B3 script; fails unless it ran and reported its summary line.
pub fn wrk(spec: &Spec, script: &Path) -> Result<LoadResult> {
    let mut cmd = Command::new("wrk");
    cmd.args([WRK_THREADS, WRK_CONNECTIONS])
        .arg(format!("-d{}s", spec.secs))
        .args(["--timeout", "5s", "-s"])
        .arg(script);
    if spec.close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://127.0.0.1:{}/hello", spec.port))
        .arg("--")
        .arg(format!("{:08x}", spec.tag))
        .arg((procs::random_u32()? % 1_000_000).to_string());
    let out = run_tool(cmd, spec.secs)?;
    let summary = summary_line(&out, "wrk")?;
    let field = |name: &str| summary_field(summary, name, "wrk");
    let errors = ["connect", "read", "write", "status", "timeout"]
        .iter()
        .map(|n| field(n))
        .sum::<Result<u64>>()?;
    Ok(LoadResult {
        tool: "wrk",
        requests: field("requests")?,
        errors,
        unsent: 0,
        first_error: (errors > 0).then(|| format!("wrk: {summary}")),
        secs: f64_of(field("duration_us")?) / 1e6,
        latencies: Vec::new(),
        lag_p99: None,
    })
}

/// Connections of the gRPC load: HTTP/2 multiplexes, so its calls share a few connections.
pub const GRPC_CONNS: usize = 4;
/// Calls in flight in the gRPC load, as many as wrk's connections and the generator's workers.
pub const GRPC_WORKERS: usize = 16;

/// Runs the Go gRPC demo's load mode against the gRPC service: unary calls back to back, or at
/// `spec.rate` on a shared schedule as [`generate`] does, each with fresh B3 metadata tagged with
/// the run. `scratch` receives the latencies.
pub fn grpc(spec: &Spec, scratch: &Path) -> Result<LoadResult> {
    let mut cmd = Command::new(procs::grpc_demo()?);
    cmd.arg("load")
        .arg("--target")
        .arg(format!("127.0.0.1:{}", spec.port))
        .arg(format!("--conns={GRPC_CONNS}"))
        .arg(format!("--workers={GRPC_WORKERS}"))
        .arg(format!("--rate={}", spec.rate.unwrap_or(0)))
        .arg(format!("--duration-ms={}", spec.secs * 1000))
        .arg(format!("--tag={:08x}", spec.tag))
        .arg(format!("--seed={}", procs::random_u32()?))
        .arg("--latencies")
        .arg(scratch);
    let out = run_tool(cmd, spec.secs)?;
    let summary = summary_line(&out, "the gRPC load")?;
    let field = |name: &str| summary_field(summary, name, "the gRPC load");
    let lat = fs::read_to_string(scratch)
        .with_context(|| format!("cannot read {}", scratch.display()))?;
    let mut latencies = lat
        .lines()
        .map(|l| {
            l.parse::<u64>()
                .with_context(|| format!("bad latency {l:?}"))
        })
        .collect::<Result<Vec<u64>>>()?;
    latencies.sort_unstable();
    let requests = field("requests")?;
    if latencies.len() as u64 != requests {
        bail!(
            "the gRPC load reported {requests} calls but wrote {} latencies",
            latencies.len()
        );
    }
    let errors = field("errors")?;
    Ok(LoadResult {
        tool: "grpc load",
        requests,
        errors,
        unsent: field("unsent")?,
        first_error: out
            .lines()
            .find_map(|l| l.strip_prefix("first_error: "))
            .map(str::to_owned),
        secs: f64_of(field("duration_us")?) / 1e6,
        latencies,
        lag_p99: spec.rate.map(|_| field("lag_p99_ns")).transpose()?,
    })
}

/// Runs a load tool to its end (at most `secs` + 30 s, or until Ctrl-C); returns its stdout,
/// failing with its output if it failed.
fn run_tool(mut cmd: Command, secs: u64) -> Result<String> {
    cmd.process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = util::describe(&cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}` (`cargo xtask setup` installs it)"))?;
    // Read both pipes while it runs, so a chatty tool cannot block on a full pipe.
    let mut stdout = child.stdout.take().context("piped")?;
    let mut stderr = child.stderr.take().context("piped")?;
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(secs + 30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if procs::interrupted() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            procs::check_interrupt()?;
            bail!("`{line}` did not finish in time");
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        bail!("`{line}` failed ({status}): {}{}", out.trim(), err.trim());
    }
    Ok(out + &err)
}

/// The `BENCH ...` line a load tool prints last, without its prefix.
fn summary_line<'a>(out: &'a str, tool: &str) -> Result<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix("BENCH "))
        .with_context(|| format!("{tool} printed no summary: {out}"))
}

/// `name=N` of a tool's summary line.
fn summary_field(summary: &str, name: &str, tool: &str) -> Result<u64> {
    summary
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .with_context(|| format!("no {name} in {tool}'s summary {summary:?}"))?
        .parse()
        .with_context(|| format!("bad {name} in {tool}'s summary {summary:?}"))
}

/// Whether the service answers `Connection: close` with `Connection: close`. wrk only looks at
/// the response: without it, wrk sends its next request on the connection the server is closing
/// and counts a read error and a reconnect per request (Python's http.server closes but does not
/// say so), which would measure wrk's retries instead of the service.
pub fn answers_close(port: u16) -> Result<bool> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).context("cannot connect to the service")?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let head = resp.split("\r\n\r\n").next().unwrap_or_default();
    Ok(head
        .lines()
        .any(|l| l.to_ascii_lowercase().replace(' ', "") == "connection:close"))
}

/// Runs the generator: open loop at `spec.rate`, or closed loop (each worker back to back) when
/// there is none.
pub fn generate(spec: &Spec, workers: usize) -> Result<LoadResult> {
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs(spec.secs);
    let next = AtomicU64::new(0);
    let seed = procs::random_u32()?;
    let outs = thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let next = &next;
                scope.spawn(move || worker(spec, start, end, next, u64::from(seed) << 8 | w as u64))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a load worker panicked"))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    procs::check_interrupt()?;
    let secs = start.elapsed().as_secs_f64();
    let mut result = LoadResult {
        tool: "generator",
        requests: 0,
        errors: 0,
        unsent: 0,
        first_error: None,
        // Until the last answer: a target that falls behind the schedule takes longer than
        // planned, and its rate and the agent's CPU per second must show it.
        secs,
        latencies: Vec::new(),
        lag_p99: None,
    };
    let mut lags = Vec::new();
    for out in outs {
        result.requests += out.latencies.len() as u64;
        result.errors += out.errors;
        result.first_error = result.first_error.or(out.first_error);
        result.latencies.extend(out.latencies);
        lags.extend(out.lags);
    }
    if let Some(rate) = spec.rate {
        let planned = spec.secs * u64::from(rate);
        result.unsent = planned.saturating_sub(result.requests + result.errors);
    }
    result.latencies.sort_unstable();
    lags.sort_unstable();
    if spec.rate.is_some() {
        result.lag_p99 = Some(percentile(&lags, 0.99));
    }
    Ok(result)
}

/// The value at quantile `q` of sorted `values` (0 when empty).
pub fn percentile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let last = values.len() - 1;
    // Nearest rank; the casts are exact for any length a run produces.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let i = ((last as f64) * q).round() as usize;
    values[i.min(last)]
}

#[derive(Default)]
struct WorkerOut {
    latencies: Vec<u64>,
    lags: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn worker(spec: &Spec, start: Instant, end: Instant, next: &AtomicU64, seed: u64) -> WorkerOut {
    let mut out = WorkerOut::default();
    let mut rng = seed | 1;
    let mut conn: Option<Conn> = None;
    let period_ns = spec.rate.map(|r| 1_000_000_000 / u64::from(r.max(1)));
    while !procs::interrupted() {
        let due = if let Some(period) = period_ns {
            let due = start + Duration::from_nanos(next.fetch_add(1, Relaxed) * period);
            // Past the grace period the target cannot keep up: the slots left are not sent (and
            // counted as such), so a saturated scenario cannot stretch the bench's run time.
            if due >= end || Instant::now() > end + LATE_GRACE {
                break;
            }
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            Some(due)
        } else {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now < start {
                thread::sleep(start - now);
            }
            None
        };
        let sent = Instant::now();
        if let Some(due) = due {
            out.lags.push(nanos(sent - due));
        }
        match request(&mut conn, spec, &mut rng) {
            Ok(()) => out.latencies.push(nanos(sent.elapsed())),
            Err(e) => {
                conn = None;
                out.errors += 1;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    out
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// xorshift64*: ids need to differ, not to be unpredictable.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// One request and its complete response (on a new connection in close mode, else on the
/// worker's keep-alive connection, opened on first use or after an error).
fn request(conn: &mut Option<Conn>, spec: &Spec, rng: &mut u64) -> Result<()> {
    if conn.is_none() {
        let stream = TcpStream::connect(("127.0.0.1", spec.port)).context("connect")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        *conn = Some(Conn {
            stream,
            buf: Vec::with_capacity(1024),
        });
    }
    let c = conn.as_mut().context("connected above")?;
    let trace = (u64::from(spec.tag) << 32) | (next_random(rng) & 0xffff_ffff);
    let span = next_random(rng) | 1;
    let req = format!(
        "GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-b3-traceid: {trace:016x}\r\n\
         x-b3-spanid: {span:016x}\r\nx-b3-sampled: 1\r\n{}\r\n",
        spec.port,
        if spec.close {
            "Connection: close\r\n"
        } else {
            ""
        }
    );
    c.stream.write_all(req.as_bytes()).context("write")?;
    let (head_len, body_len) = loop {
        if let Some(found) = parse_head(&c.buf)? {
            break found;
        }
        fill(c)?;
    };
    while c.buf.len() < head_len + body_len {
        fill(c)?;
    }
    c.buf.drain(..head_len + body_len);
    if spec.close {
        // Read to the server's close, so the server closes first (its TIME_WAIT, not ours).
        while fill(c).is_ok() {}
        *conn = None;
    }
    Ok(())
}

/// Reads more bytes; end of stream is an error.
fn fill(c: &mut Conn) -> Result<()> {
    let mut chunk = [0u8; 4096];
    let n = c.stream.read(&mut chunk).context("read")?;
    if n == 0 {
        bail!("connection closed by the server");
    }
    c.buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// `Some((head length, Content-Length))` once the head is complete; fails unless it is a 200.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("non-UTF-8 response head")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200 ") {
        bail!("unexpected status line {status:?}");
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .context("response without Content-Length")?;
    Ok(Some((end + 4, length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response_head() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello\n";
        assert_eq!(parse_head(r).unwrap(), Some((38, 6)));
        assert_eq!(parse_head(&r[..20]).unwrap(), None);
        assert!(parse_head(b"HTTP/1.1 500 Oops\r\n\r\n").is_err());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
