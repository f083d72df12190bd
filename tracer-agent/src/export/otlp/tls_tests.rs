use std::path::Path;

use tracer_test_support::pki::TestPki;

use super::*;

fn pem(origin: &'static str, path: impl AsRef<Path>) -> PemFile {
    PemFile {
        origin,
        path: path.as_ref().to_owned(),
    }
}

fn files(pki: &TestPki, ca: &str, cert: Option<&str>, key: Option<&str>) -> TlsFiles {
    TlsFiles {
        ca: Some(pem("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.file(ca))),
        client_certificate: cert.map(|c| pem("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", pki.file(c))),
        client_key: key.map(|k| pem("OTEL_EXPORTER_OTLP_CLIENT_KEY", pki.file(k))),
    }
}

fn error(files: TlsFiles) -> String {
    OtlpTls::load(files)
        .expect_err("the files must be refused")
        .to_string()
}

#[test]
fn loads_a_ca_and_a_client_pair() {
    let pki = TestPki::new("unit");
    let tls = OtlpTls::load(files(
        &pki,
        "ca.crt",
        Some("client.crt"),
        Some("client.key"),
    ))
    .expect("valid files");
    let text = tls.describe();
    assert!(text.contains("1 CA certificate(s) from"), "{text}");
    assert!(
        text.contains("client.crt (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE)"),
        "{text}"
    );
    assert!(tls.config.client_auth_cert_resolver.has_certs());
    assert!(
        tls.config.alpn_protocols.is_empty(),
        "each transport sets its own ALPN"
    );
}

#[test]
fn without_a_ca_file_the_system_store_is_trusted() {
    let tls = OtlpTls::load(TlsFiles::default()).expect("the system store (ca-certificates)");
    assert!(tls.trust.contains("of the system"), "{}", tls.trust);
    assert!(!tls.config.client_auth_cert_resolver.has_certs());
}

#[test]
fn a_missing_file_is_named_with_its_origin() {
    let pki = TestPki::new("unit");
    let err = error(files(&pki, "nope.crt", None, None));
    assert!(err.contains("cannot read"), "{err}");
    assert!(
        err.contains("nope.crt (OTEL_EXPORTER_OTLP_CERTIFICATE)"),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn a_file_without_a_certificate_is_refused() {
    let pki = TestPki::new("unit");
    // A key where the CA should be.
    let err = error(files(&pki, "client.key", None, None));
    assert!(err.contains("holds no PEM certificate"), "{err}");

    let bad = pki.file("bad.crt");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = error(files(&pki, "bad.crt", None, None));
    assert!(
        err.contains("bad.crt") && err.contains("not valid PEM"),
        "{err}"
    );

    // Base64 that is not a certificate.
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = error(files(&pki, "bad.crt", None, None));
    assert!(
        err.contains("CA certificate in") && err.contains("not usable"),
        "{err}"
    );
}

#[test]
fn a_key_needs_its_certificate_and_the_reverse() {
    let pki = TestPki::new("unit");
    let err = error(files(&pki, "ca.crt", None, Some("client.key")));
    assert!(
        err.contains("client.key (OTEL_EXPORTER_OTLP_CLIENT_KEY) is set"),
        "{err}"
    );
    assert!(err.contains("without a client certificate"), "{err}");
    let err = error(files(&pki, "ca.crt", Some("client.crt"), None));
    assert!(err.contains("without its key"), "{err}");
}

#[test]
fn a_key_file_without_a_key_or_with_another_key_is_refused() {
    let pki = TestPki::new("unit");
    let err = error(files(
        &pki,
        "ca.crt",
        Some("client.crt"),
        Some("client.crt"),
    ));
    assert!(err.contains("holds no PEM private key"), "{err}");
    let err = error(files(
        &pki,
        "ca.crt",
        Some("client.crt"),
        Some("server.key"),
    ));
    assert!(err.contains("are not usable together"), "{err}");
}

#[test]
fn a_refused_handshake_is_found_under_the_wrappers() {
    use rustls::{AlertDescription, CertificateError};
    #[derive(Debug, thiserror::Error)]
    #[error("error trying to connect")]
    struct Wrapper(#[source] std::io::Error);

    let unknown = Wrapper(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
    ));
    let why = failure(&unknown).expect("a TLS failure");
    assert!(why.contains("certificate verification failed"), "{why}");
    assert!(why.contains("UnknownIssuer"), "{why}");

    let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
    let why = failure(&alert).expect("a TLS failure");
    assert!(why.contains("requires a client certificate"), "{why}");

    // What h2 passes on: the alert as text only.
    let text = Wrapper(std::io::Error::other(
        "connection error: received fatal alert: CertificateRequired",
    ));
    let why = failure(&text).expect("a TLS failure in the text");
    assert!(why.contains("requires a client certificate"), "{why}");
    assert!(
        why.ends_with("received fatal alert: CertificateRequired"),
        "{why}"
    );

    // What tonic passes on: a status whose message carries the certificate error.
    let status = tonic::Status::unavailable("invalid peer certificate: UnknownIssuer");
    let why = failure(&status).expect("a TLS failure in the status");
    assert!(why.contains("not signed by a trusted CA"), "{why}");
    assert!(
        why.ends_with("invalid peer certificate: UnknownIssuer"),
        "{why}"
    );

    let refused = Wrapper(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(failure(&refused), None, "not TLS: retryable");
}

#[test]
fn chain_says_each_cause_once() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] std::io::Error);
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Hides(#[source] std::io::Error);
    let io = || std::io::Error::other("connection reset");
    let e = Repeats(io());
    assert_eq!(chain(&e.to_string(), e.source()), "outer: connection reset");
    let e = Hides(io());
    assert_eq!(chain(&e.to_string(), e.source()), "outer: connection reset");
}
