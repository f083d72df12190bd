//! The Go services and the agent as child processes, killed on drop so that an early error
//! never leaves a process behind (on the host) or a guest that does not power off.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The Go demo service (tests/services/go), listening on 127.0.0.1:`port`.
pub struct Service {
    child: Child,
}

impl Service {
    pub fn start(bin: &Path, port: u16, downstream: Option<&str>) -> Result<Self, String> {
        Self::start_with(bin, &[], port, downstream)
    }

    /// `bin ARGS.. PORT`: the gRPC demo takes `server` first.
    pub fn start_with(
        bin: &Path,
        args: &[&str],
        port: u16,
        downstream: Option<&str>,
    ) -> Result<Self, String> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg(port.to_string())
            .env_remove("DOWNSTREAM")
            .stdin(Stdio::null())
            // It prints one `listening on` line; its errors (stderr) stay visible.
            .stdout(Stdio::null());
        if let Some(url) = downstream {
            cmd.env("DOWNSTREAM", url);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut service = Self { child };
        // Polling the port rather than reading the `listening on` line: it needs no reader thread
        // and also proves the socket accepts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(format!("the Go service on port {port} exited ({status})"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the Go service on port {port} did not listen within 30s"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        println!(
            "guest-suite: Go service pid {} on port {port}",
            service.pid()
        );
        Ok(service)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines from the agent: its stderr (logs) and its stdout (one JSON span per line).
enum Line {
    Log(String),
    Span(String),
}

pub struct Agent {
    child: Child,
    lines: Receiver<Line>,
    /// Its log lines up to `agent ready`.
    startup: Vec<String>,
}

impl Agent {
    /// Starts the agent and waits for its `agent ready` line. Its log lines are echoed with an
    /// `agent| ` prefix as they come, so a load failure (the verifier's message) is in the output.
    pub fn start(mut cmd: Command, timeout: Duration) -> Result<Self, String> {
        // NO_COLOR: the logs end up in a serial console capture, escape codes only hurt there.
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        println!("guest-suite: starting {cmd:?}");
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting the agent: {e}"))?;
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().ok_or("agent stdout not piped")?;
        let stderr = child.stderr.take().ok_or("agent stderr not piped")?;
        let tx2 = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx2.send(Line::Span(line));
            }
        });
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                println!("agent| {line}");
                let _ = tx.send(Line::Log(line));
            }
        });
        let mut agent = Self {
            child,
            lines,
            startup: Vec::new(),
        };
        agent.wait_ready(timeout)?;
        Ok(agent)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let logs = &mut self.startup;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Line::Log(line)) if line.contains("agent ready") => return Ok(()),
                Ok(Line::Log(line)) => logs.push(line),
                Ok(Line::Span(_)) => {}
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("the agent was not ready within {timeout:?}"));
                }
                // Both pipes closed: the agent exited.
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "the agent exited ({status}) before ready: {}",
                        exit_reason(logs)
                    ));
                }
            }
        }
    }

    /// Whether a log line before `agent ready` contains `text`.
    pub fn said(&self, text: &str) -> bool {
        self.startup.iter().any(|l| l.contains(text))
    }

    /// Collects spans until `done` says all expected ones are there, or `timeout`.
    pub fn collect_spans(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut spans = Vec::new();
        while !done(&spans) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(Line::Span(line)) => match serde_json::from_str(&line) {
                    Ok(span) => spans.push(span),
                    Err(e) => println!("guest-suite: agent stdout line is not JSON ({e}): {line}"),
                },
                Ok(Line::Log(_)) => {}
                Err(_) => break,
            }
        }
        spans
    }

    /// After `stop`: the events the agent counted as lost in the kernel: program runs the kernel
    /// skipped (its shutdown warnings `the kernel skipped N runs of PROGRAM`) plus its own
    /// kernel-side drop counters (`kernel_drops=N` in its final stats line).
    pub fn counted_kernel_losses(&self) -> u64 {
        self.lines
            .try_iter()
            .filter_map(|l| match l {
                Line::Log(line) => line
                    .split_once("the kernel skipped ")
                    .or_else(|| line.split_once("kernel_drops="))
                    .and_then(|(_, rest)| rest.split(' ').next()?.parse::<u64>().ok()),
                Line::Span(_) => None,
            })
            .sum()
    }

    /// SIGTERM (the agent flushes and exits 0), then waits up to 20 s.
    pub fn stop(&mut self) -> Result<(), String> {
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("the agent exited with {status} on SIGTERM"));
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Ok(None) => return Err("the agent did not exit within 20s of SIGTERM".to_owned()),
                Err(e) => return Err(format!("waiting for the agent: {e}")),
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's last error line without its log prefix; for a program the verifier rejected,
/// the verifier's own complaint (the line before `verification time`) instead of the start of
/// its log, which on old kernels begins with harmless BTF notes.
fn exit_reason(logs: &[String]) -> String {
    let Some(at) = logs
        .iter()
        .rposition(|l| l.contains(" ERROR ") || l.starts_with("Error"))
    else {
        return "no error line in its log (see above)".to_owned();
    };
    let error = &logs[at];
    let mut msg = error
        .split_once(" ERROR ")
        .map_or(error.as_str(), |(_, m)| m);
    // `tracer_agent::loader: message`: drop the module path.
    if let Some((target, rest)) = msg.split_once(": ")
        && !target.contains(' ')
    {
        msg = rest;
    }
    let head = msg.split(" Verifier output:").next().unwrap_or(msg);
    // The error's own verifier log follows it (earlier INFO lines may carry other ones).
    let complaint = logs[at..]
        .iter()
        .position(|l| l.starts_with("verification time"))
        .and_then(|i| logs.get(at + i.checked_sub(1)?));
    match complaint {
        Some(c) => format!("{head} Verifier: {}", c.trim()),
        None => head.chars().take(400).collect(),
    }
}
