//! The kernel programs' own log (aya-log), with `--kernel-log`: why a socket was not taken for
//! HTTP/1, why an outgoing head was left unedited. The records go through the `log` facade into
//! the agent's `tracing` output (target `tracer::...`, the kernel module that logged).

use tokio::io::unix::AsyncFd;
use tracing::warn;

/// The reader of the kernel programs' log ring buffer.
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Forwards the kernel's log records until the agent stops.
pub async fn forward(log: KernelLog) {
    // SAFETY: the logger owns its ring buffer's fd and keeps it open while the AsyncFd lives.
    let mut fd = match unsafe { AsyncFd::register(log) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!("--kernel-log: cannot watch the kernel log ring buffer: {e}");
            return;
        }
    };
    loop {
        match fd.readable_mut().await {
            Ok(mut guard) => {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            Err(e) => {
                warn!("--kernel-log: reading the kernel log failed: {e}");
                return;
            }
        }
    }
}
