//! Root: the container image `cargo xtask image` builds (`cargo xtask test` builds it first and
//! passes its path in `TRACER_IMAGE`) is a well-formed multi-arch OCI image archive: one image
//! index with a linux/amd64 and a linux/arm64 manifest, each with its own config (architecture
//! right) and layer (that architecture's agent and libraries), every digest and size matching
//! its blob. The amd64 agent run from its image's root filesystem alone (chroot, with the host's
//! /proc, /sys and /dev mounted as a `DaemonSet` does) loads its eBPF programs and reports the
//! span of a real request; the arm64 agent, from its own root filesystem under qemu-user, accepts
//! the `DaemonSet`'s settings exactly as the amd64 one does; skopeo (what pushes the archive to a
//! registry) copies both platforms.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::harness::{
    Agent, Service, agent_command, free_port, get, random_hex, root_test, target_dir,
};

fn image_archive() -> PathBuf {
    let path = std::env::var_os("TRACER_IMAGE").map_or_else(
        || {
            target_dir().join(format!(
                "image/tracer-agent-{}-oci.tar",
                env!("CARGO_PKG_VERSION")
            ))
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "image archive {} not found: build it with `cargo xtask image` (cargo xtask test does)",
        path.display()
    );
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(file: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(file));
    format!(
        "sha256:{}",
        out.split_whitespace().next().expect("a digest")
    )
}

/// The blob a descriptor points to, after checking its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> PathBuf {
    let digest = descriptor["digest"].as_str().expect("descriptor digest");
    let path = layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"));
    assert_eq!(sha256(&path), digest, "digest of {}", path.display());
    assert_eq!(
        Some(fs::metadata(&path).expect("blob").len()),
        descriptor["size"].as_u64(),
        "size of {}",
        path.display()
    );
    path
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("readable")).expect("JSON")
}

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// One platform the image must have.
struct Platform {
    arch: &'static str,
    variant: Option<&'static str>,
    /// The ELF machine of the agent in its layer.
    machine: u16,
    /// The loader the agent names (`PT_INTERP`), which must be in the layer.
    loader: &'static str,
}

const AMD64: Platform = Platform {
    arch: "amd64",
    variant: None,
    machine: EM_X86_64,
    loader: "lib64/ld-linux-x86-64.so.2",
};
const ARM64: Platform = Platform {
    arch: "arm64",
    variant: Some("v8"),
    machine: EM_AARCH64,
    loader: "lib/ld-linux-aarch64.so.1",
};

fn elf_machine(path: &Path) -> u16 {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..4], b"\x7fELF", "{} is not ELF", path.display());
    u16::from_le_bytes([bytes[18], bytes[19]])
}

/// A fresh temporary directory named after the test, with the archive unpacked and checked.
fn unpacked(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-image-{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    unpack_checked(&dir);
    dir
}

/// Where [`unpack_checked`] puts a platform's root filesystem.
fn rootfs(dir: &Path, platform: &Platform) -> PathBuf {
    dir.join(format!("rootfs-{}", platform.arch))
}

/// Unpacks the archive into `dir`, checks the layout and both platforms' images, and unpacks
/// each platform's layer at [`rootfs`].
fn unpack_checked(dir: &Path) {
    let layout = dir.join("layout");
    fs::create_dir_all(&layout).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(image_archive())
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    // index.json names one thing, the multi-arch image (an image index), under the version.
    let index = json(&layout.join("index.json"));
    let entries = index["manifests"].as_array().expect("index.json manifests");
    assert_eq!(entries.len(), 1, "one tagged image: {index}");
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        entries[0]["mediaType"], "application/vnd.oci.image.index.v1+json",
        "the tag names the image index: {index}"
    );
    let image_index = json(&blob(&layout, &entries[0]));
    assert_eq!(
        image_index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = image_index["manifests"]
        .as_array()
        .expect("image index manifests");
    let platforms: Vec<&Value> = manifests.iter().map(|m| &m["platform"]).collect();
    assert_eq!(
        platforms,
        [
            &serde_json::json!({"architecture": "amd64", "os": "linux"}),
            &serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
        ],
        "linux/amd64 and linux/arm64: {image_index}"
    );

    let configs: Vec<(String, String)> = manifests
        .iter()
        .zip([&AMD64, &ARM64])
        .map(|(descriptor, platform)| {
            check_platform(&layout, descriptor, platform, &rootfs(dir, platform))
        })
        .collect();
    assert_ne!(
        configs[0], configs[1],
        "each platform has its own config and layer"
    );

    // The classic `docker load` reads manifest.json: one image per tag, the amd64 one.
    let docker = json(&layout.join("manifest.json"));
    assert_eq!(docker.as_array().map(Vec::len), Some(1), "{docker}");
    assert_eq!(
        docker[0]["RepoTags"][0],
        format!("tracer-agent:{}", env!("CARGO_PKG_VERSION"))
    );
    let amd64 = &configs[0];
    assert_eq!(
        docker[0]["Config"].as_str(),
        Some(format!("blobs/sha256/{}", amd64.0.trim_start_matches("sha256:")).as_str())
    );
    assert_eq!(
        docker[0]["Layers"][0].as_str(),
        Some(format!("blobs/sha256/{}", amd64.1.trim_start_matches("sha256:")).as_str())
    );
}

/// Checks one platform's manifest, config and layer, unpacks the layer into `rootfs`; returns
/// the config's and the layer's digests.
fn check_platform(
    layout: &Path,
    descriptor: &Value,
    platform: &Platform,
    rootfs: &Path,
) -> (String, String) {
    let arch = platform.arch;
    assert_eq!(
        descriptor["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let manifest = json(&blob(layout, descriptor));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(&blob(layout, &manifest["config"]));
    assert_eq!(config["os"], "linux", "{arch}");
    assert_eq!(config["architecture"], arch, "{arch} config: {config}");
    assert_eq!(
        config["variant"].as_str(),
        platform.variant,
        "{arch} config variant"
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/tracer-agent"])
    );
    assert_eq!(config["config"]["User"], "0:0");
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer: {manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(layout, &layers[0]);
    // The config's diff_id is the digest of the uncompressed layer.
    let diff = run(Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$0\" | sha256sum")
        .arg(&layer));
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", diff.split_whitespace().next().unwrap())
    );

    fs::create_dir_all(rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(rootfs));
    let size = run(Command::new("du").args(["-sb"]).arg(rootfs));
    let bytes: u64 = size.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        bytes < 64 << 20,
        "a small runtime image: {bytes} bytes unpacked ({arch})"
    );
    assert_eq!(
        elf_machine(&rootfs.join("usr/local/bin/tracer-agent")),
        platform.machine,
        "the {arch} layer holds an agent for another architecture"
    );
    assert_eq!(
        elf_machine(&rootfs.join(platform.loader)),
        platform.machine,
        "the {arch} layer's loader"
    );
    (
        manifest["config"]["digest"].as_str().unwrap().to_owned(),
        layers[0]["digest"].as_str().unwrap().to_owned(),
    )
}

/// A private mount namespace with the host's /proc, /sys and /dev bound into `rootfs` (the bind
/// mounts vanish with the process, even if the test fails), then `chroot rootfs ARGS...`. No
/// --fork: unshare, sh and chroot each exec the next, so signals reach the agent.
fn in_rootfs(rootfs: &Path, program: &str) -> Command {
    let script = "set -e; mount --make-rprivate /; \
                  for d in proc sys dev; do mount --rbind \"/$d\" \"$0/$d\"; done; \
                  exec chroot \"$0\" \"$@\"";
    let mut cmd = agent_command("unshare");
    cmd.args(["--mount", "sh", "-c", script])
        .arg(rootfs)
        .arg(program);
    cmd
}

/// The `DaemonSet`'s settings that `--check-config` reports (the collector, the metrics address,
/// the node) and the lines it prints for them.
const DAEMONSET_ENV: [(&str, &str); 4] = [
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://otel-collector.observability:4317",
    ),
    ("TRACER_METRICS_ADDR", "0.0.0.0:9464"),
    ("TRACER_NODE_NAME", "node-a"),
    ("TRACER_NAMESPACES", "shop,payments"),
];

/// `tracer-agent --check-config` with [`DAEMONSET_ENV`] only, run from `rootfs` by `program`
/// (the agent, or qemu-user copied into the root filesystem).
fn check_config_in(rootfs: &Path, program: &str, args: &[&str]) -> String {
    let mut cmd = in_rootfs(rootfs, program);
    // PATH for unshare, sh, mount and chroot on the host side; nothing else inherited.
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(DAEMONSET_ENV)
        .args(args)
        .arg("--check-config");
    run(&mut cmd)
}

#[test]
fn image_runs_the_agent_from_its_own_root_filesystem() {
    let _guard = root_test();
    let dir = unpacked("amd64");
    let rootfs = rootfs(&dir, &AMD64);

    let service = Service::python(free_port(), None, &[]);
    let mut cmd = in_rootfs(&rootfs, "/usr/local/bin/tracer-agent");
    cmd.args(["--stdout", "json", "--metrics-addr", "off"])
        .args(["--pid", &service.pid().to_string()]);
    let mut agent = Agent::start_command(cmd);

    let trace = random_hex(16);
    let span = random_hex(8);
    let resp = get(
        service.port(),
        "/hello",
        &[
            ("x-b3-traceid", &trace),
            ("x-b3-spanid", &span),
            ("x-b3-sampled", "1"),
        ],
    );
    assert_eq!(resp.status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = loop {
        let spans: Vec<Value> = agent
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(s) = spans
            .into_iter()
            .find(|s| s["kind"] == "SERVER" && s["parent_span_id"] == span.as_str())
        {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no SERVER span from the agent in the image; its output:\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(found["trace_id"], trace);
    assert_eq!(
        agent.stop().map(|s| s.success()),
        Some(true),
        "{}",
        agent.output()
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn arm64_image_agent_runs_from_its_own_root_filesystem_under_qemu_user() {
    let _guard = root_test();
    let dir = unpacked("arm64");
    let arm64_rootfs = rootfs(&dir, &ARM64);
    // qemu-user is static: copied into the root filesystem, it runs inside the chroot, where
    // the agent finds only the image's loader and libraries (qemu's -L would fall back to the
    // host's /lib/aarch64-linux-gnu for a library the image lacks).
    let qemu = "qemu-aarch64-static";
    let host_qemu = ["/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(qemu))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{qemu} not found: `cargo xtask test` installs it"));
    fs::copy(&host_qemu, arm64_rootfs.join(qemu)).expect("copy qemu-user into the root filesystem");

    let arm64 = check_config_in(
        &arm64_rootfs,
        &format!("/{qemu}"),
        &["/usr/local/bin/tracer-agent"],
    );
    for line in [
        "otlp: grpc http://otel-collector.observability:4317",
        "metrics: 0.0.0.0:9464",
    ] {
        assert!(
            arm64.contains(line),
            "the arm64 agent's --check-config lacks `{line}`:\n{arm64}"
        );
    }
    // The same settings resolve to the same configuration on both architectures.
    let amd64 = check_config_in(&rootfs(&dir, &AMD64), "/usr/local/bin/tracer-agent", &[]);
    assert_eq!(
        arm64, amd64,
        "arm64 and amd64 agents disagree on the settings"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// skopeo reads OCI archives with the library podman and CRI-O use; `skopeo copy --all` is how
/// the README pushes the image to a registry. Copying into an OCI directory exercises the same
/// reading of the archive as a push, without a registry.
#[test]
fn skopeo_copies_both_platforms_and_docker_archive_readers_get_amd64() {
    let archive = image_archive();
    let source = format!(
        "oci-archive:{}:{}",
        archive.display(),
        env!("CARGO_PKG_VERSION")
    );
    let dir = std::env::temp_dir().join(format!("tracer-image-skopeo-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let dest = format!("oci:{}:copy", dir.display());
    run(Command::new("skopeo").args(["copy", "--all", &source, &dest]));
    let copied: Value = serde_json::from_str(&run(
        Command::new("skopeo").args(["inspect", "--raw", &dest])
    ))
    .expect("skopeo inspect --raw prints JSON");
    let arches: Vec<&str> = copied["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("the copy is not a multi-arch image: {copied}"))
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"], "{copied}");
    // A pull on an arm64 node resolves the arm64 image.
    for arch in ["amd64", "arm64"] {
        let config: Value = serde_json::from_str(&run(Command::new("skopeo").args([
            "--override-arch",
            arch,
            "inspect",
            "--config",
            &dest,
        ])))
        .expect("skopeo inspect --config prints JSON");
        assert_eq!(config["architecture"], arch, "{config}");
    }
    // docker-archive: is manifest.json, as the classic `docker load` reads it.
    let docker: Value = serde_json::from_str(&run(Command::new("skopeo").args([
        "inspect",
        "--config",
        &format!("docker-archive:{}", archive.display()),
    ])))
    .expect("skopeo inspect --config prints JSON");
    assert_eq!(docker["architecture"], "amd64", "{docker}");
    let _ = fs::remove_dir_all(&dir);
}
