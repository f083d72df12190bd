//! What runs inside the guests: the agent, the guest suite (tests/src/bin/guest-suite), the
//! static Go demo service and the static Go gRPC demo (the HTTP/2 family), with busybox and an
//! /init script, packed into one initramfs per architecture that every kernel of that
//! architecture boots. The arm64 payload is cross-built (see [`build::arm64_cargo`]).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use super::{Arch, cpio::Archive, fetch::Qemu};
use crate::{
    build,
    util::{self, Outcome, Step},
};

/// PID 1 of the guests. The markers (`GUEST-RUN`, `GUEST-RESULT` from the suite, `GUEST-DONE`)
/// are what the host reads on the serial console; `poweroff -f` ends QEMU (with -no-reboot).
/// If the shell itself dies the kernel panics, which `panic=-1` also turns into QEMU's exit.
const INIT: &str = r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
[ -e /dev/console ] || mknod /dev/console c 5 1
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
echo "GUEST-KERNEL $(uname -r)"
n=0
while IFS= read -r line; do
    n=$((n + 1))
    echo "GUEST-RUN $n $line"
    # Each line holds the agent arguments of one run, single-quoted by the host; the suite's
    # own options (--http2) are in /etc/vmtest-suite-args.
    eval "set -- $line"
    /bin/guest-suite $(cat /etc/vmtest-suite-args) -- "$@" </dev/null
done </etc/vmtest-runs
echo GUEST-DONE
poweroff -f
"#;

pub struct Binaries {
    arch: Arch,
    agent: PathBuf,
    suite: PathBuf,
    server: PathBuf,
    /// The Go gRPC demo (server and client), for the HTTP/2 family.
    grpc: PathBuf,
}

/// Builds for `arch` the agent (with setup, as `cargo xtask build`), the guest suite and the Go
/// services.
pub fn build(vm: &Path, arch: Arch) -> Result<Binaries> {
    const SUITE: [&str; 4] = ["-p", "tracer-tests", "--bin", "guest-suite"];
    let (agent, suite) = match arch {
        Arch::X86_64 => (
            build::build()?,
            util::target_dir().join("release/guest-suite"),
        ),
        Arch::Arm64 => (
            build::build_arm64()?,
            build::arm64_release_dir().join("guest-suite"),
        ),
    };
    Step::start(
        "vm-test",
        format!("guest suite for {arch} (tests/src/bin/guest-suite)"),
    )
    .run(|s| {
        s.break_line();
        match arch {
            Arch::X86_64 => util::run(
                util::cargo()
                    .current_dir(util::workspace_root())
                    .args(["build", "--release", "--locked"])
                    .args(SUITE),
            )?,
            Arch::Arm64 => {
                util::run(&mut build::arm64_cargo("build", &SUITE))?;
                build::require_arm64(&suite)?;
            }
        }
        Ok(Outcome::Info(suite.display().to_string()))
    })?;
    let dir = vm.join(format!("payload{}", arch.suffix()));
    // The cache stays under target/ so the builds write nothing into the home directory; Go
    // keeps each architecture's objects apart in one cache.
    let cache = vm.join("go/cache");
    let server = dir.join("go-demo-svc");
    Step::start("vm-test", format!("static Go demo service for {arch}")).run(|_| {
        // A static binary that needs nothing from the guest.
        tracer_test_support::GoService {
            out: &server,
            cache: &cache,
            static_binary: true,
            goarch: Some(arch.debian()),
        }
        .build()
        .map_err(anyhow::Error::msg)?;
        Ok(Outcome::Info(server.display().to_string()))
    })?;
    let grpc = dir.join("go-grpc-demo");
    Step::start(
        "vm-test",
        format!("static Go gRPC demo (HTTP/2) for {arch}"),
    )
    .run(|_| {
        tracer_test_support::go_grpc_service_at(&grpc, &cache, true, Some(arch.debian()))
            .map_err(anyhow::Error::msg)?;
        Ok(Outcome::Info(grpc.display().to_string()))
    })?;
    Ok(Binaries {
        arch,
        agent,
        suite,
        server,
        grpc,
    })
}

/// Writes the initramfs to `out`; `runs` are the agent arguments of each suite run,
/// `suite_args` the guest suite's own options for every run (plain words).
pub fn initramfs(
    qemu: &Qemu,
    bins: &Binaries,
    runs: &[Vec<String>],
    suite_args: &[&str],
    out: &Path,
) -> Result<()> {
    let arch = bins.arch;
    Step::start("vm-test", format!("initramfs for {arch}")).run(|_| {
        let mut a = Archive::default();
        a.file("init", INIT.as_bytes().to_vec(), true);
        for dir in ["proc", "sys", "tmp", "root"] {
            a.dir(dir);
        }
        // The kernel opens /dev/console for PID 1's stdio before /init can mount devtmpfs.
        a.char_dev("dev/console", 5, 1);
        a.copy("bin/busybox", &qemu.busybox(arch))?;
        // The applets this busybox has (the arm64 one runs under qemu-user, which the arm64
        // build's setup installs).
        let mut list = match arch {
            Arch::X86_64 => Command::new(qemu.busybox(arch)),
            Arch::Arm64 => {
                let mut c = Command::new(build::ARM64_RUNNER);
                c.arg(qemu.busybox(arch));
                c
            }
        };
        let applets = util::output(list.arg("--list"))?;
        for applet in applets.lines().filter(|l| !l.is_empty() && *l != "busybox") {
            a.symlink(&format!("bin/{applet}"), "busybox");
        }
        a.copy("bin/go-demo-svc", &bins.server)?;
        a.copy("bin/go-grpc-demo", &bins.grpc)?;
        for (name, bin) in [("tracer-agent", &bins.agent), ("guest-suite", &bins.suite)] {
            a.copy(&format!("bin/{name}"), bin)?;
            // Both are dynamically linked (glibc): the same libraries go to the same paths.
            for lib in build::shared_libraries(bin)? {
                a.copy(&lib.display().to_string(), &lib)?;
            }
        }
        let lines: Vec<String> = runs.iter().map(|args| shell_words(args)).collect();
        a.file(
            "etc/vmtest-runs",
            format!("{}\n", lines.join("\n")).into_bytes(),
            false,
        );
        a.file(
            "etc/vmtest-suite-args",
            format!("{}\n", suite_args.join(" ")).into_bytes(),
            false,
        );
        // Not compressed: QEMU copies the file into guest memory as is, while gunzip of ~30 MB
        // inside a TCG guest costs seconds per boot.
        let size = a.write(out)?;
        Ok(Outcome::Info(format!(
            "{} ({})",
            out.display(),
            super::fetch::mib(size)
        )))
    })
}

/// Single-quotes each argument for `eval` in /init.
fn shell_words(args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    quoted.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        let args = ["--attach".to_owned(), "it's".to_owned()];
        assert_eq!(shell_words(&args), r"'--attach' 'it'\''s'");
        assert_eq!(shell_words(&[]), "");
    }
}
