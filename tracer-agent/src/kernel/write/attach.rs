//! Loads and attaches the write-side programs: the read path's server-context program, `sk_msg`
//! on the socket hash first, then the cgroup connect hooks and `sock_ops` that fill it, on the
//! cgroup v2 root (so every process of the node passes through them; only sockets of processes
//! in rewrite/inject mode are kept).

use std::{fs, path::PathBuf};

use aya::{
    Ebpf,
    maps::SockHash,
    programs::{CgroupAttachMode, CgroupSockAddr, SkMsg, SockOps, TracePoint},
};
use tracing::info;

use crate::kernel::{object, preflight::mount};

#[derive(Debug, thiserror::Error)]
pub enum WriteSideError {
    #[error(
        "the write side (--write-mode rewrite/inject) needs the cgroup v2 hierarchy: none is mounted and mounting it at {CGROUP2_FALLBACK} failed ({0}). Mount it (`mount -t cgroup2 none /sys/fs/cgroup/unified`) or use --write-mode read-only"
    )]
    NoCgroup2(std::io::Error),
    #[error("could not open the cgroup v2 root {path}: {source}")]
    OpenCgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "write-side program `{program}` could not be loaded or attached: {source}. The write side needs sk_msg, sock_ops and cgroup connect hooks (Linux 5.10+, CAP_NET_ADMIN); use --write-mode read-only on this kernel"
    )]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("write-side map `{0}` is missing or of the wrong type: {1}")]
    Map(&'static str, String),
}

/// The cgroup v2 mount point: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones.
#[must_use]
pub fn cgroup2_root(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split(' ');
        let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target))
    })
}

/// The write-side program `name` as its type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, WriteSideError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    object::program(ebpf, name).map_err(|source| WriteSideError::Program {
        program: name,
        source,
    })
}

/// Where the agent mounts the cgroup v2 hierarchy when nothing has (minimal systems, some
/// containers). There is one v2 hierarchy: a second mount shows the same root.
const CGROUP2_FALLBACK: &str = "/run/tracer-agent/cgroup2";

fn cgroup2() -> Result<PathBuf, WriteSideError> {
    if let Some(root) = cgroup2_root(&fs::read_to_string("/proc/mounts").unwrap_or_default()) {
        return Ok(root);
    }
    fs::create_dir_all(CGROUP2_FALLBACK).map_err(WriteSideError::NoCgroup2)?;
    mount("cgroup2", CGROUP2_FALLBACK).map_err(WriteSideError::NoCgroup2)?;
    info!("mounted the cgroup v2 hierarchy at {CGROUP2_FALLBACK} for the write side");
    Ok(PathBuf::from(CGROUP2_FALLBACK))
}

/// Attaches the write side; returns the cgroup it is attached to.
pub fn attach(ebpf: &mut Ebpf) -> Result<PathBuf, WriteSideError> {
    let root = cgroup2()?;
    let cgroup = fs::File::open(&root).map_err(|source| WriteSideError::OpenCgroup {
        path: root.clone(),
        source,
    })?;
    let err = |program: &'static str| move |source| WriteSideError::Program { program, source };

    // The read path's tail call that chooses SERVER span ids.
    // The verifier takes a while over these two (1 s here, far longer on old kernels): say so.
    info!("write side: verifying the server-context program");
    let started = std::time::Instant::now();
    let server: &mut TracePoint = program(ebpf, "tracer_server_ctx")?;
    server.load().map_err(err("tracer_server_ctx"))?;
    let server_insns = insns(server.info().ok());
    let server_time = started.elapsed();
    let server_fd = server.fd().map_err(err("tracer_server_ctx"))?.try_clone();
    object::set_tail_call(ebpf, "WRITE_PROGS", 0, server_fd)
        .map_err(|e| WriteSideError::Map(e.name, e.reason))?;

    // sk_msg first: sockets must never enter the map before the program that edits them is on it.
    let socks: SockHash<_, u64> = SockHash::try_from(
        ebpf.map("SOCKS")
            .ok_or_else(|| WriteSideError::Map("SOCKS", "not in the object".into()))?,
    )
    .map_err(|e| WriteSideError::Map("SOCKS", e.to_string()))?;
    let socks_fd = socks
        .fd()
        .try_clone()
        .map_err(|e| WriteSideError::Map("SOCKS", e.to_string()))?;
    // Stages 2 and 3 of the edit go into MSG_PROGS before stage 1 can reach them.
    info!("write side: verifying the three sk_msg stages");
    let started = std::time::Instant::now();
    let mut stage_insns = Vec::new();
    for (slot, name) in [
        (tracer_common::MSG_PLAN, "tracer_sk_msg_plan"),
        (tracer_common::MSG_APPLY, "tracer_sk_msg_apply"),
        (tracer_common::MSG_LOG, "tracer_sk_msg_log"),
    ] {
        let stage: &mut SkMsg = program(ebpf, name)?;
        stage.load().map_err(err(name))?;
        stage_insns.push(insns(stage.info().ok()));
        let fd = stage.fd().map_err(err(name))?.try_clone();
        object::set_tail_call(ebpf, "MSG_PROGS", slot, fd)
            .map_err(|e| WriteSideError::Map(e.name, e.reason))?;
    }
    let msg: &mut SkMsg = program(ebpf, "tracer_sk_msg")?;
    msg.load().map_err(err("tracer_sk_msg"))?;
    info!(
        "write side verified: sk_msg stages copy {}, plan {}, apply {} instructions in {} ms; server context {} in {} ms",
        insns(msg.info().ok()),
        stage_insns[0],
        stage_insns[1],
        started.elapsed().as_millis(),
        server_insns,
        server_time.as_millis()
    );
    msg.attach(&socks_fd).map_err(err("tracer_sk_msg"))?;

    for name in ["tracer_connect4", "tracer_connect6"] {
        let p: &mut CgroupSockAddr = program(ebpf, name)?;
        p.load().map_err(err(name))?;
        p.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(err(name))?;
    }
    let ops: &mut SockOps = program(ebpf, "tracer_sockops")?;
    ops.load().map_err(err("tracer_sockops"))?;
    ops.attach(&cgroup, CgroupAttachMode::Single)
        .map_err(err("tracer_sockops"))?;
    info!(
        "write side attached: sk_msg, connect4/6 and sock_ops on {}",
        root.display()
    );
    Ok(root)
}

/// The verifier's instruction count of a loaded program, for the start-up log.
fn insns(info: Option<aya::programs::ProgramInfo>) -> String {
    info.and_then(|i| i.verified_instruction_count())
        .map_or_else(|| "?".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n";
        assert_eq!(
            cgroup2_root(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_root("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(cgroup2_root("proc /proc proc rw 0 0\n"), None);
    }
}
