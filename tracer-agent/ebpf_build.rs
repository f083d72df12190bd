//! How the kernel programs (`tracer-ebpf`) are built, in one place: tracer-agent's build script
//! builds the objects it embeds with it, and `cargo xtask test` builds them for the other
//! architectures the programs support, to prove they compile there.
//!
//! The eBPF crate needs `-Z build-std=core`, which the stable toolchain refuses: Debian's
//! rustc-web linked into rustup as `rust-web` (`cargo xtask setup` does that) runs it with
//! `RUSTC_BOOTSTRAP`, and bpf-linker links it.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Outer-cargo variables that must not leak into the nested eBPF build.
const SCRUB: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "CARGO_PROFILE_RELEASE_DEBUG",
    "RUSTUP_TOOLCHAIN",
];

/// The rustup toolchain that builds the programs: `TRACER_EBPF_TOOLCHAIN`, else `rust-web`
/// (Debian's rustc-web, linked by `cargo xtask setup`).
pub fn toolchain() -> String {
    env::var("TRACER_EBPF_TOOLCHAIN").unwrap_or_else(|_| "rust-web".to_owned())
}

/// The architectures whose register layout and syscall ABI the kernel programs know.
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// The `bpf_target_arch` for an agent built for `target_arch` (cargo's `CARGO_CFG_TARGET_ARCH`):
/// the programs read that architecture's user registers (Go's ABI) and syscall arguments.
pub fn bpf_target_arch(target_arch: &str) -> anyhow::Result<&'static str> {
    ARCHES
        .into_iter()
        .find(|a| *a == target_arch)
        .with_context(|| {
            format!(
                "the kernel programs support {}, not {target_arch}",
                ARCHES.join(" and ")
            )
        })
}

/// One build of the eBPF crate.
pub struct EbpfBuild<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The rustup toolchain that builds it (`rust-web`).
    pub toolchain: &'a str,
    pub arch: &'a str,
    /// Cargo features of tracer-ebpf (`write-side`), empty for none.
    pub features: &'a str,
    pub target_dir: &'a Path,
}

impl EbpfBuild<'_> {
    /// Builds the object; returns its path.
    pub fn run(&self) -> anyhow::Result<PathBuf> {
        let rustflags = [
            format!("--cfg=bpf_target_arch=\"{}\"", self.arch),
            "-Cdebuginfo=2".to_owned(),
            "-Clink-arg=--btf".to_owned(),
        ]
        .join("\x1f");
        let mut cmd = Command::new("rustup");
        cmd.current_dir(self.root)
            .args([
                "run",
                self.toolchain,
                "cargo",
                "build",
                "--locked",
                "--release",
            ])
            .args(["-p", "tracer-ebpf", "--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core", "--target-dir"])
            .arg(self.target_dir);
        if !self.features.is_empty() {
            cmd.args(["--features", self.features]);
        }
        for var in SCRUB {
            cmd.env_remove(var);
        }
        // bpf-linker lives in cargo's bin directory, which is not always on a build script's PATH.
        let cargo_bin = env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|p| p.join("bin"));
        if let Some(bin) = cargo_bin {
            let path = env::var_os("PATH").unwrap_or_default();
            let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)))?;
            cmd.env("PATH", joined);
        }
        cmd.env("RUSTC_BOOTSTRAP", "1")
            .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
        let status = cmd.status().with_context(
            || "could not run rustup to build the eBPF programs; run `cargo xtask setup` first",
        )?;
        if !status.success() {
            bail!(
                "building tracer-ebpf for {} with toolchain `{}` failed ({status}). If the \
                 toolchain or bpf-linker is missing, run `cargo xtask setup`.",
                self.arch,
                self.toolchain
            );
        }
        Ok(self.target_dir.join("bpfel-unknown-none/release/tracer"))
    }
}
