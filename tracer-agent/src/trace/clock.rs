//! Kernel timestamps (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) to Unix time.

/// Offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC`, refreshed periodically so that clock
/// steps (NTP) show up in later spans.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    #[must_use]
    pub fn now() -> Self {
        Self {
            offset_ns: read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC),
        }
    }

    /// The monotonic time now, in the kernel's timestamp scale.
    #[must_use]
    pub fn monotonic_ns() -> u64 {
        u64::try_from(read(libc::CLOCK_MONOTONIC)).unwrap_or(0)
    }

    #[must_use]
    pub fn to_unix_nanos(self, monotonic_ns: u64) -> u64 {
        u64::try_from(i128::from(monotonic_ns) + self.offset_ns).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_maps_to_now() {
        let clock = Clock::now();
        let unix = clock.to_unix_nanos(Clock::monotonic_ns());
        let sys = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let diff = i128::try_from(sys).unwrap() - i128::from(unix);
        assert!(diff.abs() < 1_000_000_000, "off by {diff} ns");
    }
}
