//! The attach plan: which attach point each probe family gets on the running kernel, decided
//! here and only here, then logged and exported as a metric.
//!
//! - capture (the bytes of reads and writes): fentry/fexit on `tcp_sendmsg`, `tcp_recvmsg`
//!   and `tcp_close` where the kernel allows BPF trampolines (not on every kernel: ftrace
//!   hooks can be blocked), so that the node's other syscalls pay nothing; else, and whenever
//!   a process edits requests (the write side runs from the syscall probes), the syscall
//!   tracepoints, which every kernel has. `--capture` forces one.
//! - socket tuple, with the syscall tracepoints (both ends of a traced socket, for the peer of
//!   a connection whose accept or connect the agent did not see): read once per connection through the task's file table
//!   at its first data event, with offsets from the kernel's BTF, which attaches nothing; else,
//!   on kernels without those offsets, a probe on every send and receive: the BTF tracepoints
//!   `sock_send_length`/`sock_recv_length` (6.x), fentry on `tcp_sendmsg`/`tcp_recvmsg` where
//!   ftrace allows it, kprobes, or `tcp:tcp_rcv_space_adjust` (reads only). `--attach` forces
//!   one of them, for tests and for kernels where auto-detection lies.

use std::{fmt, path::Path};

use aya::{
    Btf as AyaBtf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, TracePoint},
};
use tracing::{debug, info};

use super::object::{self, program};

/// Present when the kernel can create kprobes through perf events, which is how aya attaches.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// The families of the socket-tuple probes, in the order `auto` tries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TupleFamily {
    /// No probe: the capture programs read the tuple through the file table, once per
    /// connection.
    FileTable,
    Fentry,
    TpBtf,
    Kprobe,
    Tracepoint,
}

impl TupleFamily {
    /// The file table first: it costs nothing on sends and receives (of any process: the probes
    /// run for every socket of the node), only a few reads per traced connection. Then `tp_btf`:
    /// like fentry it only costs a direct call, and its recursion guard is per program. A
    /// kprobe, and (seen on 7.2) fentry on the send path, can make the kernel skip a syscall
    /// tracepoint that shares the per-CPU guard of classic tracing programs, which loses that
    /// syscall's data.
    const AUTO_ORDER: [Self; 5] = [
        Self::FileTable,
        Self::TpBtf,
        Self::Fentry,
        Self::Kprobe,
        Self::Tracepoint,
    ];

    /// The `--attach` value naming this family.
    #[must_use]
    pub fn flag(self) -> &'static str {
        match self {
            Self::FileTable => "file-table",
            Self::Fentry => "fentry",
            Self::TpBtf => "tp-btf",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }

    fn programs(self) -> [&'static str; 2] {
        match self {
            Self::FileTable => ["", ""],
            Self::Fentry => ["fentry_tcp_sendmsg", "fentry_tcp_recvmsg"],
            Self::TpBtf => ["tp_btf_sock_send_length", "tp_btf_sock_recv_length"],
            Self::Kprobe => ["kprobe_tcp_sendmsg", "kprobe_tcp_recvmsg"],
            Self::Tracepoint => ["tcp_rcv_space_adjust", ""],
        }
    }
}

impl fmt::Display for TupleFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FileTable => "file table, once per connection (no probe)",
            Self::Fentry => "fentry tcp_sendmsg/tcp_recvmsg",
            Self::TpBtf => "tp_btf sock_send_length/sock_recv_length",
            Self::Kprobe => "kprobe tcp_sendmsg/tcp_recvmsg",
            Self::Tracepoint => "tracepoint tcp:tcp_rcv_space_adjust (reads only)",
        })
    }
}

/// What `--capture` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureMode {
    Auto,
    /// fentry/fexit on the TCP send, receive and close functions.
    Socket,
    /// The syscall tracepoints (and a socket-tuple family, see `--attach`).
    Syscalls,
}

/// The socket-level capture programs and the kernel function each one traces (fentry or fexit,
/// as their names begin).
const SOCKET_PROGRAMS: [(&str, &str); 5] = [
    ("fentry_cap_tcp_sendmsg", "tcp_sendmsg"),
    ("fexit_cap_tcp_sendmsg", "tcp_sendmsg"),
    ("fentry_cap_tcp_recvmsg", "tcp_recvmsg"),
    ("fexit_cap_tcp_recvmsg", "tcp_recvmsg"),
    ("fentry_cap_tcp_close", "tcp_close"),
];

/// What `--attach` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    Auto,
    FileTable,
    Fentry,
    TpBtf,
    Kprobe,
    Tracepoint,
}

impl AttachMode {
    fn candidates(self) -> Vec<TupleFamily> {
        match self {
            Self::Auto => TupleFamily::AUTO_ORDER.to_vec(),
            Self::FileTable => vec![TupleFamily::FileTable],
            Self::Fentry => vec![TupleFamily::Fentry],
            Self::TpBtf => vec![TupleFamily::TpBtf],
            Self::Kprobe => vec![TupleFamily::Kprobe],
            Self::Tracepoint => vec![TupleFamily::Tracepoint],
        }
    }
}

/// How each probe family is attached on this kernel.
#[derive(Clone, Debug, Default)]
pub struct AttachPlan {
    /// The socket-level capture is attached (then no syscall tracepoint is).
    pub socket_capture: bool,
    /// Why the socket-level capture was not used, when `--capture auto` passed it over.
    pub socket_capture_rejected: Option<String>,
    pub syscalls: Vec<String>,
    pub missing_syscalls: Vec<String>,
    pub socket_tuple: Option<TupleFamily>,
    /// Families tried before the one chosen, with why they were passed over.
    pub rejected: Vec<(TupleFamily, String)>,
    /// The cgroup the write-side programs are attached to, when loaded.
    pub write_side: Option<std::path::PathBuf>,
    /// Why HTTP/2 frames are not walked, when they are not (`None`: they are).
    pub http2_off: Option<String>,
    /// With the socket-level capture: why the kernel does not walk HTTP/2 frames, when it does
    /// not (the agent then walks the captured bytes).
    pub http2_raw: Option<String>,
}

impl AttachPlan {
    /// Programs attached: the syscall tracepoints and the socket-tuple pair.
    #[must_use]
    pub fn attached(&self) -> usize {
        if self.socket_capture {
            return SOCKET_PROGRAMS.len();
        }
        self.syscalls.len()
            + self
                .socket_tuple
                .map_or(0, |f| f.programs().iter().filter(|p| !p.is_empty()).count())
    }
}

impl fmt::Display for AttachPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.socket_capture {
            f.write_str(
                "capture=socket (fentry/fexit tcp_sendmsg/tcp_recvmsg, fentry tcp_close; no syscall tracepoint)",
            )?;
            if let Some(why) = &self.http2_raw {
                write!(f, ", http2=captured bytes ({why})")?;
            }
            return Ok(());
        }
        write!(
            f,
            "capture=syscall tracepoints ({} attached",
            self.syscalls.len()
        )?;
        if !self.missing_syscalls.is_empty() {
            write!(f, ", unavailable: {}", self.missing_syscalls.join(" "))?;
        }
        match self.socket_tuple {
            Some(t) => write!(f, "), socket tuple={t}")?,
            None => write!(f, "), socket tuple=connect/accept arguments only")?,
        }
        if let Some(cgroup) = &self.write_side {
            write!(
                f,
                ", write side=sk_msg (connect4/6 + sock_ops on {})",
                cgroup.display()
            )?;
        }
        if let Some(why) = &self.http2_off {
            write!(f, ", http2=off ({why})")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("eBPF program `{program}` could not be loaded or attached: {source}")]
    Program {
        program: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "eBPF program `{0}` was refused: this kernel cannot run a program that mixes tail calls \
         with BPF-to-BPF calls, as the capture programs do. Its BPF JIT is off \
         (sysctl net.core.bpf_jit_enable=1 turns it on) or cannot do it (arm64 before 6.1: \
         5.10 refuses, 6.1 runs them); a kernel of 6.1 or later is needed there"
    )]
    MixedTailCalls(String),
    #[error("no {0} syscall tracepoint could be attached (see the warnings above)")]
    NoCapture(&'static str),
    #[error("--attach {} is not available on this kernel: {reason}", family.flag())]
    Forced { family: TupleFamily, reason: String },
    #[error("--capture socket is not available on this kernel: {0}")]
    SocketCapture(String),
}

/// Loads and attaches every socket-level capture program, or none of them.
pub fn attach_socket_capture(ebpf: &mut Ebpf, btf: &AyaBtf) -> Result<(), String> {
    for (i, (name, target)) in SOCKET_PROGRAMS.into_iter().enumerate() {
        let fexit = name.starts_with("fexit_");
        let result = if fexit {
            program::<FExit>(ebpf, name)
                .and_then(|p| p.load(target, btf).and_then(|()| p.attach().map(|_| ())))
        } else {
            program::<FEntry>(ebpf, name)
                .and_then(|p| p.load(target, btf).and_then(|()| p.attach().map(|_| ())))
        };
        if let Err(e) = result {
            debug!("socket-level capture: {name} failed: {e}");
            for (done, _) in &SOCKET_PROGRAMS[..i] {
                let undone = if done.starts_with("fexit_") {
                    program::<FExit>(ebpf, done).and_then(FExit::unload)
                } else {
                    program::<FEntry>(ebpf, done).and_then(FEntry::unload)
                };
                if let Err(e) = undone {
                    debug!("unloading {done}: {e}");
                }
            }
            return Err(format!("{name}: {}", short(e)));
        }
    }
    Ok(())
}

/// Attaches every syscall tracepoint the kernel has; the read and write families are required.
pub fn attach_syscalls(
    ebpf: &mut Ebpf,
    tracefs: &Path,
    plan: &mut AttachPlan,
) -> Result<(), PlanError> {
    let names: Vec<String> = ebpf
        .programs()
        .map(|(n, _)| n.to_owned())
        .filter(|n| n.starts_with("sys_"))
        .collect();
    for name in names {
        if !tracefs.join("events/syscalls").join(&name).is_dir() {
            plan.missing_syscalls.push(name);
            continue;
        }
        attach_tracepoint(ebpf, "syscalls", &name).map_err(|source| {
            if refuses_mixed_tail_calls(&source.to_string()) {
                PlanError::MixedTailCalls(name.clone())
            } else {
                PlanError::Program {
                    program: name.clone(),
                    source,
                }
            }
        })?;
        plan.syscalls.push(name);
    }
    for (family, prefix) in [("read-side", "sys_exit_re"), ("write-side", "sys_exit_wr")] {
        if !plan.syscalls.iter().any(|s| s.starts_with(prefix)) {
            return Err(PlanError::NoCapture(family));
        }
    }
    Ok(())
}

/// Whether a load error is the verifier's refusal of tail calls in a program with BPF-to-BPF
/// calls, which it gives when no JIT will compile the program (the interpreter cannot run such
/// a program): the JIT is off, or the architecture's JIT does not support the mix.
fn refuses_mixed_tail_calls(error: &str) -> bool {
    error.contains("tail_calls are not allowed in non-JITed programs with bpf-to-bpf calls")
}

/// Loads the HTTP/2 frame walk and puts it where the syscall capture programs tail-call it.
/// Without it HTTP/2 sockets are not reported (the capture programs count each event they
/// could not hand over); HTTP/1 is unaffected. The socket-level capture has its own walks
/// ([`attach_socket_http2`]).
pub fn attach_http2(ebpf: &mut Ebpf, plan: &mut AttachPlan) {
    if plan.socket_capture {
        return;
    }
    let started = std::time::Instant::now();
    let loaded = (|| {
        let p: &mut TracePoint = program(ebpf, "tracer_h2_frames")?;
        p.load()?;
        verified(p.info().ok(), "HTTP/2 frame walk", started);
        p.fd()
            .and_then(|fd| fd.try_clone().map_err(ProgramError::IOError))
    })();
    let result = match loaded {
        Ok(fd) => object::set_tail_call(ebpf, "H2_PROGS", 0, Ok(fd)).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = result {
        let short = verifier_summary(&why, "HTTP/2 frame walk");
        tracing::warn!("HTTP/2 is not traced: the frame walk could not be loaded: {short}");
        plan.http2_off = Some(short);
    }
}

/// The socket-level capture's frame walks, one per traced function (a tail call only reaches a
/// program of the same hook): the program, the function, the program array its caller
/// tail-calls.
const SOCKET_H2_WALKS: [(&str, &str, &str); 2] = [
    ("tracer_h2_frames_send", "tcp_sendmsg", "H2_SEND_PROGS"),
    ("tracer_h2_frames_recv", "tcp_recvmsg", "H2_RECV_PROGS"),
];

/// Loads the socket-level capture's frame walks (fexit programs of the functions the capture
/// traces, never attached) and puts each where its capture program tail-calls it. Without
/// them HTTP/2 is still traced, from the captured bytes, which the agent walks itself
/// (`protocol/http2/raw.rs`): a frame header beyond the capture is not seen there.
pub fn attach_socket_http2(ebpf: &mut Ebpf, btf: &AyaBtf, plan: &mut AttachPlan) {
    for (name, target, map) in SOCKET_H2_WALKS {
        let started = std::time::Instant::now();
        let loaded = (|| {
            let p: &mut FExit = program(ebpf, name)?;
            p.load(target, btf)?;
            verified(p.info().ok(), name, started);
            p.fd()
                .and_then(|fd| fd.try_clone().map_err(ProgramError::IOError))
        })();
        let result = match loaded {
            Ok(fd) => object::set_tail_call(ebpf, map, 0, Ok(fd)).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(why) = result {
            let short = verifier_summary(&why, name);
            tracing::warn!(
                "HTTP/2 frames are walked from the captured bytes: {name} could not be loaded: \
                 {short}"
            );
            plan.http2_raw = Some(format!("{name}: {short}"));
            return;
        }
    }
}

/// Logs at debug level how long the verifier took and how many instructions it processed.
fn verified(info: Option<aya::programs::ProgramInfo>, what: &str, started: std::time::Instant) {
    let insns = info.and_then(|i| i.verified_instruction_count());
    debug!(
        "{what} verified in {:?} ({} instructions processed)",
        started.elapsed(),
        insns.map_or_else(|| "?".to_owned(), |n| n.to_string())
    );
}

/// A load error in one line: its first line and the verifier's last (the whole verifier log
/// goes to the debug log).
fn verifier_summary(why: &str, what: &str) -> String {
    let (first, rest) = why.split_once('\n').unwrap_or((why, ""));
    let last = rest
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if !rest.is_empty() {
        debug!("{what}, verifier output:\n{rest}");
    }
    if last.is_empty() {
        first.to_owned()
    } else {
        format!("{first} ... {}", last.trim())
    }
}

fn attach_tracepoint(ebpf: &mut Ebpf, category: &str, name: &str) -> Result<(), ProgramError> {
    let p: &mut TracePoint = program(ebpf, name)?;
    p.load()?;
    p.attach(category, name).map(|_| ())
}

/// What the socket-tuple families need to know about the kernel.
pub struct TupleInputs<'a> {
    /// The file-table offsets were found in BTF (and the `struct sock` ones).
    pub fd_offsets: bool,
    /// `struct sock` offsets were found in BTF (needed by all but the tracepoint).
    pub sock_offsets: bool,
    /// `tcp:tcp_rcv_space_adjust` has a readable format.
    pub tcp_tracepoint: bool,
    pub btf: Option<&'a AyaBtf>,
}

/// Attaches the first socket-tuple family that works, in `mode`'s order.
pub fn attach_tuple(
    ebpf: &mut Ebpf,
    mode: AttachMode,
    inputs: &TupleInputs<'_>,
    plan: &mut AttachPlan,
) -> Result<(), PlanError> {
    for family in mode.candidates() {
        match try_family(ebpf, family, inputs) {
            Ok(()) => {
                plan.socket_tuple = Some(family);
                return Ok(());
            }
            Err(reason) => {
                debug!("socket tuple via {family}: not available ({reason})");
                if mode != AttachMode::Auto {
                    return Err(PlanError::Forced { family, reason });
                }
                plan.rejected.push((family, reason));
            }
        }
    }
    info!("no socket-tuple probe could be attached; addresses come from connect/accept arguments");
    Ok(())
}

/// Loads and attaches both programs of `family`, or none of them.
fn try_family(
    ebpf: &mut Ebpf,
    family: TupleFamily,
    inputs: &TupleInputs<'_>,
) -> Result<(), String> {
    let btf = || inputs.btf.ok_or_else(|| "no kernel BTF".to_owned());
    match family {
        TupleFamily::FileTable if !inputs.fd_offsets => {
            return Err("file table or struct sock offsets not found in kernel BTF".into());
        }
        TupleFamily::FileTable => return Ok(()),
        TupleFamily::Tracepoint if !inputs.tcp_tracepoint => {
            return Err("tcp:tcp_rcv_space_adjust format not readable".into());
        }
        TupleFamily::Fentry | TupleFamily::TpBtf | TupleFamily::Kprobe if !inputs.sock_offsets => {
            return Err("struct sock offsets not found in kernel BTF".into());
        }
        TupleFamily::Kprobe if !Path::new(KPROBE_PMU).exists() => {
            return Err("the kernel has no kprobe support (CONFIG_KPROBES is off)".into());
        }
        _ => {}
    }
    let mut attached = Vec::new();
    for name in family.programs().into_iter().filter(|n| !n.is_empty()) {
        let result = match family {
            TupleFamily::Fentry => btf().and_then(|b| {
                let p: &mut FEntry = program(ebpf, name).map_err(short)?;
                let target = name.trim_start_matches("fentry_");
                p.load(target, b)
                    .and_then(|()| p.attach().map(|_| ()))
                    .map_err(short)
            }),
            TupleFamily::TpBtf => btf().and_then(|b| {
                let p: &mut BtfTracePoint = program(ebpf, name).map_err(short)?;
                let target = name.trim_start_matches("tp_btf_");
                p.load(target, b)
                    .and_then(|()| p.attach().map(|_| ()))
                    .map_err(short)
            }),
            TupleFamily::Kprobe => {
                let target = name.trim_start_matches("kprobe_");
                program::<KProbe>(ebpf, name)
                    .and_then(|p| p.load().and_then(|()| p.attach(target, 0).map(|_| ())))
                    .map_err(short)
            }
            TupleFamily::Tracepoint => attach_tracepoint(ebpf, "tcp", name).map_err(short),
            TupleFamily::FileTable => Ok(()),
        };
        if let Err(reason) = result {
            for done in attached {
                unload(ebpf, family, done);
            }
            return Err(reason);
        }
        attached.push(name);
    }
    Ok(())
}

/// Detaches and unloads one program of a family that could not be attached whole.
fn unload(ebpf: &mut Ebpf, family: TupleFamily, name: &str) {
    let result = match family {
        TupleFamily::Fentry => program::<FEntry>(ebpf, name).and_then(FEntry::unload),
        TupleFamily::TpBtf => program::<BtfTracePoint>(ebpf, name).and_then(BtfTracePoint::unload),
        TupleFamily::Kprobe => program::<KProbe>(ebpf, name).and_then(KProbe::unload),
        TupleFamily::Tracepoint => program::<TracePoint>(ebpf, name).and_then(TracePoint::unload),
        TupleFamily::FileTable => Ok(()),
    };
    if let Err(e) = result {
        debug!("unloading {name}: {e}");
    }
}

/// The first line of an aya error (verifier logs follow it), kept short for the plan.
#[expect(
    clippy::needless_pass_by_value,
    reason = "used as map_err(short), which hands over the error"
)]
fn short(e: ProgramError) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let first = first
        .trim_end()
        .trim_end_matches("Verifier output:")
        .trim_end_matches('.');
    first.trim_end().chars().take(160).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_that_cannot_mix_tail_calls_and_calls() {
        // The error aya gave on Debian's arm64 5.10 (vm-test), verifier log included.
        let arm64_5_10 = "the BPF_PROG_LOAD syscall returned Invalid argument (os error 22). \
                          Verifier output: ...\ntail_calls are not allowed in non-JITed programs \
                          with bpf-to-bpf calls\nprocessed 4123 insns";
        assert!(refuses_mixed_tail_calls(arm64_5_10));
        assert!(!refuses_mixed_tail_calls(
            "the BPF_PROG_LOAD syscall returned Permission denied (os error 13)"
        ));
        let message = PlanError::MixedTailCalls("sys_exit_write".to_owned()).to_string();
        assert!(message.contains("`sys_exit_write`") && message.contains("bpf_jit_enable"));
    }
}
