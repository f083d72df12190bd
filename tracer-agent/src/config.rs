//! Command line and environment. Flags win over the standard OpenTelemetry variables
//! (`OTEL_EXPORTER_OTLP_*`, `OTEL_TRACES_EXPORTER`, `OTEL_PROPAGATORS`, `OTEL_TRACES_SAMPLER*`,
//! `OTEL_BSP_*`), which win over the defaults.

use std::{net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};

use crate::{
    context::{Propagator, parse_propagators},
    k8s::PodFilter,
    plan::AttachMode,
    sampler::Sampler,
    writemode::{Rule, WriteMode, WriteModes},
};

const ABOUT: &str = "Traces HTTP/1.x requests of unmodified processes at the socket layer with eBPF \
and exports them as OpenTelemetry spans joined to the B3 (Zipkin) or W3C context of a service mesh.";

const AFTER_HELP: &str = "\
Examples:
  tracer-agent                                   print spans of every process as trees
  tracer-agent --stdout json --port 8080         JSON lines for whatever listens on :8080
  tracer-agent --otlp-endpoint http://collector:4317
  OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf tracer-agent

Standard variables honoured: OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _PROTOCOL,
_HEADERS, _TIMEOUT, _COMPRESSION, OTEL_PROPAGATORS, OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_SCHEDULE_DELAY,
OTEL_BSP_MAX_QUEUE_SIZE, OTEL_BSP_MAX_EXPORT_BATCH_SIZE, OTEL_BSP_EXPORT_TIMEOUT. Log level: RUST_LOG.

Needs root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN on kernels before 5.8), plus CAP_SYS_PTRACE and
CAP_DAC_READ_SEARCH to read other processes' /proc entries.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExporterKind {
    Otlp,
    Console,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StdoutFormat {
    Tree,
    Json,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KubernetesMode {
    Auto,
    On,
    Off,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Parser)]
#[expect(
    clippy::doc_markdown,
    reason = "field docs are the --help text, printed verbatim"
)]
#[command(name = "tracer-agent", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// Where spans go [env: OTEL_TRACES_EXPORTER] [default: otlp when an endpoint is set, else console]
    #[arg(long, value_enum)]
    pub exporter: Option<ExporterKind>,

    /// OTLP collector URL, e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http/protobuf)
    /// [env: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// OTLP transport: grpc or http/protobuf
    /// [env: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL] [default: grpc]
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,

    /// Console output [default: tree with the console exporter, off with OTLP]
    #[arg(long, value_enum, env = "TRACER_STDOUT")]
    pub stdout: Option<StdoutFormat>,

    /// Trace this process and its children (repeatable)
    #[arg(
        long = "pid",
        value_name = "PID",
        env = "TRACER_PIDS",
        value_delimiter = ','
    )]
    pub pids: Vec<u32>,

    /// Trace processes whose executable or command name is NAME (repeatable)
    #[arg(
        long = "exe",
        value_name = "NAME",
        env = "TRACER_EXES",
        value_delimiter = ','
    )]
    pub exes: Vec<String>,

    /// Trace processes listening on this TCP port (repeatable)
    #[arg(
        long = "port",
        value_name = "PORT",
        env = "TRACER_PORTS",
        value_delimiter = ','
    )]
    pub ports: Vec<u16>,

    /// Never trace processes with this executable or command name (repeatable)
    #[arg(
        long = "exclude-exe",
        value_name = "NAME",
        env = "TRACER_EXCLUDE_EXES",
        value_delimiter = ','
    )]
    pub exclude_exes: Vec<String>,

    /// Bytes captured per syscall (headers beyond are counted, not read)
    #[arg(long, env = "TRACER_CAPTURE_SIZE", default_value_t = tracer_common::DEFAULT_CAPTURE,
          value_parser = clap::value_parser!(u32).range(64..=tracer_common::MAX_CAPTURE as i64))]
    pub capture_size: u32,

    /// Context formats to read, in order of precedence
    /// [env: OTEL_PROPAGATORS] [default: b3multi,b3,tracecontext]
    #[arg(long, value_name = "LIST")]
    pub propagators: Option<String>,

    /// Sampler for requests without a sampling decision
    /// [env: OTEL_TRACES_SAMPLER] [default: parentbased_always_on]
    #[arg(long, value_name = "NAME")]
    pub sampler: Option<String>,

    /// Sampler argument, e.g. 0.1 for traceidratio [env: OTEL_TRACES_SAMPLER_ARG]
    #[arg(long, value_name = "ARG")]
    pub sampler_arg: Option<String>,

    /// Prometheus metrics (/metrics) and health (/healthz, /readyz) listen address, or "off"
    #[arg(
        long,
        value_name = "ADDR",
        env = "TRACER_METRICS_ADDR",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_addr: String,

    /// Seconds between self-metrics log lines (0: never)
    #[arg(
        long,
        value_name = "SECS",
        env = "TRACER_STATS_INTERVAL",
        default_value_t = 30
    )]
    pub stats_interval: u64,

    /// Seconds without traffic after which a connection is flushed
    #[arg(
        long,
        value_name = "SECS",
        env = "TRACER_IDLE_TIMEOUT",
        default_value_t = 300
    )]
    pub idle_timeout: u64,

    /// Most connections tracked at once
    #[arg(
        long,
        value_name = "N",
        env = "TRACER_MAX_CONNECTIONS",
        default_value_t = 65536
    )]
    pub max_connections: usize,

    /// Socket-tuple probes: auto picks the best this kernel offers
    #[arg(long, value_enum, env = "TRACER_ATTACH", default_value_t = AttachMode::Auto)]
    pub attach: AttachMode,

    /// Kubernetes pod metadata and selection: on when KUBERNETES_SERVICE_HOST is set (auto)
    #[arg(long, value_enum, env = "TRACER_KUBERNETES", default_value_t = KubernetesMode::Auto)]
    pub kubernetes: KubernetesMode,

    /// This node's name (a DaemonSet sets it from spec.nodeName); only its pods are watched
    #[arg(long, value_name = "NAME", env = "TRACER_NODE_NAME")]
    pub node_name: Option<String>,

    /// Trace only pods in these namespaces (default: all but the excluded ones)
    #[arg(
        long,
        value_name = "LIST",
        env = "TRACER_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,

    /// Never trace pods in these namespaces
    #[arg(
        long,
        value_name = "LIST",
        env = "TRACER_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_value = "kube-system,kube-public,kube-node-lease"
    )]
    pub exclude_namespaces: Vec<String>,

    /// Trace only pods whose labels match, e.g. app=shop,tier!=batch,sidecar.istio.io/inject
    #[arg(
        long,
        value_name = "SELECTOR",
        env = "TRACER_POD_SELECTOR",
        default_value = ""
    )]
    pub pod_selector: String,

    /// Log filter, e.g. info or tracer_agent=debug (tracer_agent::pipeline=trace prints every
    /// captured syscall)
    #[arg(long, value_name = "FILTER", env = "RUST_LOG", default_value = "info")]
    pub log_level: String,

    /// Print the configuration resolved from flags and environment, then exit (needs no privileges)
    #[arg(long)]
    pub check_config: bool,

    /// Scheduling of the agent's threads: "batch" (SCHED_BATCH: same CPU share, but waking up
    /// never preempts a running application thread; events wait in the ring buffer instead) or
    /// "normal"
    #[arg(
        long,
        value_name = "POLICY",
        env = "TRACER_CPU_POLICY",
        default_value = "batch",
        value_parser = ["batch", "normal"]
    )]
    pub cpu_policy: String,

    /// Write side for the selected processes: off, read-only, rewrite (replace the span id of the
    /// B3/W3C context an app forwards with its CLIENT span's) or inject (rewrite, and add context
    /// to requests that carry none). Needs a process selection to edit anything.
    #[arg(
        long,
        value_name = "MODE",
        env = "TRACER_WRITE_MODE",
        default_value = "read-only"
    )]
    pub write_mode: WriteMode,

    /// Write mode for some of the selected processes: exe:NAME=MODE, pid:PID=MODE or
    /// port:PORT=MODE (repeatable; the first match wins)
    #[arg(
        long,
        value_name = "SELECTOR=MODE",
        env = "TRACER_WRITE_MODE_FOR",
        value_delimiter = ','
    )]
    pub write_mode_for: Vec<Rule>,

    /// Headers the inject mode adds: b3multi, b3 (single header) or tracecontext
    #[arg(
        long,
        value_name = "FORMAT",
        env = "TRACER_INJECT_FORMAT",
        default_value = "b3multi",
        value_parser = ["b3multi", "b3", "tracecontext"]
    )]
    pub inject_format: String,

    /// Kernel ring buffer size in MiB (a power of two)
    #[arg(long, value_name = "MIB", env = "TRACER_RING_BUFFER_MIB", default_value_t = 2,
          value_parser = parse_power_of_two)]
    pub ring_buffer_mib: u32,
}

fn parse_power_of_two(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_power_of_two() && v <= 1024 {
        Ok(v)
    } else {
        Err("must be a power of two between 1 and 1024".into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Propagator(#[from] crate::context::UnknownPropagator),
    #[error("{0}")]
    Sampler(#[from] crate::sampler::SamplerError),
    #[error(
        "OTLP protocol `{0}` is not supported: use grpc or http/protobuf (http/json is not built in)"
    )]
    Protocol(String),
    #[error(
        "OTLP endpoint `{0}` is not an http:// URL (TLS is not built in; use a node-local collector)"
    )]
    Endpoint(String),
    #[error("OTEL_TRACES_EXPORTER=`{0}` is not supported: use otlp, console or none")]
    Exporter(String),
    #[error("the OTLP exporter needs an endpoint: --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")]
    NoEndpoint,
    #[error("--metrics-addr `{0}` is not an address:port or \"off\"")]
    MetricsAddr(String),
    #[error("{0}")]
    Selector(#[from] crate::k8s::SelectorError),
    #[error(
        "Kubernetes mode needs the node name: set TRACER_NODE_NAME from the downward API (spec.nodeName) or pass --node-name"
    )]
    NoNodeName,
    #[error("{name}=`{value}` is not a number")]
    Number { name: &'static str, value: String },
    #[error(
        "--write-mode {0} edits requests only of selected processes: select them with --pid, --exe, --port or the Kubernetes filters (the sk_msg program is never given every socket on the node)"
    )]
    WriteNeedsSelection(WriteMode),
}

#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// For grpc the channel URL; for http/protobuf the full URL spans are posted to.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
}

#[derive(Clone, Copy, Debug)]
pub struct BatchConfig {
    pub schedule_delay: Duration,
    pub max_queue: usize,
    pub max_batch: usize,
    pub export_timeout: Duration,
}

/// Pod metadata and selection, when running in Kubernetes.
#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    pub node_name: String,
    pub filter: PodFilter,
    /// Whether `--kubernetes on` asked for it (a failure to reach the API is then an error).
    pub required: bool,
}

#[derive(Debug)]
pub struct Config {
    pub attach: AttachMode,
    pub kubernetes: Option<KubernetesConfig>,
    pub otlp: Option<OtlpConfig>,
    pub stdout: StdoutFormat,
    pub batch: BatchConfig,
    pub pids: Vec<u32>,
    pub exes: Vec<String>,
    pub ports: Vec<u16>,
    pub exclude_exes: Vec<String>,
    pub capture_size: u32,
    pub propagators: Vec<Propagator>,
    pub sampler: Sampler,
    pub metrics_addr: Option<SocketAddr>,
    pub stats_interval: Option<Duration>,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub ring_buffer_bytes: u32,
    pub write_modes: WriteModes,
    /// `tracer_common::INJECT_*`.
    pub inject_format: u32,
}

/// Reads a variable, treating empty as unset (as the OpenTelemetry specification asks).
fn var(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

fn number(
    name: &'static str,
    default: u64,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<u64, ConfigError> {
    match var(name, env) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError::Number { name, value: v }),
    }
}

impl Config {
    /// Resolves flags against the environment given by `env` (the process environment in
    /// `main`, a map in tests).
    pub fn resolve(cli: Cli, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let otlp = resolve_otlp(&cli, env)?;
        let exporter = match cli.exporter {
            Some(e) => e,
            None => match var("OTEL_TRACES_EXPORTER", env).as_deref().map(str::trim) {
                Some("otlp") => ExporterKind::Otlp,
                Some("console" | "logging") => ExporterKind::Console,
                Some("none") => ExporterKind::None,
                Some(other) => return Err(ConfigError::Exporter(other.to_owned())),
                None if otlp.is_some() => ExporterKind::Otlp,
                None => ExporterKind::Console,
            },
        };
        let otlp = match exporter {
            ExporterKind::Otlp => Some(otlp.ok_or(ConfigError::NoEndpoint)?),
            _ => None,
        };
        let stdout = cli.stdout.unwrap_or(if exporter == ExporterKind::Console {
            StdoutFormat::Tree
        } else {
            StdoutFormat::Off
        });
        let propagators = cli
            .propagators
            .or_else(|| var("OTEL_PROPAGATORS", env))
            .unwrap_or_else(|| "b3multi,b3,tracecontext".into());
        let sampler_name = cli
            .sampler
            .or_else(|| var("OTEL_TRACES_SAMPLER", env))
            .unwrap_or_else(|| "parentbased_always_on".into());
        let sampler_arg = cli
            .sampler_arg
            .or_else(|| var("OTEL_TRACES_SAMPLER_ARG", env));
        let metrics_addr = if cli.metrics_addr == "off" {
            None
        } else {
            Some(
                cli.metrics_addr
                    .parse()
                    .map_err(|_| ConfigError::MetricsAddr(cli.metrics_addr.clone()))?,
            )
        };
        let batch = BatchConfig {
            schedule_delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5000, env)?),
            max_queue: usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048, env)?)
                .unwrap_or(2048)
                .max(1),
            max_batch: usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, env)?)
                .unwrap_or(512)
                .max(1),
            export_timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 30000, env)?),
        };
        // "A,,B" or an empty variable means no item there, not an item named "".
        let clean = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let kubernetes = match cli.kubernetes {
            KubernetesMode::Off => None,
            KubernetesMode::Auto if var("KUBERNETES_SERVICE_HOST", env).is_none() => None,
            mode => Some(KubernetesConfig {
                node_name: cli
                    .node_name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .ok_or(ConfigError::NoNodeName)?,
                filter: PodFilter::new(
                    clean(cli.namespaces.clone()),
                    clean(cli.exclude_namespaces.clone()),
                    &cli.pod_selector,
                )?,
                required: mode == KubernetesMode::On,
            }),
        };
        Self {
            attach: cli.attach,
            kubernetes,
            otlp,
            stdout,
            batch,
            pids: cli.pids,
            exes: clean(cli.exes),
            ports: cli.ports,
            exclude_exes: clean(cli.exclude_exes),
            capture_size: cli.capture_size,
            propagators: parse_propagators(&propagators)?,
            sampler: Sampler::parse(&sampler_name, sampler_arg.as_deref())?,
            metrics_addr,
            stats_interval: (cli.stats_interval > 0)
                .then(|| Duration::from_secs(cli.stats_interval)),
            idle_timeout: Duration::from_secs(cli.idle_timeout.max(1)),
            max_connections: cli.max_connections.max(16),
            ring_buffer_bytes: cli.ring_buffer_mib * 1024 * 1024,
            write_modes: WriteModes {
                default: cli.write_mode,
                rules: cli.write_mode_for,
            },
            inject_format: match cli.inject_format.as_str() {
                "b3" => tracer_common::INJECT_B3_SINGLE,
                "tracecontext" => tracer_common::INJECT_TRACEPARENT,
                _ => tracer_common::INJECT_B3_MULTI,
            },
        }
        .checked()
    }

    fn checked(self) -> Result<Self, ConfigError> {
        if self.write_modes.any_edits() && !self.selects_processes() {
            let mode = self
                .write_modes
                .rules
                .iter()
                .map(|r| r.mode)
                .chain([self.write_modes.default])
                .max()
                .unwrap_or(WriteMode::ReadOnly);
            return Err(ConfigError::WriteNeedsSelection(mode));
        }
        Ok(self)
    }

    /// The resolved settings, one per line, for `--check-config`.
    #[must_use]
    pub fn describe(&self) -> String {
        let otlp = self.otlp.as_ref().map_or_else(
            || "off".to_owned(),
            |o| {
                let proto = match o.protocol {
                    OtlpProtocol::Grpc => "grpc",
                    OtlpProtocol::HttpProtobuf => "http/protobuf",
                };
                format!("{proto} {}", o.endpoint)
            },
        );
        let propagators: Vec<&str> = self.propagators.iter().map(|p| p.name()).collect();
        format!(
            "otlp: {otlp}\nstdout: {:?}\npropagators: {}\nsampler: {:?}\nbatch: delay {:?}, queue {}, batch {}, timeout {:?}\nselection: pids {:?}, exes {:?}, ports {:?}, excluded exes {:?}\ncapture size: {} bytes\nmetrics: {}\nkubernetes: {}\nwrite mode: {}{}, inject format {}",
            self.stdout,
            propagators.join(","),
            self.sampler,
            self.batch.schedule_delay,
            self.batch.max_queue,
            self.batch.max_batch,
            self.batch.export_timeout,
            self.pids,
            self.exes,
            self.ports,
            self.exclude_exes,
            self.capture_size,
            self.metrics_addr
                .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            self.kubernetes.as_ref().map_or_else(
                || "off".to_owned(),
                |k| format!("node {}, pods {:?}", k.node_name, k.filter)
            ),
            self.write_modes.default,
            self.write_modes
                .rules
                .iter()
                .map(|r| format!(", {:?}={}", r.target, r.mode))
                .collect::<String>(),
            match self.inject_format {
                tracer_common::INJECT_B3_SINGLE => "b3",
                tracer_common::INJECT_TRACEPARENT => "tracecontext",
                _ => "b3multi",
            },
        )
    }

    /// Whether processes are chosen by --pid/--exe/--port or by pod (otherwise: all but the
    /// excluded ones).
    #[must_use]
    pub fn selects_processes(&self) -> bool {
        self.kubernetes.is_some()
            || !(self.pids.is_empty() && self.exes.is_empty() && self.ports.is_empty())
    }
}

fn resolve_otlp(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<OtlpConfig>, ConfigError> {
    let protocol_raw = cli
        .otlp_protocol
        .clone()
        .or_else(|| var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", env))
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL", env))
        .unwrap_or_else(|| "grpc".into());
    let protocol = match protocol_raw.trim() {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => return Err(ConfigError::Protocol(other.to_owned())),
    };
    // The signal-specific variable is a full URL; the generic one and the flag are a base URL.
    let (url, is_base) = if let Some(flag) = &cli.otlp_endpoint {
        (flag.clone(), true)
    } else if let Some(u) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env) {
        (u, false)
    } else if let Some(u) = var("OTEL_EXPORTER_OTLP_ENDPOINT", env) {
        (u, true)
    } else {
        return Ok(None);
    };
    let url = url.trim().to_owned();
    if !url.starts_with("http://") {
        return Err(ConfigError::Endpoint(url));
    }
    let endpoint = match protocol {
        OtlpProtocol::HttpProtobuf
            if is_base && !url.trim_end_matches('/').ends_with("/v1/traces") =>
        {
            format!("{}/v1/traces", url.trim_end_matches('/'))
        }
        _ => url,
    };
    Ok(Some(OtlpConfig { endpoint, protocol }))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("tracer-agent").chain(args.iter().copied()))
            .unwrap();
        Config::resolve(cli, &|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_to_console_tree() {
        let c = resolve(&[], &[]).unwrap();
        assert!(c.otlp.is_none());
        assert_eq!(c.stdout, StdoutFormat::Tree);
        assert_eq!(
            c.propagators,
            [
                Propagator::B3Multi,
                Propagator::B3Single,
                Propagator::TraceContext
            ]
        );
        assert_eq!(c.capture_size, 2048);
        assert!(!c.selects_processes());
    }

    #[test]
    fn otlp_from_environment() {
        let c = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.endpoint, "http://c:4318/v1/traces");
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(c.stdout, StdoutFormat::Off);

        let c = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ],
        )
        .unwrap();
        assert_eq!(c.otlp.unwrap().endpoint, "http://c:9/custom");

        let c = resolve(
            &["--otlp-endpoint", "http://x:4317", "--stdout", "json"],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1")],
        )
        .unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(
            (o.endpoint.as_str(), o.protocol),
            ("http://x:4317", OtlpProtocol::Grpc)
        );
        assert_eq!(c.stdout, StdoutFormat::Json);
    }

    #[test]
    fn errors_are_explained() {
        assert!(matches!(
            resolve(&[], &[("OTEL_TRACES_EXPORTER", "otlp")]),
            Err(ConfigError::NoEndpoint)
        ));
        assert!(matches!(
            resolve(&["--otlp-endpoint", "https://x"], &[]),
            Err(ConfigError::Endpoint(_))
        ));
        assert!(matches!(
            resolve(
                &[
                    "--otlp-endpoint",
                    "http://x",
                    "--otlp-protocol",
                    "http/json"
                ],
                &[]
            ),
            Err(ConfigError::Protocol(_))
        ));
        assert!(matches!(
            resolve(&[], &[("OTEL_PROPAGATORS", "xray")]),
            Err(ConfigError::Propagator(_))
        ));
        assert!(matches!(
            resolve(&[], &[("OTEL_BSP_SCHEDULE_DELAY", "soon")]),
            Err(ConfigError::Number { .. })
        ));
        assert!(Cli::try_parse_from(["tracer-agent", "--capture-size", "10"]).is_err());
        assert!(Cli::try_parse_from(["tracer-agent", "--ring-buffer-mib", "3"]).is_err());
    }

    #[test]
    fn kubernetes_mode() {
        assert!(
            resolve(&[], &[]).unwrap().kubernetes.is_none(),
            "off outside a cluster"
        );
        assert!(matches!(
            resolve(&[], &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")]),
            Err(ConfigError::NoNodeName)
        ));
        let c = resolve(
            &["--node-name", "n1"],
            &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
        )
        .unwrap();
        let k = c.kubernetes.as_ref().unwrap();
        assert_eq!(k.node_name, "n1");
        assert!(!k.required);
        assert!(
            c.selects_processes(),
            "in a cluster only selected pods are traced"
        );
        let c = resolve(
            &[
                "--node-name",
                "n1",
                "--exclude-namespaces",
                "",
                "--namespaces",
                "a,,b",
            ],
            &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
        )
        .unwrap();
        assert_eq!(
            c.kubernetes.unwrap().filter,
            PodFilter::new(vec!["a".into(), "b".into()], vec![], "").unwrap(),
            "empty list items are no items"
        );
        let c = resolve(
            &["--kubernetes", "off"],
            &[("KUBERNETES_SERVICE_HOST", "10.0.0.1")],
        )
        .unwrap();
        assert!(c.kubernetes.is_none());
        assert!(matches!(
            resolve(
                &[
                    "--kubernetes",
                    "on",
                    "--node-name",
                    "n",
                    "--pod-selector",
                    "a b"
                ],
                &[]
            ),
            Err(ConfigError::Selector(_))
        ));
    }

    #[test]
    fn env_and_flags_for_context_and_sampling() {
        let c = resolve(
            &[],
            &[
                ("OTEL_PROPAGATORS", "tracecontext,b3"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.propagators,
            [Propagator::TraceContext, Propagator::B3Single]
        );
        assert_eq!(c.sampler, Sampler::Ratio(0.5));
        let c = resolve(
            &["--propagators", "b3"],
            &[("OTEL_PROPAGATORS", "tracecontext")],
        )
        .unwrap();
        assert_eq!(c.propagators, [Propagator::B3Single]);
    }
}
