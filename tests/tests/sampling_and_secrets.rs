//! Root: B3 sampling decisions are obeyed, and credentials never reach the collector.
//! The secrets test exports over OTLP HTTP/protobuf (the others use gRPC).

use std::time::Duration;

use tracer_tests::expect::{ServerSpan, has, only, padded};
use tracer_tests::harness::{
    Agent, HttpConn, Lang, Receiver, Service, free_port, random_hex, root_test,
};
use tracer_tests::{check, check_eq};

const WAIT: Duration = Duration::from_secs(20);

fn start_all() -> Vec<(Lang, Service)> {
    Lang::ALL
        .iter()
        .map(|l| (*l, l.start(free_port(), None, &[])))
        .collect()
}

#[test]
fn sampling_decisions_from_b3_are_obeyed() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let services = start_all();
    let pids: Vec<u32> = services.iter().map(|(_, s)| s.pid()).collect();
    let mut agent = Agent::start_for(&rx, "grpc", &pids, &[]);

    let mut dropped = Vec::new(); // (label, trace id as exported)
    let mut kept = Vec::new(); // (label, trace id, incoming span id)
    for (lang, svc) in &services {
        // One connection per service, so the sampled requests are seen after the unsampled ones.
        let mut conn = HttpConn::connect(svc.port());
        let mut send = |headers: &[(&str, &str)]| {
            assert_eq!(conn.request("GET", "/hello", headers, None).status, 200);
        };

        let (t, s) = (random_hex(16), random_hex(8));
        send(&[
            ("x-b3-traceid", &t),
            ("x-b3-spanid", &s),
            ("x-b3-sampled", "0"),
        ]);
        dropped.push((format!("{lang:?} x-b3-sampled: 0"), t));

        let (t64, s) = (random_hex(8), random_hex(8));
        send(&[("b3", &format!("{t64}-{s}-0"))]);
        dropped.push((format!("{lang:?} b3 single ...-0"), padded(&t64)));

        let (t, s) = (random_hex(16), random_hex(8));
        send(&[
            ("x-b3-traceid", &t),
            ("x-b3-spanid", &s),
            ("x-b3-flags", "1"),
        ]);
        kept.push((
            format!("{lang:?} x-b3-flags: 1 without x-b3-sampled"),
            t,
            s,
            *lang,
        ));

        let (t, s) = (random_hex(16), random_hex(8));
        send(&[
            ("x-b3-traceid", &t),
            ("x-b3-spanid", &s),
            ("x-b3-sampled", "1"),
        ]);
        kept.push((format!("{lang:?} x-b3-sampled: 1 (sent last)"), t, s, *lang));
    }

    rx.wait_for_named(
        "the debug and the sampled requests of every service",
        |spans| kept.iter().all(|(_, t, _, _)| has(spans, "SERVER", t)),
        WAIT,
    );
    // SIGTERM flushes whatever is still queued: anything not received now was never exported.
    let status = agent.stop();
    check!(
        &rx.spans(),
        status.is_some_and(|s| s.success()),
        "the agent must exit 0 on SIGTERM, got {status:?}"
    );
    let spans = rx.spans();
    for (label, t, s, lang) in &kept {
        let svc = &services.iter().find(|(l, _)| l == lang).unwrap().1;
        let span = only(
            &spans,
            &format!("SERVER span of trace {t} ({label})"),
            |x| x.kind == "SERVER" && &x.trace_id == t,
        );
        ServerSpan {
            trace_id: t,
            parent: s,
            method: "GET",
            path: "/hello",
            status: 200,
            source: "b3multi",
            pid: svc.pid(),
            port: svc.port(),
        }
        .check(&spans, span, label);
    }
    for (label, t) in &dropped {
        check!(
            &spans,
            !spans.iter().any(|x| &x.trace_id == t),
            "{label}: no span of trace {t} may be exported"
        );
    }
}

#[test]
fn credentials_are_never_exported() {
    const SECRETS: [&str; 4] = [
        "s3cr3t-token-value",
        "s3cr3t-cookie",
        "s3cr3t-set-cookie",
        "s3cr3t-proxy-auth",
    ];
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let services = start_all();
    let pids: Vec<u32> = services.iter().map(|(_, s)| s.pid()).collect();
    let mut agent = Agent::start_for(&rx, "http/protobuf", &pids, &[]);

    let mut traces = Vec::new();
    for (lang, svc) in &services {
        for (method, path) in [("GET", "/setcookie"), ("POST", "/echo")] {
            let (t, s) = (random_hex(16), random_hex(8));
            let headers = [
                ("x-b3-traceid", t.as_str()),
                ("x-b3-spanid", s.as_str()),
                ("x-b3-sampled", "1"),
                ("Authorization", "Bearer s3cr3t-token-value"),
                ("Cookie", "session=s3cr3t-cookie"),
                ("Proxy-Authorization", "Basic s3cr3t-proxy-auth"),
            ];
            let body = (method == "POST").then_some(b"not a secret".as_slice());
            let r = HttpConn::connect(svc.port()).request(method, path, &headers, body);
            assert_eq!(r.status, 200, "{lang:?} {method} {path}");
            if path == "/setcookie" {
                assert_eq!(
                    r.header("set-cookie"),
                    Some("id=s3cr3t-set-cookie"),
                    "{lang:?}: the service sets the cookie"
                );
            }
            traces.push((format!("{lang:?} {method} {path}"), t, s, path, method, svc));
        }
    }

    rx.wait_for_named(
        "a SERVER span for every request carrying credentials",
        |spans| traces.iter().all(|(_, t, ..)| has(spans, "SERVER", t)),
        WAIT,
    );
    let status = agent.stop();
    let spans = rx.spans();
    check!(
        &spans,
        status.is_some_and(|s| s.success()),
        "the agent must exit 0 on SIGTERM, got {status:?}"
    );
    for (label, t, s, path, method, svc) in &traces {
        let span = only(
            &spans,
            &format!("SERVER span of trace {t} ({label})"),
            |x| x.kind == "SERVER" && &x.trace_id == t,
        );
        ServerSpan {
            trace_id: t,
            parent: s,
            method,
            path,
            status: 200,
            source: "b3multi",
            pid: svc.pid(),
            port: svc.port(),
        }
        .check(&spans, span, label);
    }
    // The negative check only means something if the raw bytes hold the span contents.
    check!(
        &spans,
        rx.raw_contains(b"/setcookie"),
        "the receiver's raw export bytes must contain url.path /setcookie"
    );
    let output = agent.output();
    for secret in SECRETS {
        check!(
            &spans,
            !rx.raw_contains(secret.as_bytes()),
            "{secret:?} reached the collector (raw OTLP bytes)"
        );
        check!(
            &spans,
            !output.contains(secret),
            "{secret:?} appears in the agent's own output:\n{output}"
        );
        let in_attrs = spans.iter().find(|x| {
            x.attributes
                .values()
                .chain(x.resource.values())
                .any(|v| v.to_string().contains(secret))
        });
        check_eq!(
            &spans,
            in_attrs.map(ToString::to_string),
            None::<String>,
            "span carrying {secret:?}"
        );
    }
}
