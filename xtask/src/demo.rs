//! `cargo xtask demo`: setup, build, then the mesh scenario with a few requests, each trace
//! printed as a tree. The scenario itself lives in the tests crate (tests/src/mesh.rs, shared with
//! the end-to-end test), run through its `mesh-demo` binary.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    build,
    util::{self, Outcome, Step},
};

pub fn demo() -> Result<()> {
    util::require_root("the agent loads eBPF programs; run `sudo -E cargo xtask demo`")?;
    let agent = build::build()?;
    let bin = util::target_dir().join("release/mesh-demo");
    Step::start("demo", "cargo build --release --locked --bin mesh-demo").run(|s| {
        s.break_line();
        // Normally already built by the workspace build above; explicit, so the demo never runs
        // a stale binary whatever the default members are.
        util::run(
            util::cargo()
                .current_dir(util::workspace_root())
                .args(["build", "--release", "--locked"])
                .args(["-p", "tracer-tests", "--bin", "mesh-demo"]),
        )?;
        if !bin.is_file() {
            bail!("the build succeeded but {} is missing", bin.display());
        }
        Ok(Outcome::Info(format!("ok: {}", bin.display())))
    })?;
    let mut cmd = Command::new(&bin);
    cmd.env("TRACER_AGENT_BIN", &agent);
    println!(
        "$ TRACER_AGENT_BIN={} {}",
        agent.display(),
        util::describe(&cmd)
    );
    // exec, as `run` does: Ctrl-C then reaches the demo itself, which stops everything it started
    // before exiting, instead of killing a waiting xtask and leaving the prompt to a half-stopped
    // scenario. exec only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot start {}", bin.display()))
}
