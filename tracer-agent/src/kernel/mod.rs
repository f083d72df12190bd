//! Everything that touches the kernel: loading and attaching the programs, reading what they
//! send, and what the kernel says about them.
//!
//! - [`preflight`]: privileges and mounts, before anything is loaded.
//! - [`loader`]: the embedded object, its load-time globals and maps; [`object`]: typed access
//!   to its programs and maps.
//! - [`attach`]: the attach plan, which attach point each probe family gets on this kernel
//!   (with [`btf`] for the `struct sock` offsets the programs need).
//! - [`records`]: ring-buffer records decoded into typed events, the pipeline's input.
//! - [`write`](mod@write): the write side's programs and the pairing of the ids they chose with the events.
//! - [`stats`]: per-program statistics (runs the kernel skipped); [`log`]: the programs' own
//!   log with `--kernel-log`.

pub mod attach;
pub mod btf;
#[cfg(test)]
mod host_tests;
pub mod loader;
pub mod log;
pub mod object;
pub mod preflight;
pub mod records;
pub mod stats;
pub mod write;
