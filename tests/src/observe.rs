//! What a test can observe of a running agent from outside: its Prometheus counters, its memory
//! (`VmRSS` from /proc) and the BPF programs and links it holds. Other agents may run on the same
//! host: an agent's BPF objects are the ones its file descriptors name (`prog_id` / `link_id` in
//! /proc/PID/fdinfo), never the ones with our names; `bpftool` (which `cargo xtask setup`
//! installs) then tells which of them the kernel still has.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The value of the counter (or gauge) `name` in Prometheus text, `None` if it is missing.
#[must_use]
pub fn counter(metrics: &str, name: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        let value = l.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// `GET /metrics` on 127.0.0.1:`port`.
///
/// # Panics
/// If it does not answer 200.
#[must_use]
pub fn scrape(port: u16) -> String {
    let r = crate::http::get(port, "/metrics", &[]);
    assert_eq!(r.status, 200, "GET /metrics on 127.0.0.1:{port}");
    r.text()
}

/// The resident memory of `pid` in KiB (`VmRSS` of /proc/PID/status).
///
/// # Panics
/// If the process is gone or the line is missing.
#[must_use]
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// A BPF program or link as `bpftool ... show --json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfObject {
    pub id: u64,
    /// The program type (`tracepoint`, `sk_msg`, `sock_ops`, ...) or link type (`cgroup`, ...).
    pub kind: String,
    /// The program's name ("" for links).
    pub name: String,
}

/// Every BPF program (`what` = "prog") or link ("link") on the host.
///
/// # Panics
/// If bpftool cannot be run or prints something else than a JSON list.
#[must_use]
pub fn bpf_objects(what: &str) -> Vec<BpfObject> {
    let out = Command::new("bpftool")
        .args([what, "show", "--json"])
        .output()
        .unwrap_or_else(|e| {
            panic!("running `bpftool {what} show` ({e}): `cargo xtask setup` installs bpftool")
        });
    assert!(
        out.status.success(),
        "bpftool {what} show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bpftool {what} show --json is not a JSON list ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    list.iter()
        .map(|o| BpfObject {
            id: o["id"].as_u64().expect("bpftool lists an id"),
            kind: o["type"].as_str().unwrap_or_default().to_owned(),
            name: o["name"].as_str().unwrap_or_default().to_owned(),
        })
        .collect()
}

/// The ids of the BPF programs (`what` = "prog") or links ("link") that `pid` has file
/// descriptors of (a link's descriptor also names its program).
///
/// # Panics
/// If /proc/PID/fdinfo cannot be read.
#[must_use]
pub fn bpf_ids_of(what: &str, pid: u32) -> BTreeSet<u64> {
    let key = format!("{what}_id:");
    let dir = format!("/proc/{pid}/fdinfo");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// The BPF programs (`what` = "prog") or links ("link") that `pid` holds.
#[must_use]
pub fn bpf_objects_of(what: &str, pid: u32) -> Vec<BpfObject> {
    let ids = bpf_ids_of(what, pid);
    bpf_objects(what)
        .into_iter()
        .filter(|o| ids.contains(&o.id))
        .collect()
}

/// Polls until none of `ids` is listed by `bpftool what show` any more; returns those still
/// listed at `timeout` (empty on success). The kernel frees a program only after its last
/// reference (a link, a map it is attached to) is gone, which it does asynchronously.
#[must_use]
pub fn wait_bpf_gone(what: &str, ids: &BTreeSet<u64>, timeout: Duration) -> Vec<BpfObject> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<BpfObject> = bpf_objects(what)
            .into_iter()
            .filter(|o| ids.contains(&o.id))
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
