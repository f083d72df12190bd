use std::collections::HashMap;

use clap::Parser as _;

use super::*;

fn resolve(args: &[&str], vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let cli =
        Cli::try_parse_from(std::iter::once("tracer-agent").chain(args.iter().copied())).unwrap();
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
fn otlp_headers_compression_and_timeout_from_environment() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317");
    let o = resolve(&[], &[endpoint]).unwrap().otlp.unwrap();
    assert!(o.headers.is_empty());
    assert_eq!(o.compression, OtlpCompression::None);
    assert_eq!(o.timeout, Duration::from_secs(10));

    let c = resolve(
        &[],
        &[
            endpoint,
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=a%20b, x-tenant = t1 ,bad",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ],
    )
    .unwrap();
    let o = c.otlp.as_ref().unwrap();
    assert_eq!(
        o.headers,
        [
            ("api-key".to_owned(), "a b".to_owned()),
            ("x-tenant".to_owned(), "t1".to_owned())
        ]
    );
    assert_eq!(o.compression, OtlpCompression::Gzip);
    assert_eq!(o.timeout, Duration::from_millis(2500));
    // Header values are often credentials: --check-config shows their names only.
    let described = c.describe();
    assert!(
        described.contains("headers [api-key,x-tenant]"),
        "{described}"
    );
    assert!(!described.contains("a b"), "{described}");

    // The traces-specific variables win.
    let o = resolve(
        &[],
        &[
            endpoint,
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "a=traces"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "3000"),
        ],
    )
    .unwrap()
    .otlp
    .unwrap();
    assert_eq!(o.headers, [("a".to_owned(), "traces".to_owned())]);
    assert_eq!(o.compression, OtlpCompression::None);
    assert_eq!(o.timeout, Duration::from_secs(3));

    let err = resolve(
        &[],
        &[endpoint, ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd")],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=`zstd` is not supported: use gzip or none"
    );
    let err = resolve(&[], &[endpoint, ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "OTEL_EXPORTER_OTLP_TIMEOUT=`10s` is not a number");
}

#[test]
fn errors_are_explained() {
    assert!(matches!(
        resolve(&[], &[("OTEL_TRACES_EXPORTER", "otlp")]),
        Err(ConfigError::NoEndpoint)
    ));
    assert!(matches!(
        resolve(&["--otlp-endpoint", "ftp://x"], &[]),
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
fn socket_capture_excludes_the_write_side_and_tuple_families() {
    let c = resolve(&[], &[]).unwrap();
    assert_eq!(c.capture, CaptureMode::Auto);
    assert!(c.describe().contains("capture: Auto"), "{}", c.describe());
    let c = resolve(&["--capture", "socket", "--pid", "7"], &[]).unwrap();
    assert_eq!(c.capture, CaptureMode::Socket);
    let err = resolve(
        &[
            "--capture",
            "socket",
            "--pid",
            "7",
            "--write-mode",
            "rewrite",
        ],
        &[],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::SocketCapture("--write-mode rewrite/inject", _)
        ),
        "{err}"
    );
    assert!(matches!(
        resolve(&["--capture", "socket", "--attach", "kprobe"], &[]),
        Err(ConfigError::SocketCapture("--attach", _))
    ));
    // Auto stays valid with both: it then keeps the syscall tracepoints.
    assert!(resolve(&["--pid", "7", "--write-mode", "inject"], &[]).is_ok());
    let c = resolve(&["--capture", "syscalls"], &[]).unwrap();
    assert_eq!(c.capture, CaptureMode::Syscalls);
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

mod tls {
    use tracer_test_support::pki::TestPki;

    use super::*;

    fn path(pki: &TestPki, name: &str) -> String {
        pki.file(name).display().to_string()
    }

    #[test]
    fn https_endpoint_with_ca_and_client_pair() {
        let pki = TestPki::new("config");
        let (ca, cert, key) = (
            path(&pki, "ca.crt"),
            path(&pki, "client.crt"),
            path(&pki, "client.key"),
        );
        for protocol in ["grpc", "http/protobuf"] {
            let c = resolve(
                &["--otlp-protocol", protocol],
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
                    ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
                    ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert),
                    ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key),
                ],
            )
            .unwrap();
            let o = c.otlp.as_ref().unwrap();
            assert!(o.endpoint.starts_with("https://c:4318"), "{}", o.endpoint);
            let tls = o.tls.as_ref().expect("TLS for https://");
            assert_eq!(
                tls.files.ca.as_ref().unwrap().path.display().to_string(),
                ca
            );
            let described = c.describe();
            assert!(
                described.contains("TLS trusting 1 CA certificate(s)"),
                "{described}"
            );
            assert!(
                described.contains("client.key (OTEL_EXPORTER_OTLP_CLIENT_KEY)"),
                "{described}"
            );
        }
    }

    #[test]
    fn traces_variables_and_flags_win() {
        let pki = TestPki::new("config");
        let ca = path(&pki, "ca.crt");
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317");
        // The signal-specific variable is the one read: the generic one's missing file is not.
        let c = resolve(
            &[],
            &[
                endpoint,
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/generic.crt"),
                ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", &ca),
            ],
        )
        .unwrap();
        let file = c.otlp.unwrap().tls.unwrap().files.ca.unwrap();
        assert_eq!(file.origin, "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE");
        // And its own errors name it.
        let err = resolve(
            &[],
            &[
                endpoint,
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                    "/nonexistent/t.crt",
                ),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/t.crt (OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE)"),
            "{err}"
        );
        // The flag wins over both.
        let c = resolve(
            &["--otlp-certificate", &ca],
            &[
                endpoint,
                (
                    "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                    "/nonexistent/t.crt",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            c.otlp.unwrap().tls.unwrap().files.ca.unwrap().origin,
            "--otlp-certificate"
        );
    }

    #[test]
    fn tls_files_with_a_clear_text_endpoint_are_refused() {
        let pki = TestPki::new("config");
        let err = resolve(
            &["--otlp-endpoint", "http://c:4317"],
            &[("OTEL_EXPORTER_OTLP_CERTIFICATE", &path(&pki, "ca.crt"))],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::TlsWithClearText(..)), "{err}");
        let err = err.to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{err}");
        assert!(err.contains("use an https:// endpoint"), "{err}");
    }

    #[test]
    fn a_key_without_a_certificate_is_refused() {
        let pki = TestPki::new("config");
        let err = resolve(
            &["--otlp-endpoint", "https://c:4317"],
            &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", &path(&pki, "client.key"))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("OTLP TLS: the client key"), "{err}");
        assert!(err.contains("without a client certificate"), "{err}");
    }

    #[test]
    fn grpc_without_scheme_follows_insecure() {
        let c = resolve(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317")]).unwrap();
        let o = c.otlp.unwrap();
        assert_eq!(o.endpoint, "https://c:4317");
        assert!(o.tls.is_some());
        for (vars, args) in [
            (vec![("OTEL_EXPORTER_OTLP_INSECURE", "true")], vec![]),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_INSECURE", "false"),
                    ("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "TRUE"),
                ],
                vec![],
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_INSECURE", "false")],
                vec!["--otlp-insecure"],
            ),
        ] {
            let mut vars = vars;
            vars.push(("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"));
            let o = resolve(&args, &vars).unwrap().otlp.unwrap();
            assert_eq!(o.endpoint, "http://c:4317", "{vars:?} {args:?}");
            assert!(o.tls.is_none());
        }
        // Insecure says nothing about an endpoint with a scheme.
        let o = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
                ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
            ],
        )
        .unwrap()
        .otlp
        .unwrap();
        assert!(o.tls.is_some());
        let err = resolve(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4317"),
                ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "OTEL_EXPORTER_OTLP_INSECURE=`yes` is not true or false"
        );
        // http/protobuf needs a URL.
        assert!(matches!(
            resolve(
                &["--otlp-protocol", "http/protobuf"],
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]
            ),
            Err(ConfigError::Endpoint(_))
        ));
    }
}
