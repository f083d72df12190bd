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

use super::{
    k8s::{PodFilter, PodStore, cgroup},
    listeners,
    writemode::{Target, WriteModes},
};

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
    /// Write-side mode of the listed processes.
    pub write: WriteModes,
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
    /// Clock ticks after boot; with `comm`, tells a reused pid or an exec from the process we
    /// cached.
    start_time: u64,
    comm: String,
    exe: Option<String>,
}

/// Parent, start time and command name from /proc/PID/stat (one read per process and scan).
fn read_stat(dir: &Path) -> Option<(u32, u64, String)> {
    let stat = fs::read_to_string(dir.join("stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 2..)?.split(' ');
    // state, ppid, ... starttime is the 20th field after the command name.
    let parent_pid = fields.nth(1)?.parse().ok()?;
    let start_time = fields.nth(17).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some((parent_pid, start_time, comm))
}

fn matches_name(info: &ProcInfo, names: &[String]) -> bool {
    names
        .iter()
        .any(|n| *n == info.comm || info.exe.as_deref() == Some(n.as_str()))
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

/// Which processes own one of a set of listening sockets. Scanning a process's descriptors is
/// the expensive part of a pass over /proc, so the answer per process is kept until the set of
/// listeners changes (a process that opens a new listener changes the set).
#[derive(Default)]
struct Owners {
    inodes: HashSet<u64>,
    known: HashMap<u32, (u64, bool)>,
}

impl Owners {
    fn refresh(&mut self, inodes: HashSet<u64>, procs: &HashMap<u32, ProcInfo>) {
        if inodes != self.inodes {
            self.inodes = inodes;
            self.known.clear();
        }
        self.known
            .retain(|pid, (start, _)| procs.get(pid).is_some_and(|p| p.start_time == *start));
    }

    fn owns(&mut self, root: &Path, pid: u32, start_time: u64) -> bool {
        if self.inodes.is_empty() {
            return false;
        }
        let inodes = &self.inodes;
        self.known
            .entry(pid)
            .or_insert_with(|| (start_time, owns_socket(root, pid, inodes)))
            .1
    }
}

/// Passes over /proc that remember what does not change between them: executable names (one
/// readlink per new process, not per pass) and socket ownership.
pub struct Scanner {
    root: PathBuf,
    /// Listeners from netlink (the live /proc of the agent's namespace) or from /proc/net files.
    netlink: bool,
    procs: HashMap<u32, ProcInfo>,
    listed: Owners,
    excluded: Owners,
    /// Listeners of the ports `--write-mode-for port:` names.
    write_ports: HashMap<u16, Owners>,
    /// Kernel write mode of the traced processes that edit requests (after `scan`).
    pub modes: HashMap<u32, u32>,
}

impl Scanner {
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        Self {
            netlink: root == Path::new("/proc"),
            root,
            procs: HashMap::new(),
            listed: Owners::default(),
            excluded: Owners::default(),
            write_ports: HashMap::new(),
            modes: HashMap::new(),
        }
    }

    /// Listening sockets on any of `ports`: one netlink query per pass serves both the listed
    /// and the excluded ports.
    fn listeners(&mut self, ports: &[u16]) -> Vec<listeners::Listener> {
        if ports.is_empty() {
            return Vec::new();
        }
        if self.netlink {
            match listeners::by_netlink(ports) {
                Ok(inodes) => return inodes,
                Err(e) => {
                    warn!(
                        "sock_diag netlink query failed ({e}); reading /proc/net/tcp from now on"
                    );
                    self.netlink = false;
                }
            }
        }
        listeners::by_proc_files(&self.root, ports)
    }

    fn read_procs(&mut self) {
        let mut next = HashMap::with_capacity(self.procs.len());
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let dir = self.root.join(pid.to_string());
                let Some((parent_pid, start_time, comm)) = read_stat(&dir) else {
                    continue;
                };
                let info = match self.procs.remove(&pid) {
                    Some(old) if old.start_time == start_time && old.comm == comm => {
                        ProcInfo { parent_pid, ..old }
                    }
                    _ => ProcInfo {
                        parent_pid,
                        start_time,
                        exe: fs::read_link(dir.join("exe"))
                            .ok()
                            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                        comm,
                    },
                };
                next.insert(pid, info);
            }
        }
        self.procs = next;
    }

    /// One pass over /proc: the verdict of every process that needs one.
    pub fn scan(&mut self, sel: &Selection) -> HashMap<u32, u32> {
        self.read_procs();
        let write_ports = sel.write.ports();
        let all: Vec<u16> = sel
            .ports
            .iter()
            .chain(&sel.exclude_ports)
            .chain(&write_ports)
            .copied()
            .collect();
        let found = self.listeners(&all);
        let on = |ports: &[u16]| -> HashSet<u64> {
            found
                .iter()
                .filter(|(port, _)| ports.contains(port))
                .map(|(_, inode)| *inode)
                .collect()
        };
        self.listed.refresh(on(&sel.ports), &self.procs);
        self.excluded.refresh(on(&sel.exclude_ports), &self.procs);
        self.write_ports.retain(|p, _| write_ports.contains(p));
        for port in &write_ports {
            self.write_ports
                .entry(*port)
                .or_default()
                .refresh(on(&[*port]), &self.procs);
        }
        let root = &self.root;

        let mut traced: HashSet<u32> = HashSet::new();
        if sel.is_listed() {
            for (pid, info) in &self.procs {
                if sel.pids.contains(pid)
                    || matches_name(info, &sel.exes)
                    || self.listed.owns(root, *pid, info.start_time)
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
                for (pid, info) in &self.procs {
                    if traced.contains(&info.parent_pid) {
                        traced.insert(*pid);
                    }
                }
                if traced.len() == before {
                    break;
                }
            }
        }
        self.modes = if sel.write.any_edits() {
            self.write_modes(&sel.write, &traced)
        } else {
            HashMap::new()
        };
        let root = &self.root;
        let mut verdicts: HashMap<u32, u32> = traced.into_iter().map(|p| (p, PROC_TRACE)).collect();
        for (pid, info) in &self.procs {
            if matches_name(info, &sel.exclude_exes)
                || self.excluded.owns(root, *pid, info.start_time)
            {
                verdicts.insert(*pid, PROC_EXCLUDE);
            }
        }
        for pid in verdicts
            .iter()
            .filter(|(_, v)| **v == PROC_EXCLUDE)
            .map(|(p, _)| p)
        {
            self.modes.remove(pid);
        }
        verdicts
    }

    /// The write mode of each traced process that edits requests: a rule naming the process
    /// itself, else its parent's mode (worker processes of a selected server), else the default.
    fn write_modes(&mut self, write: &WriteModes, traced: &HashSet<u32>) -> HashMap<u32, u32> {
        let mut own: HashMap<u32, Option<super::writemode::WriteMode>> = HashMap::new();
        for pid in traced {
            let Some(info) = self.procs.get(pid) else {
                continue;
            };
            let mut matched = false;
            let root = &self.root;
            let owners = &mut self.write_ports;
            let mode = write.mode_of(|t| {
                matched = match t {
                    Target::Exe(n) => matches_name(info, std::slice::from_ref(n)),
                    Target::Pid(p) => p == pid,
                    Target::Port(p) => owners
                        .get_mut(p)
                        .is_some_and(|o| o.owns(root, *pid, info.start_time)),
                };
                matched
            });
            own.insert(*pid, matched.then_some(mode));
        }
        let mut modes = HashMap::new();
        for pid in traced {
            // Walk up to the nearest traced ancestor a rule names (bounded: pid loops cannot
            // happen in /proc, but a stale parent link must not spin).
            let mut at = *pid;
            let mut mode = write.default;
            for _ in 0..64 {
                if let Some(Some(m)) = own.get(&at) {
                    mode = *m;
                    break;
                }
                match self.procs.get(&at) {
                    Some(info) if traced.contains(&info.parent_pid) => at = info.parent_pid,
                    _ => break,
                }
            }
            if mode.edits() {
                modes.insert(*pid, mode.kernel());
            }
        }
        modes
    }
}

/// Keeps the kernel's `PROC_BITS` bitmap equal to the latest scan of /proc.
pub struct Selector {
    bits: Array<MapData, u64>,
    /// The kernel's `WRITE_MODE` map, when the write side is loaded.
    write_map: Option<aya::maps::HashMap<MapData, u32, u32>>,
    /// Write modes as last written to the kernel.
    written_modes: HashMap<u32, u32>,
    sel: Selection,
    scanner: Scanner,
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
    pub fn new(
        bits: Array<MapData, u64>,
        write_map: Option<aya::maps::HashMap<MapData, u32, u32>>,
        sel: Selection,
        proc_root: PathBuf,
    ) -> Self {
        Self {
            bits,
            write_map,
            written_modes: HashMap::new(),
            sel,
            scanner: Scanner::new(proc_root),
            words: HashMap::new(),
        }
    }

    /// One scan, applied to the kernel bitmap. Returns (traced, excluded) counts.
    pub fn apply(&mut self) -> (usize, usize) {
        let verdicts = self.scanner.scan(&self.sel);
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
        self.apply_modes();
        let traced = verdicts.values().filter(|v| **v == PROC_TRACE).count();
        (traced, verdicts.len() - traced)
    }

    /// Executables of the processes in inject mode (for the Go goroutine probes).
    #[must_use]
    pub fn inject_executables(&self) -> Vec<PathBuf> {
        let root = &self.scanner.root;
        let mut exes: Vec<PathBuf> = self
            .scanner
            .modes
            .iter()
            .filter(|(_, m)| **m == tracer_common::WRITE_INJECT)
            .filter_map(|(pid, _)| fs::read_link(root.join(pid.to_string()).join("exe")).ok())
            .collect();
        exes.sort();
        exes.dedup();
        exes
    }

    /// Makes the kernel's `WRITE_MODE` map equal to the latest scan.
    fn apply_modes(&mut self) {
        let Some(map) = self.write_map.as_mut() else {
            return;
        };
        let next = &self.scanner.modes;
        for pid in self.written_modes.keys() {
            if !next.contains_key(pid) {
                let _ = map.remove(pid);
            }
        }
        for (pid, mode) in next {
            if self.written_modes.get(pid) != Some(mode)
                && let Err(e) = map.insert(pid, mode, 0)
            {
                warn!("could not set the write mode of pid {pid}: {e}");
            }
        }
        self.written_modes.clone_from(next);
    }

    fn write(&mut self, word: u32, value: u64) {
        if let Err(e) = self.bits.set(word, value, 0) {
            warn!("could not update the process selection (pid word {word}): {e}");
        }
    }

    /// Rescans once a second until `stop` is set. `on_inject` gets each executable that a
    /// process in inject mode runs, once (`known`: the ones already handled).
    pub fn run(
        mut self,
        stop: &AtomicBool,
        mut known: HashSet<PathBuf>,
        mut on_inject: impl FnMut(&Path),
    ) {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            let (traced, excluded) = self.apply();
            debug!("process selection: {traced} traced, {excluded} excluded");
            for exe in self.inject_executables() {
                if !known.contains(&exe) {
                    on_inject(&exe);
                    known.insert(exe);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::procs::writemode::WriteMode;

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
            write: WriteModes {
                default: WriteMode::Rewrite,
                rules: vec![
                    "pid:11=inject".parse().unwrap(),
                    "exe:node=off".parse().unwrap(),
                ],
            },
            pids: vec![10],
            exes: vec!["node".into()],
            ports: vec![8080, 8081],
            exclude_exes: vec!["envoy".into()],
            exclude_ports: vec![],
            pods: None,
        };
        let mut scanner = Scanner::new(d.clone());
        let v = scanner.scan(&sel);
        // Write modes: the default for the selected, a rule by pid (inherited by its child 12),
        // a rule by exe turning the write side off.
        assert_eq!(scanner.modes.get(&10), Some(&tracer_common::WRITE_REWRITE));
        assert_eq!(scanner.modes.get(&11), Some(&tracer_common::WRITE_INJECT));
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
            write: WriteModes::default(),
            pods: Some((store.clone(), filter)),
            ..Selection::default()
        };
        let v = Scanner::new(d.clone()).scan(&sel);
        assert_eq!(
            v,
            HashMap::from([(10, PROC_TRACE)]),
            "only the shop pod; system pods and host processes are not traced"
        );
        let by_label = PodFilter::new(vec![], vec![], "app=coredns").unwrap();
        let sel = Selection {
            write: WriteModes::default(),
            pods: Some((store, by_label)),
            ..Selection::default()
        };
        assert_eq!(
            Scanner::new(d.clone()).scan(&sel),
            HashMap::from([(20, PROC_TRACE)])
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn later_passes_see_new_listeners_exec_and_pid_reuse() {
        let d = tmp("cache");
        let tcp = |inode: u64| {
            format!(
                "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 {inode} 1\n"
            )
        };
        fake_proc(&d, 30, 1, "server", &[555]);
        fake_proc(&d, 40, 1, "sh", &[]);
        fs::write(d.join("net/tcp"), tcp(999)).unwrap();
        let sel = Selection {
            write: WriteModes::default(),
            ports: vec![8080],
            exes: vec!["app".into()],
            ..Selection::default()
        };
        let mut scanner = Scanner::new(d.clone());
        assert!(scanner.scan(&sel).is_empty(), "no process owns inode 999");
        // The server opens the listener: the set of listeners changed, ownership is rechecked.
        fs::write(d.join("net/tcp"), tcp(555)).unwrap();
        assert_eq!(scanner.scan(&sel), HashMap::from([(30, PROC_TRACE)]));
        // pid 40 execs the app (same pid and start time, new comm): its executable is read again.
        fs::remove_dir_all(d.join("40")).unwrap();
        fake_proc(&d, 40, 1, "app", &[]);
        assert_eq!(
            scanner.scan(&sel),
            HashMap::from([(30, PROC_TRACE), (40, PROC_TRACE)])
        );
        // pid 30 exits and the pid is reused by a process without the socket.
        fs::remove_dir_all(d.join("30")).unwrap();
        fake_proc(&d, 30, 1, "server", &[]);
        let stat = fs::read_to_string(d.join("30/stat")).unwrap();
        fs::write(
            d.join("30/stat"),
            format!("{stat} 0 0 0 0 0 0 0 0 0 0 0 0 0 777"),
        )
        .unwrap();
        assert_eq!(scanner.scan(&sel), HashMap::from([(40, PROC_TRACE)]));
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
            write: WriteModes::default(),
            exclude_ports: vec![4310],
            ..Selection::default()
        };
        let v = Scanner::new(d.clone()).scan(&sel);
        assert_eq!(v, HashMap::from([(20, PROC_EXCLUDE)]));
        let _ = fs::remove_dir_all(&d);
    }
}
