//! The write side: edit the trace context of outgoing HTTP/1.x requests at the socket layer.
//!
//! - [`inbound`]: the read path chooses the SERVER span id of each request a process that edits
//!   reads, and remembers its context by thread and by trace id.
//! - [`sockets`]: cgroup connect hooks and sock_ops put exactly those processes' client sockets
//!   into the socket hash.
//! - [`sk_msg`] (with [`msg`] and [`inject`]): the sk_msg program on that hash rewrites the
//!   span id of the context an outgoing request carries, or injects one, and reports it.
//! - [`goroutines`] (with [`go_abi`]): in Go programs, the cause travels with goroutines, not
//!   threads (uprobes).
//! - [`head`]: the request-head scanner both directions use; [`ctx`]: what they all share.

pub mod ctx;
pub mod go_abi;
pub mod goroutines;
pub mod head;
pub mod inbound;
pub mod inject;
pub mod msg;
pub mod sk_msg;
pub mod sockets;
