//! Loads the embedded eBPF object, sets its load-time globals and attaches the programs.
//!
//! What the kernel offers (tracefs formats, BTF offsets) is read here and handed to
//! [`attach`], which decides the attach points; the write side's programs are attached by
//! [`write::attach`] when some process edits.

use std::{fs, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, PerCpuArray, RingBuf},
};
use tracer_common::{FILTER_ALL, FILTER_LISTED, FdOffsets, IterOffsets, SockOffsets, TcpTpOffsets};
use tracing::debug;

use super::{
    attach::{self, AttachMode, AttachPlan, CaptureMode, PlanError, TupleInputs},
    btf::Btf,
    object::{MapError, take_map},
    preflight::{CAP_NET_ADMIN, CAP_SYS_ADMIN, VMLINUX_BTF, effective_caps},
    write,
};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer.bpf.o"));
/// The same programs plus the write side's socket hash and `sock_ops` program (`CAP_NET_ADMIN`).
static OBJECT_WRITE: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer-write.bpf.o"));

const TCP_TP_FORMAT: &str = "events/tcp/tcp_rcv_space_adjust/format";
/// The kernel-side log's ring buffer (aya-log's `AYA_LOGS`) when `--kernel-log` is on.
const KERNEL_LOG_BYTES: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(
        "loading the eBPF object failed: {0}. The agent needs Linux 5.8 or later (BPF ring buffers, CAP_BPF)"
    )]
    Load(#[source] aya::EbpfError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Map(#[from] MapError),
    #[error(transparent)]
    WriteSide(#[from] write::attach::WriteSideError),
    #[error(
        "--write-mode rewrite/inject needs CAP_NET_ADMIN as well (socket hash, sock_ops, sk_msg and cgroup hooks); grant it or use --write-mode read-only"
    )]
    WriteNotPrivileged,
    #[error("--kernel-log: the kernel programs' log could not be opened: {0}")]
    KernelLog(#[source] aya_log::Error),
}

pub struct LoadOptions {
    pub capture: CaptureMode,
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
    /// The trace-context propagators the write side reads, in order (`PROPAGATION` global,
    /// `trace::context::propagation_flags`).
    pub propagation: u32,
    /// Turn on the kernel programs' diagnostics (aya-log), forwarded to the agent's log.
    pub kernel_log: bool,
}

/// The loaded object with its programs attached; dropping it detaches everything.
pub struct Probes {
    /// Owns the loaded programs: dropping it detaches them.
    ebpf: Ebpf,
    pub plan: AttachPlan,
}

impl Probes {
    /// Goroutine tracking for a Go executable whose processes inject (see [`write::go`]).
    pub fn attach_go(&mut self, exe: &Path) -> Result<(), String> {
        write::go::attach(&mut self.ebpf, exe)
    }
}

/// The maps the agent reads and writes while it runs.
pub struct Maps {
    pub events: RingBuf<MapData>,
    pub proc_bits: Array<MapData, u64>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Write mode per process, when the write side is loaded.
    pub write_mode: Option<aya::maps::HashMap<MapData, u32, u32>>,
    /// The kernel programs' log records, with `--kernel-log`.
    pub kernel_log: Option<super::log::KernelLog>,
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
    let facts = KernelFacts::read(tracefs);
    let self_tgid = std::process::id();
    let mode = if opts.filter_listed {
        FILTER_LISTED
    } else {
        FILTER_ALL
    };
    // Off, every log statement is behind a branch on this read-only global that the verifier
    // resolves at load time: the logging code is never run nor even walked.
    let log_level: u8 = if opts.kernel_log { 0xff } else { 0 };
    let log_bytes = if opts.kernel_log {
        KERNEL_LOG_BYTES
    } else {
        page_size()
    };
    // No BTF for the object itself: it has no CO-RE relocations, and parsing the kernel's BTF
    // here would hold it in memory through the whole load.
    let mut ebpf = EbpfLoader::new()
        .btf(None)
        .override_global("SELF_TGID", &self_tgid, true)
        .override_global("FILTER_MODE", &mode, true)
        .override_global("CAPTURE_SIZE", &opts.capture_size, true)
        .override_global("TCP_TP", &facts.tcp.unwrap_or_default(), true)
        .override_global("SOCK_OFF", &facts.sock.unwrap_or_default(), true)
        .override_global("FD_OFF", &facts.fd.unwrap_or_default(), true)
        .override_global("ITER_OFF", &facts.iter.unwrap_or_default(), true)
        .override_global("TCP_RECVMSG_ARGS", &facts.recv_args.unwrap_or(5), true)
        .override_global("WRITE_ACTIVE", &u32::from(opts.write), true)
        .override_global("INJECT_FORMAT", &opts.inject_format, true)
        .override_global("SAMPLE_BOUND", &opts.sample_bound, true)
        .override_global("PROPAGATION", &opts.propagation, true)
        .override_global(aya_log::LEVEL, &log_level, true)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .map_max_entries("PROC_BITS", pid_bitmap_words())
        .map_max_entries("AYA_LOGS", log_bytes)
        .load(if opts.write { OBJECT_WRITE } else { OBJECT })
        .map_err(LoaderError::Load)?;
    let kernel_log = if opts.kernel_log {
        Some(aya_log::EbpfLogger::init(&mut ebpf).map_err(LoaderError::KernelLog)?)
    } else {
        None
    };

    let mut plan = attach_capture(&mut ebpf, tracefs, opts, &facts)?;
    attach::attach_http2(&mut ebpf, &mut plan);
    let write_mode = if opts.write {
        let cgroup = write::attach::attach(&mut ebpf)?;
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
        kernel_log,
    };
    Ok((Probes { ebpf, plan }, maps))
}

/// What the running kernel's tracefs and BTF say about the layouts the programs read.
struct KernelFacts {
    tcp: Option<TcpTpOffsets>,
    sock: Option<SockOffsets>,
    /// Only with `sock`: the file-table walk ends in the same `struct sock` reads.
    fd: Option<FdOffsets>,
    iter: Option<IterOffsets>,
    /// Parameters of `tcp_recvmsg`.
    recv_args: Option<u32>,
}

impl KernelFacts {
    fn read(tracefs: &Path) -> Self {
        let tcp = fs::read_to_string(tracefs.join(TCP_TP_FORMAT))
            .ok()
            .and_then(|f| tcp_tp_offsets(&f));
        // Our reader is dropped before aya parses the same BTF: start-up is the memory peak.
        match Btf::from_file(Path::new(VMLINUX_BTF)) {
            Ok(b) => {
                let sock = b.sock_offsets();
                Self {
                    tcp,
                    sock,
                    fd: b.fd_offsets().filter(|_| sock.is_some()),
                    iter: b.iter_offsets(),
                    recv_args: b
                        .func_params("tcp_recvmsg")
                        .and_then(|n| u32::try_from(n).ok()),
                }
            }
            Err(e) => {
                debug!("kernel BTF not usable: {e}");
                Self {
                    tcp,
                    sock: None,
                    fd: None,
                    iter: None,
                    recv_args: None,
                }
            }
        }
    }
}

/// Attaches the capture: the socket-level programs, or the syscall tracepoints and a
/// socket-tuple family.
fn attach_capture(
    ebpf: &mut Ebpf,
    tracefs: &Path,
    opts: &LoadOptions,
    facts: &KernelFacts,
) -> Result<AttachPlan, LoaderError> {
    let socket_blocker = socket_capture_blocker(
        opts,
        facts.sock.is_some() && facts.iter.is_some(),
        facts.recv_args,
    );
    // Only the socket-level capture and the fentry and tp_btf tuple families need aya's parse
    // of the kernel BTF.
    let probe_family_needs_btf = match opts.attach {
        AttachMode::Tracepoint | AttachMode::Kprobe | AttachMode::FileTable => false,
        // The file table comes first and needs no program.
        AttachMode::Auto => facts.fd.is_none(),
        AttachMode::Fentry | AttachMode::TpBtf => true,
    };
    let aya_btf = if socket_blocker.is_none() || (facts.sock.is_some() && probe_family_needs_btf) {
        aya::Btf::from_sys_fs().ok()
    } else {
        None
    };
    let mut plan = AttachPlan::default();
    let socket = match socket_blocker {
        None => aya_btf
            .as_ref()
            .ok_or_else(|| "the kernel BTF could not be parsed".to_owned())
            .and_then(|btf| attach::attach_socket_capture(ebpf, btf).map(|()| btf)),
        Some(reason) => Err(reason),
    };
    match socket {
        Ok(btf) => {
            plan.socket_capture = true;
            attach::attach_socket_http2(ebpf, btf, &mut plan);
            return Ok(plan);
        }
        Err(reason) if opts.capture == CaptureMode::Socket => {
            return Err(PlanError::SocketCapture(reason).into());
        }
        Err(reason) => plan.socket_capture_rejected = Some(reason),
    }
    attach::attach_syscalls(ebpf, tracefs, &mut plan)?;
    let inputs = TupleInputs {
        fd_offsets: facts.fd.is_some(),
        sock_offsets: facts.sock.is_some(),
        tcp_tracepoint: facts.tcp.is_some(),
        btf: aya_btf.as_ref(),
    };
    attach::attach_tuple(ebpf, opts.attach, &inputs, &mut plan)?;
    Ok(plan)
}

/// Why the socket-level capture cannot be tried, if it cannot (`offsets`: the `struct sock` and
/// `iov_iter` layouts were found in BTF).
fn socket_capture_blocker(
    opts: &LoadOptions,
    offsets: bool,
    recv_args: Option<u32>,
) -> Option<String> {
    let reason = match opts.capture {
        CaptureMode::Syscalls => "--capture syscalls",
        _ if opts.write => {
            "a process edits requests, and the write side runs from the syscall tracepoints"
        }
        _ if opts.attach != AttachMode::Auto => {
            "--attach chooses a socket-tuple family of the syscall capture"
        }
        _ if !offsets => "struct sock or msghdr/iov_iter layout not found in the kernel BTF",
        _ if !matches!(recv_args, Some(4..=6)) => {
            "tcp_recvmsg has not 4 to 6 parameters in the kernel BTF"
        }
        _ => return None,
    };
    Some(reason.to_owned())
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

/// The smallest ring buffer the kernel accepts: one page.
fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
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
