//! `cargo xtask vm-test`: the agent's tests on other kernels, each booted in QEMU.
//!
//! Users run many kernels, this machine only one. So: fetch Debian's cloud kernels (5.10, 6.1,
//! 6.12, 7.x, for x86-64 and arm64), QEMU 10 and busybox into `target/vm/` (once; see
//! [`fetch`]); build the agent, the guest suite and static Go services into one initramfs per
//! architecture ([`payload`]; the arm64 one cross-built); boot each kernel with it in software
//! emulation, where the suite loads the real programs and drives real HTTP on the guest's
//! loopback ([`boot`]); print a kernel x attach plan x result table and write it to
//! `target/vm/results.md` ([`report`]). Any failure, crash or hang makes the command fail.

mod apt;
mod arch;
mod boot;
mod cpio;
mod fetch;
mod payload;
mod report;

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, Outcome, Step};
pub use arch::Arch;
use report::KernelResult;

#[derive(clap::Args)]
pub struct Options {
    /// Kernels to boot, comma-separated: 5.10 (bullseye-security, x86-64 only), 6.1
    /// (bookworm-security), 6.12 (trixie-security), 7 (sid).
    #[arg(long, value_delimiter = ',', default_value = "5.10,6.1,6.12,7")]
    kernels: Vec<String>,
    /// Guest architectures, comma-separated: each kernel boots once per architecture (arm64
    /// guests run the cross-built arm64 agent on Debian's arm64 cloud kernels).
    #[arg(long, value_delimiter = ',', default_value = "x86_64,arm64")]
    arch: Vec<Arch>,
    /// Run the guest suite once per attach family, with `--attach FAMILY` for the agent
    /// (comma-separated). Default: every family; one the kernel lacks shows as n/a.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "auto,socket,file-table,tracepoint,tp-btf,kprobe,fentry,write,inject"
    )]
    attach: Vec<String>,
    /// Leave out the guest suite's HTTP/2 family (two Go gRPC services traced along with the
    /// HTTP/1 ones), which runs in every suite run by default.
    #[arg(long)]
    no_http2: bool,
    /// Keep target/vm/run/ (the initramfs) after the run, to inspect or boot it by hand.
    #[arg(long)]
    keep: bool,
    /// Seconds each suite run may take before the guest counts as hung. A TCG guest boots in
    /// seconds, but loading and verifying the programs is several times slower than on the host.
    #[arg(long, value_name = "SECS", default_value_t = 240)]
    timeout: u64,
    /// Resolve and download the kernels and QEMU again (security updates rename the kernels).
    #[arg(long)]
    refresh: bool,
    /// Extra arguments for the agent in every run, after `--`.
    #[arg(last = true, value_name = "AGENT_ARGS")]
    agent_args: Vec<String>,
}

/// Every attach family the agent knows; each runs on every kernel (a family the kernel lacks
/// shows as n/a). `socket` is the socket-level capture (`--capture socket`: fentry/fexit on the
/// TCP functions, no syscall tracepoint); the socket-tuple families force the syscall capture.
/// `write` is the automatic plan plus the write side (`--write-mode rewrite`: cgroup connect
/// hooks, `sock_ops`, `sk_msg`, with the syscall capture), whose suite requires the rewritten
/// parent links; `inject` the same in `--write-mode inject`, with the goroutine uprobes on the Go
/// service (Go's register ABI of the guest's architecture), whose suite also requires a call made
/// from another goroutine without headers to carry the handler's context.
pub const ALL_FAMILIES: [&str; 9] = [
    "auto",
    "socket",
    "file-table",
    "tracepoint",
    "tp-btf",
    "kprobe",
    "fentry",
    "write",
    "inject",
];

impl Options {
    /// One arm64 kernel, every attach family: 6.12, the newest of Debian's stable releases.
    #[must_use]
    pub fn ci_arm64() -> Self {
        Self {
            kernels: vec!["6.12".to_owned()],
            arch: vec![Arch::Arm64],
            ..Self::ci()
        }
    }

    /// The write side on the kernels between: 6.1 and 6.12 (`ci` covers 5.10 and 7.x).
    #[must_use]
    pub fn ci_write() -> Self {
        Self {
            kernels: vec!["6.1".to_owned(), "6.12".to_owned()],
            attach: vec!["write".to_owned()],
            ..Self::ci()
        }
    }

    /// What CI runs after the tests: the oldest and the newest kernel, every attach family
    /// (the write side included).
    #[must_use]
    pub fn ci() -> Self {
        Self {
            kernels: vec!["5.10".to_owned(), "7".to_owned()],
            arch: vec![Arch::X86_64],
            attach: ALL_FAMILIES.iter().map(|f| (*f).to_owned()).collect(),
            no_http2: false,
            keep: false,
            timeout: 240,
            refresh: false,
            agent_args: Vec::new(),
        }
    }
}

pub fn vm_test(opts: &Options) -> Result<()> {
    let started = Instant::now();

    let runs = runs(opts);
    let vm = util::target_dir().join("vm");

    let mut arches = opts.arch.clone();
    arches.dedup();
    if arches.is_empty() {
        bail!("--arch names no architecture: x86_64, arm64 or both");
    }

    let qemu = fetch::qemu(&vm, opts.refresh)?;
    let mut kernels = Vec::new();
    for arch in &arches {
        for spec in selected(&opts.kernels, *arch)? {
            kernels.push((*arch, spec, fetch::kernel(&vm, spec, *arch, opts.refresh)?));
        }
    }
    let run_dir = vm.join("run");
    let logs = vm.join("logs");
    for dir in [&run_dir, &logs] {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let suite_args: &[&str] = if opts.no_http2 { &[] } else { &["--http2"] };
    let mut results = Vec::new();
    for arch in arches {
        let bins = payload::build(&vm, arch)?;
        let initramfs = run_dir.join(format!("initramfs{}.cpio", arch.suffix()));
        payload::initramfs(&qemu, &bins, &runs, suite_args, &initramfs)?;
        let guest = Guest {
            qemu: &qemu,
            arch,
            initramfs: &initramfs,
            expected: runs.iter().map(|r| r.join(" ")).collect(),
            timeout: Duration::from_secs(opts.timeout * arch.slowdown())
                * u32::try_from(runs.len()).unwrap_or(1),
        };
        for (_, spec, kernel) in kernels.iter().filter(|k| k.0 == arch) {
            let log = logs.join(format!("{}{}.log", spec.label, arch.suffix()));
            results.push(guest.boot(spec, kernel, &log)?);
        }
    }
    if !opts.keep {
        let _ = fs::remove_dir_all(&run_dir);
    }

    report::print(&results);
    let md = vm.join("results.md");
    report::write_markdown(&results, &qemu.version()?, &md)?;
    println!(
        "[vm-test] table written to {}; downloads cached in {}: {}",
        md.display(),
        vm.join("debs").display(),
        fetch::cached_downloads(&vm)
    );
    let failed = results
        .iter()
        .flat_map(|k| &k.runs)
        .filter(|r| r.result.is_err())
        .count();
    let total = results.iter().map(|k| k.runs.len()).sum::<usize>();
    println!(
        "[vm-test] {} of {total} runs passed ({:.1}s)",
        total - failed,
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!(
            "{failed} of {total} guest runs failed: the table and their console output are above"
        );
    }
    Ok(())
}

/// The `--kernels` labels as `arch`'s specs (`7.x` is accepted for `7`). A kernel the matrix has
/// for another architecture only (5.10 for arm64) is left out with a note.
fn selected(labels: &[String], arch: Arch) -> Result<Vec<&'static fetch::KernelSpec>> {
    let all = fetch::KernelSpec::all(arch);
    let mut specs = Vec::new();
    for label in labels {
        let label = label.trim().trim_end_matches(".x");
        if let Some(spec) = all.iter().find(|k| k.label == label) {
            specs.push(spec);
        } else if Arch::ALL
            .iter()
            .any(|a| fetch::KernelSpec::all(*a).iter().any(|k| k.label == label))
        {
            println!("[vm-test] {label} {arch}: not in the matrix (see `fetch::ARM64_KERNELS`)");
        } else {
            let known: Vec<&str> = fetch::KERNELS.iter().map(|k| k.label).collect();
            bail!(
                "unknown kernel {label:?} in --kernels; known: {}",
                known.join(",")
            );
        }
    }
    Ok(specs)
}

/// What every boot of one architecture shares: QEMU, the initramfs and the runs /init will do.
struct Guest<'a> {
    qemu: &'a fetch::Qemu,
    arch: Arch,
    initramfs: &'a Path,
    expected: Vec<String>,
    timeout: Duration,
}

impl Guest<'_> {
    fn boot(
        &self,
        spec: &fetch::KernelSpec,
        kernel: &fetch::Kernel,
        log: &Path,
    ) -> Result<KernelResult> {
        let mut boot = None;
        Step::start(
            "vm-test",
            format!("boot {} {} ({})", spec.label, self.arch, kernel.package),
        )
        .run(|s| {
            let b = boot::boot(
                self.qemu,
                self.arch,
                &kernel.vmlinuz,
                self.initramfs,
                &self.expected,
                self.timeout,
                log,
                s,
            )?;
            let failed = b.runs.iter().filter(|r| r.result.is_err()).count();
            let outcome = if failed == 0 {
                "PASS".to_owned()
            } else {
                format!("FAIL ({failed} of {} runs)", b.runs.len())
            };
            boot = Some(b);
            Ok(Outcome::Info(outcome))
        })?;
        let boot = boot.context("the boot step returned no result")?;
        Ok(KernelResult {
            label: format!("{}{}", spec.label, self.arch.suffix()),
            suite: spec.suite.to_owned(),
            package: kernel.package.clone(),
            runs: boot.runs,
            boot_secs: boot.secs,
            log: log.display().to_string(),
        })
    }
}

/// The agent arguments of each suite run: one per `--attach` family, each plus `AGENT_ARGS`.
fn runs(opts: &Options) -> Vec<Vec<String>> {
    if opts.attach.is_empty() {
        return vec![opts.agent_args.clone()];
    }
    opts.attach
        .iter()
        .map(|family| {
            let mut args = if family == "write" || family == "inject" {
                let mode = if family == "write" {
                    "rewrite"
                } else {
                    "inject"
                };
                ["--attach", "auto", "--write-mode", mode]
                    .map(str::to_owned)
                    .to_vec()
            } else if family == "socket" {
                vec!["--capture".to_owned(), "socket".to_owned()]
            } else {
                vec!["--attach".to_owned(), family.clone()]
            };
            args.extend(opts.agent_args.iter().cloned());
            args
        })
        .collect()
}
