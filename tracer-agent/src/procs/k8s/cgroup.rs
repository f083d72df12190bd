//! Which container (and which pod) a process belongs to, from `/proc/PID/cgroup`.
//!
//! The container id is the 64-hex id the runtime gave the container, the same one Kubernetes
//! reports in `status.containerStatuses[].containerID` after the `runtime://` scheme. It appears
//! as the last path component of the process's cgroup, in one of these shapes:
//!
//! - cgroup v2, systemd driver: `/kubepods.slice/kubepods-burstable.slice/
//!   kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope` (containerd),
//!   `.../crio-<id>.scope` (CRI-O), `/system.slice/docker-<id>.scope` (Docker),
//!   `libpod-<id>.scope` (Podman);
//! - cgroupfs driver, v1 or v2: `/kubepods/burstable/pod<uid>/<id>`, `/docker/<id>`.
//!
//! CRI-O's `crio-conmon-<id>.scope` is the monitor process, not the container.

use std::{fs, path::Path};

/// What the cgroup path says about a process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub container_id: Option<String>,
    /// The pod uid (dashed form) for Kubernetes pods.
    pub pod_uid: Option<String>,
}

const PREFIXES: [&str; 5] = [
    "cri-containerd-",
    "crio-",
    "docker-",
    "libpod-",
    "containerd-",
];

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id in one cgroup path component, if it is one.
fn container_in(component: &str) -> Option<&str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let id = PREFIXES
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    is_hex64(id).then_some(id)
}

/// The pod uid in a component: `pod<uid>` (cgroupfs) or `kubepods-<qos>-pod<uid_with_underscores>.slice`.
fn pod_in(component: &str) -> Option<String> {
    let name = component.strip_suffix(".slice").unwrap_or(component);
    let at = name.rfind("pod")?;
    let uid = &name[at + 3..];
    let looks_like_uid = uid.len() == 36
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    looks_like_uid.then(|| uid.replace('_', "-"))
}

/// Parses the contents of `/proc/PID/cgroup` (v1 lines `N:controllers:/path`, v2 `0::/path`).
#[must_use]
pub fn parse(contents: &str) -> CgroupInfo {
    let mut info = CgroupInfo::default();
    for line in contents.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if info.container_id.is_none() {
            info.container_id = components
                .iter()
                .rev()
                .find_map(|c| container_in(c))
                .map(str::to_owned);
        }
        if info.pod_uid.is_none() {
            info.pod_uid = components.iter().rev().find_map(|c| pod_in(c));
        }
        if info.container_id.is_some() && info.pod_uid.is_some() {
            break;
        }
    }
    info
}

/// Reads and parses `/proc/PID/cgroup` under `proc_root`; empty info if unreadable.
#[must_use]
pub fn of_process(proc_root: &Path, pid: u32) -> CgroupInfo {
    fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup"))
        .map(|c| parse(&c))
        .unwrap_or_default()
}

/// The bare id of a Kubernetes `containerID` (`containerd://<id>`, `cri-o://<id>`, `docker://<id>`).
#[must_use]
pub fn strip_runtime_scheme(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4b6e2c8a1d9f0e7b5c4a3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
    const UID: &str = "8e3b1c2d-4f5a-6b7c-8d9e-0f1a2b3c4d5e";

    fn check(contents: &str, container: Option<&str>, pod: Option<&str>) {
        let info = parse(contents);
        assert_eq!(info.container_id.as_deref(), container, "{contents}");
        assert_eq!(info.pod_uid.as_deref(), pod, "{contents}");
    }

    #[test]
    fn containerd_cgroup_v2_systemd() {
        let uid = UID.replace('-', "_");
        check(
            &format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{ID}.scope\n"
            ),
            Some(ID),
            Some(UID),
        );
    }

    #[test]
    fn crio_cgroup_v2_and_its_conmon() {
        let uid = UID.replace('-', "_");
        let base = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice"
        );
        check(&format!("{base}/crio-{ID}.scope"), Some(ID), Some(UID));
        check(&format!("{base}/crio-conmon-{ID}.scope"), None, Some(UID));
    }

    #[test]
    fn cgroupfs_driver_v1_with_many_controllers() {
        let v1 = format!(
            "12:hugetlb:/kubepods/besteffort/pod{UID}/{ID}\n11:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        check(&v1, Some(ID), Some(UID));
        check(
            &format!("0::/kubepods/burstable/pod{UID}/{ID}\n"),
            Some(ID),
            Some(UID),
        );
    }

    #[test]
    fn paths_relative_to_the_agents_own_cgroup_namespace() {
        // On cgroup v2 the agent's pod has its own cgroup namespace: other pods' paths start
        // with "..".
        let uid = UID.replace('-', "_");
        check(
            &format!("0::/../../kubepods-besteffort-pod{uid}.slice/cri-containerd-{ID}.scope\n"),
            Some(ID),
            Some(UID),
        );
    }

    #[test]
    fn docker_and_podman_outside_kubernetes() {
        check(
            &format!("0::/system.slice/docker-{ID}.scope\n"),
            Some(ID),
            None,
        );
        check(&format!("4:cpu,cpuacct:/docker/{ID}\n"), Some(ID), None);
        check(
            &format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            Some(ID),
            None,
        );
    }

    #[test]
    fn host_processes_have_no_container() {
        check("0::/user.slice/user-0.slice/session-3.scope\n", None, None);
        check("0::/\n", None, None);
        check("0::/system.slice/containerd.service\n", None, None);
        check("garbage without colons\n", None, None);
        check("", None, None);
    }

    #[test]
    fn runtime_schemes() {
        assert_eq!(strip_runtime_scheme(&format!("containerd://{ID}")), ID);
        assert_eq!(strip_runtime_scheme(&format!("cri-o://{ID}")), ID);
        assert_eq!(strip_runtime_scheme(ID), ID);
    }
}
