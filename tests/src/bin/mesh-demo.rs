//! The mesh demo behind `cargo xtask demo` (root): starts the scenario of tests/src/mesh.rs (the
//! HTTP/1 chain, then a chain with gRPC hops and an HTTP/1 hop), sends a few requests, prints each
//! trace as a tree, and stops every process it started, also on
//! Ctrl-C / SIGTERM or a failure.
//!
//! The agent binary is `TRACER_AGENT_BIN` (xtask sets it), else target/release/tracer-agent.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use tracer_tests::envoy::Codec;
use tracer_tests::grpc::Rpc;
use tracer_tests::mesh::{self, CHAIN, Link, MIXED_CHAIN, Mesh, chain_spans};

/// The signal received (0: none). Set by the handler, read by the watcher thread: a handler may
/// only do async-signal-safe work, so all the stopping happens in the thread.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// What the demo sends through a mesh.
#[derive(Clone, Copy)]
enum Request {
    /// An HTTP/1 GET of this path to the entry sidecar.
    Get(&'static str),
    /// A gRPC call (no trace context) to the entry sidecar.
    Grpc(Rpc<'static>),
}

/// One scenario of the demo: the chain, the id width, the write mode and what to send.
struct Pass {
    chain: &'static [Link],
    trace_id_128bit: bool,
    write_mode: &'static str,
    requests: &'static [(&'static str, Request)],
}

/// Read-only (the default) with 64- and 128-bit ids, then the write side on (the same request,
/// with each app's outgoing span id rewritten to its agent CLIENT span's), then a chain with gRPC
/// hops and an HTTP/1 hop in one trace (read-only: the write side leaves HTTP/2 alone).
const PASSES: [Pass; 4] = [
    Pass {
        chain: &CHAIN,
        trace_id_128bit: false,
        write_mode: "read-only",
        requests: &[
            (
                "a request through a -> b -> c",
                Request::Get("/call/call/hello"),
            ),
            (
                "service-c answers 500",
                Request::Get("/call/call/status/500"),
            ),
        ],
    },
    Pass {
        chain: &CHAIN,
        trace_id_128bit: true,
        write_mode: "read-only",
        requests: &[(
            "a request through a -> b -> c",
            Request::Get("/call/call/hello"),
        )],
    },
    Pass {
        chain: &CHAIN,
        trace_id_128bit: false,
        write_mode: "rewrite",
        requests: &[(
            "a request through a -> b -> c",
            Request::Get("/call/call/hello"),
        )],
    },
    Pass {
        chain: &MIXED_CHAIN,
        trace_id_128bit: false,
        write_mode: "read-only",
        requests: &[(
            "a gRPC call a -> b (gRPC), then b -> c (HTTP/1 GET /hello)",
            Request::Grpc(Rpc::SayHello("demo")),
        )],
    },
];

fn main() -> ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("[demo] needs root (the agent loads eBPF programs): sudo -E cargo xtask demo");
        return ExitCode::FAILURE;
    }
    watch_signals();
    // Once a signal stops everything, the scenario fails all over the place: say nothing of it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if SIGNAL.load(Ordering::SeqCst) == 0 {
            default_hook(info);
        }
    }));
    // Ctrl-C should reach only us; we stop the children in order (the agent flushes first).
    mesh::detach_from_terminal_signals();
    // A failure panics inside the scenario; unwinding drops the Mesh, which stops every process.
    let result = std::panic::catch_unwind(run);
    if SIGNAL.load(Ordering::SeqCst) != 0 {
        // The watcher thread is stopping everything and exits with the signal's code.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if result.is_ok() {
        println!("[demo] done: every process it started has been stopped");
        ExitCode::SUCCESS
    } else {
        eprintln!("[demo] FAILED (see above); every process it started has been stopped");
        ExitCode::FAILURE
    }
}

fn run() {
    for pass in &PASSES {
        let (bits, write_mode) = (if pass.trace_id_128bit { 128 } else { 64 }, pass.write_mode);
        let services: Vec<String> = pass
            .chain
            .iter()
            .map(|(name, lang, codec)| format!("{name} ({lang:?} {})", codec_name(*codec)))
            .collect();
        let started = Instant::now();
        println!(
            "[demo] starting: trace store, rotel, {}, one Envoy sidecar each ({bits}-bit trace ids), \
             the agent (--write-mode {write_mode})",
            services.join(" -> ")
        );
        let mesh = Mesh::start_chain(pass.chain, pass.trace_id_128bit, write_mode);
        for hop in &mesh.hops {
            let c = &hop.sidecar.config;
            println!(
                "[demo]   {:<9} {:<11} pid {:<7} app :{:<5}  sidecar {} pid {} in :{}{}",
                hop.name,
                format!("{:?} {}", hop.lang, codec_name(hop.codec)),
                hop.app.pid(),
                hop.app.port(),
                c.name,
                hop.sidecar.pid(),
                c.inbound,
                c.outbound
                    .map(|(out, next)| format!(" out :{out} -> :{next}"))
                    .unwrap_or_default()
            );
        }
        println!(
            "[demo] up in {:.1}s; requests go to service-a's sidecar on 127.0.0.1:{}",
            started.elapsed().as_secs_f64(),
            mesh.entry_port()
        );
        let expected = chain_spans(pass.chain.len());
        let wait = Duration::from_secs(30);
        for (what, request) in pass.requests {
            let (sent, spans) = match request {
                Request::Get(path) => {
                    let t = mesh.traced_get(path, expected, wait);
                    (format!("GET {path} -> {}", t.response.status), t.spans)
                }
                Request::Grpc(rpc) => {
                    let t = mesh.traced_call(*rpc, false, expected, wait);
                    let reply = t.response.responses.join(" ");
                    (
                        format!(
                            "gRPC {} -> status {} {reply:?}",
                            rpc.span_name(),
                            t.response.status
                        ),
                        t.spans,
                    )
                }
            };
            println!("\n[demo] {what}, {bits}-bit trace id, --write-mode {write_mode}: {sent}");
            println!("{}", mesh::render_tree(&spans));
        }
        println!("[demo] stopping the {bits}-bit {write_mode} scenario");
    }
}

fn codec_name(codec: Codec) -> &'static str {
    match codec {
        Codec::Http1 => "HTTP/1",
        Codec::Grpc => "gRPC",
    }
}

/// SIGINT/SIGTERM: a thread notices, stops every child and exits; the main thread may be blocked
/// (waiting for a process or a trace) and could not react in time.
fn watch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    std::thread::spawn(|| {
        loop {
            let sig = SIGNAL.load(Ordering::SeqCst);
            if sig != 0 {
                eprintln!("\n[demo] signal {sig}: stopping every process it started");
                mesh::stop_all_after_signal();
                eprintln!("[demo] stopped");
                std::process::exit(128 + sig);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
}
