//! `cargo xtask image`: the agent's container image as an OCI image archive, built without a
//! container engine, so the tests can check the very image users deploy.
//!
//! The image has one layer: the agent at /usr/local/bin/tracer-agent and the shared libraries it
//! links (glibc, libm, `libgcc_s` and the loader, copied from the build host as `ldd` lists them),
//! nothing else; entry point, user and exposed port as in deploy/Dockerfile, which builds the
//! equivalent image with Docker. The archive is both an OCI image layout (`podman load`,
//! `skopeo copy oci-archive:...`, Docker 25+) and a `docker load` archive (manifest.json).
//! Timestamps and ownership are fixed, so the same binary gives the same digests.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build,
    util::{self, Outcome, Step},
};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const BIN_PATH: &str = "usr/local/bin/tracer-agent";

/// Builds the agent, then the image archive; returns (agent binary, archive).
pub fn image() -> Result<(PathBuf, PathBuf)> {
    let bin = build::build()?;
    let out = util::target_dir().join("image");
    let archive = out.join(format!("tracer-agent-{VERSION}-oci.tar"));
    Step::start("image", format!("OCI image {}", archive.display())).run(|s| {
        // The tar and gzip command lines are printed as they run.
        s.break_line();
        let digest = assemble(&bin, &out, &archive)?;
        Ok(Outcome::Info(format!(
            "tracer-agent:{VERSION}, manifest {digest}"
        )))
    })?;
    Ok((bin, archive))
}

/// Shared libraries of `bin` as absolute paths, from `ldd`.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let listing = util::output(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in listing.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            _ if line.contains("not found") => bail!("ldd {}: {line}", bin.display()),
            _ => {} // linux-vdso.so.1 has no file
        }
    }
    if libs.is_empty() {
        bail!("ldd lists no libraries for {}", bin.display());
    }
    Ok(libs)
}

/// Archives the contents of `dir` into `dest` with fixed order, times and owners, so the same
/// files give the same bytes.
fn tar(dir: &Path, dest: &Path) -> Result<()> {
    util::run(
        Command::new("tar")
            .args([
                "--sort=name",
                "--mtime=@0",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
            ])
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(dest)
            .arg("."),
    )
}

fn sha256(file: &Path) -> Result<String> {
    let out = util::output(Command::new("sha256sum").arg(file))?;
    out.split_whitespace()
        .next()
        .map(|h| format!("sha256:{h}"))
        .context("sha256sum printed nothing")
}

/// Moves `file` into blobs/sha256 under `layout`; returns (digest, size).
fn add_blob(layout: &Path, file: &Path) -> Result<(String, u64)> {
    let digest = sha256(file)?;
    let size = fs::metadata(file)?.len();
    let hex = digest.trim_start_matches("sha256:");
    fs::rename(file, layout.join("blobs/sha256").join(hex))
        .with_context(|| format!("moving {} into the image layout", file.display()))?;
    Ok((digest, size))
}

fn write_blob(layout: &Path, name: &str, json: &str) -> Result<(String, u64)> {
    let tmp = layout.join(name);
    fs::write(&tmp, json)?;
    add_blob(layout, &tmp)
}

/// Writes the archive; returns the manifest digest.
fn assemble(bin: &Path, out: &Path, archive: &Path) -> Result<String> {
    let rootfs = out.join("rootfs");
    let layout = out.join("layout");
    for d in [&rootfs, &layout] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
    }
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    // Mount points and a scratch directory, as container runtimes expect them.
    for d in ["proc", "sys", "dev", "tmp", "etc", "usr/local/bin"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    }
    fs::copy(bin, rootfs.join(BIN_PATH)).context("copying the agent binary")?;
    for lib in libraries(bin)? {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        fs::create_dir_all(dest.parent().context("library path without a directory")?)?;
        // fs::copy follows symlinks: the file lands under the name the loader looks for.
        fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    // Lets glibc resolve "localhost" and the collector's name without NSS modules.
    fs::write(rootfs.join("etc/nsswitch.conf"), "hosts: files dns\n")?;
    fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )?;

    let layer_tar = out.join("layer.tar");
    tar(&rootfs, &layer_tar)?;
    let diff_id = sha256(&layer_tar)?;
    util::run(
        Command::new("gzip")
            .args(["-n", "-f", "-6"])
            .arg(&layer_tar),
    )?;
    let (layer_digest, layer_size) = add_blob(&layout, &out.join("layer.tar.gz"))?;

    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"User":"0:0","Entrypoint":["/{BIN_PATH}"],"ExposedPorts":{{"9464/tcp":{{}}}},"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Labels":{{"org.opencontainers.image.title":"tracer-agent","org.opencontainers.image.version":"{VERSION}","org.opencontainers.image.licenses":"MIT OR Apache-2.0"}}}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created_by":"cargo xtask image: tracer-agent and the libraries it links"}}]}}"#
    );
    let (config_digest, config_size) = write_blob(&layout, "config.json", &config)?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#
    );
    let (manifest_digest, manifest_size) = write_blob(&layout, "manifest.json", &manifest)?;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{manifest_size},"annotations":{{"org.opencontainers.image.ref.name":"{VERSION}","io.containerd.image.name":"docker.io/library/tracer-agent:{VERSION}"}}}}]}}"#
    );
    fs::write(layout.join("index.json"), index)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let docker = format!(
        r#"[{{"Config":"blobs/sha256/{}","RepoTags":["tracer-agent:{VERSION}"],"Layers":["blobs/sha256/{}"]}}]"#,
        hex(&config_digest),
        hex(&layer_digest)
    );
    fs::write(layout.join("manifest.json"), docker)?;
    tar(&layout, archive)?;
    fs::remove_dir_all(&rootfs)?;
    fs::remove_dir_all(&layout)?;
    Ok(manifest_digest)
}
