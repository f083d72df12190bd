//! Root: OTLP export over TLS, for both protocols, to the test receiver in its TLS mode with a
//! certificate from a CA the test makes. Spans arrive when the agent trusts that CA
//! (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`) and, when the receiver requires mutual TLS,
//! presents a client certificate of it (`..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`). A receiver
//! signed by another CA, or one that wants a client certificate the agent does not have, is
//! refused: the agent's log says why (at once, without retries, when the client side sees the
//! TLS error), the spans are counted as failed exports, the receiver saw the refused handshake,
//! and nothing reaches it (checked after the failure was counted, so the export is over).

use std::time::{Duration, Instant};

use tracer_tests::{
    harness::{Agent, Service, free_port, get, random_hex, root_test},
    observe::{counter, scrape},
    otlp::{Receiver, ReceiverTls, TestPki},
};

const WAIT: Duration = Duration::from_secs(20);
const FAILED: &str = "tracer_dropped_spans_export_failed_total";

/// A traced Python service, and an agent exporting to `rx` over `protocol` with `env`.
struct Traced {
    svc: Service,
    agent: Agent,
    metrics_port: u16,
}

fn start(rx: &Receiver, protocol: &str, env: &[(&str, &str)]) -> Traced {
    let svc = Service::python(free_port(), None, &[("OTEL_SERVICE_NAME", "tls-export")]);
    let endpoint = match protocol {
        "grpc" => rx.grpc_endpoint(),
        _ => rx.http_endpoint(),
    };
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    let metrics_port = free_port();
    let agent = Agent::start_with_env(
        [
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            protocol,
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
            "--pid",
            &svc.pid().to_string(),
        ],
        env,
    );
    Traced {
        svc,
        agent,
        metrics_port,
    }
}

/// One sampled request to the service; its trace id.
fn traced_request(svc: &Service) -> String {
    let (t, s) = (random_hex(16), random_hex(8));
    let b3 = [
        ("x-b3-traceid", t.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
    ];
    assert_eq!(get(svc.port(), "/hello", &b3).status, 200);
    t
}

fn path(pki: &TestPki, file: &str) -> String {
    pki.file(file).display().to_string()
}

/// Spans reach a TLS receiver; with `mutual`, one that requires a client certificate.
/// `prefix` picks the generic (`OTEL_EXPORTER_OTLP_`) or the traces (`..._TRACES_`) variables.
fn spans_arrive(protocol: &str, mutual: bool, prefix: &str) {
    let _serial = root_test();
    let pki = TestPki::new("otlp-tls");
    let tls = if mutual {
        ReceiverTls::mutual(&pki)
    } else {
        ReceiverTls::server_auth(&pki)
    };
    let rx = Receiver::start_tls_blocking(&tls);
    let (ca, cert, key) = (
        path(&pki, "ca.crt"),
        path(&pki, "client.crt"),
        path(&pki, "client.key"),
    );
    let (ca_var, cert_var, key_var) = (
        format!("{prefix}CERTIFICATE"),
        format!("{prefix}CLIENT_CERTIFICATE"),
        format!("{prefix}CLIENT_KEY"),
    );
    let mut env = vec![(ca_var.as_str(), ca.as_str())];
    if mutual {
        env.extend([
            (cert_var.as_str(), cert.as_str()),
            (key_var.as_str(), key.as_str()),
        ]);
    }
    let mut t = start(&rx, protocol, &env);
    let trace = traced_request(&t.svc);
    let spans = rx.wait_for_named(
        &format!("the SERVER span over {protocol} with TLS (mutual: {mutual})"),
        |spans| {
            spans
                .iter()
                .any(|s| s.trace_id == trace && s.kind == "SERVER")
        },
        WAIT,
    );
    let span = spans.iter().find(|s| s.trace_id == trace).unwrap();
    assert_eq!(span.service_name(), "tls-export", "{span}");
    assert_eq!(span.attr_str("url.path"), Some("/hello"), "{span}");
    let output = t.agent.output();
    assert!(
        output.contains("(TLS trusting 1 CA certificate(s) from"),
        "the agent must say it exports over TLS with the given CA:\n{output}"
    );
    let client = if mutual {
        format!("client certificate {cert} ({cert_var})")
    } else {
        "no client certificate".to_owned()
    };
    assert!(
        output.contains(&client),
        "the log must say `{client}`:\n{output}"
    );
    assert!(
        rx.tls_errors().is_empty(),
        "refused handshakes: {:?}",
        rx.tls_errors()
    );
    t.agent.stop();
}

#[test]
fn grpc_spans_arrive_over_tls() {
    spans_arrive("grpc", false, "OTEL_EXPORTER_OTLP_");
}

#[test]
fn http_spans_arrive_over_tls() {
    spans_arrive("http/protobuf", false, "OTEL_EXPORTER_OTLP_TRACES_");
}

#[test]
fn grpc_spans_arrive_over_mutual_tls() {
    spans_arrive("grpc", true, "OTEL_EXPORTER_OTLP_TRACES_");
}

#[test]
fn http_spans_arrive_over_mutual_tls() {
    spans_arrive("http/protobuf", true, "OTEL_EXPORTER_OTLP_");
}

/// Waits until the agent counted at least one span as a failed export.
fn wait_failed(t: &mut Traced) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            t.agent.is_running(),
            "a refused handshake must not stop the agent; output:\n{}",
            t.agent.output()
        );
        let text = scrape(t.metrics_port);
        if let Some(n) = counter(&text, FAILED).filter(|n| *n > 0) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted within {WAIT:?}:\n{text}\nagent output:\n{}",
            t.agent.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent trusts one CA and the receiver shows a certificate of another, or the receiver
/// wants a client certificate the agent has not: the export is refused, said and counted.
fn refused(protocol: &str, case: &str) {
    let _serial = root_test();
    let (receiver_pki, agent_pki) = (TestPki::new("receiver"), TestPki::new("agent"));
    let (tls, trusted, log_says, receiver_says): (_, _, &[&str], &str) = match (case, protocol) {
        ("wrong ca", _) => (
            ReceiverTls::server_auth(&receiver_pki),
            &agent_pki,
            &[
                "failed after 1 attempt(s)",
                "TLS: certificate verification failed",
                "invalid peer certificate: UnknownIssuer",
            ],
            "UnknownCA",
        ),
        // With TLS 1.3 the server refuses a missing client certificate after the client's side
        // of the handshake is done. reqwest reads the server's alert; the gRPC client writes
        // its HTTP/2 preface first and only sees the connection break, so its log can give no
        // TLS reason (the receiver's side proves the refusal) and the failure is retried until
        // the export timeout.
        ("no client certificate", "grpc") => (
            ReceiverTls::mutual(&receiver_pki),
            &receiver_pki,
            &["OTLP export to https://"],
            "peer sent no certificates",
        ),
        ("no client certificate", _) => (
            ReceiverTls::mutual(&receiver_pki),
            &receiver_pki,
            &[
                "failed after 1 attempt(s)",
                "TLS: the collector requires a client certificate",
                "received fatal alert: CertificateRequired",
            ],
            "peer sent no certificates",
        ),
        other => panic!("unknown case {other:?}"),
    };
    let rx = Receiver::start_tls_blocking(&tls);
    let ca = path(trusted, "ca.crt");
    let mut t = start(
        &rx,
        protocol,
        &[
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
            // Retries of what the agent cannot tell from a collector gone away end in time.
            ("OTEL_BSP_EXPORT_TIMEOUT", "3000"),
        ],
    );
    traced_request(&t.svc);
    let failed = wait_failed(&mut t);
    let output = t.agent.output();
    for needle in log_says {
        assert!(
            output.contains(needle),
            "{protocol}, {case}: the agent's log must say `{needle}`:\n{output}"
        );
    }
    assert!(
        output.contains(&format!("{failed} span(s) dropped")),
        "{protocol}, {case}: the warning must count the dropped spans:\n{output}"
    );
    // The failure is counted, so that export is over: had it gone through, it would be here.
    assert_eq!(
        rx.export_count(),
        0,
        "{protocol}, {case}: an export got through"
    );
    assert!(
        rx.spans().is_empty(),
        "{protocol}, {case}: spans got through"
    );
    let refusals = rx.tls_errors();
    assert!(
        refusals.iter().any(|e| e.contains(receiver_says)),
        "{protocol}, {case}: the receiver must have refused a handshake with `{receiver_says}`: {refusals:?}"
    );
    t.agent.stop();
}

#[test]
fn grpc_refuses_a_collector_of_another_ca() {
    refused("grpc", "wrong ca");
}

#[test]
fn http_refuses_a_collector_of_another_ca() {
    refused("http/protobuf", "wrong ca");
}

#[test]
fn grpc_without_client_certificate_is_refused_by_mutual_tls() {
    refused("grpc", "no client certificate");
}

#[test]
fn http_without_client_certificate_is_refused_by_mutual_tls() {
    refused("http/protobuf", "no client certificate");
}
