//! Command line and environment. Flags ([`cli`]) win over the standard OpenTelemetry variables
//! (`OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT,PROTOCOL,HEADERS,COMPRESSION,TIMEOUT}`,
//! `OTEL_EXPORTER_OTLP_[TRACES_]{CERTIFICATE,CLIENT_CERTIFICATE,CLIENT_KEY,INSECURE}`,
//! `OTEL_TRACES_EXPORTER`, `OTEL_PROPAGATORS`, `OTEL_TRACES_SAMPLER*`, `OTEL_BSP_*`), which win
//! over the defaults.

mod cli;

use std::{fmt::Write as _, net::SocketAddr, path::PathBuf, time::Duration};

pub use self::cli::{Cli, ExporterKind, KubernetesMode, OtlpProtocol, StdoutFormat};
use crate::{
    export::otlp::tls::{OtlpTls, PemFile, TlsError, TlsFiles},
    kernel::attach::{AttachMode, CaptureMode},
    procs::{
        k8s::PodFilter,
        writemode::{WriteMode, WriteModes},
    },
    trace::{
        context::{Propagator, parse_propagators},
        sampler::Sampler,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Propagator(#[from] crate::trace::context::UnknownPropagator),
    #[error("{0}")]
    Sampler(#[from] crate::trace::sampler::SamplerError),
    #[error(
        "OTLP protocol `{0}` is not supported: use grpc or http/protobuf (http/json is not built in)"
    )]
    Protocol(String),
    #[error(
        "OTLP endpoint `{0}` is not an http:// or https:// URL (only grpc also takes host:port, with TLS unless OTEL_EXPORTER_OTLP_INSECURE=true)"
    )]
    Endpoint(String),
    #[error(
        "{0} is set but the OTLP endpoint `{1}` is clear text (http://): use an https:// endpoint, or unset it (TLS settings are never ignored)"
    )]
    TlsWithClearText(PemFile, String),
    #[error("OTLP TLS: {0}")]
    Tls(Box<TlsError>),
    #[error("{name}=`{value}` is not true or false")]
    Bool { name: &'static str, value: String },
    #[error("OTEL_TRACES_EXPORTER=`{0}` is not supported: use otlp, console or none")]
    Exporter(String),
    #[error("the OTLP exporter needs an endpoint: --otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")]
    NoEndpoint,
    #[error("--metrics-addr `{0}` is not an address:port or \"off\"")]
    MetricsAddr(String),
    #[error("{0}")]
    Selector(#[from] crate::procs::k8s::SelectorError),
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
    #[error("{0}=`{1}` is not supported: use gzip or none")]
    Compression(&'static str, String),
    #[error(
        "--capture socket cannot be combined with {0}: {1}; use --capture auto, which then keeps the syscall tracepoints"
    )]
    SocketCapture(&'static str, &'static str),
}

impl From<TlsError> for ConfigError {
    fn from(e: TlsError) -> Self {
        Self::Tls(Box::new(e))
    }
}

#[derive(Clone, Debug)]
pub struct OtlpConfig {
    /// For grpc the channel URL; for http/protobuf the full URL spans are posted to.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every request (gRPC metadata or HTTP headers), e.g. an API key.
    pub headers: Vec<(String, String)>,
    pub compression: OtlpCompression,
    /// How long one request may take.
    pub timeout: Duration,
    /// Set for an https:// endpoint (and a grpc one without scheme unless insecure).
    pub tls: Option<OtlpTls>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpCompression {
    None,
    Gzip,
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
    pub capture: CaptureMode,
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
    /// The kernel programs' own log, forwarded to the agent's.
    pub kernel_log: bool,
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
        let kubernetes = resolve_kubernetes(&cli, env)?;
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
            .unwrap_or_else(|| Propagator::ALL.map(Propagator::name).join(","));
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
        Self {
            capture: cli.capture,
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
            kernel_log: cli.kernel_log,
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
        if self.capture == CaptureMode::Socket {
            if self.write_modes.any_edits() {
                return Err(ConfigError::SocketCapture(
                    "--write-mode rewrite/inject",
                    "the write side's inbound scan runs from the syscall tracepoints",
                ));
            }
            if self.attach != AttachMode::Auto {
                return Err(ConfigError::SocketCapture(
                    "--attach",
                    "the socket-tuple families belong to the syscall capture",
                ));
            }
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
                // Header values are often credentials: only their names are shown.
                let headers: Vec<&str> = o.headers.iter().map(|(k, _)| k.as_str()).collect();
                format!(
                    "{proto} {}, compression {:?}, timeout {:?}, headers [{}], {}",
                    o.endpoint,
                    o.compression,
                    o.timeout,
                    headers.join(","),
                    o.tls
                        .as_ref()
                        .map_or_else(|| "clear text".to_owned(), OtlpTls::describe)
                )
            },
        );
        let propagators: Vec<&str> = self.propagators.iter().map(|p| p.name()).collect();
        format!(
            "otlp: {otlp}\nstdout: {:?}\npropagators: {}\nsampler: {:?}\nbatch: delay {:?}, queue {}, batch {}, timeout {:?}\nselection: pids {:?}, exes {:?}, ports {:?}, excluded exes {:?}\ncapture size: {} bytes\ncapture: {:?}, socket tuple {:?}\nmetrics: {}\nkubernetes: {}\nwrite mode: {}{}, inject format {}\nkernel log: {}",
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
            self.capture,
            self.attach,
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
                .fold(String::new(), |mut s, r| {
                    let _ = write!(s, ", {:?}={}", r.target, r.mode);
                    s
                }),
            match self.inject_format {
                tracer_common::INJECT_B3_SINGLE => "b3",
                tracer_common::INJECT_TRACEPARENT => "tracecontext",
                _ => "b3multi",
            },
            if self.kernel_log { "on" } else { "off" },
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

/// "A,,B" or an empty variable means no item there, not an item named "".
fn clean(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn resolve_kubernetes(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<KubernetesConfig>, ConfigError> {
    Ok(match cli.kubernetes {
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
    })
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
    let either = |generic: &'static str, traces: &'static str| {
        var(traces, env)
            .map(|v| (traces, v))
            .or_else(|| var(generic, env).map(|v| (generic, v)))
    };
    let (url, tls) = secure_endpoint(cli, protocol, url.trim(), &either)?;
    let endpoint = match protocol {
        OtlpProtocol::HttpProtobuf
            if is_base && !url.trim_end_matches('/').ends_with("/v1/traces") =>
        {
            format!("{}/v1/traces", url.trim_end_matches('/'))
        }
        _ => url,
    };
    let headers = either(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    )
    .map(|(_, v)| crate::procs::resource::parse_key_values(&v))
    .unwrap_or_default();
    let compression = match either(
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
    ) {
        None => OtlpCompression::None,
        Some((name, v)) => match v.trim() {
            "gzip" => OtlpCompression::Gzip,
            "none" => OtlpCompression::None,
            _ => return Err(ConfigError::Compression(name, v)),
        },
    };
    let timeout_ms = match either(
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    ) {
        None => 10_000,
        Some((name, v)) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError::Number { name, value: v })?,
    };
    Ok(Some(OtlpConfig {
        endpoint,
        protocol,
        headers,
        compression,
        timeout: Duration::from_millis(timeout_ms),
        tls,
    }))
}

/// A variable of the signal-specific (`..._TRACES_...`) or else the generic name, with the name
/// it came from: the signal-specific variables win over the generic ones.
type Either<'a> = dyn Fn(&'static str, &'static str) -> Option<(&'static str, String)> + 'a;

/// Whether the endpoint gets TLS, and with which files. `https://` always does; `http://` never
/// does, and refuses TLS files rather than ignore them (a CA set for an endpoint that then
/// sends clear text would be a silent downgrade). A grpc endpoint without scheme gets TLS unless
/// `OTEL_EXPORTER_OTLP_[TRACES_]INSECURE` is true, as the OpenTelemetry specification says.
fn secure_endpoint(
    cli: &Cli,
    protocol: OtlpProtocol,
    url: &str,
    either: &Either<'_>,
) -> Result<(String, Option<OtlpTls>), ConfigError> {
    let file = |flag: &Option<PathBuf>, flag_name, generic, traces| {
        flag.clone()
            .map(|path| PemFile {
                origin: flag_name,
                path,
            })
            .or_else(|| {
                either(generic, traces).map(|(origin, v)| PemFile {
                    origin,
                    path: PathBuf::from(v.trim()),
                })
            })
    };
    let files = TlsFiles {
        ca: file(
            &cli.otlp_certificate,
            "--otlp-certificate",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        ),
        client_certificate: file(
            &cli.otlp_client_certificate,
            "--otlp-client-certificate",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        ),
        client_key: file(
            &cli.otlp_client_key,
            "--otlp-client-key",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        ),
    };
    let insecure = match cli.otlp_insecure {
        Some(flag) => flag,
        None => match either(
            "OTEL_EXPORTER_OTLP_INSECURE",
            "OTEL_EXPORTER_OTLP_TRACES_INSECURE",
        ) {
            None => false,
            Some((name, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(ConfigError::Bool { name, value: v }),
            },
        },
    };
    let (url, secure) = if url.starts_with("https://") {
        (url.to_owned(), true)
    } else if url.starts_with("http://") {
        (url.to_owned(), false)
    } else if protocol == OtlpProtocol::Grpc && !url.contains("://") && !url.is_empty() {
        let scheme = if insecure { "http" } else { "https" };
        (format!("{scheme}://{url}"), !insecure)
    } else {
        return Err(ConfigError::Endpoint(url.to_owned()));
    };
    if !secure {
        if let Some(setting) = files.any() {
            return Err(ConfigError::TlsWithClearText(setting.clone(), url));
        }
        return Ok((url, None));
    }
    Ok((url, Some(OtlpTls::load(files)?)))
}

#[cfg(test)]
mod tests;
