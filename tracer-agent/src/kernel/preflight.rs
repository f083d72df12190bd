//! Before anything is loaded: the privileges the probes need (with a message that says what to
//! grant), the memlock limit of old kernels, and the file systems the agent mounts when they are
//! missing (tracefs, bpffs, and the cgroup v2 hierarchy for the write side).

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use tracing::{debug, info, warn};

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const BPFFS: &str = "/sys/fs/bpf";
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Capability numbers from linux/capability.h.
pub const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_NET_ADMIN: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "tracer-agent needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8); missing: {missing}. Run it with sudo, or grant them: setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep tracer-agent"
    )]
    NotPrivileged { missing: String },
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed ({0}). Mount it with `mount -t tracefs tracefs {TRACEFS}` (in a container, mount the host's {TRACEFS})"
    )]
    NoTracefs(io::Error),
}

/// Checks privileges and mounts what the probes need.
pub fn preflight() -> Result<PathBuf, PreflightError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|(c, _)| !has(*c))
            .map(|(_, n)| n)
            .collect();
        return Err(PreflightError::NotPrivileged {
            missing: missing.join(", "),
        });
    }
    for (cap, name, why) in [
        (
            CAP_SYS_PTRACE,
            "CAP_SYS_PTRACE",
            "service names from other users' environments",
        ),
        (
            CAP_DAC_READ_SEARCH,
            "CAP_DAC_READ_SEARCH",
            "--port selection of other users' processes",
        ),
    ] {
        if !has(cap) && !has(CAP_SYS_ADMIN) {
            warn!("{name} is missing: {why} will not be available");
        }
    }
    raise_memlock();
    let tracefs = ensure_tracefs()?;
    ensure_bpffs();
    if !Path::new(VMLINUX_BTF).exists() {
        warn!(
            "kernel BTF (/sys/kernel/btf/vmlinux) is absent: the syscall tracepoint path does not need it, BTF-based attach points will be unavailable"
        );
    }
    Ok(tracefs)
}

/// The effective capability set of this process.
#[must_use]
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) } != 0 {
        debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            io::Error::last_os_error()
        );
    }
}

/// Mounts a file system with no source and no options (tracefs, bpffs, cgroup2).
pub fn mount(fstype: &str, target: &str) -> io::Result<()> {
    let src = CString::new(fstype)?;
    let dst = CString::new(target)?;
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn ensure_tracefs() -> Result<PathBuf, PreflightError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events/syscalls").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    mount("tracefs", TRACEFS).map_err(PreflightError::NoTracefs)?;
    info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

fn ensure_bpffs() {
    let mounted = fs::read_to_string("/proc/mounts")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(2) == Some("bpf")));
    if !mounted {
        match mount("bpf", BPFFS) {
            Ok(()) => info!("mounted bpffs at {BPFFS}"),
            Err(e) => {
                debug!("bpffs not mounted at {BPFFS} ({e}); nothing is pinned, so continuing");
            }
        }
    }
}
