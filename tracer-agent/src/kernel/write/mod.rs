//! The agent's side of the write side: attaching its programs ([`attach`], and [`go`] for Go
//! programs in inject mode), and pairing the ids the kernel chose with the data events they
//! belong to ([`ids`]).

pub mod attach;
pub mod go;
pub mod ids;
