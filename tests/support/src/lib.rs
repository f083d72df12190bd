//! What the integration tests (`tracer-tests`) and xtask's benchmark and kernel matrix share
//! about the demo services of `tests/services`: where they are, how the Go ones are built, which
//! Python runs the Python one, and a free port to run them on; and how a running agent is read
//! from outside ([`observe`]).
//!
//! The processes themselves are handled differently on each side, on purpose: a test keeps a
//! child's output in memory and prints it when the test fails (`tests/src/process.rs`), the
//! bench writes it to log files under `target/bench/logs` and stops its children on Ctrl-C
//! (`xtask/src/bench/procs.rs`).

pub mod observe;

use std::{
    collections::BTreeSet,
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock, PoisonError},
};

#[cfg(feature = "pki")]
pub mod pki;

/// Where `cargo xtask setup` installs Go 1.23 (Debian's golang-1.23-go).
pub const GO: &str = "/usr/lib/go-1.23/bin/go";

/// `tests/services` of the workspace.
///
/// # Panics
/// Never: this crate lives in `tests/`.
#[must_use]
pub fn services_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/support lives in tests/")
        .join("services")
}

/// The Go toolchain: `$GO`, else where setup installs it, else `go` on `PATH`.
#[must_use]
pub fn find_go() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("go"))
        .collect::<Vec<_>>();
    std::env::var_os("GO")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from(GO)])
        .chain(on_path)
        .find(|p| p.is_file())
}

/// A build of the Go demo service (`tests/services/go`).
pub struct GoService<'a> {
    /// The binary to write. Its file name is the process's command name, which the tests expect
    /// as `service.name`: keep it within the kernel's 15 bytes (`go-demo-svc`).
    pub out: &'a Path,
    /// Go's build cache (kept under `target/`: `HOME` may be unset).
    pub cache: &'a Path,
    /// A static binary (`CGO_ENABLED=0`) that needs nothing from the system it runs on.
    pub static_binary: bool,
    /// `GOARCH` (`arm64` for the arm64 guests); `None` for this machine's.
    pub goarch: Option<&'a str>,
}

impl GoService<'_> {
    /// Builds the service unless `out` is newer than its sources; returns `out`.
    ///
    /// # Errors
    /// When Go is missing or the build fails, with a message that says what to do.
    pub fn build(&self) -> Result<PathBuf, String> {
        go_build(&GoBuild {
            src: &services_dir().join("go"),
            sources: &["main.go", "go.mod"],
            out: self.out,
            cache: self.cache,
            static_binary: self.static_binary,
            goarch: self.goarch,
            // Never download a module: standard library only.
            env: &[("GOFLAGS", "-mod=mod")],
            gopath: &self.out.parent().unwrap_or(Path::new(".")).join("go-path"),
        })
    }
}

/// Where Debian's `golang-*-dev` packages (`golang-google-grpc-dev` and what it depends on) put
/// their sources: a GOPATH tree, built in GOPATH mode (`GO111MODULE=off`), offline.
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// The Go gRPC demo service and client (`tests/services/go-grpc`, one binary, `server` or
/// `client` as first argument), built on demand into `TARGET/test-services/go-grpc-demo` against
/// Debian's gRPC 1.33 in [`DEBIAN_GOPATH`]: no module download, no network.
///
/// # Errors
/// As [`GoService::build`], or when the Debian package is not installed.
pub fn go_grpc_service(target_dir: &Path) -> Result<PathBuf, String> {
    let dir = target_dir.join("test-services");
    go_grpc_service_at(
        &dir.join("go-grpc-demo"),
        &dir.join("go-build-cache"),
        false,
        None,
    )
}

/// [`go_grpc_service`] built into `out` with its build cache in `cache`; `static_binary`: with
/// `CGO_ENABLED=0`, for the kernel matrix's guests; `goarch`: for another architecture.
///
/// # Errors
/// As [`go_grpc_service`].
pub fn go_grpc_service_at(
    out: &Path,
    cache: &Path,
    static_binary: bool,
    goarch: Option<&str>,
) -> Result<PathBuf, String> {
    let grpc = Path::new(DEBIAN_GOPATH).join("src/google.golang.org/grpc");
    if !grpc.is_dir() {
        return Err(format!(
            "{} is missing: the Go gRPC demo builds against Debian's golang-google-grpc-dev; \
             run `cargo xtask setup`",
            grpc.display()
        ));
    }
    go_build(&GoBuild {
        src: &services_dir().join("go-grpc"),
        sources: &["main.go"],
        out,
        cache,
        static_binary,
        goarch,
        env: &[("GO111MODULE", "off"), ("GOFLAGS", "")],
        gopath: Path::new(DEBIAN_GOPATH),
    })
}

/// One `go build` of a directory of `tests/services`.
struct GoBuild<'a> {
    src: &'a Path,
    /// The files whose modification time makes `out` stale.
    sources: &'a [&'a str],
    out: &'a Path,
    cache: &'a Path,
    static_binary: bool,
    goarch: Option<&'a str>,
    /// Module or GOPATH mode and its flags.
    env: &'a [(&'a str, &'a str)],
    gopath: &'a Path,
}

/// Builds `b.src` into `b.out` unless `out` is newer than its sources; returns `out`.
fn go_build(b: &GoBuild) -> Result<PathBuf, String> {
    // Two tests of one binary may ask at once: one builds, the other waits.
    static BUILD: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
    let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
    let newest_src = b.sources.iter().filter_map(|f| mtime(&b.src.join(f))).max();
    if matches!((mtime(b.out), newest_src), (Some(out), Some(src)) if out >= src) {
        return Ok(b.out.to_owned());
    }
    let go = find_go().ok_or_else(|| {
        format!("Go toolchain not found ({GO}, $GO or go on PATH): run `cargo xtask setup`")
    })?;
    let dir = b.out.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // Built under a temporary name and renamed, so a concurrent user never runs half a binary.
    let tmp = dir.join(format!(
        "{}.tmp{}",
        b.out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let mut cmd = Command::new(&go);
    cmd.current_dir(b.src)
        .args(["build", "-trimpath", "-o"])
        .arg(&tmp)
        .arg(".")
        // Never download a toolchain.
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", b.cache)
        .env("GOPATH", b.gopath)
        .envs(b.env.iter().copied());
    if b.static_binary {
        cmd.env("CGO_ENABLED", "0");
    }
    if let Some(goarch) = b.goarch {
        cmd.env("GOARCH", goarch);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    if !out.status.success() {
        return Err(format!(
            "go build of {} failed ({}): {}",
            b.src.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    fs::rename(&tmp, b.out).map_err(|e| format!("cannot install {}: {e}", b.out.display()))?;
    Ok(b.out.to_owned())
}

/// The Go service as the tests and the bench run it: `TARGET/test-services/go-demo-svc`.
///
/// # Errors
/// As [`GoService::build`].
pub fn go_service(target_dir: &Path) -> Result<PathBuf, String> {
    let dir = target_dir.join("test-services");
    GoService {
        out: &dir.join("go-demo-svc"),
        cache: &dir.join("go-build-cache"),
        static_binary: false,
        goarch: None,
    }
    .build()
}

/// The interpreter behind `python3` (`TRACER_TEST_PYTHON` overrides), resolved once: a pyenv
/// shim would make the service's pid a wrapper's.
///
/// # Errors
/// When `python3` cannot be run.
pub fn python_interpreter() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("TRACER_TEST_PYTHON") {
            return Ok(p.into());
        }
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .map_err(|e| format!("python3 not found ({e}): run `cargo xtask setup`"))?;
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
}

/// A TCP port that was free on 127.0.0.1 a moment ago, and never handed out before by this
/// process.
///
/// The kernel may give the same port to two `bind(0)` calls in a row once the first is closed,
/// and servers that set `SO_REUSEPORT` (grpcio, Envoy) then share one port without an error:
/// the connections of one hop are spread over two listeners. A scenario asks for all its ports
/// before it starts anything, so the ports of one process are kept distinct.
///
/// # Errors
/// When no port can be bound, or no new one comes in 1,000 tries.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if HANDED_OUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port on 127.0.0.1 that this process has not handed out already",
    ))
}
