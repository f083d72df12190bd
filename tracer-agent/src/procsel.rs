//! Which processes the kernel programs follow.
//!
//! The kernel side looks up one bit per process in the `PROC_BITS` array. This module turns the
//! user's selection (`--pid` and their children, `--exe`, `--port` listeners, `--exclude-exe`,
//! and the local collector's listener so the agent never traces its own exports) into those
//! verdicts, rescanning /proc once a second so new processes are picked up.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aya::maps::{Array, MapData};
use tracer_common::{PROC_EXCLUDE, PROC_TRACE};
use tracing::{debug, warn};

use crate::k8s::{PodFilter, PodStore, cgroup};

#[derive(Clone, Default)]
pub struct Selection {
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub ports: Vec<u16>,
    pub exclude_exes: Vec<String>,
    /// Processes listening on these ports are never traced (the local OTLP collector).
    pub exclude_ports: Vec<u16>,
    /// In Kubernetes: processes whose pod passes the filter are traced.
    pub pods: Option<(Arc<PodStore>, PodFilter)>,
}

impl Selection {
    #[must_use]
    pub fn is_listed(&self) -> bool {
        self.pods.is_some()
            || !(self.pids.is_empty() && self.exes.is_empty() && self.ports.is_empty())
    }
}

struct ProcInfo {
    parent_pid: u32,
    comm: String,
    exe: Option<String>,
}

fn read_proc(root: &Path, pid: u32) -> Option<ProcInfo> {
    let dir = root.join(pid.to_string());
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let parent_pid = after.split(' ').nth(1)?.parse().ok()?;
    let comm = fs::read_to_string(dir.join("comm"))
        .ok()?
        .trim_end()
        .to_owned();
    let exe = fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    Some(ProcInfo {
        parent_pid,
        comm,
        exe,
    })
}

fn matches_name(info: &ProcInfo, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| *n == info.comm || info.exe.as_deref() == Some(n.as_str()))
}

/// Socket inodes of TCP listeners on `ports`, from /proc/net/tcp and tcp6.
fn listening_inodes(root: &Path, ports: &[u16]) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for file in ["net/tcp", "net/tcp6"] {
        let Ok(table) = fs::read_to_string(root.join(file)) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if port.is_some_and(|p| ports.contains(&p))
                && let Ok(inode) = cols[9].parse()
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

fn owns_socket(root: &Path, pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = fs::read_dir(root.join(pid.to_string()).join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
                .is_some_and(|inode: u64| inodes.contains(&inode))
        })
    })
}

/// One pass over /proc: the verdict of every process that needs one.
#[must_use]
pub fn scan(root: &Path, sel: &Selection) -> HashMap<u32, u32> {
    let mut procs: HashMap<u32, ProcInfo> = HashMap::new();
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                && let Some(info) = read_proc(root, pid)
            {
                procs.insert(pid, info);
            }
        }
    }
    let listed_inodes = if sel.ports.is_empty() {
        HashSet::new()
    } else {
        listening_inodes(root, &sel.ports)
    };
    let excluded_inodes = if sel.exclude_ports.is_empty() {
        HashSet::new()
    } else {
        listening_inodes(root, &sel.exclude_ports)
    };

    let mut traced: HashSet<u32> = HashSet::new();
    if sel.is_listed() {
        for (pid, info) in &procs {
            if sel.pids.contains(pid)
                || matches_name(info, &sel.exes)
                || (!listed_inodes.is_empty() && owns_socket(root, *pid, &listed_inodes))
                || sel.pods.as_ref().is_some_and(|(store, filter)| {
                    store
                        .lookup(&cgroup::of_process(root, *pid))
                        .is_some_and(|pod| filter.matches(&pod))
                })
            {
                traced.insert(*pid);
            }
        }
        // Children of traced processes (pre-fork servers, worker pools) are traced too.
        loop {
            let before = traced.len();
            for (pid, info) in &procs {
                if traced.contains(&info.parent_pid) {
                    traced.insert(*pid);
                }
            }
            if traced.len() == before {
                break;
            }
        }
    }
    let mut verdicts: HashMap<u32, u32> = traced.into_iter().map(|p| (p, PROC_TRACE)).collect();
    for (pid, info) in &procs {
        if matches_name(info, &sel.exclude_exes)
            || (!excluded_inodes.is_empty() && owns_socket(root, *pid, &excluded_inodes))
        {
            verdicts.insert(*pid, PROC_EXCLUDE);
        }
    }
    verdicts
}

/// Keeps the kernel's `PROC_BITS` bitmap equal to the latest scan of /proc.
pub struct Selector {
    bits: Array<MapData, u64>,
    sel: Selection,
    proc_root: PathBuf,
    /// Bitmap words as last written (absent: zero).
    words: HashMap<u32, u64>,
}

/// The bitmap words marking `pids`: word `pid / 64`, bit `pid % 64`.
fn words_of(pids: impl Iterator<Item = u32>) -> HashMap<u32, u64> {
    let mut words = HashMap::new();
    for pid in pids {
        *words.entry(pid >> 6).or_insert(0) |= 1u64 << (pid & 63);
    }
    words
}

impl Selector {
    #[must_use]
    pub fn new(bits: Array<MapData, u64>, sel: Selection, proc_root: PathBuf) -> Self {
        Self {
            bits,
            sel,
            proc_root,
            words: HashMap::new(),
        }
    }

    /// One scan, applied to the kernel bitmap. Returns (traced, excluded) counts.
    pub fn apply(&mut self) -> (usize, usize) {
        let verdicts = scan(&self.proc_root, &self.sel);
        // Listed mode marks the traced processes, all-but mode marks the excluded ones.
        let marked = if self.sel.is_listed() {
            PROC_TRACE
        } else {
            PROC_EXCLUDE
        };
        let next = words_of(
            verdicts
                .iter()
                .filter(|(_, v)| **v == marked)
                .map(|(p, _)| *p),
        );
        let stale: Vec<u32> = self
            .words
            .keys()
            .filter(|w| !next.contains_key(w))
            .copied()
            .collect();
        for word in stale {
            self.write(word, 0);
        }
        for (word, value) in &next {
            if self.words.get(word) != Some(value) {
                self.write(*word, *value);
            }
        }
        self.words = next;
        let traced = verdicts.values().filter(|v| **v == PROC_TRACE).count();
        (traced, verdicts.len() - traced)
    }

    fn write(&mut self, word: u32, value: u64) {
        if let Err(e) = self.bits.set(word, value, 0) {
            warn!("could not update the process selection (pid word {word}): {e}");
        }
    }

    /// Rescans once a second until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let (traced, excluded) = self.apply();
            debug!("process selection: {traced} traced, {excluded} excluded");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn fake_proc(dir: &Path, pid: u32, parent_pid: u32, comm: &str, sockets: &[u64]) {
        let p = dir.join(pid.to_string());
        fs::create_dir_all(p.join("fd")).unwrap();
        fs::write(
            p.join("stat"),
            format!("{pid} ({comm}) S {parent_pid} 1 1 0 -1"),
        )
        .unwrap();
        fs::write(p.join("comm"), format!("{comm}\n")).unwrap();
        for (i, inode) in sockets.iter().enumerate() {
            symlink(
                format!("socket:[{inode}]"),
                p.join("fd").join(i.to_string()),
            )
            .unwrap();
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("procsel-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("net")).unwrap();
        d
    }

    #[test]
    fn selects_by_pid_exe_port_and_children() {
        let d = tmp("select");
        fake_proc(&d, 10, 1, "gunicorn", &[]);
        fake_proc(&d, 11, 10, "gunicorn-worker", &[]);
        fake_proc(&d, 12, 11, "helper", &[]);
        fake_proc(&d, 20, 1, "node", &[]);
        fake_proc(&d, 30, 1, "server", &[555]);
        fake_proc(&d, 40, 1, "bash", &[666]);
        fake_proc(&d, 50, 1, "envoy", &[]);
        fs::write(
            d.join("net/tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1\n   1: 0100007F:1F91 0100007F:9999 01 00000000:00000000 00:00000000 00000000     0        0 666 1\n",
        )
        .unwrap();
        let sel = Selection {
            pids: vec![10],
            exes: vec!["node".into()],
            ports: vec![8080, 8081],
            exclude_exes: vec!["envoy".into()],
            exclude_ports: vec![],
            pods: None,
        };
        let v = scan(&d, &sel);
        for pid in [10, 11, 12, 20, 30] {
            assert_eq!(v.get(&pid), Some(&PROC_TRACE), "pid {pid}: {v:?}");
        }
        assert_eq!(
            v.get(&40),
            None,
            "port 8081 is not listening, only connected"
        );
        assert_eq!(v.get(&50), Some(&PROC_EXCLUDE));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn kubernetes_selects_by_pod_namespace_and_labels() {
        let d = tmp("pods");
        let cid = |c: char| c.to_string().repeat(64);
        fake_proc(&d, 10, 1, "cart", &[]);
        fake_proc(&d, 20, 1, "coredns", &[]);
        fake_proc(&d, 30, 1, "sshd", &[]);
        fs::write(
            d.join("10/cgroup"),
            format!("0::/kubepods/pod1/{}\n", cid('a')),
        )
        .unwrap();
        fs::write(
            d.join("20/cgroup"),
            format!("0::/kubepods/pod2/{}\n", cid('b')),
        )
        .unwrap();
        fs::write(d.join("30/cgroup"), "0::/system.slice/ssh.service\n").unwrap();
        let store = Arc::new(PodStore::default());
        let pod = |name: &str, ns: &str, c: char| -> k8s_openapi::api::core::v1::Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": {"app": name}},
                "spec": {"containers": [{"name": "main"}]},
                "status": {"containerStatuses": [{"name": "main", "containerID": format!("containerd://{}", cid(c)),
                    "image": "i", "imageID": "i", "ready": true, "restartCount": 0}]}
            }))
            .unwrap()
        };
        store.replace_all(&[pod("cart", "shop", 'a'), pod("coredns", "kube-system", 'b')]);
        let filter = PodFilter::new(vec![], vec!["kube-system".into()], "").unwrap();
        let sel = Selection {
            pods: Some((store.clone(), filter)),
            ..Selection::default()
        };
        let v = scan(&d, &sel);
        assert_eq!(
            v,
            HashMap::from([(10, PROC_TRACE)]),
            "only the shop pod; system pods and host processes are not traced"
        );
        let by_label = PodFilter::new(vec![], vec![], "app=coredns").unwrap();
        let sel = Selection {
            pods: Some((store, by_label)),
            ..Selection::default()
        };
        assert_eq!(scan(&d, &sel), HashMap::from([(20, PROC_TRACE)]));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn all_mode_only_excludes() {
        let d = tmp("all");
        fake_proc(&d, 10, 1, "python3", &[]);
        fake_proc(&d, 20, 1, "rotel", &[777]);
        fs::write(
            d.join("net/tcp6"),
            "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:10D6 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1\n",
        )
        .unwrap();
        let sel = Selection {
            exclude_ports: vec![4310],
            ..Selection::default()
        };
        let v = scan(&d, &sel);
        assert_eq!(v, HashMap::from([(20, PROC_EXCLUDE)]));
        let _ = fs::remove_dir_all(&d);
    }
}
