//! The test program `cargo xtask vm-test` runs inside each QEMU guest (and that runs on the host
//! as well, as root, to tell a kernel problem from a test problem):
//!
//! ```text
//! guest-suite [--agent PATH] [--server PATH] [--grpc PATH] [--http2] [-- AGENT_ARGS...]
//! ```
//!
//! It starts two instances of the static Go demo service on loopback (the second is the first's
//! DOWNSTREAM), starts the agent with `--stdout json --metrics-addr off --pid A --pid B` plus
//! `AGENT_ARGS` (e.g. `--attach kprobe`), waits for its `agent ready` line, drives the requests of
//! [`cases`], reads the spans from the agent's stdout and checks them. With `--http2` (which
//! `cargo xtask vm-test` passes unless `--no-http2`), the HTTP/2 family too: two instances of
//! the Go gRPC demo (front forwarding to back) traced along, driven by its client, one HTTP/2
//! connection per call ([`cases::grpc`]), and a gRPC-shaped client of its own whose connection
//! is set up before the agent and whose first answer is read before the write that asked for it
//! returns (`tracer_tests::early_answer`; this binary with `--early-answer-client PORT` is that
//! client). It prints one line per
//! check and ends with the marker the host looks for: `GUEST-RESULT PASS` or
//! `GUEST-RESULT FAIL <reason>`, or `GUEST-RESULT UNSUPPORTED <reason>` when a forced attach
//! family does not exist on this kernel.
//!
//! Only std, libc, `serde_json` and the crate's raw HTTP client: the guest has no network, no
//! Python and no collector, just this binary, the agent and the Go service.

mod cases;
mod procs;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use procs::{Agent, Service};
use tracer_tests::early_answer::{self, EarlyAnswer};

/// Generous: a TCG guest runs several times slower than the host, and the verifier is CPU-bound.
const READY_TIMEOUT: Duration = Duration::from_secs(150);
/// How long to wait for the spans after the last request.
const SPANS_TIMEOUT: Duration = Duration::from_secs(40);

struct Options {
    agent: PathBuf,
    server: PathBuf,
    /// The Go gRPC demo (tests/services/go-grpc), server and client.
    grpc: PathBuf,
    /// Run the HTTP/2 family too (`--http2`).
    http2: bool,
    agent_args: Vec<String>,
}

fn main() -> ExitCode {
    // The traced client of the early-answer case, run as a process of its own.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(early_answer::CLIENT_FLAG) {
        let port = args.next().unwrap_or_default();
        return match early_answer::client_main(&port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    let opts = parse_args();
    let forced = opts
        .as_ref()
        .ok()
        .and_then(forced_family)
        .map(str::to_owned);
    let result = opts.and_then(|opts| run(&opts));
    let secs = started.elapsed().as_secs_f64();
    match result {
        // A family the kernel lacks is an answer, not a failure, except for the two that must
        // work everywhere (the agent itself refuses to start with a message saying so).
        Err(reason)
            if reason.contains("is not available on this kernel")
                && forced
                    .as_deref()
                    .is_some_and(|f| f != "auto" && f != "tracepoint") =>
        {
            println!("guest-suite: the forced attach family is not available on this kernel");
            println!("GUEST-RESULT UNSUPPORTED {}", reason.replace('\n', " | "));
            ExitCode::SUCCESS
        }
        Ok(()) => {
            println!("guest-suite: passed in {secs:.1}s");
            println!("GUEST-RESULT PASS");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            println!("guest-suite: failed after {secs:.1}s");
            // One line: the host puts the reason into its table.
            println!("GUEST-RESULT FAIL {}", reason.replace('\n', " | "));
            ExitCode::FAILURE
        }
    }
}

/// The family given with `--attach`, or `socket` for `--capture socket`, if the run forces one.
fn forced_family(opts: &Options) -> Option<&str> {
    let value = |flag: &str| {
        let at = opts.agent_args.iter().position(|a| a == flag)?;
        opts.agent_args.get(at + 1).map(String::as_str)
    };
    match value("--capture") {
        Some("socket") => Some("socket"),
        _ => value("--attach"),
    }
}

fn parse_args() -> Result<Options, String> {
    // The guest's /init puts everything in /bin; on the host, pass the paths.
    let mut opts = Options {
        agent: PathBuf::from("/bin/tracer-agent"),
        server: PathBuf::from("/bin/go-demo-svc"),
        grpc: PathBuf::from("/bin/go-grpc-demo"),
        http2: false,
        agent_args: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--agent" => opts.agent = args.next().ok_or("--agent needs a path")?.into(),
            "--server" => opts.server = args.next().ok_or("--server needs a path")?.into(),
            "--grpc" => opts.grpc = args.next().ok_or("--grpc needs a path")?.into(),
            "--http2" => opts.http2 = true,
            "--" => opts.agent_args.extend(args.by_ref()),
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: guest-suite [--agent PATH] [--server PATH] [--grpc PATH] [--http2] [-- AGENT_ARGS...]"
                ));
            }
        }
    }
    Ok(opts)
}

fn run(opts: &Options) -> Result<(), String> {
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        println!("guest-suite: kernel {}", release.trim());
    }
    let [up_port, down_port] = free_ports()?;
    let down = Service::start(&opts.server, down_port, None)?;
    let up = Service::start(
        &opts.server,
        up_port,
        Some(&format!("http://127.0.0.1:{down_port}")),
    )?;
    let mut http2 = Http2Family::start(opts)?;

    let before = unrelated_syscall_ns()?;
    let mut cmd = Command::new(&opts.agent);
    cmd.args(["--stdout", "json", "--metrics-addr", "off"]);
    for pid in [up.pid(), down.pid()] {
        cmd.arg("--pid").arg(pid.to_string());
    }
    for pid in http2.iter().flat_map(Http2Family::pids) {
        cmd.arg("--pid").arg(pid.to_string());
    }
    cmd.args(&opts.agent_args);
    let mut agent = Agent::start(cmd, READY_TIMEOUT)?;
    let with = unrelated_syscall_ns()?;
    // Reported, never checked: what the capture family costs syscalls of processes it does not
    // trace (the host puts it into its table).
    println!("GUEST-FIGURE unrelated-syscall-ns {before:.0} {with:.0}");

    let mode = cases::WriteMode::of(&opts.agent_args);
    if mode == cases::WriteMode::Inject && !agent.said("goroutine tracking attached to") {
        return Err(
            "inject mode: the agent did not attach its goroutine probes to the Go service"
                .to_owned(),
        );
    }
    let mut expected = cases::drive(up_port, up.pid(), down.pid(), mode)?;
    if let Some(family) = &mut http2 {
        expected.extend(family.drive(&opts.grpc)?);
    }
    let spans = agent.collect_spans(SPANS_TIMEOUT, |spans| {
        expected.iter().all(|e| e.found(spans))
    });
    println!("guest-suite: {} spans received", spans.len());
    let failed: Vec<String> = expected.iter().filter_map(|e| e.check(&spans)).collect();
    agent.stop()?;
    // Some kernels (seen on 7.2) skip a tracing program when another BPF program holds the
    // per-CPU guard, e.g. one preempted in a syscall tracepoint. The agent counts each skipped
    // run, like its other kernel drops; a span missing for that reason was lost and said so,
    // and is reported here rather than failed. Anything else missing, or more than was counted,
    // still fails.
    let skipped = agent.counted_kernel_losses();
    let missing = |f: &String| {
        f.contains("no SERVER span") || f.contains("no CLIENT span") || f.contains("status None")
    };
    let lost = failed.iter().filter(|f| missing(f)).count();
    // With the write side, a lost CLIENT request write also leaves the downstream SERVER span
    // parented on the id the kernel wrote for that CLIENT span: a parent no exported span has.
    let dangling = |f: &String| {
        lost > 0
            && f.contains("is wrong")
            && f.split('"').nth(1).is_some_and(|id| {
                !spans
                    .iter()
                    .any(|s| s.get("span_id").and_then(|v| v.as_str()) == Some(id))
            })
    };
    let only_missing = failed.iter().all(|f| missing(f) || dangling(f));
    if !failed.is_empty() && only_missing && u64::try_from(lost).unwrap_or(u64::MAX) <= skipped {
        println!(
            "guest-suite: {} span(s) missing, all accounted for by {skipped} event(s) the agent counted as dropped in the kernel: {}",
            failed.len(),
            failed.join(" | ")
        );
        return Ok(());
    }
    if failed.is_empty() {
        Ok(())
    } else {
        for span in &spans {
            println!("span: {span}");
        }
        Err(format!(
            "{} of {} checks failed, first: {}",
            failed.len(),
            expected.len(),
            failed[0]
        ))
    }
}

/// The HTTP/2 family's processes, started before the agent: the Go gRPC front and back, and
/// the early-answer client with its connection set up (`tracer_tests::early_answer`).
struct Http2Family {
    front: Service,
    back: Service,
    front_port: u16,
    early: EarlyAnswer,
}

impl Http2Family {
    fn start(opts: &Options) -> Result<Option<Self>, String> {
        if !opts.http2 {
            return Ok(None);
        }
        let [front_port, back_port] = free_ports()?;
        let back = Service::start_with(&opts.grpc, &["server"], back_port, None)?;
        let front = Service::start_with(
            &opts.grpc,
            &["server"],
            front_port,
            Some(&format!("grpc://127.0.0.1:{back_port}")),
        )?;
        let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
        let early = EarlyAnswer::connect(&exe)?;
        Ok(Some(Self {
            front,
            back,
            front_port,
            early,
        }))
    }

    fn pids(&self) -> [u32; 3] {
        [self.front.pid(), self.back.pid(), self.early.pid()]
    }

    /// The gRPC calls through front and back, then the early-answer client's two calls.
    fn drive(&mut self, grpc: &Path) -> Result<Vec<cases::Expect>, String> {
        let mut expected = cases::grpc(grpc, self.front_port, self.front.pid(), self.back.pid())?;
        self.early.run()?;
        println!(
            "guest-suite: 2 gRPC-shaped calls, the first answer read before its request's write returned -> ok"
        );
        expected.extend(cases::early_answer(self.early.pid()));
        Ok(expected)
    }
}

/// Wall time of one syscall of a process the agent does not trace (this one): one-byte writes
/// to /dev/null and reads from /dev/zero; the fastest of 5 rounds (an emulated guest's two CPUs
/// are shared with the agent and the services: the others measure them too).
fn unrelated_syscall_ns() -> Result<f64, String> {
    use std::{
        fs::File,
        io::{Read as _, Write as _},
    };
    const PAIRS: u32 = 10_000;
    let err = |e: std::io::Error| format!("unrelated-syscall load: {e}");
    let mut null = File::options().write(true).open("/dev/null").map_err(err)?;
    let mut zero = File::open("/dev/zero").map_err(err)?;
    let mut byte = [0u8; 1];
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..PAIRS {
            null.write_all(&byte).map_err(err)?;
            zero.read_exact(&mut byte).map_err(err)?;
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e9 / f64::from(2 * PAIRS));
    }
    Ok(rounds.into_iter().fold(f64::INFINITY, f64::min))
}

/// Two distinct free loopback ports (both held while choosing, so they differ).
fn free_ports() -> Result<[u16; 2], String> {
    let bind = || TcpListener::bind("127.0.0.1:0").map_err(|e| format!("binding a port: {e}"));
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string());
    Ok([port(&a)?, port(&b)?])
}
