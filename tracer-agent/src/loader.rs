//! Loads the embedded eBPF object, sets its load-time globals and attaches the programs.
//!
//! What the kernel offers (tracefs formats, BTF offsets) is read here and handed to `plan`,
//! which decides the attach points. Preflight checks turn the usual deployment mistakes (no privileges, tracefs not mounted)
//! into messages that say what to do.

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
};
use tracer_common::{FILTER_ALL, FILTER_LISTED, TcpTpOffsets};
use tracing::{debug, info, warn};

use crate::{
    btf::Btf,
    plan::{self, AttachMode, AttachPlan, PlanError, TupleInputs},
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));
/// The same programs plus the write side's socket hash and sock_ops program (CAP_NET_ADMIN).
static OBJECT_WRITE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-write.bpf.o"));

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const BPFFS: &str = "/sys/fs/bpf";
const TCP_TP_FORMAT: &str = "events/tcp/tcp_rcv_space_adjust/format";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Capability numbers from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(
        "tracer-agent needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8); missing: {missing}. Run it with sudo, or grant them: setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep tracer-agent"
    )]
    NotPrivileged { missing: String },
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed ({0}). Mount it with `mount -t tracefs tracefs {TRACEFS}` (in a container, mount the host's {TRACEFS})"
    )]
    NoTracefs(io::Error),
    #[error(
        "loading the eBPF object failed: {0}. The agent needs Linux 5.8 or later (BPF ring buffers, CAP_BPF)"
    )]
    Load(#[source] aya::EbpfError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("eBPF map `{0}` is missing or of the wrong type: {1}")]
    Map(&'static str, String),
    #[error(transparent)]
    WriteSide(#[from] crate::writeside::WriteSideError),
    #[error(
        "--write-mode rewrite/inject needs CAP_NET_ADMIN as well (socket hash, sock_ops, sk_msg and cgroup hooks); grant it or use --write-mode read-only"
    )]
    WriteNotPrivileged,
}

pub struct LoadOptions {
    pub attach: AttachMode,
    pub capture_size: u32,
    pub filter_listed: bool,
    pub ring_buffer_bytes: u32,
    /// Load the write side (some selected process may edit requests).
    pub write: bool,
    /// `tracer_common::INJECT_*`.
    pub inject_format: u32,
    /// Sampling bound for traces the kernel starts (see the `SAMPLE_BOUND` global).
    pub sample_bound: u64,
}

/// The loaded object with its programs attached; dropping it detaches everything.
pub struct Probes {
    /// Owns the loaded programs: dropping it detaches them.
    ebpf: Ebpf,
    pub plan: AttachPlan,
}

impl Probes {
    /// Goroutine tracking for a Go executable whose processes inject (see `writeside`).
    pub fn attach_go(&mut self, exe: &Path) -> Result<(), String> {
        crate::writeside::attach_go(&mut self.ebpf, exe)
    }
}

pub struct Maps {
    pub events: RingBuf<MapData>,
    pub proc_bits: Array<MapData, u64>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Write mode per process, when the write side is loaded.
    pub write_mode: Option<aya::maps::HashMap<MapData, u32, u32>>,
}

/// Checks privileges and mounts what the probes need.
pub fn preflight() -> Result<PathBuf, LoaderError> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|(c, _)| !has(*c))
            .map(|(_, n)| n)
            .collect();
        return Err(LoaderError::NotPrivileged {
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

fn effective_caps() -> u64 {
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

fn ensure_tracefs() -> Result<PathBuf, LoaderError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events/syscalls").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    mount("tracefs", TRACEFS).map_err(LoaderError::NoTracefs)?;
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

/// Field offsets of `tcp:tcp_rcv_space_adjust` from its tracefs format description.
#[must_use]
pub fn tcp_tp_offsets(format: &str) -> Option<TcpTpOffsets> {
    let mut off = TcpTpOffsets::default();
    for line in format.lines() {
        let Some(field) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let mut parts = field.split(';');
        let decl = parts.next()?.trim();
        let offset: u32 = parts
            .find_map(|p| p.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())?;
        let name = decl.rsplit(' ').next()?.split('[').next()?;
        match name {
            "sport" => off.sport = offset,
            "dport" => off.dport = offset,
            "family" => off.family = offset,
            "saddr" => off.saddr = offset,
            "daddr" => off.daddr = offset,
            "saddr_v6" => off.saddr_v6 = offset,
            "daddr_v6" => off.daddr_v6 = offset,
            _ => {}
        }
    }
    // Without v6 addresses we cannot tell v4 from v6 on kernels that lack `family`.
    (off.sport != 0 && off.dport != 0 && off.saddr_v6 != 0 && off.daddr_v6 != 0).then_some(off)
}

/// Loads the object and attaches the plan for this kernel.
pub fn load(tracefs: &Path, opts: &LoadOptions) -> Result<(Probes, Maps), LoaderError> {
    let caps = effective_caps();
    if opts.write && caps & (1 << CAP_NET_ADMIN) == 0 && caps & (1 << CAP_SYS_ADMIN) == 0 {
        return Err(LoaderError::WriteNotPrivileged);
    }
    let tcp = fs::read_to_string(tracefs.join(TCP_TP_FORMAT))
        .ok()
        .and_then(|f| tcp_tp_offsets(&f));
    // Our reader is dropped before aya parses the same BTF: start-up is the memory peak.
    let sock = match Btf::from_file(Path::new(VMLINUX_BTF)) {
        Ok(b) => b.sock_offsets(),
        Err(e) => {
            debug!("kernel BTF not usable: {e}");
            None
        }
    };
    let self_tgid = std::process::id();
    let mode = if opts.filter_listed {
        FILTER_LISTED
    } else {
        FILTER_ALL
    };
    let tcp_offsets = tcp.unwrap_or_default();
    let sock_offsets = sock.unwrap_or_default();
    // No BTF for the object itself: it has no CO-RE relocations, and parsing the kernel's BTF
    // here would hold it in memory through the whole load.
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global("SELF_TGID", &self_tgid, true)
        .override_global("FILTER_MODE", &mode, true)
        .override_global("CAPTURE_SIZE", &opts.capture_size, true)
        .override_global("TCP_TP", &tcp_offsets, true)
        .override_global("SOCK_OFF", &sock_offsets, true)
        .override_global("WRITE_ACTIVE", &u32::from(opts.write), true)
        .override_global("INJECT_FORMAT", &opts.inject_format, true)
        .override_global("SAMPLE_BOUND", &opts.sample_bound, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .map_max_entries("PROC_BITS", pid_bitmap_words())
        .load(if opts.write { OBJECT_WRITE } else { OBJECT })
        .map_err(LoaderError::Load)?;

    let mut plan = AttachPlan::default();
    plan::attach_syscalls(&mut ebpf, tracefs, &mut plan)?;
    // Only the fentry and tp_btf families need aya's parse of the kernel BTF.
    let aya_btf = if sock.is_some()
        && opts.attach != AttachMode::Tracepoint
        && opts.attach != AttachMode::Kprobe
    {
        aya::Btf::from_sys_fs().ok()
    } else {
        None
    };
    let inputs = TupleInputs {
        sock_offsets: sock.is_some(),
        tcp_tracepoint: tcp.is_some(),
        btf: aya_btf.as_ref(),
    };
    plan::attach_tuple(&mut ebpf, opts.attach, &inputs, &mut plan)?;
    let write_mode = if opts.write {
        let cgroup = crate::writeside::attach(&mut ebpf)?;
        plan.write_side = Some(cgroup);
        Some(take_map(&mut ebpf, "WRITE_MODE")?)
    } else {
        None
    };

    let maps = Maps {
        events: take_map(&mut ebpf, "EVENTS")?,
        proc_bits: take_map(&mut ebpf, "PROC_BITS")?,
        counters: take_map(&mut ebpf, "COUNTERS")?,
        write_mode,
    };
    Ok((Probes { ebpf, plan }, maps))
}

/// One bit per possible process id: `pid_max` / 64 words (the kernel default is 4194304 on
/// 64-bit machines, a 512 KiB array).
fn pid_bitmap_words() -> u32 {
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    pid_max.div_ceil(64).max(1)
}

pub fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoaderError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| LoaderError::Map(name, "not in the object".into()))?;
    T::try_from(map).map_err(|e| LoaderError::Map(name, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: tcp_rcv_space_adjust
ID: 2277
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:__u16 sport;\toffset:16;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:18;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:20;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:22;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:26;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:30;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:46;\tsize:16;\tsigned:0;
\tfield:__u64 sock_cookie;\toffset:64;\tsize:8;\tsigned:0;
";

    #[test]
    fn parses_tracepoint_format() {
        let off = tcp_tp_offsets(FORMAT_6_18).unwrap();
        assert_eq!((off.sport, off.dport, off.family), (16, 18, 20));
        assert_eq!(
            (off.saddr, off.daddr, off.saddr_v6, off.daddr_v6),
            (22, 26, 30, 46)
        );
        // Older kernels have no family field: still usable through the v6 addresses.
        let old: String = FORMAT_6_18
            .lines()
            .filter(|l| !l.contains("family"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(tcp_tp_offsets(&old).unwrap().family, 0);
        assert!(tcp_tp_offsets("format:\n\tfield:int x;\toffset:8;").is_none());
    }
}
