//! No root: the container image recipe (deploy/Dockerfile) and the systemd unit
//! (deploy/systemd/) agree with how the project builds and runs the agent.
//!
//! There is no container engine on these machines, so the Dockerfile is checked statically: its
//! stages, that the builder installs what `cargo xtask setup` installs and runs the release
//! build, that its architecture-dependent steps (run with stub commands) cross-compile for arm64
//! as `cargo xtask build --target aarch64-unknown-linux-gnu` does, and that the runtime stage
//! holds only the binary. The unit is parsed as INI and must
//! grant exactly the capabilities of the Kubernetes `DaemonSet`; its example environment file is
//! fed to the real agent with `--check-config`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
};

use tracer_tests::harness::{agent_binary, check_config, workspace_root};

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The capabilities the unprivileged `DaemonSet` adds, with the `CAP_` prefix systemd uses.
fn daemonset_capabilities() -> BTreeSet<String> {
    let ds: serde_yaml::Value = serde_yaml::from_str(&read("deploy/kubernetes/05-daemonset.yaml"))
        .expect("05-daemonset.yaml is YAML");
    let add =
        &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
    let caps: BTreeSet<String> = add
        .as_sequence()
        .unwrap_or_else(|| panic!("no capabilities.add in the DaemonSet: {add:?}"))
        .iter()
        .map(|c| format!("CAP_{}", c.as_str().expect("capability name")))
        .collect();
    assert!(caps.contains("CAP_BPF") && caps.contains("CAP_PERFMON"));
    caps
}

/// `KEY=value` lines (comments and blank lines skipped), as systemd's `EnvironmentFile=` reads them.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {l}"));
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/// One Dockerfile instruction: keyword (upper case) and its arguments, continuations joined.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

/// A build stage: its `FROM` line and the instructions after it.
#[derive(Debug)]
struct Stage {
    base: String,
    /// `FROM --platform=...`, unresolved (`$BUILDPLATFORM`); `None` is the target platform.
    platform: Option<String>,
    name: String,
    body: Vec<Instruction>,
}

impl Stage {
    fn runs(&self) -> String {
        self.body
            .iter()
            .filter(|i| i.keyword == "RUN")
            .map(|i| i.args.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn all(&self, keyword: &str) -> Vec<&str> {
        self.body
            .iter()
            .filter(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
            .collect()
    }

    /// The default of `ARG NAME=default` in this stage.
    fn arg(&self, name: &str) -> Option<String> {
        self.all("ARG")
            .into_iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")).map(str::to_owned))
    }
}

/// Splits a Dockerfile into global `ARG` defaults and stages (`${VAR}` in `FROM` resolved).
fn parse_dockerfile(text: &str) -> (BTreeMap<String, String>, Vec<Stage>) {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(cont) = trimmed.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, args) = pending.split_once(' ').unwrap_or((&pending, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.split_whitespace().collect::<Vec<_>>().join(" "),
        });
        pending.clear();
    }
    let mut globals: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions {
        if ins.keyword == "FROM" {
            let mut words = ins.args.split_whitespace().peekable();
            let platform = words
                .next_if(|w| w.starts_with("--platform="))
                .map(|w| w.trim_start_matches("--platform=").to_owned());
            let mut base = words.next().unwrap_or_default().to_owned();
            for (k, v) in &globals {
                base = base.replace(&format!("${{{k}}}"), v);
            }
            let name = ins
                .args
                .split_once(" AS ")
                .map(|(_, n)| n.trim().to_owned())
                .unwrap_or_default();
            stages.push(Stage {
                base,
                platform,
                name,
                body: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.body.push(ins);
        } else if ins.keyword == "ARG"
            && let Some((k, v)) = ins.args.split_once('=')
        {
            globals.insert(k.to_owned(), v.to_owned());
        }
    }
    (globals, stages)
}

/// A quoted string constant of xtask/src/setup.rs, e.g. `const BPF_LINKER_VERSION: &str = "0.13.0";`
/// (or every string of a `&[&str]` constant).
fn setup_const(name: &str) -> Vec<String> {
    let setup = read("xtask/src/setup.rs");
    let start = setup
        .lines()
        .map(str::trim_start)
        .position(|l| {
            l.starts_with(&format!("const {name}:")) || l.starts_with(&format!("pub const {name}:"))
        })
        .unwrap_or_else(|| panic!("xtask/src/setup.rs has no const {name}"));
    // The definition up to its `;`, which may span lines (an array).
    let definition: String = setup
        .lines()
        .skip(start)
        .scan(false, |done, l| {
            if *done {
                return None;
            }
            *done = l.trim_end().ends_with(';');
            Some(l)
        })
        .collect::<Vec<_>>()
        .join("\n");
    let value = definition.split_once('=').expect("const with a value").1;
    value
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn dockerfile_builder_does_what_setup_and_build_do() {
    let (globals, stages) = parse_dockerfile(&read("deploy/Dockerfile"));
    assert_eq!(
        stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["builder", "runtime"],
        "two stages: {stages:#?}"
    );
    assert_eq!(
        globals.get("DEBIAN_RELEASE").map(String::as_str),
        Some("bookworm")
    );
    let builder = &stages[0];
    assert_eq!(
        builder.base, "debian:bookworm",
        "the same Debian 12 as the hosts"
    );
    let runs = builder.runs();

    // Debian's Rust for the eBPF crate, and the LLVM dev packages of its LLVM major.
    for pkg in setup_const("RUST_WEB") {
        assert!(runs.contains(&pkg), "builder does not install {pkg}");
    }
    for pkg in [
        "llvm-$LLVM-dev",
        "libpolly-$LLVM-dev",
        "zlib1g-dev",
        "libzstd-dev",
    ] {
        assert!(runs.contains(pkg), "builder does not install {pkg}");
    }
    assert!(
        runs.contains("rustc -vV") && runs.contains("LLVM version"),
        "the LLVM major must come from rustc, as in setup"
    );

    // bpf-linker: the version setup installs, against that LLVM.
    let linker = setup_const("BPF_LINKER_VERSION");
    assert_eq!(
        builder.arg("BPF_LINKER_VERSION").as_deref(),
        linker.first().map(String::as_str)
    );
    assert!(
        runs.contains("cargo install --locked \"bpf-linker@$BPF_LINKER_VERSION\"")
            && runs.contains("--features \"llvm-$LLVM\"")
            && runs.contains("LLVM_PREFIX=\"/usr/lib/llvm-$LLVM\""),
        "bpf-linker install differs from setup's:\n{runs}"
    );

    // rustup's toolchain for the userspace crates: at least the workspace's rust-version.
    let manifest = read("Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("workspace rust-version")
        .trim_matches('"');
    let toolchain = builder.arg("RUST_TOOLCHAIN").expect("ARG RUST_TOOLCHAIN");
    assert!(
        toolchain.starts_with(rust_version),
        "toolchain {toolchain} vs rust-version {rust_version}"
    );
    assert!(
        runs.contains("sh.rustup.rs") && runs.contains("--default-toolchain \"$RUST_TOOLCHAIN\"")
    );

    // The toolchain name tracer-agent's build script runs the eBPF build with.
    let recipe = read("tracer-agent/ebpf_build.rs");
    assert!(recipe.contains("unwrap_or_else(|_| \"rust-web\".to_owned())"));
    assert!(runs.contains("rustup toolchain link rust-web /usr"));

    // The release build of the agent, exactly Cargo.lock, from the whole workspace.
    assert!(
        builder.all("COPY").contains(&". ."),
        "{:?}",
        builder.all("COPY")
    );
    assert!(
        runs.contains("cargo build --release -p tracer-agent --locked"),
        "{runs}"
    );
    assert!(runs.contains("install -D -m 0755 target/release/tracer-agent /out/tracer-agent"));

    // target/ and .git/ stay out of the build context (BuildKit reads Dockerfile.dockerignore).
    let ignore = read("deploy/Dockerfile.dockerignore");
    for entry in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l.trim() == entry),
            "{entry} not ignored"
        );
    }
}

/// What the builder's architecture-dependent `RUN` steps (those naming `$TARGETARCH`) did for
/// one `--platform`: run by `sh -c` as `BuildKit` runs them, with `TARGETARCH` and `BUILDARCH`
/// set and stubs in place of dpkg, apt-get, rm, cargo, rustup and install that record their
/// arguments (and the linker variables, for cargo and rustup). PATH holds only the stubs and
/// the real env and tr, so nothing else on this machine can be touched.
struct CrossRun {
    success: bool,
    commands: Vec<String>,
    stderr: String,
}

impl CrossRun {
    /// The build of `cargo xtask build --target TRIPLE` (xtask/src/build.rs `arm64_cargo`) ran,
    /// with `linker` as the target's linker.
    fn assert_cross_build(&self, triple: &str, linker: &str) {
        let wanted = format!(
            "rustup run rust-web cargo build --release --locked --target {triple} \
             -p tracer-agent [linker {linker}]"
        );
        assert!(
            self.commands.contains(&wanted),
            "no `{wanted}` in {:?}",
            self.commands
        );
    }
}

fn run_arch_steps(builder: &Stage, build_arch: &str, target_arch: &str) -> CrossRun {
    let dir = std::env::temp_dir().join(format!(
        "tracer-dockerfile-{}-{build_arch}-{target_arch}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = dir.join("commands");
    let stub = "#!/bin/sh\n\
                { printf '%s' \"${0##*/}\"; for a in \"$@\"; do printf ' %s' \"$a\"; done; \
                  for v in \"$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER\" \
                           \"$CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER\"; do \
                    [ -n \"$v\" ] && printf ' [linker %s]' \"$v\"; done; echo; } >> \"$LOG\"\n";
    for name in ["dpkg", "apt-get", "rm", "cargo", "rustup", "install"] {
        let path = bin.join(name);
        fs::write(&path, stub).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for real in ["/usr/bin/env", "/usr/bin/tr"] {
        std::os::unix::fs::symlink(real, bin.join(Path::new(real).file_name().unwrap())).unwrap();
    }
    let mut success = true;
    let mut stderr = String::new();
    for run in builder
        .all("RUN")
        .into_iter()
        .filter(|r| r.contains("$TARGETARCH"))
    {
        // BuildKit's own flags are not part of the shell command.
        let script: Vec<&str> = run
            .split(' ')
            .skip_while(|w| w.starts_with("--mount="))
            .collect();
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(script.join(" "))
            .env_clear()
            .env("PATH", &bin)
            .env("LOG", &log)
            .env("TARGETARCH", target_arch)
            .env("BUILDARCH", build_arch)
            .output()
            .expect("run /bin/sh");
        stderr.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            success = false;
            break;
        }
    }
    let commands = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let _ = fs::remove_dir_all(&dir);
    CrossRun {
        success,
        commands,
        stderr,
    }
}

#[test]
fn dockerfile_builds_both_architectures_by_cross_compiling_like_xtask() {
    let text = read("deploy/Dockerfile");
    let header: String = text
        .lines()
        .take_while(|l| l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        header.contains("docker buildx build --platform linux/amd64,linux/arm64"),
        "the header says how to build both architectures:\n{header}"
    );
    assert!(!text.contains("amd64 only"), "both architectures are built");
    let (_, stages) = parse_dockerfile(&text);
    let (builder, runtime) = (&stages[0], &stages[stages.len() - 1]);
    // The build runs natively on the build machine and cross-compiles; the runtime stage is
    // the target platform's Debian.
    assert_eq!(builder.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(runtime.platform, None);
    for arg in ["TARGETARCH", "BUILDARCH"] {
        assert!(
            builder.all("ARG").contains(&arg),
            "ARG {arg} in the builder"
        );
    }

    // Native: no cross packages, the build `cargo xtask build` runs.
    let native = run_arch_steps(builder, "amd64", "amd64");
    assert!(native.success, "{}", native.stderr);
    assert_eq!(
        native.commands,
        [
            "cargo build --release -p tracer-agent --locked",
            "install -D -m 0755 target/release/tracer-agent /out/tracer-agent",
        ]
    );

    // arm64 from amd64: exactly setup's arm64 cross packages, and the build of
    // `cargo xtask build --target aarch64-unknown-linux-gnu` with the same linker.
    let arm64 = run_arch_steps(builder, "amd64", "arm64");
    assert!(arm64.success, "{}", arm64.stderr);
    let cross: BTreeSet<String> = setup_const("ARM64_CROSS").into_iter().collect();
    let installed: BTreeSet<String> = arm64
        .commands
        .iter()
        .find_map(|c| c.strip_prefix("apt-get install -y --no-install-recommends "))
        .unwrap_or_else(|| panic!("no apt-get install for arm64: {:?}", arm64.commands))
        .split(' ')
        .map(str::to_owned)
        .collect();
    assert_eq!(installed, cross, "the builder's arm64 packages vs setup's");
    assert!(
        arm64
            .commands
            .contains(&"dpkg --add-architecture arm64".to_owned()),
        "{:?}",
        arm64.commands
    );
    let build = read("xtask/src/build.rs");
    assert!(
        build.contains(r#""aarch64-linux-gnu-gcc""#)
            && build.contains("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"),
        "xtask's arm64 linker changed: update deploy/Dockerfile and this test"
    );
    arm64.assert_cross_build("aarch64-unknown-linux-gnu", "aarch64-linux-gnu-gcc");
    assert_eq!(
        arm64.commands.last().map(String::as_str),
        Some(
            "install -D -m 0755 target/aarch64-unknown-linux-gnu/release/tracer-agent /out/tracer-agent"
        )
    );

    // amd64 from an arm64 machine (e.g. a laptop): the same, the other way round.
    let amd64 = run_arch_steps(builder, "arm64", "amd64");
    assert!(amd64.success, "{}", amd64.stderr);
    assert!(
        amd64.commands.iter().any(|c| c.starts_with(
            "apt-get install -y --no-install-recommends libstd-rust-web-dev:amd64 \
             gcc-x86-64-linux-gnu libc6-dev-amd64-cross"
        )),
        "{:?}",
        amd64.commands
    );
    amd64.assert_cross_build("x86_64-unknown-linux-gnu", "x86_64-linux-gnu-gcc");

    // An architecture the kernel programs do not know stops the build with a reason.
    let other = run_arch_steps(builder, "amd64", "riscv64");
    assert!(!other.success, "{:?}", other.commands);
    assert!(other.stderr.contains("amd64 and arm64"), "{}", other.stderr);
}

#[test]
fn dockerfile_runtime_stage_is_only_the_binary() {
    let (_, stages) = parse_dockerfile(&read("deploy/Dockerfile"));
    let runtime = stages.last().expect("a runtime stage");
    assert_eq!(runtime.base, "debian:bookworm-slim");
    // Nothing installed or run: the image is the slim base plus one file.
    assert!(runtime.all("RUN").is_empty(), "{:?}", runtime.all("RUN"));
    assert_eq!(
        runtime.all("COPY"),
        ["--from=builder /out/tracer-agent /usr/local/bin/tracer-agent"]
    );
    assert_eq!(
        runtime.all("ENTRYPOINT"),
        ["[\"/usr/local/bin/tracer-agent\"]"],
        "exec form, so the agent is PID 1 of the container and gets SIGTERM"
    );
    // Root on purpose (capabilities); the DaemonSet sets runAsUser 0 as well.
    assert_eq!(runtime.all("USER"), ["0:0"]);
    assert_eq!(runtime.all("EXPOSE"), ["9464"]);
    assert!(
        !runtime
            .all("COPY")
            .iter()
            .chain(&runtime.all("ADD"))
            .any(|c| c.contains("ca-certificates")),
        "no CA bundle: an https:// collector's CA is given to the agent (collector.tls)"
    );
    // The binary links only what bookworm-slim has.
    let ldd = Command::new("ldd")
        .arg(agent_binary())
        .output()
        .expect("run ldd");
    let libs = String::from_utf8_lossy(&ldd.stdout);
    for line in libs.lines() {
        let lib = line.split_whitespace().next().unwrap_or_default();
        assert!(
            [
                "linux-vdso",
                "libgcc_s",
                "libm.",
                "libc.",
                "/lib64/ld-linux",
                "libpthread",
                "libdl",
            ]
            .iter()
            .any(|ok| lib.contains(ok)),
            "tracer-agent links {lib}, which debian:bookworm-slim may lack:\n{libs}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `[Section]` -> `Key` -> values (a key may repeat, e.g. `After=`).
type Unit = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn parse_unit(text: &str) -> Unit {
    let mut unit = Unit::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "no continuation lines expected: {line}"
        );
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not Key=value: {line}"));
        assert!(!section.is_empty(), "{k} outside a section");
        unit.entry(section.clone())
            .or_default()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    unit
}

fn unit() -> Unit {
    parse_unit(&read("deploy/systemd/tracer-agent.service"))
}

/// The single value of `key` in `section`.
fn value<'a>(unit: &'a Unit, section: &str, key: &str) -> &'a str {
    let values = unit
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("[{section}] has no {key}="));
    assert_eq!(values.len(), 1, "[{section}] {key}= set more than once");
    &values[0]
}

#[test]
fn unit_grants_exactly_the_daemonset_capabilities() {
    let unit = unit();
    let caps = daemonset_capabilities();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let set: BTreeSet<String> = value(&unit, "Service", key)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(set, caps, "{key} differs from the DaemonSet's capabilities");
    }
    assert_eq!(value(&unit, "Service", "NoNewPrivileges"), "yes");
    // eBPF maps are charged to RLIMIT_MEMLOCK before kernel 5.11.
    assert_eq!(value(&unit, "Service", "LimitMEMLOCK"), "infinity");
}

#[test]
fn unit_runs_the_installed_binary_with_its_environment_file() {
    let unit = unit();
    assert_eq!(value(&unit, "Service", "Type"), "simple");
    assert_eq!(
        value(&unit, "Service", "ExecStart"),
        "/usr/local/bin/tracer-agent"
    );
    // Optional ("-"): without it the agent runs with its defaults.
    assert_eq!(
        value(&unit, "Service", "EnvironmentFile"),
        "-/etc/tracer-agent/tracer-agent.env"
    );
    assert_eq!(value(&unit, "Service", "Restart"), "on-failure");
    assert!(value(&unit, "Service", "RestartSec").ends_with('s'));
    assert_eq!(value(&unit, "Service", "ProtectSystem"), "strict");
    assert_eq!(value(&unit, "Service", "ProtectHome"), "yes");
    assert_eq!(value(&unit, "Install", "WantedBy"), "multi-user.target");
    // Nothing that would hide the host's processes or drop the capabilities.
    let service = &unit["Service"];
    for hiding in [
        "PrivateUsers",
        "ProtectProc",
        "ProcSubset",
        "PrivateNetwork",
        "User",
        "DynamicUser",
    ] {
        assert!(
            !service.contains_key(hiding),
            "{hiding}= would break the agent"
        );
    }
}

#[test]
fn unit_environment_file_is_accepted_by_the_agent() {
    let env = env_file(&read("deploy/systemd/tracer-agent.env"));
    let stdout = check_config(&env, "deploy/systemd/tracer-agent.env");
    for wanted in [
        "otlp: grpc http://127.0.0.1:4317",
        "propagators: b3multi,b3,tracecontext",
        "metrics: 127.0.0.1:9464",
        "kubernetes: off",
    ] {
        assert!(stdout.contains(wanted), "lacks `{wanted}`:\n{stdout}");
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // `cargo xtask setup` installs systemd for this check. It catches misspelt directives, which
    // systemd would only log and ignore.
    let which = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .expect("run sh");
    assert!(
        which.status.success(),
        "systemd-analyze is missing: `cargo xtask setup` installs it (the systemd package)"
    );
    // verify needs ExecStart to exist: point it at the built binary, in a copy of the unit.
    let dir = std::env::temp_dir().join(format!("tracer-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("temp dir");
    let copy = dir.join("tracer-agent.service");
    let text = read("deploy/systemd/tracer-agent.service").replace(
        "ExecStart=/usr/local/bin/tracer-agent",
        &format!("ExecStart={}", agent_binary().display()),
    );
    fs::write(&copy, text).expect("write unit copy");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let _ = fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

#[test]
fn unit_install_steps_put_files_where_it_reads_them() {
    // The install commands in the unit's header comment put the files where the unit reads them.
    let text = read("deploy/systemd/tracer-agent.service");
    for path in [
        "/usr/local/bin/tracer-agent",
        "/etc/tracer-agent/tracer-agent.env",
        "/etc/systemd/system/",
    ] {
        assert!(
            text.contains(&format!(" {path}")),
            "install step for {path}"
        );
    }
    assert!(Path::new(&workspace_root().join("deploy/systemd/tracer-agent.env")).is_file());
}
