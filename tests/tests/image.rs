//! Root: the container image `cargo xtask image` builds (`cargo xtask test` builds it first and
//! passes its path in `TRACER_IMAGE`) is a well-formed OCI image archive whose digests and sizes
//! match its blobs, and the agent run from the image's root filesystem alone (chroot, with the
//! host's /proc, /sys and /dev mounted as a `DaemonSet` does) loads its eBPF programs and reports
//! the span of a real request.

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

/// Unpacks the archive, checks the layout, returns the unpacked root filesystem.
fn unpack_checked(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&layout).unwrap();
    fs::create_dir_all(&rootfs).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(image_archive())
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let manifests = index["manifests"].as_array().expect("index manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        env!("CARGO_PKG_VERSION")
    );
    let manifest = json(&blob(&layout, &manifests[0]));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(&blob(&layout, &manifest["config"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
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
    let layer = blob(&layout, &layers[0]);
    // The config's diff_id is the digest of the uncompressed layer.
    let diff = run(Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$0\" | sha256sum")
        .arg(&layer));
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", diff.split_whitespace().next().unwrap())
    );
    // docker load reads manifest.json, pointing at the same blobs.
    let docker = json(&layout.join("manifest.json"));
    assert_eq!(
        docker[0]["RepoTags"][0],
        format!("tracer-agent:{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(layout.join(docker[0]["Config"].as_str().unwrap()).is_file());
    assert!(
        layout
            .join(docker[0]["Layers"][0].as_str().unwrap())
            .is_file()
    );

    run(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    let size = run(Command::new("du").args(["-sb"]).arg(&rootfs));
    let bytes: u64 = size.split_whitespace().next().unwrap().parse().unwrap();
    assert!(
        bytes < 64 << 20,
        "a small runtime image: {bytes} bytes unpacked"
    );
    rootfs
}

#[test]
fn image_runs_the_agent_from_its_own_root_filesystem() {
    let _guard = root_test();
    let dir = std::env::temp_dir().join(format!("tracer-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let rootfs = unpack_checked(&dir);

    let service = Service::python(free_port(), None, &[]);
    // A private mount namespace: the bind mounts vanish with the agent, even if the test fails.
    // No --fork: unshare, sh and chroot each exec the next, so the signals reach the agent.
    let script = "set -e; mount --make-rprivate /; \
                  for d in proc sys dev; do mount --rbind \"/$d\" \"$0/$d\"; done; \
                  exec chroot \"$0\" /usr/local/bin/tracer-agent \"$@\"";
    let mut cmd = agent_command("unshare");
    cmd.args(["--mount", "sh", "-c", script])
        .arg(&rootfs)
        .args(["--stdout", "json", "--metrics-addr", "off"])
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
