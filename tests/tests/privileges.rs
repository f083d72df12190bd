//! Root (to drop privileges): the agent started as an ordinary user without capabilities must
//! fail fast with a message that names the missing capability and how to get it, rather than
//! hang or die on an obscure bpf(2) error.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tracer_tests::harness::{agent_binary, root_test};

const LIMIT: Duration = Duration::from_secs(10);

#[test]
fn unprivileged_agent_explains_what_it_needs() {
    let _serial = root_test();
    let bin = world_executable_copy();
    // setpriv (util-linux): become nobody, with no capabilities left to inherit or regain.
    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(&bin)
        // No metrics listener: whatever else runs on this host, the only failure is privileges.
        .args(["--metrics-addr", "off"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running setpriv (util-linux) to drop privileges");
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the agent") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the unprivileged agent was still running after {LIMIT:?}; stderr:\n{}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = reader.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(bin.parent().expect("temp dir"));

    assert!(
        !status.success(),
        "without privileges the agent must exit non-zero, got {status}; stderr:\n{stderr}"
    );
    // A setpriv failure (e.g. exit 127, "setpriv: ...") would say nothing about the agent.
    assert!(
        !stderr.starts_with("setpriv:"),
        "setpriv itself failed; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("CAP_BPF"),
        "the error must name the missing capability CAP_BPF; stderr:\n{stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        ["root", "sudo", "setcap"].iter().any(|w| lower.contains(w)),
        "the error must say how to fix it (run as root / with sudo, or setcap); stderr:\n{stderr}"
    );
}

/// A copy of the agent binary that nobody can execute: the build tree may sit below a directory
/// only root can enter (e.g. /root), and that must not turn into a misleading exec failure.
fn world_executable_copy() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tracer-unprivileged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let bin = dir.join("tracer-agent");
    std::fs::copy(agent_binary(), &bin).expect("copying the agent binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod agent");
    bin
}
