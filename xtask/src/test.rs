//! `cargo xtask test [-- CARGO TEST ARGS]`: setup, build (for this machine and arm64), then the
//! whole workspace's tests against the freshly built agent and the agent's unit tests for arm64
//! under qemu-user, with a one-line summary of both; then each fuzz target briefly and the
//! kernel matrix subset (the arm64 unit tests, fuzz targets and matrix are skipped when a test
//! filter is given).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, ExitStatus, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{build, fuzz, image, util, vmtest};

pub fn test(args: &[String]) -> Result<()> {
    // The integration tests load eBPF programs. Without root they would have to be skipped, and a
    // run that skips them must not look green, so refuse up front instead.
    util::require_root(
        "the integration tests load eBPF programs and are never skipped; \
         run `sudo -E cargo xtask test` (CI runs .ci/run as root)",
    )?;
    // The image is built too (for amd64 and arm64, with setup's arm64 cross packages): a test
    // runs the agent from inside it. The arm64 build compiles the kernel programs for arm64
    // (both objects, the write side included), which the arm64 guests of the matrix then run.
    let (bin, image) = image::image()?;

    let mut cmd = util::cargo();
    cmd.current_dir(util::workspace_root())
        // Every test binary runs even after one fails: one run shows every failure.
        .args([
            "test",
            "--release",
            "--locked",
            "--workspace",
            "--no-fail-fast",
        ])
        // tracer-ebpf is a no_std/no_main crate for bpfel-unknown-none (built by tracer-agent's
        // build.rs); compiled for the host as a test it cannot link, and it has no tests.
        .args(["--exclude", "tracer-ebpf"])
        .args(args)
        // The tests run this binary instead of building their own, so they test what was built.
        .env("TRACER_AGENT_BIN", &bin)
        .env("TRACER_IMAGE", &image);
    println!("[test] TRACER_AGENT_BIN={}", bin.display());
    let host = run_counted(&mut cmd)?;
    println!(
        "[test] cargo test {} after {:.1}s ({} test binaries reported, {} with failures)",
        verdict(host.status),
        host.secs,
        host.totals.binaries,
        host.totals.failed_binaries,
    );
    // The agent's unit tests again, compiled for arm64 and run under qemu-user (the integration
    // tests load eBPF programs into this kernel: host only). A filter names host tests, so it
    // skips this step as it skips the fuzz targets and the kernel matrix.
    let arm64 = if args.is_empty() {
        Some(arm64_unit_tests()?)
    } else {
        None
    };
    summarize(&host, arm64.as_ref())?;
    if !args.is_empty() {
        println!(
            "[test] arm64 unit tests, fuzz targets and kernel matrix skipped: a test filter was given"
        );
        return Ok(());
    }
    // Each fuzz target briefly, from the committed seeds (and the corpus a longer local run
    // grew): a crash fails the run. `cargo xtask fuzz --time 600` fuzzes for longer.
    println!(
        "[test] fuzz targets, {}s each (cargo xtask fuzz --time {})",
        fuzz::CI_SECONDS,
        fuzz::CI_SECONDS
    );
    fuzz::fuzz(&fuzz::Options {
        targets: Vec::new(),
        time: fuzz::CI_SECONDS,
        jobs: 1,
        asan: false,
    })
    .context("a fuzz target crashed or could not run; its input and output are named above")?;
    // The same suite on other kernels: the oldest supported and the newest with every attach
    // family, the write side on the two between. `cargo xtask vm-test` runs everything.
    println!(
        "[test] kernel matrix subset: 5.10 and the newest kernel, every attach family and the write side"
    );
    vmtest::vm_test(&vmtest::Options::ci()).context(
        "the kernel matrix failed; rerun it with `sudo -E cargo xtask vm-test --kernels 5.10,7`",
    )?;
    println!("[test] kernel matrix, write side (sk_msg rewrite): 6.1 and 6.12");
    vmtest::vm_test(&vmtest::Options::ci_write()).context(
        "the write-side kernel matrix failed; rerun it with `sudo -E cargo xtask vm-test --kernels 6.1,6.12 --attach write`",
    )?;
    println!("[test] kernel matrix, arm64: 6.12, every attach family and the write side");
    vmtest::vm_test(&vmtest::Options::ci_arm64()).context(
        "the arm64 kernel matrix failed; rerun it with `sudo -E cargo xtask vm-test --arch arm64 --kernels 6.12`",
    )
}

/// Prints the arm64 counts and the closing `summary:` line (host and arm64 together), then
/// fails if either run failed.
fn summarize(host: &Run, arm64: Option<&Run>) -> Result<()> {
    let mut totals = host.totals.clone();
    if let Some(arm64) = arm64 {
        println!(
            "[test] arm64 unit tests (qemu-user) {} after {:.1}s: {} passed, {} failed, {} skipped \
             ({} cannot run under qemu-user)",
            verdict(arm64.status),
            arm64.secs,
            arm64.totals.passed,
            arm64.totals.failed,
            arm64.totals.ignored + arm64.totals.filtered,
            arm64.totals.filtered,
        );
        totals.passed += arm64.totals.passed;
        totals.failed += arm64.totals.failed;
        totals.ignored += arm64.totals.ignored + arm64.totals.filtered;
    }
    // The plain `N passed, N failed, N skipped` form is what CI reads as the run's closing line;
    // it counts the arm64 unit tests too.
    println!(
        "summary: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    if !host.status.success() {
        bail!(
            "cargo test failed ({}): the failures are above; rerun some with \
             `sudo -E cargo xtask test -- NAME_FILTER`",
            host.status
        );
    }
    if let Some(arm64) = arm64 {
        if !arm64.status.success() {
            bail!(
                "the arm64 unit tests failed under qemu-user ({}): the failures are above; \
                 rerun them with `CARGO_TARGET_DIR=target/aarch64 \
                 CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
                 CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER={} rustup run rust-web cargo test \
                 --release --target {} -p tracer-agent`",
                arm64.status,
                build::ARM64_RUNNER,
                build::ARM64,
            );
        }
        // A name here that matches no test would quietly skip nothing.
        if arm64.totals.filtered != QEMU_USER_SKIPS.len() as u64 {
            bail!(
                "the arm64 unit tests left out {} tests, but QEMU_USER_SKIPS in \
                 xtask/src/test.rs names {}: a test there was renamed or removed",
                arm64.totals.filtered,
                QEMU_USER_SKIPS.len()
            );
        }
    }
    Ok(())
}

/// Unit tests left out under qemu-user, which does not emulate what they need; they run in the
/// host step. qemu-user translates only the `NETLINK_ROUTE`, `NETLINK_KOBJECT_UEVENT` and
/// `NETLINK_AUDIT` netlink families and answers `EPROTONOSUPPORT` for `NETLINK_SOCK_DIAG`,
/// which this test compares with /proc (the agent itself falls back to /proc then). Nothing
/// arm64-specific: on an arm64 kernel the test runs as on x86-64.
const QEMU_USER_SKIPS: [&str; 1] =
    ["procs::listeners::tests::netlink_and_proc_agree_on_a_live_listener"];

/// The agent's unit tests for arm64 under qemu-user, in the arm64 build's target directory
/// (the binary itself was built by the image step).
fn arm64_unit_tests() -> Result<Run> {
    let mut cmd = build::arm64_cargo("test", &["-p", "tracer-agent"]);
    // `--exact`: each skip names one test, so the count left out proves the list current.
    cmd.args(["--", "--exact"]);
    for name in QEMU_USER_SKIPS {
        cmd.args(["--skip", name]);
    }
    println!(
        "[test] arm64 unit tests under {} (the integration tests need this kernel: host only)",
        build::ARM64_RUNNER
    );
    run_counted(&mut cmd)
}

/// How one `cargo test` ended.
struct Run {
    status: ExitStatus,
    totals: Totals,
    secs: f64,
}

fn verdict(status: ExitStatus) -> &'static str {
    if status.success() { "passed" } else { "FAILED" }
}

/// Runs a `cargo test` with its stdout passed through line by line and its `test result:` lines
/// added up; stderr (cargo's progress, test logs) stays on the terminal untouched.
fn run_counted(cmd: &mut Command) -> Result<Run> {
    cmd.stdout(Stdio::piped());
    let line = util::describe(cmd);
    println!("$ {line}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo test's stdout was not piped")?;
    let mut totals = Totals::default();
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .context("reading cargo test's output")?;
        if n == 0 {
            break;
        }
        // Passed through as bytes, line by line, so progress shows while the tests run.
        let mut out = std::io::stdout().lock();
        out.write_all(&buf).context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
        totals.add_line(&String::from_utf8_lossy(&buf));
    }
    let status = child.wait().context("waiting for cargo test")?;
    Ok(Run {
        status,
        totals,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// Sums of libtest's `test result: ok. 3 passed; 0 failed; 1 ignored; ...` lines.
#[derive(Default, Debug, PartialEq, Clone)]
struct Totals {
    binaries: u32,
    failed_binaries: u32,
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Left out by a filter or `--skip`.
    filtered: u64,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        let Some((verdict, counts)) = rest.split_once(". ") else {
            return;
        };
        self.binaries += 1;
        if verdict != "ok" {
            self.failed_binaries += 1;
        }
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                "filtered" => self.filtered += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn adds_up_libtest_results() {
        let mut t = Totals::default();
        t.add_line("running 3 tests\n");
        t.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n");
        t.add_line("test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s\n");
        assert_eq!(
            t,
            Totals {
                binaries: 2,
                failed_binaries: 1,
                passed: 4,
                failed: 2,
                ignored: 1,
                filtered: 0
            }
        );
    }
}
