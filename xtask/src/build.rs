//! `cargo xtask build`: setup, then the release build of the agent.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

use crate::{
    setup,
    util::{self, Outcome, Step},
};

/// Runs setup and `cargo build --release --locked`; returns the agent binary's path.
pub fn build() -> Result<PathBuf> {
    setup::setup()?;
    let bin = util::target_dir().join("release/tracer-agent");
    // No `-p`: the workspace's default members are what CI and the tests use. tracer-agent's
    // build.rs builds the eBPF object (with the rust-web toolchain and bpf-linker from setup)
    // and embeds it, so this one command yields a self-contained binary.
    Step::start("build", "cargo build --release --locked").run(|s| {
        s.break_line();
        let mut cargo = util::cargo();
        cargo
            .current_dir(util::workspace_root())
            .args(["build", "--release", "--locked"]);
        util::run(&mut cargo).context("the release build failed: the compiler errors are above")?;
        if !bin.is_file() {
            bail!("the build succeeded but {} is missing", bin.display());
        }
        Ok(Outcome::Info(format!("ok: {}", bin.display())))
    })?;
    Ok(bin)
}
