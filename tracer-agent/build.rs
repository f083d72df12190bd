//! Builds the kernel programs (`tracer-ebpf`) for `bpfel-unknown-none` and the architecture the
//! agent is built for, and puts the objects in `OUT_DIR`, where `src/kernel/loader.rs` embeds
//! them. The recipe is in `ebpf_build.rs` (shared with `cargo xtask test`).

mod ebpf_build;

use std::{env, path::PathBuf};

use anyhow::Context as _;

use crate::ebpf_build::{EbpfBuild, bpf_target_arch, toolchain};

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
        manifest.join("ebpf_build.rs"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_TOOLCHAIN");

    let toolchain = toolchain();
    let arch = bpf_target_arch(&env::var("CARGO_CFG_TARGET_ARCH")?)?;
    // Two objects: read-only (no socket hash, which needs CAP_NET_ADMIN) and with the write side.
    for (dir, features, name) in [
        ("bpf", "", "tracer.bpf.o"),
        ("bpf-write", "write-side", "tracer-write.bpf.o"),
    ] {
        let object = EbpfBuild {
            root,
            toolchain: &toolchain,
            arch,
            features,
            target_dir: &root.join("target").join(format!("{dir}-{arch}")),
        }
        .run()?;
        let out = PathBuf::from(env::var("OUT_DIR")?).join(name);
        std::fs::copy(&object, &out)
            .with_context(|| format!("copying {} to {}", object.display(), out.display()))?;
    }
    Ok(())
}
