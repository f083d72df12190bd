//! The mesh demo behind `cargo xtask demo` (root): starts the scenario of tests/src/mesh.rs, sends
//! a few requests, prints each trace as a tree, and stops every process it started, also on
//! Ctrl-C / SIGTERM or a failure.
//!
//! The agent binary is `TRACER_AGENT_BIN` (xtask sets it), else target/release/tracer-agent.

use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use tracer_tests::mesh::{self, CHAIN_SPANS, Mesh};

/// The signal received (0: none). Set by the handler, read by the watcher thread: a handler may
/// only do async-signal-safe work, so all the stopping happens in the thread.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

const REQUESTS: [(&str, &str); 2] = [
    ("a request through a -> b -> c", "/call/call/hello"),
    ("service-c answers 500", "/call/call/status/500"),
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
    // Read-only (the default) with 64- and 128-bit ids, then the write side on: the same request,
    // with each app's outgoing span id rewritten to its agent CLIENT span's.
    for (trace_id_128bit, write_mode) in [
        (false, "read-only"),
        (true, "read-only"),
        (false, "rewrite"),
    ] {
        let bits = if trace_id_128bit { 128 } else { 64 };
        let started = Instant::now();
        println!(
            "[demo] starting: trace store, rotel, service-a (Go) -> service-b (Python) -> service-c (Node), \
             one Envoy sidecar each ({bits}-bit trace ids), the agent (--write-mode {write_mode})"
        );
        let mesh = Mesh::start_with(trace_id_128bit, write_mode);
        for hop in &mesh.hops {
            let c = &hop.sidecar.config;
            println!(
                "[demo]   {:<9} {:<6} pid {:<7} app :{:<5}  sidecar {} pid {} in :{}{}",
                hop.name,
                format!("{:?}", hop.lang),
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
        // The 128-bit and rewrite passes show one thing each: one request is enough.
        let requests = if trace_id_128bit || write_mode != "read-only" {
            &REQUESTS[..1]
        } else {
            &REQUESTS[..]
        };
        for (what, path) in requests {
            let traced = mesh.traced_get(path, CHAIN_SPANS, Duration::from_secs(30));
            println!(
                "\n[demo] {what}, {bits}-bit trace id, --write-mode {write_mode}: GET {path} -> {}",
                traced.response.status
            );
            println!("{}", mesh::render_tree(&traced.spans));
        }
        println!("[demo] stopping the {bits}-bit {write_mode} scenario");
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
