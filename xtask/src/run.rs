//! `cargo xtask run [-- AGENT ARGS]`: setup, build, then run the agent in the foreground.

use std::{os::unix::process::CommandExt as _, process::Command};

use anyhow::{Context as _, Result};

use crate::{build, util};

const HINT: &str = "Send it traffic, e.g. in another terminal: python3 -m http.server 8000 & \
curl -H 'x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7' -H 'x-b3-spanid: e457b5a2e4d86bd1' \
-H 'x-b3-sampled: 1' localhost:8000/";

pub fn run(args: &[String]) -> Result<()> {
    // Checked first: the agent loads eBPF programs, and failing after a 5-minute build is rude.
    util::require_root("the agent loads eBPF programs; run `sudo -E cargo xtask run`")?;
    let bin = build::build()?;
    println!("[run] {HINT}");
    println!("[run] Ctrl-C stops the agent (it flushes queued spans first).");
    let mut cmd = Command::new(&bin);
    cmd.args(args);
    println!("$ {}", util::describe(&cmd));
    // exec instead of spawn + wait: Ctrl-C sends SIGINT to the whole foreground process group,
    // which would kill a waiting xtask at once and give the prompt back while the agent is still
    // flushing. Replacing ourselves leaves the agent alone to get the signal, and its exit code
    // (or death by signal) is what the shell sees. exec only returns on failure.
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot start {}", bin.display()))
}
