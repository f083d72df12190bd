//! A private apt configuration per suite under `target/vm/apt/NAME/`.
//!
//! The machine's own sources must never change (and must not leak in: sid next to bookworm would
//! make apt pick sid's libraries), so every apt call gets its own sources list, lists and cache
//! directories, an empty sources.list.d and no preferences. The rest of the system's apt.conf.d
//! still applies, so a proxy configured there is honoured.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Release files are checked against Debian's keyring (bookworm's has the trixie keys sid uses).
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub struct Apt {
    dir: PathBuf,
    /// Debian's name of the architecture whose package lists this configuration reads.
    arch: &'static str,
}

impl Apt {
    /// `sources` are `(URI, suite)` pairs, component main, with the package lists of `arch`
    /// (Debian's name: `amd64`, `arm64`) only, whatever foreign architectures dpkg has.
    pub fn new(
        root: &Path,
        name: &str,
        arch: &'static str,
        sources: &[(&str, &str)],
    ) -> Result<Self> {
        let dir = root.join(name);
        for sub in ["lists/partial", "cache/archives/partial", "empty"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        // `target=Packages`: no Translation or DEP-11 files (the system's appstream config would
        // otherwise add 6 MB per suite that nothing here reads).
        let mut list = String::new();
        for (uri, suite) in sources {
            let _ = writeln!(
                list,
                "deb [signed-by={KEYRING} target=Packages] {uri} {suite} main"
            );
        }
        let path = dir.join("sources.list");
        fs::write(&path, list).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { dir, arch })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        for (key, value) in [
            ("Dir::Etc::SourceList", d("sources.list")),
            ("Dir::Etc::SourceParts", d("empty")),
            ("Dir::Etc::Preferences", d("empty/preferences")),
            ("Dir::Etc::PreferencesParts", d("empty")),
            ("Dir::State::Lists", d("lists")),
            ("Dir::Cache", d("cache")),
            // The private directories belong to root; apt's `_apt` download user cannot write
            // into them (it would fall back with a warning on every call).
            ("APT::Sandbox::User", "root".to_owned()),
            // One architecture: `download` and `show` then mean that architecture's package
            // (the arm64 kernels are read on an amd64 machine).
            ("APT::Architecture", self.arch.to_owned()),
            ("APT::Architectures", self.arch.to_owned()),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }

    pub fn update(&self) -> Result<()> {
        util::output(self.cmd("apt-get").args(["-q", "update"]))
            .context("apt-get update of a private package list failed (network? mirror?)")?;
        Ok(())
    }

    /// The candidate's `Version` (from `release` if given) and the package names of its
    /// `Depends` (first alternatives).
    pub fn show(&self, release: Option<&str>, package: &str) -> Result<(String, Vec<String>)> {
        let mut cmd = self.cmd("apt-cache");
        if let Some(release) = release {
            cmd.args(["-t", release]);
        }
        let text = util::output(cmd.args(["show", "--no-all-versions", package]))
            .with_context(|| format!("package {package} not found in {}", self.dir.display()))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let version = field("Version").context("no Version field")?.to_owned();
        Ok((version, field("Depends").map(depends).unwrap_or_default()))
    }

    /// `(name, version)` of what `apt-get install -t release PKGS` would add to this machine.
    pub fn missing_for(&self, release: &str, packages: &[&str]) -> Result<Vec<(String, String)>> {
        let out = util::output(
            self.cmd("apt-get")
                .args(["-s", "install", "--no-install-recommends", "-t", release])
                .args(packages),
        )?;
        Ok(simulated_installs(&out))
    }

    /// Downloads `name=version` into `into` unless it is there; returns the file.
    pub fn download(&self, name: &str, version: &str, into: &Path) -> Result<PathBuf> {
        // apt's file name: name_version_arch.deb with the epoch colon URL-encoded, arch `all`
        // for a package that has none.
        let prefix = format!("{name}_{}_", version.replace(':', "%3a"));
        let find = || -> Result<Option<PathBuf>> {
            let entries =
                fs::read_dir(into).with_context(|| format!("cannot read {}", into.display()))?;
            Ok(entries.flatten().map(|e| e.path()).find(|p| {
                // The architecture too: busybox-static of one version is in the directory for
                // amd64 and for arm64.
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.strip_prefix(&prefix).is_some_and(|arch| {
                        arch == format!("{}.deb", self.arch) || arch == "all.deb"
                    })
                })
            }))
        };
        if let Some(deb) = find()? {
            return Ok(deb);
        }
        util::output(
            self.cmd("apt-get")
                .current_dir(into)
                .args(["-q", "download"])
                .arg(format!("{name}={version}")),
        )?;
        find()?.with_context(|| format!("apt-get download {name}={version} left no {prefix}*.deb"))
    }
}

/// `a (>= 1), b | c, d:any` -> `[a, b, d]`.
fn depends(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|dep| {
            let first = dep.split('|').next()?.split_whitespace().next()?;
            Some(first.split(':').next().unwrap_or(first).to_owned())
        })
        .collect()
}

/// `Inst name (version Release [arch])` lines of `apt-get -s`.
fn simulated_installs(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("Inst ")?.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('(')?;
            Some((name.to_owned(), version.to_owned()))
        })
        .collect()
}

/// Unpacks a .deb into `root` (no maintainer scripts, no dpkg database).
pub fn unpack(deb: &Path, root: &Path) -> Result<()> {
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(root)
        .output()
        .context("cannot run dpkg-deb")?;
    if !out.status.success() {
        bail!(
            "dpkg-deb -x {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_depends_and_simulation() {
        assert_eq!(
            depends(
                "dracut | initramfs-tools (>= 0.120), linux-binary-7.2.13+deb14-cloud-amd64 (= 7.2.13-1), x:any"
            ),
            ["dracut", "linux-binary-7.2.13+deb14-cloud-amd64", "x"]
        );
        let sim = "NOTE: simulation\nInst seabios (1.16.3-2~bpo12+1 Debian Backports:oldstable-backports [all])\n\
                   Conf seabios (1.16.3-2~bpo12+1 Debian Backports)\nInst qemu-system-x86 (1:10.0.2+ds-2 Debian [amd64])\n";
        assert_eq!(
            simulated_installs(sim),
            [
                ("seabios".to_owned(), "1.16.3-2~bpo12+1".to_owned()),
                ("qemu-system-x86".to_owned(), "1:10.0.2+ds-2".to_owned())
            ]
        );
    }
}
