//! `cargo xtask soak`: the agent under hostile traffic patterns on loopback, bounded in time,
//! with its memory watched throughout.
//!
//! Go "hello" services traced by one agent (release build, default settings, exporting to the
//! bench's counting OTLP receiver). Four phases, the connections of the second held open
//! through the third and fourth so that the table is at its fullest at the end:
//! 1. short connections: a new connection per request, back to back from several workers;
//! 2. idle keep-alive connections: each sends one request, then stays open and silent;
//! 3. drip-fed heads: each connection sends a request line, then one header byte per second;
//! 4. pipelined bursts: a thousand requests written at once on a connection, then read back.
//!
//! A process may hold 20,000 descriptors here (the hard limit, which root cannot raise without
//! `CAP_SYS_RESOURCE`), so the held connections are spread over [`SERVICES`] services and as many
//! helper processes (`cargo xtask soak-hold`, the same binary), each holding its share.
//!
//! The agent's resident set (`VmRSS`) is sampled every 100 ms; the soak fails if the agent dies,
//! if its peak passes the ceiling, or if a request is neither exported as a span nor counted by
//! one of the agent's loss counters. Figures are printed as a table for the README.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    os::fd::FromRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    agent::{self, Agent},
    idle, procs,
    procs::Target,
    receiver::Receiver,
};
use crate::{setup, util};

#[derive(clap::Args)]
pub struct Options {
    /// Connections of phase 1, one request each.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    short: u64,
    /// Idle keep-alive connections of phase 2 (held until the end).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    idle: usize,
    /// Drip-feeding connections of phase 3.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    drip: usize,
    /// Seconds phase 3 drips (one byte per connection per second).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    drip_secs: u64,
    /// Pipelined bursts of 1,000 requests in phase 4.
    #[arg(long, value_name = "N", default_value_t = 100)]
    bursts: u64,
    /// The agent's resident-set ceiling in MiB: a higher peak fails the soak.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    ceiling_mib: u64,
}

/// Requests in one pipelined burst.
const BURST: usize = 1000;
/// Workers of the short-connection phase.
const WORKERS: usize = 16;
/// Loopback source addresses the held connections are spread over: one address has about
/// 28,000 ephemeral ports.
const SOURCES: u8 = 8;
/// Go services the connections are spread over (and helper processes per held phase).
const SERVICES: usize = 4;

/// What one `soak-hold` helper process does: open its share of a held phase's connections to
/// one service, say so on stdout, and keep them until it is terminated.
#[derive(clap::Args)]
pub struct HoldOptions {
    /// The service's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Idle keep-alive connections (one request each), or with `--drip-secs`, drip-feeding ones.
    #[arg(long)]
    count: usize,
    /// Drip one header byte per connection per second for this long instead.
    #[arg(long)]
    drip_secs: Option<u64>,
    /// The run tag for the requests' trace ids.
    #[arg(long, default_value_t = 0)]
    tag: u32,
    /// The number of this helper's first request (trace ids stay distinct across helpers).
    #[arg(long, default_value_t = 0)]
    first: u64,
}

/// `cargo xtask soak-hold`: one helper of a held phase. Prints `held N` once its connections are
/// open (and, when dripping, once the drip is over), then waits to be terminated.
pub fn hold(opts: &HoldOptions) -> Result<()> {
    idle::raise_nofile(opts.count + 256)?;
    let conns = match opts.drip_secs {
        None => keep_alive_idle(opts.port, opts.tag, opts.first, opts.count)?,
        Some(secs) => drip(opts.port, opts.count, secs)?,
    };
    println!("held {}", conns.len());
    loop {
        thread::park();
    }
}

/// Helper processes holding a phase's connections, one per service; terminated on drop.
struct Holders(Vec<procs::Proc>);

impl Holders {
    /// Starts one helper per service port with its share of `total`, and waits until each holds
    /// its connections (`timeout` each).
    fn start(
        ports: &[u16],
        total: usize,
        drip_secs: Option<u64>,
        tag: u32,
        log: &std::path::Path,
        timeout: Duration,
    ) -> Result<Self> {
        let exe = std::env::current_exe().context("cannot find the xtask binary")?;
        let share = total.div_ceil(ports.len());
        let mut procs = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let count = share.min(total - (share * i).min(total));
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["soak-hold", "--port", &port.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--tag", &tag.to_string()])
                .args(["--first", &((1u64 << 31) + (share * i) as u64).to_string()]);
            if let Some(secs) = drip_secs {
                cmd.args(["--drip-secs", &secs.to_string()]);
            }
            procs.push(procs::Proc::spawn(
                cmd,
                &format!("soak helper {i} (port {port})"),
                log,
            )?);
        }
        for p in &mut procs {
            p.wait_line("held ", timeout)?;
        }
        Ok(Self(procs))
    }
}

impl Drop for Holders {
    fn drop(&mut self) {
        for p in &mut self.0 {
            let _ = p.terminate(Duration::from_secs(5));
        }
    }
}

pub fn soak(opts: &Options) -> Result<()> {
    util::require_root("the soak loads the agent's eBPF programs; run `sudo -E cargo xtask soak`")?;
    let started = Instant::now();
    let (agent_bin, logs) = prepare()?;

    let receiver = Receiver::start()?;
    let services = start_services(&logs)?;
    let ports: Vec<u16> = services.iter().map(|(p, _)| *p).collect();

    let mut agent = Agent::start(
        &agent_bin,
        &services.iter().map(|(_, s)| s.pid()).collect::<Vec<_>>(),
        &receiver.endpoint(),
        &logs.join("agent.log"),
        &capture_whole_reads(),
    )?;
    let rss = RssWatch::start(agent.pid());
    // One run tag per phase that sends requests: the receiver counts each phase's spans.
    let mut tags = [0u32; 3];
    for t in &mut tags {
        *t = procs::random_u32()?;
    }
    let mut report = Vec::new();
    println!(
        "[soak] agent pid {} traces {SERVICES} Go services (ports {ports:?}); RSS at start {} MiB",
        agent.pid(),
        rss.now_mib()
    );

    let t = Instant::now();
    let short = short_connections(&ports, tags[0], opts.short)?;
    report.push(rss.phase(
        &format!("{short} short connections, one request each"),
        t,
        &mut agent,
    )?);

    let t = Instant::now();
    println!(
        "[soak] phase 2: {} idle keep-alive connections (one request each, then silent), from \
         {SERVICES} helper processes",
        opts.idle
    );
    let held = Holders::start(
        &ports,
        opts.idle,
        None,
        tags[1],
        &logs.join("helpers.log"),
        Duration::from_mins(5),
    )?;
    report.push(rss.phase(
        &format!("{} idle keep-alive connections held", opts.idle),
        t,
        &mut agent,
    )?);

    let t = Instant::now();
    println!(
        "[soak] phase 3: {} connections drip-feed a header, one byte per second, {} s",
        opts.drip, opts.drip_secs
    );
    let drips = Holders::start(
        &ports,
        opts.drip,
        Some(opts.drip_secs),
        0,
        &logs.join("helpers.log"),
        Duration::from_secs(opts.drip_secs + 300),
    )?;
    report.push(rss.phase(
        &format!(
            "{} connections drip-feeding a head byte per second for {} s",
            opts.drip, opts.drip_secs
        ),
        t,
        &mut agent,
    )?);

    let t = Instant::now();
    let pipelined = pipelined(ports[0], tags[2], opts.bursts)?;
    report.push(rss.phase(
        &format!("{} pipelined bursts of {BURST} requests", opts.bursts),
        t,
        &mut agent,
    )?);

    let t = Instant::now();
    drop(drips);
    drop(held);
    let settled = wait_settled(&agent)?;
    report.push(rss.phase("everything closed, table empty again", t, &mut agent)?);
    let metrics = agent.metrics()?;
    agent.check_running()?;
    agent.stop()?;
    for (_, mut s) in services {
        s.terminate(Duration::from_secs(5))?;
    }
    receiver.check()?;

    let sent = [short, opts.idle as u64, pipelined];
    let exported = tags.map(|t| receiver.server_spans(t));
    print_report(&report, &metrics, settled, rss.peak_mib(), (sent, exported));
    let (sent, exported) = (sent.iter().sum(), exported.iter().sum());
    println!(
        "[soak] done in {:.0} s; agent log: {}",
        started.elapsed().as_secs_f64(),
        logs.join("agent.log").display()
    );
    check(&metrics, sent, exported, rss.peak_mib(), opts.ceiling_mib)
}

/// Setup, the release agent, fresh logs: (agent binary, log directory).
fn prepare() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    setup::setup()?;
    // Within the hard limit: the held connections live in helper processes.
    idle::raise_nofile(4096)?;
    let out = util::target_dir().join("soak");
    let agent_bin = super::build_agent(&out, false)?;
    let logs = out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    procs::catch_ctrl_c();
    Ok((agent_bin, logs))
}

/// Go's server reads and writes through 4 KiB buffers: with the whole of each captured, a
/// pipelined request or response is never hidden past the capture size (with the default
/// 2 KiB, those are not seen; README "Limits").
fn capture_whole_reads() -> [String; 2] {
    ["--capture-size".to_owned(), "4096".to_owned()]
}

/// [`SERVICES`] Go services on free ports: (port, process).
fn start_services(logs: &std::path::Path) -> Result<Vec<(u16, procs::Proc)>> {
    (0..SERVICES)
        .map(|_| {
            let port = procs::free_port()?;
            Ok((port, Target::Go.start(port, &logs.join("services.log"))?))
        })
        .collect()
}

/// Fails the soak if a request is unaccounted for or the agent grew past the ceiling.
fn check(
    metrics: &std::collections::HashMap<String, f64>,
    sent: u64,
    exported: u64,
    peak_mib: u64,
    ceiling_mib: u64,
) -> Result<()> {
    let counted = losses(metrics);
    if exported + counted < sent {
        bail!(
            "{} of {sent} tagged requests are neither exported ({exported}) nor counted by a loss \
             counter ({counted})",
            sent - exported - counted.min(sent - exported)
        );
    }
    if peak_mib > ceiling_mib {
        bail!(
            "the agent's resident set peaked at {peak_mib} MiB, over the {ceiling_mib} MiB ceiling"
        );
    }
    Ok(())
}

/// What the agent counts as lost on the way from a request to an exported span. A lost kernel
/// event can cost a span; the other counters count spans (or requests) themselves.
fn losses(m: &std::collections::HashMap<String, f64>) -> u64 {
    [
        "tracer_kernel_dropped_ringbuf_full_total",
        "tracer_kernel_dropped_args_full_total",
        "tracer_kernel_dropped_conns_full_total",
        "tracer_kernel_dropped_scratch_busy_total",
        "tracer_kernel_dropped_skipped_total",
        "tracer_dropped_decode_errors_total",
        "tracer_dropped_spans_queue_full_total",
        "tracer_dropped_spans_export_failed_total",
        "tracer_http_abandoned_requests_total",
    ]
    .iter()
    .map(|name| value(m, name))
    .sum()
}

/// A counter of the agent's metrics as an integer (0 when absent).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counters are non-negative integers well within f64's exact range"
)]
fn value(m: &std::collections::HashMap<String, f64>, name: &str) -> u64 {
    m.get(name).copied().unwrap_or(0.0).max(0.0).round() as u64
}

fn print_report(
    report: &[Phase],
    m: &std::collections::HashMap<String, f64>,
    settled: Duration,
    peak_mib: u64,
    (sent, exported): ([u64; 3], [u64; 3]),
) {
    println!("\n| phase | took | agent RSS peak | RSS at end | connections tracked |");
    println!("|---|---|---|---|---|");
    for p in report {
        println!(
            "| {} | {:.0} s | {} MiB | {} MiB | {} |",
            p.label, p.secs, p.peak_mib, p.end_mib, p.conns
        );
    }
    for ((what, sent), exported) in ["short", "idle", "pipelined"]
        .iter()
        .zip(sent)
        .zip(exported)
    {
        println!("{what} requests: {sent} sent, {exported} SERVER spans exported");
    }
    let get = |name: &str| value(m, name);
    println!(
        "\npeak RSS over the soak: {peak_mib} MiB; table empty {:.1} s after the last close",
        settled.as_secs_f64()
    );
    println!("counters at the end:");
    for name in [
        "tracer_connections_opened_total",
        "tracer_connections_evicted_total",
        "tracer_connections_evicted_memory_total",
        "tracer_connections_idle_closed_total",
        "tracer_connections_exited_closed_total",
        "tracer_http_malformed_heads_total",
        "tracer_http_abandoned_requests_total",
        "tracer_http_pending_full_total",
        "tracer_http_lost_events_total",
        "tracer_kernel_dropped_ringbuf_full_total",
        "tracer_kernel_dropped_conns_full_total",
        "tracer_dropped_spans_queue_full_total",
        "tracer_dropped_spans_export_failed_total",
        "tracer_spans_built_total",
        "tracer_spans_exported_total",
    ] {
        println!("  {name} {}", get(name));
    }
}

/// One phase's figures.
struct Phase {
    label: String,
    secs: f64,
    peak_mib: u64,
    end_mib: u64,
    conns: String,
}

/// Samples the agent's `VmRSS` every 100 ms: peak since the last phase, and over the whole soak.
struct RssWatch {
    pid: u32,
    phase_peak: Arc<AtomicU64>,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let (phase_peak, peak) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = Arc::new(AtomicBool::new(false));
        let (pp, p, s) = (phase_peak.clone(), peak.clone(), stop.clone());
        thread::spawn(move || {
            while !s.load(Relaxed) {
                if let Ok(kib) = agent::rss_kib(pid, "VmRSS") {
                    pp.fetch_max(kib, Relaxed);
                    p.fetch_max(kib, Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Self {
            pid,
            phase_peak,
            peak,
            stop,
        }
    }

    fn now_mib(&self) -> u64 {
        agent::rss_kib(self.pid, "VmRSS").unwrap_or(0) / 1024
    }

    fn peak_mib(&self) -> u64 {
        self.peak.load(Relaxed).div_ceil(1024)
    }

    /// Ends a phase: its figures, with the connections `agent` tracks now; fails if the agent
    /// is gone.
    fn phase(&self, label: &str, started: Instant, agent: &mut Agent) -> Result<Phase> {
        agent.check_running()?;
        let conns = agent
            .metrics()
            .ok()
            .and_then(|m| m.get("tracer_connections").copied())
            .map_or_else(|| "?".to_owned(), |c| format!("{c:.0}"));
        let p = Phase {
            label: label.to_owned(),
            secs: started.elapsed().as_secs_f64(),
            peak_mib: self.phase_peak.swap(0, Relaxed).div_ceil(1024),
            end_mib: self.now_mib(),
            conns,
        };
        println!(
            "[soak] {label}: {:.0} s, agent RSS peak {} MiB, now {} MiB",
            p.secs, p.peak_mib, p.end_mib
        );
        Ok(p)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// A GET of /hello with a B3 trace id carrying the run tag (the receiver counts by it).
fn request(tag: u32, n: u64, close: bool) -> String {
    format!(
        "GET /hello HTTP/1.1\r\nHost: soak\r\nx-b3-traceid: {tag:08x}{:08x}\r\nx-b3-spanid: \
         {:016x}\r\nx-b3-sampled: 1\r\n{}\r\n",
        n & 0xffff_ffff,
        n + 1,
        if close { "Connection: close\r\n" } else { "" }
    )
}

/// Phase 1: `total` connections, one request each, from `WORKERS` threads, spread over `ports`.
fn short_connections(ports: &[u16], tag: u32, total: u64) -> Result<u64> {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let started = Instant::now();
    println!("[soak] phase 1: {total} short connections from {WORKERS} workers");
    thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    let mut buf = [0u8; 4096];
                    loop {
                        let n = next.fetch_add(1, Relaxed);
                        if n >= total || procs::interrupted() {
                            return Ok(());
                        }
                        let port = ports[usize::try_from(n).unwrap_or(0) % ports.len()];
                        let mut s = TcpStream::connect(("127.0.0.1", port))
                            .with_context(|| format!("short connection {n}"))?;
                        s.write_all(request(tag, n, true).as_bytes())?;
                        while s.read(&mut buf)? > 0 {}
                        let d = done.fetch_add(1, Relaxed) + 1;
                        if d.is_multiple_of(100_000) {
                            println!(
                                "[soak]   {d} of {total} ({:.0}/s)",
                                agent::f64_of(d) / started.elapsed().as_secs_f64()
                            );
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a soak worker panicked"))??;
        }
        Ok(())
    })?;
    procs::check_interrupt()?;
    Ok(done.load(Relaxed))
}

/// A connection to 127.0.0.1:`port` from loopback source address number `i % SOURCES`.
fn connect_from(i: usize, port: u16) -> Result<TcpStream> {
    let nth = u8::try_from(i % usize::from(SOURCES)).unwrap_or(0);
    let source = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2 + nth), 0);
    // SAFETY: plain socket(2); the descriptor is owned by the TcpStream below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket(): {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sin = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or_default(),
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or_default();
    let one: libc::c_int = 1;
    // SAFETY: valid option value and length. The port is chosen at connect, per destination.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or_default(),
        );
    }
    let from = sin(source);
    // SAFETY: `from` is a valid sockaddr_in of `len` bytes.
    if unsafe { libc::bind(fd, (&raw const from).cast(), len) } != 0 {
        bail!("bind({source}): {}", std::io::Error::last_os_error());
    }
    let to = sin(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    // SAFETY: as above.
    if unsafe { libc::connect(fd, (&raw const to).cast(), len) } != 0 {
        bail!(
            "connect from {source} to port {port}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(stream)
}

/// Reads one response of /hello (a few hundred bytes, Content-Length framed) off `s`.
fn read_response(s: &mut TcpStream) -> Result<()> {
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("the service closed a keep-alive connection");
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&got, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return Ok(());
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Phase 2: `n` keep-alive connections that each send one request and then stay silent.
fn keep_alive_idle(port: u16, tag: u32, first: u64, n: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        if i % 1000 == 0 {
            procs::check_interrupt()?;
        }
        let mut s = connect_from(i, port)?;
        s.write_all(request(tag, first + i as u64, false).as_bytes())?;
        read_response(&mut s)?;
        held.push(s);
    }
    Ok(held)
}

/// Phase 3: `n` connections send a request line, then a header byte each per second for
/// `secs` seconds; the heads never end. Returned open; closed by the caller.
fn drip(port: u16, n: usize, secs: u64) -> Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect_from(i + 7, port)?;
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: soak\r\nX-Drip: ")?;
        conns.push(s);
    }
    let started = Instant::now();
    for second in 0..secs {
        procs::check_interrupt()?;
        for s in &mut conns {
            s.write_all(b"d").context("dripping a byte")?;
        }
        let next = started + Duration::from_secs(second + 1);
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(conns)
}

/// Phase 4: `bursts` times, 1,000 requests written at once on a fresh connection, then their
/// responses read back. Returns the requests answered.
fn pipelined(port: u16, tag: u32, bursts: u64) -> Result<u64> {
    println!("[soak] phase 4: {bursts} pipelined bursts of {BURST} requests");
    let mut answered = 0;
    for b in 0..bursts {
        procs::check_interrupt()?;
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        let base = (3 << 30) + b * BURST as u64;
        let burst: String = (0..BURST as u64)
            .map(|i| request(tag, base + i, false))
            .collect();
        s.write_all(burst.as_bytes())?;
        let mut seen = 0;
        let mut buf = vec![0u8; 64 * 1024];
        let mut carry = Vec::new();
        while seen < BURST {
            let n = s.read(&mut buf)?;
            if n == 0 {
                bail!("the service closed a pipelined connection after {seen} responses");
            }
            carry.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while let Some(p) = find(&carry[at..], b"HTTP/1.1 200") {
                seen += 1;
                at += p + 12;
            }
            carry.drain(..at.max(carry.len().saturating_sub(12)));
        }
        answered += BURST as u64;
    }
    Ok(answered)
}

/// Waits until the agent's table is empty after every connection closed; how long it took.
fn wait_settled(agent: &Agent) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let m = agent.metrics()?;
        if m.get("tracer_connections").copied().unwrap_or(f64::MAX) < 1.0 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_mins(1) {
            bail!(
                "the agent still tracks {} connections 60 s after all closed",
                m.get("tracer_connections").copied().unwrap_or(0.0)
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}
