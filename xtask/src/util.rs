//! Small helpers shared by the verbs: progress lines, running commands, locating things.

use std::{
    cell::Cell,
    env,
    ffi::OsString,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

/// How a step ended, shown at the end of its progress line.
pub enum Outcome {
    /// The step did work and it succeeded.
    Done,
    /// Nothing to do: the machine already had it. Shown so a second `setup` proves it is a no-op.
    AlreadyDone,
    /// Not done, with the reason (e.g. not root); not an error.
    Skipped(String),
    /// A check whose result is a value worth showing (a version, a path).
    Info(String),
}

/// One progress line: `[verb] name ... outcome (1.2s)`.
///
/// The line is printed before the work starts, so a newcomer sees what is running while it runs.
/// If the step prints something itself (a note, a streamed child process), the pending line is
/// ended first and the outcome is repeated on a fresh line, so output never interleaves mid-line.
pub struct Step {
    verb: &'static str,
    name: String,
    start: Instant,
    /// True while `[verb] name ...` is on screen without its newline.
    pending: Cell<bool>,
}

impl Step {
    pub fn start(verb: &'static str, name: impl Into<String>) -> Self {
        let name = name.into();
        print!("[{verb}] {name} ...");
        // stdout is line-buffered: without a flush the line would only appear with the outcome.
        let _ = std::io::stdout().flush();
        Self {
            verb,
            name,
            start: Instant::now(),
            pending: Cell::new(true),
        }
    }

    /// Prints an indented detail line under the step (ends the pending line first).
    pub fn note(&self, msg: impl AsRef<str>) {
        self.break_line();
        println!("[{}]     {}", self.verb, msg.as_ref());
    }

    /// Ends the pending progress line, e.g. before a child process streams its own output.
    pub fn break_line(&self) {
        if self.pending.replace(false) {
            println!();
        }
    }

    /// Prints the outcome with the elapsed time.
    pub fn finish(self, outcome: &Outcome) {
        let what = match outcome {
            Outcome::Done => "ok".to_owned(),
            Outcome::AlreadyDone => "already done".to_owned(),
            Outcome::Skipped(why) => format!("skipped ({why})"),
            Outcome::Info(text) => text.clone(),
        };
        let secs = self.start.elapsed().as_secs_f64();
        if self.pending.get() {
            println!(" {what} ({secs:.1}s)");
        } else {
            println!("[{}] {} ... {what} ({secs:.1}s)", self.verb, self.name);
        }
    }

    /// Runs `work` as this step: prints its outcome, or `FAILED` and the error.
    pub fn run(self, work: impl FnOnce(&Self) -> Result<Outcome>) -> Result<()> {
        match work(&self) {
            Ok(outcome) => {
                self.finish(&outcome);
                Ok(())
            }
            Err(err) => {
                let secs = self.start.elapsed().as_secs_f64();
                if self.pending.get() {
                    println!(" FAILED ({secs:.1}s)");
                } else {
                    println!("[{}] {} ... FAILED ({secs:.1}s)", self.verb, self.name);
                }
                Err(err.context(format!("step `{}` failed", self.name)))
            }
        }
    }
}

/// `prog arg1 arg2`, for messages (and the `$ ...` echo before streamed commands).
pub fn describe(cmd: &Command) -> String {
    let mut out = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.contains(char::is_whitespace) || arg.is_empty() {
            let _ = write!(out, " '{arg}'");
        } else {
            let _ = write!(out, " {arg}");
        }
    }
    out
}

/// Runs `cmd` with its output going straight to the terminal; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}` (is it installed and on PATH?)"))?;
    check_status(status, &line)
}

/// Fails with a message naming the command unless `status` is success.
pub fn check_status(status: ExitStatus, line: &str) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    match status.code() {
        Some(code) => bail!("`{line}` failed with exit code {code} (its output is above)"),
        None => bail!("`{line}` was killed by a signal ({status})"),
    }
}

/// Runs `cmd` quietly and returns its stdout; fails (with its stderr) unless it exits 0.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{line}` (is it installed and on PATH?)"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// True if this process runs as root (effective uid 0).
///
/// Read from /proc rather than through libc so that the crate needs no dependency beyond anyhow
/// and clap. The `Uid:` line lists the real, effective, saved and filesystem ids.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The workspace root: xtask lives in `<root>/xtask`, fixed at compile time, so the verbs work
/// from any current directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
}

/// The target directory cargo uses for the workspace (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match env::var_os("CARGO_TARGET_DIR") {
        // cargo resolves a relative value against its current directory, which is the root here.
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The cargo that runs us (`cargo run` sets `CARGO`), so nested builds use the same toolchain.
///
/// Without the variables `cargo run` set for xtask itself: cargo records the environment a
/// build script reads (ring's reads `CARGO_MANIFEST_DIR`), so a nested build that inherited
/// `CARGO_MANIFEST_DIR=.../xtask` and a plain `cargo build --release` in a shell would each
/// find the other's artifacts stale and rebuild ring, rustls, kube and the agent (2 minutes).
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")));
    without_cargo_run_env(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment what `cargo run` set for xtask itself (see [`cargo`]).
pub fn without_cargo_run_env(cmd: &mut Command) {
    for (name, _) in env::vars_os() {
        let set_by_cargo_run = name.to_str().is_some_and(|n| {
            n.starts_with("CARGO_PKG_")
                || matches!(
                    n,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                )
        });
        if set_by_cargo_run {
            cmd.env_remove(name);
        }
    }
}

/// `$CARGO_HOME`, else `~/.cargo`: where `cargo install` puts bpf-linker.
pub fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// Fails with `hint` unless we are root.
pub fn require_root(hint: &str) -> Result<()> {
    if is_root() {
        Ok(())
    } else {
        bail!("this needs root: {hint}")
    }
}
