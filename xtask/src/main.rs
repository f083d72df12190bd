//! Project tasks, run as `cargo xtask VERB` (an alias in .cargo/config.toml):
//!
//! - `setup`: installs what the build and tests need (Debian's rustc-web and LLVM, bpf-linker,
//!   Go 1.23, curl, wrk), links the `rust-web` toolchain, mounts tracefs and bpffs. Idempotent.
//! - `build`: setup, then `cargo build --release --locked` (the agent with its eBPF object).
//! - `run [-- ARGS]`: setup, build, then runs target/release/tracer-agent as root with ARGS.
//! - `test [-- ARGS]`: setup, build, then `cargo test --release --locked --workspace` as root
//!   with `TRACER_AGENT_BIN` set; ARGS go to cargo test (e.g. a test name filter).
//!
//! Everything a fresh machine needs goes through `setup`, so CI (`.ci/run`) and a newcomer run
//! the same steps. Dependencies are only anyhow and clap, to keep this crate quick to build.

mod build;
mod run;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Setup, build, run and test the eBPF HTTP tracing agent",
    after_help = "Run as root for the apt steps, the agent and the tests: sudo -E cargo xtask VERB"
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install and configure everything needed (idempotent; seconds when already done).
    ///
    /// Debian packages (rustc-web, cargo-web, rust-web-src, llvm-N-dev, libpolly-N-dev,
    /// zlib1g-dev, libzstd-dev, curl, wrk, golang-1.23-go from bookworm-backports), the
    /// `rust-web` rustup toolchain linked to /usr, bpf-linker 0.13.0 in ~/.cargo/bin, and the
    /// tracefs and bpffs mounts. Installing needs root; checking does not.
    Setup,
    /// Setup, then build target/release/tracer-agent (eBPF object embedded).
    Build,
    /// Setup, build, then run the agent in the foreground (needs root; Ctrl-C stops it).
    ///
    /// Without arguments the agent prints spans as a tree on the console, no collector
    /// needed.
    ///
    /// Example: sudo -E cargo xtask run -- --stdout json --port 8000
    Run {
        /// Arguments for tracer-agent, after `--`.
        #[arg(last = true, value_name = "AGENT_ARGS")]
        args: Vec<String>,
    },
    /// Setup, build, then run all the workspace's tests against the built agent (needs root).
    ///
    /// Example: sudo -E cargo xtask test -- FILTER -- --nocapture
    Test {
        /// Arguments for `cargo test`, after `--` (e.g. a test name filter).
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().verb {
        Verb::Setup => setup::setup(),
        Verb::Build => build::build().map(drop),
        Verb::Run { args } => run::run(&args),
        Verb::Test { args } => test::test(&args),
    };
    // Printed by hand rather than by returning the error from main: with RUST_BACKTRACE=1 (set
    // on these machines) anyhow would add a long backtrace that buries the hint on what to do.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
