//! What the integration tests (`tracer-tests`) and xtask's benchmark and kernel matrix share
//! about the demo services of `tests/services`: where they are, how the Go one is built, which
//! Python runs the Python one, and a free port to run them on; and how a running agent is read
//! from outside ([`observe`]).
//!
//! The processes themselves are handled differently on each side, on purpose: a test keeps a
//! child's output in memory and prints it when the test fails (`tests/src/process.rs`), the
//! bench writes it to log files under `target/bench/logs` and stops its children on Ctrl-C
//! (`xtask/src/bench/procs.rs`).

pub mod observe;

use std::{
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
}

impl GoService<'_> {
    /// Builds the service unless `out` is newer than its sources; returns `out`.
    ///
    /// # Errors
    /// When Go is missing or the build fails, with a message that says what to do.
    pub fn build(&self) -> Result<PathBuf, String> {
        // Two tests of one binary may ask at once: one builds, the other waits.
        static BUILD: Mutex<()> = Mutex::new(());
        let _one_at_a_time = BUILD.lock().unwrap_or_else(PoisonError::into_inner);
        let src = services_dir().join("go");
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        let newest_src = ["main.go", "go.mod"]
            .iter()
            .filter_map(|f| mtime(&src.join(f)))
            .max();
        if matches!((mtime(self.out), newest_src), (Some(b), Some(s)) if b >= s) {
            return Ok(self.out.to_owned());
        }
        let go = find_go().ok_or_else(|| {
            format!("Go toolchain not found ({GO}, $GO or go on PATH): run `cargo xtask setup`")
        })?;
        let dir = self.out.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Built under a temporary name and renamed, so a concurrent user never runs half a binary.
        let tmp = dir.join(format!(
            "{}.tmp{}",
            self.out.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let mut cmd = Command::new(&go);
        cmd.current_dir(&src)
            .args(["build", "-trimpath", "-o"])
            .arg(&tmp)
            .arg(".")
            // Never download a toolchain or a module: standard library only.
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOCACHE", self.cache)
            .env("GOPATH", dir.join("go-path"));
        if self.static_binary {
            cmd.env("CGO_ENABLED", "0");
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
        if !out.status.success() {
            return Err(format!(
                "go build of {} failed ({}): {}",
                src.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        fs::rename(&tmp, self.out)
            .map_err(|e| format!("cannot install {}: {e}", self.out.display()))?;
        Ok(self.out.to_owned())
    }
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

/// A TCP port that was free on 127.0.0.1 a moment ago.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
