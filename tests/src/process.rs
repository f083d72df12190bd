//! Child processes with collected output, for the harness.
//!
//! Distinct from the bench's children (`xtask/src/bench/procs.rs`) on purpose: a test is short
//! and its children's output belongs in the failure message, so it is kept in memory here; a
//! bench runs for minutes and writes it to log files. What both share about the demo services
//! (building the Go one, finding Python, free ports) is in `tests/support`.
//!
//! stdout and stderr are read by background threads into one buffer (and a line channel, to wait
//! for readiness lines); when the test thread is panicking, dropping the process prints the buffer.
//! Every live child is also listed in a registry, so that a signal handler (the mesh demo's) can
//! stop them all when the thread that owns them cannot unwind.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pids of the children spawned here and not yet reaped by [`Proc`]'s drop. A pid stays ours until
/// it is reaped (until then it is at worst a zombie), so signalling these can never hit a stranger.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Set by [`terminate_all`]: from then on no child may be started (another thread may still be
/// starting the scenario) and dropped processes do not dump their output.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether children get a process group of their own; see [`detach_from_terminal_signals`].
static OWN_GROUP: AtomicBool = AtomicBool::new(false);

/// From now on, start children in their own process group, so that Ctrl-C in the terminal reaches
/// only this process (which then stops them in order, see `terminate_all`) and not every child
/// at once. Not for tests: a test binary killed by Ctrl-C runs no cleanup, and then its children
/// must get the signal themselves.
pub fn detach_from_terminal_signals() {
    OWN_GROUP.store(true, Ordering::Relaxed);
}

fn live() -> std::sync::MutexGuard<'static, Vec<u32>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Output kept per process; older output is dropped beyond this, the end is what explains a failure.
const MAX_OUTPUT: usize = 1 << 20;

/// A child process whose output is collected.
pub(crate) struct Proc {
    pub(crate) child: Child,
    label: String,
    output: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, label: String) -> Self {
        if OWN_GROUP.load(Ordering::Relaxed) {
            cmd.process_group(0);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Checked and registered under the lock, so terminate_all never misses a child.
        let mut registry = live();
        assert!(
            !STOPPING.load(Ordering::SeqCst),
            "not starting {label}: stopping every process"
        );
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {label} ({cmd:?}): {e}"));
        registry.push(child.id());
        drop(registry);
        let output = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        let stderr = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>);
        for (stream, tag) in [(stdout, "out"), (stderr, "err")] {
            let (output, tx) = (output.clone(), tx.clone());
            let stream = stream.expect("piped");
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let mut out = output
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if out.len() > MAX_OUTPUT {
                        let cut = out.len() - MAX_OUTPUT / 2;
                        let cut = (cut..out.len())
                            .find(|i| out.is_char_boundary(*i))
                            .unwrap_or(0);
                        out.replace_range(..cut, "[...]\n");
                    }
                    let _ = writeln!(out, "[{tag}] {line}");
                    drop(out);
                    let _ = tx.send(line);
                }
            });
        }
        Self {
            child,
            label,
            output,
            lines,
        }
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits for an output line (stdout or stderr) containing `needle`.
    pub(crate) fn wait_line(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                        panic!(
                            "{} exited ({status}) before printing {needle:?}; output:\n{}",
                            self.label,
                            self.output()
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{} did not print {needle:?} within {timeout:?}; output:\n{}",
                        self.label,
                        self.output()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    panic!(
                        "{} closed its output ({status}) before printing {needle:?}; output:\n{}",
                        self.label,
                        self.output()
                    );
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    pub(crate) fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: plain kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM for {grace:?}; killing it", self.label);
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        live().retain(|p| *p != pid);
        if std::thread::panicking() && !STOPPING.load(Ordering::SeqCst) {
            eprintln!(
                "----- output of {} -----\n{}----- end of {} -----",
                self.label,
                self.output(),
                self.label
            );
        }
    }
}

/// SIGTERM to every live child (the agent flushes its spans on it), up to `grace` for them to
/// exit, then SIGKILL to the rest. For a process about to exit on a signal: children are reaped
/// here, so their [`Proc`]s must not be used afterwards.
pub fn terminate_all(grace: Duration) {
    let pids: Vec<libc::pid_t> = {
        let live = live();
        STOPPING.store(true, Ordering::SeqCst);
        live.iter()
            .filter_map(|p| libc::pid_t::try_from(*p).ok())
            .collect()
    };
    for pid in &pids {
        // SAFETY: kill(2) on our own child, not reaped yet (see LIVE).
        unsafe { libc::kill(*pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    let mut left = pids;
    while !left.is_empty() && Instant::now() < deadline {
        // SAFETY: waitpid(2) with WNOHANG on our own children; a null status pointer is allowed.
        left.retain(|pid| unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) } == 0);
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in left {
        // SAFETY: as above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    live().clear();
}
