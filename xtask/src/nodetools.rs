//! Setup step: the npm packages of the Node test services (`@grpc/grpc-js` for the gRPC demo),
//! installed with `npm ci` from the committed `tests/services/node/package-lock.json` into
//! `target/tools/node/node_modules`.
//!
//! The lock file pins every package, transitive ones included, with its integrity hash, so each
//! machine gets the same tree; the packages stay inside `target/`, away from the system's Node.
//! The services find them through `NODE_PATH` (the tests set it).

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, Outcome, Step};

/// The direct dependencies, as pinned in `tests/services/node/package.json` (shown by setup and
/// checked after the install).
pub const PINS: [(&str, &str); 1] = [("@grpc/grpc-js", "1.14.7")];

/// The files `npm ci` installs from.
const MANIFESTS: [&str; 2] = ["package.json", "package-lock.json"];

/// `target/tools/node`: the npm project directory (its `node_modules` is what `NODE_PATH` names).
pub fn dir() -> PathBuf {
    util::target_dir().join("tools/node")
}

/// Installs the locked packages unless `target/tools/node` already holds this very lock file and
/// the pinned versions.
pub fn ensure(s: &Step) -> Result<Outcome> {
    let src = util::workspace_root().join("tests/services/node");
    let dest = dir();
    let up_to_date = MANIFESTS.iter().all(
        |f| matches!((fs::read(src.join(f)), fs::read(dest.join(f))), (Ok(a), Ok(b)) if a == b),
    ) && mismatched().is_empty();
    if up_to_date {
        return Ok(Outcome::AlreadyDone);
    }
    fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
    for f in MANIFESTS {
        fs::copy(src.join(f), dest.join(f)).with_context(|| {
            format!(
                "cannot copy {} into {}",
                src.join(f).display(),
                dest.display()
            )
        })?;
    }
    s.note(format!("npm ci in {}", dest.display()));
    util::run(Command::new("npm").current_dir(&dest).args([
        "ci",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]))
    .context("npm ci failed: is the npm registry reachable?")?;
    let wrong = mismatched();
    if !wrong.is_empty() {
        bail!("after npm ci, {} has {}", dest.display(), wrong.join(", "));
    }
    Ok(Outcome::Done)
}

/// The pins `node_modules` does not satisfy, as `name (have X, want Y)`.
fn mismatched() -> Vec<String> {
    PINS.iter()
        .filter_map(|(name, want)| {
            let manifest = dir().join("node_modules").join(name).join("package.json");
            let have = fs::read_to_string(manifest)
                .ok()
                .and_then(|text| package_version(&text))
                .unwrap_or_else(|| "none".to_owned());
            (have != *want).then(|| format!("{name} (have {have}, want {want})"))
        })
        .collect()
}

/// The top-level `"version": "X"` of a package.json (the first such key: npm writes `name` and
/// `version` before any nested object), without a JSON parser in xtask.
fn package_version(manifest: &str) -> Option<String> {
    let rest = &manifest[manifest.find("\"version\"")? + "\"version\"".len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

/// `npm --version`, which setup checks (Debian's `nodejs` from the machine image bundles npm; a
/// Node without it gets Debian's `npm` package).
pub fn npm_version() -> Result<String> {
    util::output(Command::new("npm").arg("--version")).map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::package_version;

    #[test]
    fn reads_the_version_of_a_package_manifest() {
        let text =
            "{\n  \"name\": \"@grpc/grpc-js\",\n  \"version\": \"1.14.7\",\n  \"engines\": {}\n}";
        assert_eq!(package_version(text).as_deref(), Some("1.14.7"));
        assert_eq!(package_version("{\"name\": \"x\"}"), None);
    }
}
