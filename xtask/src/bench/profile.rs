//! `--profile`: where the agent's CPU goes, by stage, from `perf record` on the agent during the
//! first with-agent run of each scenario (statistics off, as every measured run).
//!
//! A stage is the share of the agent's samples with a given frame on the stack (perf's
//! "children" view), so nested stages are included in their parent, as the table indents them.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, Result};

/// Stages, indented by nesting, and the frames that identify each (the first one found counts:
/// the compiler inlines some of them into their callers, differently from one build to the
/// next).
const STAGES: [(&str, &[&str]); 15] = [
    ("event loop", &["pipeline::Pipeline::drain"]),
    ("  HTTP/1 assembly", &["HalfStream::feed"]),
    ("    head parsing", &["parse::parse_head"]),
    (
        "  HTTP/2 assembly",
        &[
            "http2::conn::Conn<S>::feed",
            "http2::conn::Conn<S>::on_event",
        ],
    ),
    ("    HPACK decoding", &["hpack::Decoder::decode"]),
    (
        "  trace join",
        &["ExchangeSink>::request", "Tracker::server_request"],
    ),
    (
        "    context extraction",
        &["context::extract", "Tracker::identity_from_context"],
    ),
    ("  span building", &["ExchangeSink>::finish"]),
    (
        "  hand-off to the exporter",
        &["Outputs::emit", "SpanTx::send"],
    ),
    ("exporter task", &["OtlpExporter::run"]),
    (
        "  OTLP encoding",
        &["OtlpExporter::encode", "otlp::proto::encode_request"],
    ),
    (
        "  transport",
        &[
            "Transport::send",
            "reqwest::async_impl::client::Client::execute_request",
            "tonic::client::grpc::Grpc<T>::unary",
        ],
    ),
    ("malloc", &["] malloc"]),
    ("the agent's syscalls", &["] do_syscall_64"]),
    ("scheduler", &["] finish_task_switch"]),
];

/// A `perf record` of one process, running while the load does.
pub struct Recording {
    child: Child,
    pub file: PathBuf,
}

/// Starts recording `pid` for `secs` seconds into `file`.
pub fn record(pid: u32, secs: u64, file: &Path) -> Result<Recording> {
    let child = Command::new("perf")
        .args(["record", "-F", "999", "--call-graph", "dwarf,16384", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(file)
        .args(["--", "sleep"])
        .arg(secs.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start perf record (cargo xtask bench --profile installs linux-perf)")?;
    Ok(Recording {
        child,
        file: file.to_owned(),
    })
}

impl Recording {
    /// Waits for the recording to end.
    pub fn finish(mut self) -> Result<PathBuf> {
        let status = self.child.wait().context("waiting for perf record")?;
        anyhow::ensure!(status.success(), "perf record failed ({status})");
        Ok(self.file)
    }
}

/// The samples of one recording and each stage's share of them (percent).
pub fn stages(file: &Path) -> Result<(u64, Vec<(&'static str, f64)>)> {
    let out = Command::new("perf")
        .args([
            "report",
            "--children",
            "--sort",
            "symbol",
            "--stdio",
            "-g",
            "none",
            "-i",
        ])
        .arg(file)
        .stderr(Stdio::null())
        .output()
        .context("cannot run perf report")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let samples = text
        .lines()
        .find_map(|l| l.strip_prefix("# Samples: "))
        .and_then(|l| l.split_whitespace().next())
        .map_or(0, parse_count);
    let share = |frame: &str| {
        text.lines()
            .find(|l| !l.starts_with('#') && l.contains(frame))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok())
    };
    let rows = STAGES
        .iter()
        .map(|(stage, frames)| (*stage, frames.iter().find_map(|f| share(f)).unwrap_or(0.0)))
        .collect();
    Ok((samples, rows))
}

/// `1K`, `12K`, `345` as perf prints sample counts.
fn parse_count(s: &str) -> u64 {
    match s.strip_suffix('K') {
        Some(k) => k.parse::<u64>().map_or(0, |k| k * 1000),
        None => s.parse().unwrap_or(0),
    }
}

/// The "Agent CPU by stage" section for results.md: one column per recorded scenario.
pub fn section(recordings: &[(String, PathBuf)]) -> Result<String> {
    let mut columns = Vec::new();
    for (label, file) in recordings {
        columns.push((label, stages(file)?));
    }
    let mut md = String::from(
        "## Agent CPU by stage (perf)\n\n`perf record -F 999 --call-graph dwarf` on the agent during \
         the first with-agent run of each scenario; a stage is the share of the agent's samples \
         with its frame on the stack, nested stages are part of their parent.\n\n| stage |",
    );
    for (label, (samples, _)) in &columns {
        let _ = write!(md, " {label} ({samples} samples) |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(columns.len()));
    md.push('\n');
    for (i, (stage, _)) in STAGES.iter().enumerate() {
        let _ = write!(md, "| {} |", stage.replace("  ", "&nbsp;&nbsp;"));
        for (_, (_, rows)) in &columns {
            let _ = write!(md, " {:.1} % |", rows[i].1);
        }
        md.push('\n');
    }
    Ok(md)
}

/// Keeps the recordings next to the results, for `perf report -i` by hand.
pub fn dir(out: &Path) -> Result<PathBuf> {
    let dir = out.join("profiles");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::parse_count;

    #[test]
    fn sample_counts_as_perf_prints_them() {
        assert_eq!(parse_count("1K"), 1000);
        assert_eq!(parse_count("345"), 345);
        assert_eq!(parse_count("x"), 0);
    }
}
