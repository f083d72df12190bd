//! The command line: every flag, its environment variable and its `--help` text.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::{
    kernel::attach::{AttachMode, CaptureMode},
    procs::writemode::{Rule, WriteMode},
};

const ABOUT: &str = "Traces HTTP/1.x requests of unmodified processes at the socket layer with eBPF \
and exports them as OpenTelemetry spans joined to the B3 (Zipkin) or W3C context of a service mesh.";

const AFTER_HELP: &str = "\
Examples:
  tracer-agent                                   print spans of every process as trees
  tracer-agent --stdout json --port 8080         JSON lines for whatever listens on :8080
  tracer-agent --otlp-endpoint http://collector:4317
  OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf tracer-agent
  tracer-agent --otlp-endpoint https://collector:4317 --otlp-certificate ca.crt    (TLS)
  tracer-agent --otlp-endpoint https://collector:4317 --otlp-certificate ca.crt
               --otlp-client-certificate tls.crt --otlp-client-key tls.key      (mutual TLS)

Standard variables honoured: OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, _PROTOCOL,
_HEADERS, _TIMEOUT, _COMPRESSION, _CERTIFICATE, _CLIENT_CERTIFICATE, _CLIENT_KEY, _INSECURE, OTEL_PROPAGATORS, OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_SCHEDULE_DELAY,
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

    /// OTLP collector URL, e.g. http://127.0.0.1:4317 (grpc) or http://127.0.0.1:4318 (http/protobuf);
    /// https:// exports over TLS, trusting the system's CAs unless --otlp-certificate is given
    /// [env: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT]
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// PEM file of the CA certificate(s) to trust for an https:// collector (instead of the
    /// system's); refused with an http:// endpoint
    /// [env: OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE, OTEL_EXPORTER_OTLP_CERTIFICATE]
    #[arg(long, value_name = "FILE")]
    pub otlp_certificate: Option<PathBuf>,

    /// PEM file of the client certificate (chain) for mutual TLS, with --otlp-client-key
    /// [env: OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE]
    #[arg(long, value_name = "FILE")]
    pub otlp_client_certificate: Option<PathBuf>,

    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1)
    /// [env: OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY, OTEL_EXPORTER_OTLP_CLIENT_KEY]
    #[arg(long, value_name = "FILE")]
    pub otlp_client_key: Option<PathBuf>,

    /// grpc endpoint without http:// or https:// (host:port): true sends clear text, false TLS
    /// [env: OTEL_EXPORTER_OTLP_TRACES_INSECURE, OTEL_EXPORTER_OTLP_INSECURE] [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub otlp_insecure: Option<bool>,

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

    /// Where bytes are captured: auto uses the TCP send/receive functions (fentry/fexit) when
    /// the kernel allows them and no process edits requests, else the syscall tracepoints
    #[arg(long, value_enum, env = "TRACER_CAPTURE", default_value_t = CaptureMode::Auto)]
    pub capture: CaptureMode,

    /// Socket-tuple probes of the syscall capture: auto picks the best this kernel offers
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

    /// Log the kernel programs' diagnostics (why a socket was not taken for HTTP/1, why an
    /// outgoing head was left unedited); off, the logging code is removed at load time
    #[arg(long, env = "TRACER_KERNEL_LOG")]
    pub kernel_log: bool,

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
