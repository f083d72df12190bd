//! The agent's parsers and assembly, compiled for the fuzz targets in `fuzz_targets/`, and what
//! the targets share: the decoding of a fuzz input into connection events ([`ops`]) and the
//! sink that checks the assembly's invariants ([`checker`]).
//!
//! The agent is a binary crate, so its modules are included here by path, in the same tree as
//! in `tracer-agent/src` (their `crate::` paths resolve unchanged), rather than through a
//! library target: only the modules the targets need, compiled exactly as the agent has them.

#![allow(dead_code, unfulfilled_lint_expectations, clippy::all, clippy::pedantic)]

#[path = "../../tracer-agent/src/idhash.rs"]
pub mod idhash;
#[path = "../../tracer-agent/src/protocol/mod.rs"]
pub mod protocol;

// An inline module with a path takes its files from that directory.
#[path = "../../tracer-agent/src/kernel"]
pub mod kernel {
    pub mod records;
    pub mod write {
        pub mod ids;
    }
    /// The kernel's request-head scanner, plain `core` Rust, as tracer-agent's host tests
    /// compile it.
    #[path = "../../../tracer-ebpf/src/write/head.rs"]
    pub mod head;
}

#[path = "../../tracer-agent/src/trace"]
pub mod trace {
    pub mod context;
    pub mod ids;
}

pub mod checker;
pub mod ops;
