//! The 10k-conns scaling scenario: many connections held open, idle, to the service under load.
//!
//! The connections are opened by the bench itself (blocking connects on loopback, about half a
//! second for 10,000), after the agent of the run is ready, so it has seen every one accepted
//! and holds whatever state it keeps per connection; they send nothing (no span, no request to
//! count) and are closed when the run ends. The service (Go net/http, no timeouts) keeps a
//! goroutine blocked in a read on each.

use std::net::TcpStream;

use anyhow::{Context as _, Result, bail};

use super::procs;

/// Open connections, closed on drop.
pub struct IdleConns {
    _conns: Vec<TcpStream>,
}

impl IdleConns {
    /// Opens `n` connections to 127.0.0.1:`port`.
    pub fn open(port: u16, n: usize) -> Result<Self> {
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            if i % 1000 == 0 {
                procs::check_interrupt()?;
            }
            let conn = TcpStream::connect(("127.0.0.1", port)).with_context(|| {
                format!(
                    "cannot open idle connection {} of {n} to port {port}",
                    i + 1
                )
            })?;
            conns.push(conn);
        }
        Ok(Self { _conns: conns })
    }
}

/// Raises this process's soft limit of open files to at least `need` (children, the services
/// among them, inherit it), raising the hard limit too if it is below (we are root).
pub fn raise_nofile(need: usize) -> Result<()> {
    let need = libc::rlim_t::try_from(need).context("limit out of range")?;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur >= need {
        return Ok(());
    }
    lim.rlim_cur = need;
    lim.rlim_max = lim.rlim_max.max(need);
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
        bail!(
            "cannot raise the open-file limit to {need} for the 10k-conns scenario: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
