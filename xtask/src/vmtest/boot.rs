//! Boots one kernel in QEMU (software emulation) with the initramfs, follows the serial console
//! and turns its markers into results. A guest that crashes or hangs ends as a failure: QEMU
//! exits on a panic (`panic=-1` with `-no-reboot`) and is killed at the deadline.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read, Write as _},
    path::Path,
    process::Stdio,
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{Arch, fetch::Qemu};
use crate::util::{self, Step};

/// Console lines kept for a failure that happened outside any suite run.
const TAIL: usize = 40;

/// One run of the guest suite.
pub struct Run {
    /// The agent arguments of the run.
    pub args: String,
    /// The agent's ready line without its prefix and selection: the attach plan.
    pub plan: Option<String>,
    /// Wall time of a syscall of an untraced process in the guest, without and with the
    /// agent (ns; emulated, so only the ratio means something).
    pub unrelated_ns: Option<(f64, f64)>,
    pub result: Result<(), String>,
    /// Set when the run's forced attach family does not exist on this kernel (not a failure).
    pub unsupported: Option<String>,
    pub secs: f64,
    /// The console lines of the run (or the end of the console if it never started).
    pub output: Vec<String>,
}

pub struct Boot {
    pub runs: Vec<Run>,
    /// Wall time of the whole QEMU process.
    pub secs: f64,
}

#[derive(Default)]
struct Console {
    lines: Vec<String>,
    /// Runs seen so far, with their start time and result if it came.
    runs: Vec<(Instant, Run, bool)>,
    crash: Option<String>,
}

impl Console {
    fn feed(&mut self, raw: &str, at: Instant, s: &Step) {
        let line = printable(raw);
        let line = line.as_str();
        let interesting = ["GUEST-", "guest-suite:", "check FAIL", "agent| Error"]
            .iter()
            .any(|p| line.starts_with(p))
            || line.contains("agent ready");
        if let Some(rest) = line.strip_prefix("GUEST-RUN ") {
            let args = rest.split_once(' ').map_or("", |(_, a)| a).to_owned();
            let run = Run {
                args,
                plan: None,
                unrelated_ns: None,
                result: Ok(()),
                unsupported: None,
                secs: 0.0,
                output: Vec::new(),
            };
            self.runs.push((at, run, false));
        } else if let Some((start, run, done)) = self.runs.last_mut().filter(|r| !r.2) {
            run.output.push(line.to_owned());
            if let Some(ready) = line.split_once("agent ready: ").map(|(_, r)| r) {
                // `30 programs attached; capture=...; tracing pids [..] ...`: keep the plan part.
                run.plan = Some(ready.split("; tracing ").next().unwrap_or(ready).to_owned());
            }
            if let Some(figures) = line.strip_prefix("GUEST-FIGURE unrelated-syscall-ns ") {
                let mut ns = figures.split_whitespace().filter_map(|v| v.parse().ok());
                run.unrelated_ns = ns.next().zip(ns.next());
            }
            if let Some(result) = line.strip_prefix("GUEST-RESULT ") {
                run.result = match result.strip_prefix("FAIL") {
                    Some(reason) => Err(reason.trim().to_owned()),
                    None => Ok(()),
                };
                run.unsupported = result
                    .strip_prefix("UNSUPPORTED")
                    .map(|reason| reason.trim().to_owned());
                run.secs = at.duration_since(*start).as_secs_f64();
                *done = true;
            }
        }
        let crash = [
            "Kernel panic",
            "BUG: ",
            "Oops: ",
            "general protection fault",
        ];
        if self.crash.is_none() && crash.iter().any(|c| line.contains(c)) {
            self.crash = Some(line.trim().to_owned());
        }
        if interesting || self.crash.as_deref() == Some(line.trim()) {
            s.note(format!("| {line}"));
        }
        self.lines.push(line.to_owned());
    }

    /// Results for `expected` runs; the ones without a marker fail with `cause`.
    fn finish(self, expected: &[String], cause: &str, at: Instant) -> Vec<Run> {
        let tail = self.lines[self.lines.len().saturating_sub(TAIL)..].to_vec();
        let mut runs: Vec<Run> = self
            .runs
            .into_iter()
            .map(|(start, mut run, done)| {
                if !done {
                    run.result = Err(cause.to_owned());
                    run.secs = at.duration_since(start).as_secs_f64();
                }
                run
            })
            .collect();
        for args in expected.iter().skip(runs.len()) {
            runs.push(Run {
                args: args.clone(),
                plan: None,
                unrelated_ns: None,
                result: Err(cause.to_owned()),
                unsupported: None,
                secs: 0.0,
                output: tail.clone(),
            });
        }
        runs
    }
}

/// `line` without terminal escape sequences and control characters: the BIOS clears the
/// screen with them, and they have no place in the table or on the terminal.
fn printable(line: &str) -> String {
    // A carriage return inside a line starts it over, as on a terminal.
    let line = line.trim_end_matches(['\r', '\n']);
    let line = line.rsplit('\r').next().unwrap_or(line);
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // `ESC [ params letter` (CSI) or `ESC letter`.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// Boots `vmlinuz` (an `arch` kernel) with `initramfs`, whose /init runs the suite once per
/// `expected` line.
#[allow(clippy::too_many_arguments)] // one call site, each argument a different thing
pub fn boot(
    qemu: &Qemu,
    arch: Arch,
    vmlinuz: &Path,
    initramfs: &Path,
    expected: &[String],
    timeout: Duration,
    log: &Path,
    s: &Step,
) -> Result<Boot> {
    let mut cmd = qemu.command(arch);
    // -nic none: the guests have only loopback. stdin is null so QEMU leaves the terminal alone.
    cmd.args(arch.machine_args())
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
        ])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!("console={} panic=-1 quiet", arch.console()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let line = util::describe(&cmd);
    s.note(format!("$ {line}"));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let (tx, rx) = mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().context("QEMU stdout not piped")?),
        Box::new(child.stderr.take().context("QEMU stderr not piped")?),
    ];
    for pipe in pipes {
        let tx = tx.clone();
        thread::spawn(move || {
            // Lossy: a crashing guest may print anything on the serial line.
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let _ = tx.send((Instant::now(), String::from_utf8_lossy(&buf).into_owned()));
                buf.clear();
            }
        });
    }
    drop(tx);

    let mut log_file =
        fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut console = Console::default();
    let deadline = started + timeout;
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((at, line)) => {
                let _ = log_file.write_all(line.as_bytes());
                console.feed(&line, at, s);
            }
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = child.wait().context("waiting for QEMU")?;
    let cause = if timed_out {
        format!(
            "guest hung: no result within {}s, QEMU killed",
            timeout.as_secs()
        )
    } else if let Some(crash) = &console.crash {
        format!("guest crashed: {crash}")
    } else {
        format!("guest stopped without a result (QEMU {status})")
    };
    let now = Instant::now();
    Ok(Boot {
        runs: console.finish(expected, &cause, now),
        secs: now.duration_since(started).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes() {
        assert_eq!(
            printable("\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1)\r\n"),
            "SeaBIOS (version 1)"
        );
        assert_eq!(printable("GUEST-RESULT PASS\r"), "GUEST-RESULT PASS");
        assert_eq!(
            printable("Booting..\x1bc.\rGUEST-KERNEL 7.2\r\n"),
            "GUEST-KERNEL 7.2"
        );
    }
}
