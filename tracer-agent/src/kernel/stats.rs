//! What the kernel says about our own programs: how often each ran, for how long, and how
//! often it was skipped.
//!
//! The kernel skips a tracing program without telling it when another BPF program is already
//! running on that CPU (`recursion_misses`): an event lost that way never reaches our counters,
//! so it is read here, from `/proc/self/fdinfo` of each program fd (Linux 5.12 and later; older
//! kernels print no such line and report nothing). `run_time_ns`/`run_cnt` are only counted
//! while `kernel.bpf_stats_enabled` is 1 (the benchmark turns it on).

use std::{collections::HashMap, fs};

/// Per-program numbers from fdinfo.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

/// Parses one fdinfo file of a BPF program: `key:\tvalue` lines.
#[must_use]
pub fn parse_fdinfo(text: &str) -> Option<(u32, ProgStats)> {
    let mut id = None;
    let mut stats = ProgStats::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "prog_id" => id = value.parse().ok(),
            "run_cnt" => stats.run_cnt = value.parse().unwrap_or(0),
            "run_time_ns" => stats.run_time_ns = value.parse().unwrap_or(0),
            "recursion_misses" => stats.recursion_misses = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some((id?, stats))
}

/// Stats of every BPF program this process holds, by program name.
#[must_use]
pub fn own_programs() -> Vec<ProgStats> {
    let names: HashMap<u32, String> = aya::programs::loaded_programs()
        .flatten()
        .map(|p| (p.id(), p.name_as_str().unwrap_or_default().to_owned()))
        .collect();
    let Ok(fds) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut out: Vec<ProgStats> = fds
        .flatten()
        .filter(|fd| {
            fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog")
        })
        .filter_map(|fd| {
            let info = fs::read_to_string(format!(
                "/proc/self/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            let (id, mut stats) = parse_fdinfo(&info)?;
            stats.name = names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("prog-{id}"));
            Some(stats)
        })
        .collect();
    // A program can be held by several fds (program and link): count it once.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prog_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t2071\nprog_type:\t5\nprog_jited:\t1\nprog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t42\nrun_time_ns:\t1500\nrun_cnt:\t3\nrecursion_misses:\t7\nverified_insns:\t100\n";
        let (id, s) = parse_fdinfo(text).unwrap();
        assert_eq!(id, 42);
        assert_eq!((s.run_cnt, s.run_time_ns, s.recursion_misses), (3, 1500, 7));
        assert!(
            parse_fdinfo("pos:\t0\n").is_none(),
            "no prog_id: not a program"
        );
    }
}
