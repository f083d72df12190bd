//! Fetches QEMU 10 (x86-64 and arm64 system emulators), busybox for both guest architectures
//! and the Debian kernels into `target/vm/`, once.
//!
//! Each result is cached with a stamp written last, so an interrupted fetch is redone and a
//! complete one costs nothing (no apt call at all) until `--refresh`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use super::{
    Arch,
    apt::{self, Apt},
};
use crate::util::{self, Outcome, Step};

const DEBIAN: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";
/// QEMU 10 is only in bookworm-backports; bookworm's own 7.2 crashes TCG guests at random.
const QEMU_RELEASE: &str = "bookworm-backports";
const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-arm",
    "qemu-system-data",
    "busybox-static",
];
/// The arm64 guests' busybox, unpacked under `arm64/` in QEMU's tree.
const ARM64_BUSYBOX: &str = "busybox-static";
const STAMP: &str = ".complete";

/// A kernel of the matrix: the suite whose `linux-image-cloud-ARCH` metapackage names it (the
/// four suites have it for amd64 and arm64 alike).
#[derive(Clone, Copy)]
pub struct KernelSpec {
    pub label: &'static str,
    pub suite: &'static str,
    uri: &'static str,
}

pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "5.10",
        suite: "bullseye-security",
        uri: SECURITY,
    },
    KernelSpec {
        label: "6.1",
        suite: "bookworm-security",
        uri: SECURITY,
    },
    KernelSpec {
        label: "6.12",
        suite: "trixie-security",
        uri: SECURITY,
    },
    KernelSpec {
        label: "7",
        suite: "sid",
        uri: DEBIAN,
    },
];

/// The arm64 kernels: the same releases from 6.1. Not 5.10: its arm64 JIT cannot compile a
/// program that mixes tail calls with BPF-to-BPF calls, and the verifier then refuses every
/// syscall capture program (the agent says so: `PlanError::MixedTailCalls`); there is no socket
/// capture to fall back on either, arm64 having no BPF trampoline before 6.x. Measured with
/// bullseye's 5.10.223 (bullseye-security's arm64 pool files answered 404, 2026-12).
pub const ARM64_KERNELS: &[KernelSpec] = &[KERNELS[1], KERNELS[2], KERNELS[3]];

impl KernelSpec {
    /// The kernels of `arch`.
    pub fn all(arch: Arch) -> &'static [KernelSpec] {
        match arch {
            Arch::X86_64 => KERNELS,
            Arch::Arm64 => ARM64_KERNELS,
        }
    }
}

/// QEMU and busybox unpacked (not installed) into one tree.
pub struct Qemu {
    root: PathBuf,
}

impl Qemu {
    /// The system emulator of `arch` with its unpacked libraries, modules and firmware.
    pub fn command(&self, arch: Arch) -> Command {
        let lib = self.root.join("usr/lib/x86_64-linux-gnu");
        // bookworm's packages are not all merged into /usr: libnl, for one, is in /lib.
        let libs = format!(
            "{}:{}",
            lib.display(),
            self.root.join("lib/x86_64-linux-gnu").display()
        );
        let mut cmd = Command::new(self.root.join("usr/bin").join(arch.qemu_system()));
        cmd.env("LD_LIBRARY_PATH", libs)
            .env("QEMU_MODULE_DIR", lib.join("qemu"))
            // Firmware: Debian's QEMU looks for SeaBIOS and the option ROMs in the seabios and
            // ipxe-qemu packages' directories under /usr, which are in this tree instead.
            .arg("-L")
            .arg(self.root.join("usr/share/qemu"))
            .arg("-L")
            .arg(self.root.join("usr/share/seabios"))
            .arg("-L")
            .arg(self.root.join("usr/lib/ipxe/qemu"));
        cmd
    }

    /// The static busybox of `arch` guests.
    pub fn busybox(&self, arch: Arch) -> PathBuf {
        match arch {
            Arch::X86_64 => self.root.join("bin/busybox"),
            Arch::Arm64 => self.root.join("arm64/bin/busybox"),
        }
    }

    /// The first line of `--version` of both emulators (they come from one source package);
    /// an error unless both run and are QEMU 10 or later.
    pub fn version(&self) -> Result<String> {
        let mut line = String::new();
        for arch in Arch::ALL {
            line = Self::check_version(&util::output(self.command(arch).arg("--version"))?)?;
        }
        Ok(line)
    }

    fn check_version(out: &str) -> Result<String> {
        let line = out.lines().next().unwrap_or_default().to_owned();
        // `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`
        let major = line
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.split('.').next());
        if major
            .and_then(|m| m.parse::<u32>().ok())
            .is_none_or(|m| m < 10)
        {
            bail!("{line:?} is not QEMU 10 or later (Debian's 7.2 crashes TCG guests)");
        }
        Ok(line)
    }
}

/// A downloaded kernel: its image and the Debian package it came from.
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `name version`, e.g. `linux-image-6.1.0-56-cloud-amd64 6.1.192-2`.
    pub package: String,
}

pub fn qemu(vm: &Path, refresh: bool) -> Result<Qemu> {
    let qemu = Qemu {
        root: vm.join("qemu"),
    };
    Step::start(
        "vm-test",
        "QEMU 10 for x86-64 and arm64, busybox for both (bookworm-backports, unpacked)",
    )
    .run(|s| {
        if !refresh
            && qemu.root.join(STAMP).is_file()
            && Arch::ALL.iter().all(|a| qemu.busybox(*a).is_file())
            && let Ok(version) = qemu.version()
        {
            return Ok(Outcome::Info(format!("cached: {version}")));
        }
        let _ = fs::remove_dir_all(&qemu.root);
        let apt = Apt::new(
            &vm.join("apt"),
            "bookworm",
            Arch::X86_64.debian(),
            &[(DEBIAN, "bookworm"), (DEBIAN, QEMU_RELEASE)],
        )?;
        apt.update()?;
        // What this machine lacks (libraries, firmware packages), then QEMU itself even if the
        // machine has some version installed: the tree must be complete on its own.
        let mut wanted = apt.missing_for(QEMU_RELEASE, QEMU_PACKAGES)?;
        for package in QEMU_PACKAGES {
            if !wanted.iter().any(|(name, _)| name == package) {
                wanted.push((
                    (*package).to_owned(),
                    apt.show(Some(QEMU_RELEASE), package)?.0,
                ));
            }
        }
        let deb_dir = debs_dir(vm)?;
        let mut bytes = 0;
        for (name, version) in &wanted {
            let deb = apt.download(name, version, &deb_dir)?;
            bytes += size_of(&deb);
            apt::unpack(&deb, &qemu.root)?;
        }
        // The arm64 guests' busybox: the same package from bookworm's arm64 lists.
        let arm64 = Apt::new(
            &vm.join("apt"),
            "bookworm-arm64",
            Arch::Arm64.debian(),
            &[(DEBIAN, "bookworm")],
        )?;
        arm64.update()?;
        let (version, _) = arm64.show(None, ARM64_BUSYBOX)?;
        let deb = arm64.download(ARM64_BUSYBOX, &version, &deb_dir)?;
        bytes += size_of(&deb);
        apt::unpack(&deb, &qemu.root.join("arm64"))?;
        let version = qemu.version().context("the unpacked QEMU does not run")?;
        for arch in Arch::ALL {
            if !qemu.busybox(arch).is_file() {
                bail!(
                    "busybox-static ({arch}) did not provide {}",
                    qemu.busybox(arch).display()
                );
            }
        }
        let mut names: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
        names.push("busybox-static:arm64");
        s.note(format!(
            "{} packages ({}): {}",
            names.len(),
            mib(bytes),
            names.join(" ")
        ));
        write_stamp(&qemu.root, &names.join("\n"))?;
        Ok(Outcome::Info(version))
    })?;
    Ok(qemu)
}

pub fn kernel(vm: &Path, spec: &KernelSpec, arch: Arch, refresh: bool) -> Result<Kernel> {
    let dir = vm
        .join("kernels")
        .join(format!("{}{}", spec.label, arch.suffix()));
    let kernel = Kernel {
        vmlinuz: dir.join("vmlinuz"),
        package: String::new(),
    };
    let mut package = String::new();
    Step::start(
        "vm-test",
        format!("kernel {} {arch} ({})", spec.label, spec.suite),
    )
    .run(|s| {
        if !refresh
            && kernel.vmlinuz.is_file()
            && let Ok(stamp) = fs::read_to_string(dir.join(STAMP))
        {
            stamp.trim().clone_into(&mut package);
            return Ok(Outcome::Info(format!("cached: {package}")));
        }
        let _ = fs::remove_dir_all(&dir);
        let apt = Apt::new(
            &vm.join("apt"),
            &format!("{}{}", spec.suite, arch.suffix()),
            arch.debian(),
            &[(spec.uri, spec.suite)],
        )?;
        apt.update()?;
        // Security uploads change the ABI in the package name: only the metapackage is stable.
        let meta = format!("linux-image-cloud-{}", arch.debian());
        let (_, deps) = apt.show(None, &meta)?;
        let image = deps
            .iter()
            .find(|d| d.starts_with("linux-image-"))
            .with_context(|| format!("{meta} depends on no linux-image-* package"))?;
        let (version, deps) = apt.show(None, image)?;
        // From 7.x the image package is empty and the kernel is in linux-binary-VERSION.
        let name = deps
            .iter()
            .find(|d| d.starts_with("linux-binary-"))
            .unwrap_or(image);
        s.note(format!("{name} {version}"));
        let deb_dir = debs_dir(vm)?;
        let deb = apt.download(name, &version, &deb_dir)?;
        let unpacked = dir.join("unpacked");
        apt::unpack(&deb, &unpacked)?;
        let image = find_vmlinuz(&unpacked)?;
        fs::rename(&image, &kernel.vmlinuz).context("cannot move the kernel image")?;
        // The modules are not needed: the cloud kernels have BPF, tracing and loopback built in.
        fs::remove_dir_all(&unpacked).context("cannot remove the unpacked kernel package")?;
        let size = size_of(&deb);
        package = format!("{name} {version}");
        write_stamp(&dir, &package)?;
        Ok(Outcome::Info(format!("{package} ({} download)", mib(size))))
    })?;
    Ok(Kernel { package, ..kernel })
}

/// `boot/vmlinuz-*` (up to 6.x) or `usr/lib/modules/*/vmlinuz` (7.x).
fn find_vmlinuz(root: &Path) -> Result<PathBuf> {
    let in_dir = |dir: PathBuf, pick: &dyn Fn(&Path) -> Option<PathBuf>| -> Option<PathBuf> {
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .find_map(|e| pick(&e.path()))
    };
    let boot = in_dir(root.join("boot"), &|p| {
        let name = p.file_name()?.to_str()?;
        name.starts_with("vmlinuz-").then(|| p.to_owned())
    });
    let modules = || {
        in_dir(root.join("usr/lib/modules"), &|p| {
            let image = p.join("vmlinuz");
            image.is_file().then_some(image)
        })
    };
    boot.or_else(modules).with_context(|| {
        format!(
            "no boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in {}",
            root.display()
        )
    })
}

/// Where the downloaded .deb files stay (so a re-fetch after `--refresh` reuses them).
fn debs_dir(vm: &Path) -> Result<PathBuf> {
    let dir = vm.join("debs");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn size_of(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

fn write_stamp(dir: &Path, text: &str) -> Result<()> {
    let path = dir.join(STAMP);
    fs::write(&path, format!("{text}\n"))
        .with_context(|| format!("cannot write {}", path.display()))
}

pub fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // sizes far below 2^52 bytes
    let mib = bytes as f64 / 1_048_576.0;
    format!("{mib:.1} MiB")
}

/// `N files, X MiB`: the .deb files kept in target/vm/debs (what a fresh machine downloads).
pub fn cached_downloads(vm: &Path) -> String {
    let sizes: Vec<u64> = fs::read_dir(vm.join("debs"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .collect()
        })
        .unwrap_or_default();
    format!("{} files, {}", sizes.len(), mib(sizes.iter().sum()))
}
