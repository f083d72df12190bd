//! Which processes are traced, and who they are.
//!
//! - [`selection`]: the user's selection (`--pid`, `--exe`, `--port`, Kubernetes filters) turned
//!   into the kernel's per-process bits and write modes, rescanned every second; [`listeners`]
//!   finds the processes behind `--port`; [`writemode`] parses the write-side modes.
//! - [`resource`]: the OpenTelemetry resource of a traced process (service name, process and
//!   container attributes), with [`k8s`] for its pod when it runs in one.

pub mod k8s;
pub mod listeners;
pub mod resource;
pub mod selection;
pub mod writemode;
