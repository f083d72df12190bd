//! Goroutine tracking for inject mode in Go programs: entry uprobes (never uretprobes, which
//! crash Go programs when a goroutine's stack moves) on the functions that carry a request from
//! the handler's goroutine to the goroutines it starts and to the transport's write loop.

use std::{fs, path::Path};

use crate::kernel::object::program;
use aya::{
    Ebpf,
    programs::{UProbe, uprobe::UProbeScope},
};

/// The Go uprobes of inject mode: program and the Go function it enters.
const GO_PROBES: [(&str, &str); 5] = [
    ("go_serve_http", "net/http.serverHandler.ServeHTTP"),
    ("go_newproc1", "runtime.newproc1"),
    ("go_runqput", "runtime.runqput"),
    ("go_round_trip", "net/http.(*Transport).roundTrip"),
    ("go_request_write", "net/http.(*Request).write"),
];

/// Attaches the goroutine-tracking uprobes (entry probes only) to the Go executable `exe`.
/// Fails without attaching anything when `exe` lacks one of the functions (not Go, stripped, or
/// a Go without net/http).
pub fn attach(ebpf: &mut Ebpf, exe: &Path) -> Result<(), String> {
    let elf = fs::read(exe).map_err(|e| format!("{}: {e}", exe.display()))?;
    let missing: Vec<&str> = GO_PROBES
        .iter()
        .map(|(_, f)| *f)
        .filter(|f| !contains(&elf, f.as_bytes()))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} is not a Go net/http program with symbols (missing {})",
            exe.display(),
            missing.join(", ")
        ));
    }
    drop(elf);
    for (name, function) in GO_PROBES {
        let p: &mut UProbe = program(ebpf, name).map_err(|e| format!("{name}: {e}"))?;
        if p.fd().is_err() {
            p.load().map_err(|e| format!("loading {name}: {e}"))?;
        }
        p.attach(function, exe, UProbeScope::AllProcesses)
            .map_err(|e| format!("attaching {name} to {function} in {}: {e}", exe.display()))?;
    }
    Ok(())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
