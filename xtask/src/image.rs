//! `cargo xtask image`: the agent's container image for linux/amd64 and linux/arm64 as one OCI
//! image archive, built without a container engine, so the tests can check the very image users
//! deploy.
//!
//! Each architecture's image has one layer: that architecture's agent at
//! /usr/local/bin/tracer-agent and the shared libraries it links (glibc, libm, `libgcc_s` and
//! the loader, copied from the build host: /lib/x86_64-linux-gnu, and Debian's multiarch arm64
//! packages in /lib/aarch64-linux-gnu), nothing else; entry point, user and exposed port as in
//! deploy/Dockerfile, which builds the equivalent images with Docker buildx. The archive is an
//! OCI image layout whose index.json names one image index (the multi-arch image) holding both
//! platforms' manifests: `skopeo copy --all oci-archive:...` pushes both, `podman load` and
//! Docker's containerd image store pick this machine's platform. Its manifest.json, for the
//! classic `docker load`, can name only one image per tag: the amd64 one. Timestamps and
//! ownership are fixed, so the same binaries give the same digests.

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

/// One platform of the multi-arch image.
struct Platform {
    /// OCI/Go architecture name, as in the index's `platform` and the config.
    arch: &'static str,
    /// `v8` for arm64, as Docker and `BuildKit` write it; amd64 has none.
    variant: Option<&'static str>,
    /// The agent built for this architecture.
    bin: PathBuf,
    /// The dynamic loader (`PT_INTERP`), which lists the libraries the agent links.
    loader: &'static str,
}

impl Platform {
    /// `"architecture":"arm64","os":"linux","variant":"v8"`, shared by the index and the config.
    fn json_fields(&self) -> String {
        let variant = self
            .variant
            .map(|v| format!(r#","variant":"{v}""#))
            .unwrap_or_default();
        format!(r#""architecture":"{}","os":"linux"{variant}"#, self.arch)
    }
}

/// Builds the agent for amd64 and arm64, then the image archive; returns (the host's agent
/// binary, archive).
pub fn image() -> Result<(PathBuf, PathBuf)> {
    if std::env::consts::ARCH != "x86_64" {
        bail!("the image is built on x86-64 hosts (arm64 is cross-compiled)");
    }
    let (host, arm64) = build::build_both()?;
    let platforms = [
        Platform {
            arch: "amd64",
            variant: None,
            bin: host.clone(),
            loader: "/lib64/ld-linux-x86-64.so.2",
        },
        Platform {
            arch: "arm64",
            variant: Some("v8"),
            bin: arm64,
            loader: "/lib/ld-linux-aarch64.so.1",
        },
    ];
    let out = util::target_dir().join("image");
    let archive = out.join(format!("tracer-agent-{VERSION}-oci.tar"));
    Step::start(
        "image",
        format!("OCI image (linux/amd64, linux/arm64) {}", archive.display()),
    )
    .run(|s| {
        // The tar and gzip command lines are printed as they run.
        s.break_line();
        let digest = assemble(&platforms, &out, &archive)?;
        Ok(Outcome::Info(format!(
            "tracer-agent:{VERSION}, image index {digest}"
        )))
    })?;
    Ok((host, archive))
}

/// Shared libraries of the platform's agent as absolute paths, as its own loader lists them
/// ([`build::shared_libraries`]; the arm64 loader runs under qemu-user).
fn libraries(platform: &Platform) -> Result<Vec<PathBuf>> {
    let bin = &platform.bin;
    let libs = build::shared_libraries(bin)?;
    if !libs.iter().any(|l| l == Path::new(platform.loader)) {
        bail!(
            "the loader of {} is not {}: {libs:?}",
            bin.display(),
            platform.loader
        );
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

/// Writes one platform's layer, config and manifest into `layout`; returns what the image
/// index and manifest.json need of them.
fn add_platform(platform: &Platform, out: &Path, layout: &Path) -> Result<PlatformBlobs> {
    let rootfs = out.join(format!("rootfs-{}", platform.arch));
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    }
    // Mount points and a scratch directory, as container runtimes expect them.
    for d in ["proc", "sys", "dev", "tmp", "etc", "usr/local/bin"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    }
    fs::copy(&platform.bin, rootfs.join(BIN_PATH)).context("copying the agent binary")?;
    for lib in libraries(platform)? {
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

    let layer_tar = out.join(format!("layer-{}.tar", platform.arch));
    tar(&rootfs, &layer_tar)?;
    fs::remove_dir_all(&rootfs)?;
    let diff_id = sha256(&layer_tar)?;
    util::run(
        Command::new("gzip")
            .args(["-n", "-f", "-6"])
            .arg(&layer_tar),
    )?;
    let mut layer_gz = layer_tar.into_os_string();
    layer_gz.push(".gz");
    let (layer_digest, layer_size) = add_blob(layout, Path::new(&layer_gz))?;

    let arch = platform.arch;
    let config = format!(
        r#"{{{},"config":{{"User":"0:0","Entrypoint":["/{BIN_PATH}"],"ExposedPorts":{{"9464/tcp":{{}}}},"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"Labels":{{"org.opencontainers.image.title":"tracer-agent","org.opencontainers.image.version":"{VERSION}","org.opencontainers.image.licenses":"MIT OR Apache-2.0"}}}},"rootfs":{{"type":"layers","diff_ids":["{diff_id}"]}},"history":[{{"created_by":"cargo xtask image: tracer-agent for {arch} and the libraries it links"}}]}}"#,
        platform.json_fields()
    );
    let (config_digest, config_size) = write_blob(layout, &format!("config-{arch}.json"), &config)?;
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{config_size}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{layer_digest}","size":{layer_size}}}]}}"#
    );
    let (digest, size) = write_blob(layout, &format!("manifest-{arch}.json"), &manifest)?;
    Ok(PlatformBlobs {
        descriptor: format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":{size},"platform":{{{}}}}}"#,
            platform.json_fields()
        ),
        config: config_digest,
        layer: layer_digest,
    })
}

/// What the index and manifest.json need of one platform's image.
struct PlatformBlobs {
    /// The manifest's descriptor with its platform, for the image index.
    descriptor: String,
    config: String,
    layer: String,
}

/// Writes the archive; returns the image index's digest.
fn assemble(platforms: &[Platform], out: &Path, archive: &Path) -> Result<String> {
    let layout = out.join("layout");
    if layout.exists() {
        fs::remove_dir_all(&layout).with_context(|| format!("removing {}", layout.display()))?;
    }
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let blobs = platforms
        .iter()
        .map(|p| add_platform(p, out, &layout))
        .collect::<Result<Vec<_>>>()?;
    // The multi-arch image is an image index blob; index.json names it once, with the tag, so
    // tools resolving `oci-archive:FILE:VERSION` (or the only entry) get both platforms. Two
    // tagged manifests directly in index.json would be two images to them, not one.
    let descriptors: Vec<&str> = blobs.iter().map(|b| b.descriptor.as_str()).collect();
    let image_index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
        descriptors.join(",")
    );
    let (index_digest, index_size) = write_blob(&layout, "image-index.json", &image_index)?;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"{index_digest}","size":{index_size},"annotations":{{"org.opencontainers.image.ref.name":"{VERSION}","io.containerd.image.name":"docker.io/library/tracer-agent:{VERSION}"}}}}]}}"#
    );
    fs::write(layout.join("index.json"), index)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    // The classic `docker load` reads manifest.json, whose entries are single images, one per
    // tag: the first platform (amd64) under the version's tag.
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    let first = blobs
        .first()
        .context("no platform to build the image for")?;
    let docker = format!(
        r#"[{{"Config":"blobs/sha256/{}","RepoTags":["tracer-agent:{VERSION}"],"Layers":["blobs/sha256/{}"]}}]"#,
        hex(&first.config),
        hex(&first.layer)
    );
    fs::write(layout.join("manifest.json"), docker)?;
    tar(&layout, archive)?;
    fs::remove_dir_all(&layout)?;
    Ok(index_digest)
}
