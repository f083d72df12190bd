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

/// The arm64 release build, without setup.
fn build_arm64_only() -> Result<PathBuf> {
    let bin = arm64_release_dir().join("tracer-agent");
    Step::start(
        "build",
        format!("cargo build --release --locked --target {ARM64} -p tracer-agent (rust-web)"),
    )
    .run(|s| {
        s.break_line();
        util::run(&mut arm64_cargo("build", &["-p", "tracer-agent"]))
            .context("the arm64 build failed: the compiler errors are above")?;
        require_arm64(&bin)?;
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

/// `cargo SUBCOMMAND --release --locked --target aarch64-unknown-linux-gnu ARGS` with Debian's
/// compiler, through the toolchain setup links (`rust-web`), not the one that runs xtask: the
/// arm64 standard library is Debian's. Its own target directory (`target/aarch64`, shared by the
/// builds and the unit tests), so the host build's artifacts, made by another compiler, are never
/// rebuilt. Test binaries run under [`ARM64_RUNNER`]. Needs [`setup::ensure_arm64_cross`].
pub fn arm64_cargo(subcommand: &str, args: &[&str]) -> Command {
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
        .args(["--target", ARM64])
        .args(args)
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

/// Where [`arm64_cargo`] puts release binaries.
pub fn arm64_release_dir() -> PathBuf {
    arm64_target_dir().join(ARM64).join("release")
}

/// An error unless `bin` is an arm64 ELF executable.
pub fn require_arm64(bin: &std::path::Path) -> Result<()> {
    let machine = elf_machine(bin)?;
    if machine != EM_AARCH64 {
        bail!(
            "{} was built but is not an arm64 executable (ELF machine {machine})",
            bin.display()
        );
    }
    Ok(())
}

/// The shared libraries a dynamically linked `bin` loads, as absolute paths (the dynamic loader
/// included), for either architecture: what the loader itself lists in its trace mode
/// (`LD_TRACE_LOADED_OBJECTS`, which `ldd` sets), an arm64 loader run under qemu-user (`ldd`
/// cannot run a foreign one). The arm64 paths are the multiarch ones setup installs
/// (`/lib/aarch64-linux-gnu`).
pub fn shared_libraries(bin: &std::path::Path) -> Result<Vec<PathBuf>> {
    let listing = if elf_machine(bin)? == EM_AARCH64 {
        util::output(
            Command::new(ARM64_RUNNER)
                .args(["-E", "LD_TRACE_LOADED_OBJECTS=1"])
                .arg(bin),
        )?
    } else {
        util::output(Command::new("ldd").arg(bin))?
    };
    parse_loaded_objects(&listing).with_context(|| format!("libraries of {}", bin.display()))
}

/// The absolute paths of a loader trace: `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`,
/// `/lib64/ld-linux-x86-64.so.2 (0x...)` or `linux-vdso.so.1 (0x...)` (in the kernel, no file).
fn parse_loaded_objects(listing: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in listing.lines() {
        if line.contains("not found") {
            bail!("a library is missing: {}", line.trim());
        }
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next());
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    if libs.is_empty() {
        bail!("the loader lists no libraries: {listing:?}");
    }
    Ok(libs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_loader_trace() {
        let trace = "\tlinux-vdso.so.1 (0x00007f8e799b7000)\n\
                     \tlibgcc_s.so.1 => /lib/aarch64-linux-gnu/libgcc_s.so.1 (0x00007f8e79930000)\n\
                     \t/lib/ld-linux-aarch64.so.1 (0x00007f8e79970000)\n";
        assert_eq!(
            parse_loaded_objects(trace).unwrap(),
            [
                PathBuf::from("/lib/aarch64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/ld-linux-aarch64.so.1")
            ]
        );
        assert!(parse_loaded_objects("\tlibfoo.so => not found\n").is_err());
        assert!(parse_loaded_objects("\tstatically linked\n").is_err());
    }
}
