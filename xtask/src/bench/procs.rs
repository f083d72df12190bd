//! The bench's child processes (the services and the agent) and Ctrl-C.
//!
//! Each child runs in its own process group, so Ctrl-C in the terminal reaches only the bench,
//! which then stops the current run, its children in order (the agent flushes on SIGTERM) and
//! restores `kernel.bpf_stats_enabled`. Children's stdout and stderr go to a log file under
//! target/bench/logs (Python prints a traceback for every connection a client resets, which
//! must not flood the terminal); a failure message points at it.
//!
//! Distinct from the tests' children (`tests/src/process.rs`), which keep their output in memory
//! for a failing test's message; how the demo services are built and found is shared with the
//! tests (`tests/support`).

use std::{
    fs::{File, OpenOptions},
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Relaxed);
}

/// From now on Ctrl-C (SIGINT) only sets a flag that the bench checks between steps.
pub fn catch_ctrl_c() {
    let handler = on_sigint as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, handler as libc::sighandler_t) };
}

/// True once Ctrl-C was pressed; long waits poll this.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Relaxed)
}

/// Fails with "interrupted" once Ctrl-C was pressed, so `?` unwinds and drop guards clean up.
pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        bail!("interrupted (Ctrl-C): stopped every process the bench started");
    }
    Ok(())
}

/// A child with its output in a log file; SIGTERM, then SIGKILL, on drop.
pub struct Proc {
    child: Child,
    label: String,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
    /// Lines are only forwarded to `lines` while someone waits for one (readiness); later output
    /// goes to the log file only, so a chatty child cannot grow memory.
    watching: Arc<AtomicBool>,
}

impl Proc {
    /// Starts `cmd`, appending its output to `log` after a header line naming `label`.
    pub fn spawn(mut cmd: Command, label: &str, log: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        writeln!(file, "=== {label}: {}", util::describe(&cmd))
            .with_context(|| format!("cannot write {}", log.display()))?;
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {label}: `{}`", util::describe(&cmd)))?;
        let file = Arc::new(Mutex::new(file));
        let watching = Arc::new(AtomicBool::new(true));
        let (tx, lines) = mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as _),
            child.stderr.take().map(|s| Box::new(s) as _),
        ];
        for stream in streams.into_iter().flatten() {
            let (file, tx, watching) = (file.clone(), tx.clone(), watching.clone());
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut f) = file.lock() {
                        let _ = writeln!(f, "{line}");
                    }
                    if watching.load(Relaxed) {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        Ok(Self {
            child,
            label: label.to_owned(),
            log: log.to_owned(),
            lines,
            watching,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the child prints a line containing `needle`; fails if it exits first.
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupt()?;
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains(needle) => {
                    self.watching.store(false, Relaxed);
                    return Ok(());
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => self.check_running()?,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both streams closed: the child is exiting; let try_wait say how.
                    thread::sleep(Duration::from_millis(100));
                    self.check_running()?;
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not print {needle:?} within {timeout:?} (its output: {})",
                    self.label,
                    self.log.display()
                );
            }
        }
    }

    /// Fails, naming the log, if the child has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!(
                "{} exited unexpectedly ({status}); its output is in {}",
                self.label,
                self.log.display()
            ),
            Err(e) => Err(e).with_context(|| format!("cannot wait for {}", self.label)),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns how it exited.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).context("pid out of range")?;
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child, never reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let status = self.child.wait()?;
        bail!(
            "{} did not exit within {grace:?} of SIGTERM and was killed ({status}); see {}",
            self.label,
            self.log.display()
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.terminate(Duration::from_secs(5));
    }
}

/// The services under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target {
    Go,
    Python,
    /// The Go gRPC demo (`tests/services/go-grpc`, gRPC over h2c), loaded by its own `load`
    /// mode: unary calls multiplexed over a few connections.
    GoGrpc,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::Go, Target::Python, Target::GoGrpc];

    pub fn label(self) -> &'static str {
        match self {
            Target::Go => "Go net/http",
            Target::Python => "Python http.server",
            Target::GoGrpc => "Go gRPC (h2c)",
        }
    }

    /// Short name for the per-program table's columns.
    pub fn short(self) -> &'static str {
        match self {
            Target::Go => "Go",
            Target::Python => "Py",
            Target::GoGrpc => "gRPC",
        }
    }

    /// Whether it speaks HTTP/2 (gRPC): no new-connection-per-request scenarios, and its load
    /// comes from the gRPC demo's own load mode (`load::grpc`).
    pub fn is_grpc(self) -> bool {
        self == Target::GoGrpc
    }

    /// Starts the service on 127.0.0.1:`port` as the test harness does (tests/src/harness.rs).
    pub fn start(self, port: u16, log: &Path) -> Result<Proc> {
        let mut cmd = match self {
            Target::Go => Command::new(
                tracer_test_support::go_service(&util::target_dir()).map_err(anyhow::Error::msg)?,
            ),
            Target::Python => {
                let mut cmd = Command::new(
                    tracer_test_support::python_interpreter().map_err(anyhow::Error::msg)?,
                );
                cmd.arg("-u")
                    .arg(tracer_test_support::services_dir().join("python/server.py"));
                cmd
            }
            Target::GoGrpc => {
                let mut cmd = Command::new(grpc_demo()?);
                cmd.arg("server");
                cmd
            }
        };
        cmd.arg(port.to_string()).env("PORT", port.to_string());
        let mut proc = Proc::spawn(cmd, &format!("{} on port {port}", self.label()), log)?;
        proc.wait_line(&format!("listening on {port}"), Duration::from_secs(20))?;
        Ok(proc)
    }
}

/// The Go gRPC demo binary (service and load), built on first use.
pub fn grpc_demo() -> Result<PathBuf> {
    tracer_test_support::go_grpc_service(&util::target_dir()).map_err(anyhow::Error::msg)
}
/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> Result<u16> {
    tracer_test_support::free_port().context("cannot bind a free port on 127.0.0.1")
}

/// Four random bytes, never all zero: run tags and generator seeds.
pub fn random_u32() -> Result<u32> {
    let mut buf = [0u8; 4];
    loop {
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut buf))
            .context("cannot read /dev/urandom")?;
        let n = u32::from_be_bytes(buf);
        if n != 0 {
            return Ok(n);
        }
    }
}
