//! Reading a running agent from outside, for the integration tests and the benchmark alike: the
//! samples of its Prometheus text (`/metrics`, either exposition format) and its memory figures
//! in /proc.

use std::{collections::HashMap, fs};

/// The samples of a Prometheus or `OpenMetrics` text exposition, `name{labels}` -> value;
/// comment lines (`# HELP`, `# TYPE`, `# EOF`) are skipped.
#[must_use]
pub fn prometheus_samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.trim().to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A memory figure of /proc/PID/status in KiB, such as `VmRSS` or `VmHWM` (peak resident set).
///
/// # Errors
/// When the file cannot be read (the process is gone) or has no such figure.
pub fn proc_status_kib(pid: u32, field: &str) -> Result<u64, String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .ok_or_else(|| format!("no {field} in /proc/{pid}/status"))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .map_err(|e| format!("{field} of /proc/{pid}/status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_exposition_formats() {
        let m = prometheus_samples(
            "# HELP x y\n# TYPE x counter\ntracer_kernel_dropped_ringbuf_full_total 3\n\
             tracer_attach_info{plan=\"a b\"} 1\ntracer_dropped_spans_queue_full_total 2\n# EOF\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(
            m.get("tracer_kernel_dropped_ringbuf_full_total"),
            Some(&3.0)
        );
        assert_eq!(m.get("tracer_attach_info{plan=\"a b\"}"), Some(&1.0));
    }

    #[test]
    fn reads_own_rss() {
        let rss = proc_status_kib(std::process::id(), "VmRSS").expect("own VmRSS");
        assert!(rss > 0);
        assert!(proc_status_kib(std::process::id(), "NoSuchField").is_err());
    }
}
