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
    println!("cargo:rerun-if-env-changed=TRACER_EBPF_FEATURES");

    let toolchain = toolchain();
    let arch = bpf_target_arch(&env::var("CARGO_CFG_TARGET_ARCH")?)?;
    // Extra features of tracer-ebpf for both objects, comma-separated: `floor` is the bench's
    // build whose programs return at once (`cargo xtask bench`). They get eBPF target
    // directories of their own, so switching never rebuilds the real objects.
    let extra: Vec<String> = env::var("TRACER_EBPF_FEATURES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect();
    let suffix = extra.iter().fold(String::new(), |mut s, f| {
        s.push('-');
        s.push_str(f);
        s
    });
    // Two objects: read-only (no socket hash, which needs CAP_NET_ADMIN) and with the write side.
    for (dir, features, name) in [
        ("bpf", "", "tracer.bpf.o"),
        ("bpf-write", "write-side", "tracer-write.bpf.o"),
    ] {
        let features = std::iter::once(features)
            .chain(extra.iter().map(String::as_str))
            .filter(|f| !f.is_empty())
            .collect::<Vec<_>>()
            .join(",");
        let object = EbpfBuild {
            root,
            toolchain: &toolchain,
            arch,
            features: &features,
            target_dir: &root.join("target").join(format!("{dir}{suffix}-{arch}")),
        }
        .run()?;
        let out = PathBuf::from(env::var("OUT_DIR")?).join(name);
        std::fs::copy(&object, &out)
            .with_context(|| format!("copying {} to {}", object.display(), out.display()))?;
    }
    Ok(())
}
