//! No root: the collector configuration shipped in deploy/collector/ receives what the mesh and
//! the agent send (Zipkin from sidecars, OTLP from the agent) in one traces pipeline, and the
//! agent settings next to it are accepted by the real agent binary and point at that receiver.

use std::{collections::HashMap, fs};

use serde_yaml::Value;
use tracer_tests::harness::{check_config, workspace_root};

fn load_collector() -> Value {
    let path = workspace_root().join("deploy/collector/otel-collector.yaml");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

fn agent_env() -> HashMap<String, String> {
    let path = workspace_root().join("deploy/collector/agent.env");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("checked above");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

fn port_of(endpoint: &str) -> &str {
    endpoint
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim_end_matches('/')
}

#[test]
fn one_traces_pipeline_takes_zipkin_and_otlp_to_jaeger() {
    let c = load_collector();
    let pipeline = &c["service"]["pipelines"]["traces"];
    let names = |key: &str| -> Vec<String> {
        pipeline[key]
            .as_sequence()
            .unwrap_or_else(|| panic!("traces pipeline has no {key} list: {pipeline:?}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let receivers = names("receivers");
    assert!(
        receivers.contains(&"otlp".into()) && receivers.contains(&"zipkin".into()),
        "receivers: {receivers:?}"
    );
    for r in &receivers {
        assert!(
            !c["receivers"][r.as_str()].is_null(),
            "pipeline receiver {r} is not defined"
        );
    }
    let exporters = names("exporters");
    assert_eq!(exporters.len(), 1, "exporters: {exporters:?}");
    let exporter = &c["exporters"][exporters[0].as_str()];
    assert!(
        exporters[0].starts_with("otlp"),
        "Jaeger is fed over OTLP: {exporters:?}"
    );
    assert!(
        exporter["endpoint"]
            .as_str()
            .is_some_and(|e| e.contains("jaeger") && port_of(e) == "4317"),
        "exporter endpoint: {exporter:?}"
    );
    for p in names("processors") {
        assert!(
            !c["processors"][p.as_str()].is_null(),
            "pipeline processor {p} is not defined"
        );
    }
    assert_eq!(
        port_of(
            c["receivers"]["zipkin"]["endpoint"]
                .as_str()
                .unwrap_or_default()
        ),
        "9411"
    );
}

#[test]
fn agent_settings_point_at_the_collector_and_are_accepted() {
    let c = load_collector();
    let env = agent_env();
    let endpoint = &env["OTEL_EXPORTER_OTLP_ENDPOINT"];
    let grpc = c["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(
        port_of(endpoint),
        port_of(grpc),
        "agent endpoint {endpoint} vs collector {grpc}"
    );
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map(String::as_str),
        Some("grpc")
    );

    // The real binary resolves these settings (no privileges needed for --check-config).
    let stdout = check_config(&env, "deploy/collector/agent.env");
    assert!(
        stdout.contains(&format!("otlp: grpc {endpoint}")),
        "resolved: {stdout}"
    );
    assert!(
        stdout.contains("propagators: b3multi,b3,tracecontext"),
        "resolved: {stdout}"
    );
}
