//! `cargo xtask build`: setup, then the release build of the agent, for this machine or (with
//! `--target aarch64-unknown-linux-gnu`) for arm64.

use std::{fs, io::Read as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    setup,
    util::{self, Outcome, Step},
};

/// Runs setup and `cargo build --release --locked`; returns the agent binary's path.
pub fn build() -> Result<PathBuf> {
    setup::setup()?;
    build_host()
}

/// Setup with the arm64 pieces, then both builds: for this machine and for arm64 (the
/// multi-arch image, `cargo xtask test`). Returns the (host, arm64) binaries.
pub fn build_both() -> Result<(PathBuf, PathBuf)> {
    setup::setup()?;
    setup::ensure_arm64_cross()?;
    Ok((build_host()?, build_arm64_only()?))
}

/// The host release build, without setup.
fn build_host() -> Result<PathBuf> {
    let bin = util::target_dir().join("release/tracer-agent");
    // No `-p`: the workspace's default members are what CI and the tests use. tracer-agent's
    // build.rs builds the eBPF object (with the rust-web toolchain and bpf-linker from setup)
    // and embeds it, so this one command yields a self-contained binary.
    Step::start("build", "cargo build --release --locked").run(|s| {
        s.break_line();
        let mut cargo = util::cargo();
        cargo
            .current_dir(util::workspace_root())
            .args(["build", "--release", "--locked"]);
        util::run(&mut cargo).context("the release build failed: the compiler errors are above")?;
        if !bin.is_file() {
            bail!("the build succeeded but {} is missing", bin.display());
        }
        Ok(Outcome::Info(format!("ok: {}", bin.display())))
    })?;
    Ok(bin)
}

/// The arm64 target, the only one besides the host's.
pub const ARM64: &str = "aarch64-unknown-linux-gnu";

/// `cargo xtask build [--target TRIPLE]`: the host build, or the arm64 one.
pub fn build_for(target: Option<&str>) -> Result<PathBuf> {
    match target {
        None | Some("x86_64-unknown-linux-gnu") => build(),
        Some(ARM64) => build_arm64(),
        Some(other) => {
            bail!("--target {other} is not supported: x86_64-unknown-linux-gnu or {ARM64}")
        }
    }
}

/// Setup (and the arm64 cross packages), then the agent for arm64 with the same kernel programs
/// compiled for arm64 (`bpf_target_arch = "aarch64"`: the `pt_regs` layout of kprobes and uprobes
/// and the Go register ABI). Built by Debian's rustc-web, whose arm64 standard library setup
/// installs, in a target directory of its own (`target/aarch64`), so the host build's
/// artifacts, made by another compiler, are never rebuilt. Returns the binary's path.
pub fn build_arm64() -> Result<PathBuf> {
    setup::setup()?;
    setup::ensure_arm64_cross()?;
    build_arm64_only()
}

/// Runs arm64 programs here: qemu-user, called by name (`binfmt_misc` may be absent). Without
/// `-L /usr/aarch64-linux-gnu`: the cross package's loader with the multiarch libc of another
/// version hangs every program that starts a thread; the multiarch loader and libc in
/// /lib/aarch64-linux-gnu (libc6:arm64) are what the binaries find by their own paths.
pub const ARM64_RUNNER: &str = "qemu-aarch64-static";

/// `cargo SUBCOMMAND --release --locked --target aarch64-unknown-linux-gnu -p tracer-agent`
/// with Debian's compiler, through the toolchain setup links (`rust-web`), not the one that
/// runs xtask: the arm64 standard library is Debian's. The target directory is
/// `target/aarch64`, shared by the build and the unit tests, so the host build's artifacts,
/// made by another compiler, are never rebuilt. Test binaries run under [`ARM64_RUNNER`].
pub fn arm64_cargo(subcommand: &str) -> Command {
    let mut cargo = Command::new("rustup");
    util::without_cargo_run_env(&mut cargo);
    cargo
        .current_dir(util::workspace_root())
        .args([
            "run",
            "rust-web",
            "cargo",
            subcommand,
            "--release",
            "--locked",
        ])
        .args(["--target", ARM64, "-p", "tracer-agent"])
        .env("CARGO_TARGET_DIR", arm64_target_dir())
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            "aarch64-linux-gnu-gcc",
        )
        .env(
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER",
            ARM64_RUNNER,
        );
    cargo
}

fn arm64_target_dir() -> PathBuf {
    util::target_dir().join("aarch64")
}

/// The arm64 release build, without setup.
fn build_arm64_only() -> Result<PathBuf> {
    let bin = arm64_target_dir().join(ARM64).join("release/tracer-agent");
    Step::start(
        "build",
        format!("cargo build --release --locked --target {ARM64} -p tracer-agent (rust-web)"),
    )
    .run(|s| {
        s.break_line();
        util::run(&mut arm64_cargo("build"))
            .context("the arm64 build failed: the compiler errors are above")?;
        let machine = elf_machine(&bin)?;
        if machine != EM_AARCH64 {
            bail!(
                "{} was built but is not an arm64 executable (ELF machine {machine})",
                bin.display()
            );
        }
        Ok(Outcome::Info(format!(
            "ok: {} (ELF, AArch64)",
            bin.display()
        )))
    })?;
    Step::start(
        "build",
        "the arm64 agent runs (qemu-aarch64-static tracer-agent --version)",
    )
    .run(|_| {
        let version = util::output(Command::new(ARM64_RUNNER).arg(&bin).arg("--version"))
            .context("the arm64 agent does not run under qemu-user")?;
        Ok(Outcome::Info(version.trim().to_owned()))
    })?;
    Ok(bin)
}

const EM_AARCH64: u16 = 183;

/// The `e_machine` of an ELF file (little-endian), from its first 20 bytes.
fn elf_machine(path: &std::path::Path) -> Result<u16> {
    let mut head = [0u8; 20];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("cannot read the ELF header of {}", path.display()))?;
    if head[..4] != *b"\x7fELF" {
        bail!("{} is not an ELF file", path.display());
    }
    Ok(u16::from_le_bytes([head[18], head[19]]))
}
