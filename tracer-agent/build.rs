//! Builds the kernel programs (`tracer-ebpf`) for `bpfel-unknown-none` and puts the object in
//! `OUT_DIR`, where `src/loader.rs` embeds it. The eBPF crate needs `-Z build-std=core`, which
//! the stable toolchain refuses; we use Debian's rustc-web linked into rustup as `rust-web`
//! (`cargo xtask setup` does that) with `RUSTC_BOOTSTRAP`, and bpf-linker on PATH.

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

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("tracer-agent has no parent directory")?;
    let ebpf = root.join("tracer-ebpf");
    for watched in [
        ebpf.join("src"),
        ebpf.join("Cargo.toml"),
        ebpf.join("common/src"),
        ebpf.join("common/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_TOOLCHAIN");

    let toolchain = env::var("TRACER_EBPF_TOOLCHAIN").unwrap_or_else(|_| "rust-web".to_owned());
    // Two objects: read-only (no socket hash, which needs CAP_NET_ADMIN) and with the write side.
    for (dir, features, name) in [
        ("target/bpf", "", "tracer.bpf.o"),
        ("target/bpf-write", "write-side", "tracer-write.bpf.o"),
    ] {
        let object = build_object(root, &toolchain, &root.join(dir), features)?;
        let out = PathBuf::from(env::var("OUT_DIR")?).join(name);
        std::fs::copy(&object, &out)
            .with_context(|| format!("copying {} to {}", object.display(), out.display()))?;
    }
    Ok(())
}

fn build_object(
    root: &Path,
    toolchain: &str,
    target_dir: &Path,
    features: &str,
) -> anyhow::Result<PathBuf> {
    let rustflags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args(["run", toolchain, "cargo", "build", "--locked", "--release"])
        .args(["-p", "tracer-ebpf", "--target", "bpfel-unknown-none"])
        .args(if features.is_empty() {
            vec![]
        } else {
            vec!["--features", features]
        })
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(target_dir);
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
            "building tracer-ebpf with toolchain `{toolchain}` failed ({status}). If the toolchain \
             or bpf-linker is missing, run `cargo xtask setup`."
        );
    }
    Ok(target_dir.join("bpfel-unknown-none/release/tracer"))
}
