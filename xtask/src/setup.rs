//! `cargo xtask setup`: installs everything the build and the tests need, idempotently.
//!
//! Every machine (developer or CI) starts as a bare Debian 12 with rustup: anything installed by
//! hand is gone on the next one, so this is the single place that knows what to install. Each
//! step checks first and only acts when something is missing, so a second run takes seconds.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    nodetools, pytools,
    util::{self, Outcome, Step},
};

/// Debian's Rust 1.96 (bookworm-security): the eBPF crate needs `-Z build-std=core` and an LLVM
/// that matches bpf-linker's, which the rustup stable toolchain cannot give.
const RUST_WEB: &[&str] = &["rustc-web", "cargo-web", "rust-web-src"];
/// The version the eBPF build is verified with; the install feature is derived from rustc's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz, for `cargo xtask fuzz` and the fuzz step of `cargo xtask test`.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Go for the Go demo/test services; only bookworm-backports has 1.23.
const GO_PACKAGE: &str = "golang-1.23-go";
const GO_BIN: &str = "/usr/lib/go-1.23/bin/go";
/// The HTTP/2 and gRPC tests' real parts from Debian's main suite: Go gRPC 1.33 as GOPATH sources
/// in /usr/share/gocode (built offline against Go 1.23) and `h2load` (many concurrent streams on
/// one h2c connection).
const HTTP2_PACKAGES: [&str; 2] = ["golang-google-grpc-dev", "nghttp2-client"];
/// The arm64 cross build ([`ensure_arm64_cross`]). libc6:arm64 and libgcc-s1:arm64 (which the
/// standard library pulls in anyway) are named because the arm64 image copies their files and
/// qemu-user runs the arm64 agent and unit tests with them.
const ARM64_CROSS: [&str; 5] = [
    "libstd-rust-web-dev:arm64",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "libc6:arm64",
    "libgcc-s1:arm64",
];
const BACKPORTS: &str = "bookworm-backports";
const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const DEFAULT_URI: &str = "http://deb.debian.org/debian";
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Another apt run (unattended upgrades, a parallel setup) may hold the lock: wait, don't fail.
const APT_LOCK: [&str; 2] = ["-o", "DPkg::Lock::Timeout=900"];
/// Hint for every "needs root" failure.
const AS_ROOT: &str = "run it as root, e.g. `sudo -E cargo xtask setup`";

pub fn setup() -> Result<()> {
    let started = Instant::now();
    let mut apt = Apt {
        root: util::is_root(),
        updated: false,
    };

    step(&format!("apt packages: {}", RUST_WEB.join(" ")), |s| {
        apt.ensure(s, RUST_WEB, None)
    })?;

    // bpf-linker must link against the same LLVM major as the rustc that emits the bitcode.
    let mut llvm = 0;
    step("LLVM version of /usr/bin/rustc", |_| {
        llvm = llvm_major()?;
        Ok(Outcome::Info(format!("LLVM {llvm}")))
    })?;

    let native = [
        format!("llvm-{llvm}-dev"),
        format!("libpolly-{llvm}-dev"),
        "zlib1g-dev".to_owned(),
        "libzstd-dev".to_owned(),
        // Used by the tests and for trying the agent by hand.
        "curl".to_owned(),
        "wrk".to_owned(),
        // `systemd-analyze verify` checks the unit in deploy/systemd (tests/deploy_packaging.rs).
        "systemd".to_owned(),
        // libfuzzer-sys compiles libFuzzer (C++) for the fuzz targets.
        "g++".to_owned(),
        // `bpftool prog/link show` proves an agent leaves no program behind (tests/faults_*.rs).
        "bpftool".to_owned(),
        // Reads and copies the multi-arch image archive as a registry push does (tests/image.rs).
        "skopeo".to_owned(),
    ];
    step(&format!("apt packages: {}", native.join(" ")), |s| {
        apt.ensure(s, &native, None)
    })?;

    step(&format!("apt packages ({BACKPORTS}): {GO_PACKAGE}"), |s| {
        apt.ensure(s, &[GO_PACKAGE], Some(BACKPORTS))
    })?;

    step("go", |_| {
        let version = util::output(Command::new(GO_BIN).arg("version"))
            .with_context(|| format!("{GO_PACKAGE} is installed but {GO_BIN} does not run"))?;
        Ok(Outcome::Info(format!("{} at {GO_BIN}", version.trim())))
    })?;
    http2_tools(&mut apt)?;
    // Node 20 and Python 3.11 come with the machine image; report them so a missing one is
    // visible here rather than as a puzzling test failure later.
    for (name, hint) in [
        ("node", "Node 20 is expected on this machine"),
        ("python3", "Python 3.11 is expected on this machine"),
    ] {
        step(name, |_| {
            Ok(Outcome::Info(
                match util::output(Command::new(name).arg("--version")) {
                    Ok(version) => version.trim().to_owned(),
                    Err(_) => format!("NOT FOUND: tests that use it will fail ({hint})"),
                },
            ))
        })?;
    }

    node_packages(&mut apt)?;

    let pins = pytools::PINS.map(|(name, version)| format!("{name} {version}"));
    step(
        &format!(
            "Python venv target/tools/venv (mesh scenario, gRPC tests): {}",
            pins.join(", ")
        ),
        pytools::ensure,
    )?;

    step("rustup toolchain rust-web -> /usr", |_| link_rust_web())?;
    step(&format!("bpf-linker {BPF_LINKER_VERSION}"), |s| {
        bpf_linker(s, llvm)
    })?;
    step(&format!("cargo-fuzz {CARGO_FUZZ_VERSION}"), cargo_fuzz)?;
    step("tracefs at /sys/kernel/tracing", |_| {
        mount("tracefs", "/sys/kernel/tracing")
    })?;
    step("bpffs at /sys/fs/bpf", |_| mount("bpf", "/sys/fs/bpf"))?;
    step(crate::helm::STEP, crate::helm::ensure)?;

    println!("[setup] done ({:.1}s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// What the HTTP/2 and gRPC tests need from Debian: Go gRPC (built here once, offline, so that
/// a broken build shows in setup rather than in a test) and h2load.
fn http2_tools(apt: &mut Apt) -> Result<()> {
    step(
        &format!(
            "apt packages (HTTP/2, gRPC tests): {}",
            HTTP2_PACKAGES.join(" ")
        ),
        |s| apt.ensure(s, &HTTP2_PACKAGES, None),
    )?;
    step("h2load", |_| {
        let version = util::output(Command::new("h2load").arg("--version"))
            .context("nghttp2-client is installed but h2load does not run")?;
        Ok(Outcome::Info(version.trim().to_owned()))
    })?;
    step(
        "Go gRPC demo (GOPATH mode, Debian's gRPC, offline) -> target/test-services",
        |_| {
            let bin = tracer_test_support::go_grpc_service(&util::target_dir())
                .map_err(anyhow::Error::msg)?;
            Ok(Outcome::Info(bin.display().to_string()))
        },
    )?;
    Ok(())
}

/// npm, and the Node services' packages from the committed lock file.
fn node_packages(apt: &mut Apt) -> Result<()> {
    // nodesource's nodejs bundles npm (and conflicts with Debian's npm package); a Debian nodejs
    // does not, and then Debian's npm is what provides it.
    step("npm", |s| {
        if let Ok(version) = nodetools::npm_version() {
            return Ok(Outcome::Info(version));
        }
        apt.ensure(s, &["npm"], None)?;
        Ok(Outcome::Info(nodetools::npm_version()?))
    })?;
    let pins = nodetools::PINS.map(|(name, version)| format!("{name} {version}"));
    step(
        &format!(
            "npm packages target/tools/node (gRPC tests, npm ci from tests/services/node): {}",
            pins.join(", ")
        ),
        nodetools::ensure,
    )?;
    Ok(())
}

/// What building the agent for arm64 needs (`cargo xtask build --target
/// aarch64-unknown-linux-gnu`): dpkg's arm64 architecture, the arm64 standard library of
/// Debian's rustc-web (the same 1.96 as the host compiler), the cross gcc as linker, the arm64
/// C library and qemu-user. Idempotent; `cargo xtask build --target ...`, `image` and `test` ask
/// for it (the image and the unit tests cover arm64), `setup` alone does not.
pub fn ensure_arm64_cross() -> Result<()> {
    let mut apt = Apt {
        root: util::is_root(),
        updated: false,
    };
    step("dpkg foreign architecture arm64", |_| {
        let foreign = util::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
        if foreign.split_whitespace().any(|a| a == "arm64") {
            return Ok(Outcome::AlreadyDone);
        }
        if !apt.root {
            bail!("dpkg has no arm64 architecture yet; adding it needs root: {AS_ROOT}");
        }
        util::run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
        // The arm64 package lists come with the next update.
        apt.updated = false;
        Ok(Outcome::Done)
    })?;
    step(
        &format!(
            "apt packages (arm64 cross build): {}",
            ARM64_CROSS.join(" ")
        ),
        |s| apt.ensure(s, &ARM64_CROSS, None),
    )?;
    // QEMU 10's user mode, to run arm64 binaries here (binfmt_misc may be absent: it is called
    // by name).
    step(
        &format!("apt packages ({BACKPORTS}, arm64 binaries under qemu-user): qemu-user-static"),
        |s| apt.ensure(s, &["qemu-user-static"], Some(BACKPORTS)),
    )
}

/// `perf` (Debian's linux-perf), for `cargo xtask bench --profile` only: the tests never need it.
pub fn ensure_perf() -> Result<()> {
    let mut apt = Apt {
        root: util::is_root(),
        updated: false,
    };
    step("apt packages: linux-perf", |s| {
        apt.ensure(s, &["linux-perf"], None)
    })
}

fn step(name: &str, work: impl FnOnce(&Step) -> Result<Outcome>) -> Result<()> {
    Step::start("setup", name).run(work)
}

/// apt state for one `setup` run: `apt-get update` runs at most once unless sources change.
struct Apt {
    root: bool,
    updated: bool,
}

impl Apt {
    /// Installs the packages of `pkgs` that are missing, from `release` if given.
    fn ensure(
        &mut self,
        s: &Step,
        pkgs: &[impl AsRef<str>],
        release: Option<&str>,
    ) -> Result<Outcome> {
        let missing = missing_packages(pkgs)?;
        if missing.is_empty() {
            return Ok(Outcome::AlreadyDone);
        }
        if !self.root {
            bail!(
                "Debian packages missing: {}. Installing them needs root: {AS_ROOT}",
                missing.join(" ")
            );
        }
        s.note(format!("missing: {}", missing.join(" ")));
        if release == Some(BACKPORTS) && ensure_backports_source(s)? {
            // The new source has no package lists yet.
            self.updated = false;
        }
        if !self.updated {
            util::run(Command::new("apt-get").args(APT_LOCK).arg("update"))
                .context("apt-get update failed: check the apt sources and the network")?;
            self.updated = true;
        }
        let mut install = Command::new("apt-get");
        install
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(APT_LOCK)
            .args(["install", "-y", "--no-install-recommends"]);
        if let Some(release) = release {
            // Backports are pinned below the main suite, so they must be asked for explicitly.
            install.args(["-t", release]);
        }
        util::run(install.args(&missing))
            .with_context(|| format!("installing {} with apt-get failed", missing.join(" ")))?;
        let still = missing_packages(&missing)?;
        if !still.is_empty() {
            bail!(
                "apt-get reported success but {} is still not installed",
                still.join(" ")
            );
        }
        Ok(Outcome::Done)
    }
}

/// The packages of `pkgs` that dpkg does not list as installed.
fn missing_packages(pkgs: &[impl AsRef<str>]) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    for pkg in pkgs {
        let pkg = pkg.as_ref();
        // Exits 1 for a package dpkg has never heard of: that is "missing", not an error.
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .output()
            .context("cannot run dpkg-query: this setup expects Debian 12 (bookworm)")?;
        if !is_installed_status(&String::from_utf8_lossy(&out.stdout)) {
            missing.push(pkg.to_owned());
        }
    }
    Ok(missing)
}

/// dpkg's `${Status}` is `want flag state`, e.g. `install ok installed`; only the state matters
/// (`deinstall ok config-files` means removed with its config left behind).
fn is_installed_status(status: &str) -> bool {
    status.split_whitespace().nth(2) == Some("installed")
}

/// `LLVM version: 22.1.8` in `/usr/bin/rustc -vV` gives 22.
///
/// /usr/bin/rustc is called by its full path because rustup's proxy in ~/.cargo/bin comes first
/// on PATH and would report the stable toolchain's LLVM instead of Debian's.
fn llvm_major() -> Result<u32> {
    let out = util::output(Command::new("/usr/bin/rustc").arg("-vV"))
        .context("cannot run /usr/bin/rustc (from the rustc-web package)")?;
    parse_llvm_major(&out).context("no `LLVM version: N.x` line in `/usr/bin/rustc -vV`")
}

fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

/// Adds a bookworm-backports apt source unless one exists; returns whether it wrote one.
fn ensure_backports_source(s: &Step) -> Result<bool> {
    if apt_sources_mention(BACKPORTS) {
        return Ok(false);
    }
    // Reuse the system's mirror and keyring, so a machine pointed at a local mirror keeps using it.
    let (uris, signed_by) = fs::read_to_string(DEBIAN_SOURCES)
        .ok()
        .and_then(|text| bookworm_entry(&text))
        .unwrap_or_else(|| (DEFAULT_URI.to_owned(), Some(DEFAULT_KEYRING.to_owned())));
    let text = backports_stanza(&uris, signed_by.as_deref());
    fs::write(BACKPORTS_FILE, text).with_context(|| format!("cannot write {BACKPORTS_FILE}"))?;
    s.note(format!("wrote {BACKPORTS_FILE} (URIs: {uris})"));
    Ok(true)
}

fn backports_stanza(uris: &str, signed_by: Option<&str>) -> String {
    let key = signed_by.map(|key| format!("Signed-By: {key}\n"));
    format!(
        "# Added by `cargo xtask setup`: {GO_PACKAGE} is only in {BACKPORTS}.\n\
         Types: deb\nURIs: {uris}\nSuites: {BACKPORTS}\nComponents: main\n{}",
        key.unwrap_or_default()
    )
}

/// True if any active (non-comment) line of the apt sources mentions `word`.
fn apt_sources_mention(word: &str) -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        // Only these two extensions are read by apt (e.g. `*.disabled-by-farm` is not).
        files.extend(dir.flatten().map(|e| e.path()).filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "list" || ext == "sources")
        }));
    }
    files.iter().any(|file| {
        fs::read_to_string(file).is_ok_and(|text| {
            text.lines()
                .any(|l| !l.trim_start().starts_with('#') && l.contains(word))
        })
    })
}

/// `(URIs, Signed-By)` of the deb822 stanza whose `Suites` include plain `bookworm`.
fn bookworm_entry(deb822: &str) -> Option<(String, Option<String>)> {
    parse_deb822(deb822).into_iter().find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let types = field("Types").unwrap_or_default();
        let suites = field("Suites")?;
        (types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(|s| s == "bookworm"))
        .then(|| Some((field("URIs")?, field("Signed-By"))))
        .flatten()
    })
}

/// Minimal deb822 reader: stanzas separated by blank lines, `Key: value` fields, `#` comments,
/// continuation lines (leading space, e.g. an inline Signed-By key) kept verbatim in the value.
fn parse_deb822(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stanzas = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                stanzas.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((key, value)) = line.split_once(':') {
            current.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    if !current.is_empty() {
        stanzas.push(current);
    }
    stanzas
}

/// `rustup toolchain link rust-web /usr`, so tracer-agent's build.rs can `rustup run rust-web`.
fn link_rust_web() -> Result<Outcome> {
    let list = util::output(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed (the userspace build uses its stable toolchain): install it from rustup.rs")?;
    // Lines look like `rust-web` or `stable-x86_64-unknown-linux-gnu (active, default)`.
    if list
        .lines()
        .any(|l| l.split_whitespace().next() == Some("rust-web"))
    {
        return Ok(Outcome::AlreadyDone);
    }
    util::output(Command::new("rustup").args(["toolchain", "link", "rust-web", "/usr"]))
        .context("cannot link Debian's toolchain in /usr into rustup as `rust-web`")?;
    Ok(Outcome::Done)
}

/// Installs bpf-linker into cargo's bin dir (where tracer-agent's build.rs looks for it).
fn bpf_linker(s: &Step, llvm: u32) -> Result<Outcome> {
    let root = util::cargo_home()?;
    let bin = root.join("bin/bpf-linker");
    if installed_bpf_linker(&bin).as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok(Outcome::AlreadyDone);
    }
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{llvm}"));
    if !prefix.is_dir() {
        bail!(
            "{} is missing: bpf-linker links against llvm-{llvm}-dev, which the apt step should have installed",
            prefix.display()
        );
    }
    s.note("building from crates.io, this takes about 3 minutes on 2 cores");
    // `rustup run stable cargo` is `cargo +stable`: we cannot use `+stable` on $CARGO, which
    // is the toolchain's own cargo rather than rustup's proxy. --root pins the install place
    // to the directory checked above, whatever CARGO_INSTALL_ROOT says.
    util::run(
        Command::new("rustup")
            .args(["run", "stable", "cargo", "install", "--locked"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm}"))
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix),
    )
    .context("cargo install bpf-linker failed")?;
    match installed_bpf_linker(&bin) {
        Some(v) if v == BPF_LINKER_VERSION => Ok(Outcome::Done),
        other => bail!(
            "after install, {} reports version {other:?}, expected {BPF_LINKER_VERSION}",
            bin.display()
        ),
    }
}

/// Installs cargo-fuzz into cargo's bin dir, where `cargo fuzz` finds it.
pub fn cargo_fuzz(s: &Step) -> Result<Outcome> {
    let root = util::cargo_home()?;
    let bin = root.join("bin/cargo-fuzz");
    if installed_cargo_fuzz(&bin).as_deref() == Some(CARGO_FUZZ_VERSION) {
        return Ok(Outcome::AlreadyDone);
    }
    s.note("building from crates.io, this takes about 2 minutes on 2 cores");
    util::run(
        Command::new("rustup")
            .args(["run", "stable", "cargo", "install", "--locked"])
            .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"))
            .arg("--root")
            .arg(&root),
    )
    .context("cargo install cargo-fuzz failed")?;
    match installed_cargo_fuzz(&bin) {
        Some(v) if v == CARGO_FUZZ_VERSION => Ok(Outcome::Done),
        other => bail!(
            "after install, {} reports version {other:?}, expected {CARGO_FUZZ_VERSION}",
            bin.display()
        ),
    }
}

/// The version `cargo-fuzz --version` prints (`cargo-fuzz 0.13.2`), or None if it does not run.
fn installed_cargo_fuzz(bin: &Path) -> Option<String> {
    let out = util::output(Command::new(bin).arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// The version `bpf-linker --version` prints (`bpf-linker 0.13.0`), or None if it does not run.
fn installed_bpf_linker(bin: &Path) -> Option<String> {
    let out = util::output(Command::new(bin).arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// Mounts a pseudo filesystem the agent needs (tracepoint ids, pinned maps) if it is absent.
fn mount(fstype: &str, target: &str) -> Result<Outcome> {
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    // Fields: device mountpoint fstype options dump pass.
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some(target) && f.next() == Some(fstype)
    });
    if mounted {
        return Ok(Outcome::AlreadyDone);
    }
    if !util::is_root() {
        return Ok(Outcome::Skipped(format!(
            "not mounted and not root; the agent needs it: {AS_ROOT}"
        )));
    }
    util::output(Command::new("mount").args(["-t", fstype, fstype, target]))
        .with_context(|| format!("cannot mount {fstype} at {target}"))?;
    Ok(Outcome::Done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "Types: deb\n\
        # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
        URIs: http://mirror.example/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        \n\
        Types: deb\n\
        URIs: http://deb.debian.org/debian-security\n\
        Suites: bookworm-security\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/other.gpg\n";

    #[test]
    fn finds_the_bookworm_entry_not_security() {
        assert_eq!(
            bookworm_entry(DEBIAN),
            Some((
                "http://mirror.example/debian".to_owned(),
                Some("/usr/share/keyrings/debian-archive-keyring.gpg".to_owned())
            ))
        );
    }

    #[test]
    fn keeps_inline_keys_and_tolerates_missing_entries() {
        let inline = "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nSigned-By:\n -----BEGIN PGP\n .\n";
        let (_, key) = bookworm_entry(inline).unwrap();
        assert_eq!(key.as_deref(), Some("\n -----BEGIN PGP\n ."));
        assert_eq!(
            bookworm_entry("Types: deb\nURIs: x\nSuites: trixie\n"),
            None
        );
    }

    #[test]
    fn stanza_is_deb822() {
        let text = backports_stanza("http://a/debian", Some("/k.gpg"));
        assert!(text.contains("\nSuites: bookworm-backports\n"));
        assert!(text.ends_with("Signed-By: /k.gpg\n"));
    }

    #[test]
    fn parses_llvm_major_and_dpkg_status() {
        let vv = "rustc 1.96.0\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.8\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.96.0\n"), None);
        assert!(is_installed_status("install ok installed"));
        assert!(!is_installed_status("deinstall ok config-files"));
        assert!(!is_installed_status(""));
    }
}
