//! Root: nothing the agent prints shows a credential that a traced request carried, with its
//! most talkative settings: `RUST_LOG=trace` (every captured syscall is logged), `--kernel-log`,
//! and spans on stdout as trees and as JSON lines, while it also exports over OTLP. The request
//! carries `Authorization`, `Cookie`, `Proxy-Authorization`, `X-Api-Key` and a password in its
//! query string, each a fresh random value; the traced service forwards the query to a second
//! one (a CLIENT span with `url.full`), and a response sets a cookie. Positive control: the
//! spans arrived (with the password's parameter name and `REDACTED`), the trace log logged the
//! request, and the console printed the trace.

use std::time::{Duration, Instant};

use tracer_tests::harness::{Agent, Receiver, Service, free_port, get, random_hex, root_test};

const WAIT: Duration = Duration::from_secs(20);
/// Set by tests/services/python/server.py on `/setcookie`.
const SET_COOKIE_VALUE: &str = "s3cr3t-set-cookie";

fn nothing_printed_shows_a_credential(stdout: &str) {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let downstream = Service::python(free_port(), None, &[]);
    let svc = Service::python(free_port(), Some(&downstream.url()), &[]);
    let (pa, pb) = (svc.pid().to_string(), downstream.pid().to_string());
    let mut agent = Agent::start_with_env(
        [
            "--otlp-endpoint",
            &rx.grpc_endpoint(),
            "--stdout",
            stdout,
            "--kernel-log",
            "--metrics-addr",
            "off",
            "--pid",
            &pa,
            "--pid",
            &pb,
        ],
        &[("RUST_LOG", "trace")],
    );
    let secrets: Vec<(&str, String)> = ["bearer", "cookie", "proxy", "apikey", "password"]
        .into_iter()
        .map(|what| (what, format!("{what}{}", random_hex(12))))
        .collect();
    let secret = |what: &str| {
        secrets
            .iter()
            .find(|(w, _)| *w == what)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    let (t, s) = (random_hex(16), random_hex(8));
    let (bearer, cookie, proxy) = (
        format!("Bearer {}", secret("bearer")),
        format!("session={}", secret("cookie")),
        format!("Basic {}", secret("proxy")),
    );
    let headers = [
        ("x-b3-traceid", t.as_str()),
        ("x-b3-spanid", s.as_str()),
        ("x-b3-sampled", "1"),
        ("Authorization", bearer.as_str()),
        ("Cookie", cookie.as_str()),
        ("Proxy-Authorization", proxy.as_str()),
        ("X-Api-Key", secret("apikey")),
    ];
    let target = format!("/call/hello?password={}&page=2", secret("password"));
    assert_eq!(get(svc.port(), &target, &headers).status, 200);
    let (t2, s2) = (random_hex(16), random_hex(8));
    let set_cookie = [
        ("x-b3-traceid", t2.as_str()),
        ("x-b3-spanid", s2.as_str()),
        ("x-b3-sampled", "1"),
    ];
    assert_eq!(get(svc.port(), "/setcookie", &set_cookie).status, 200);

    check_spans(&rx, &t, &t2);
    // The console printed the traces (tree header or JSON field).
    let deadline = Instant::now() + WAIT;
    while !(agent.stdout_lines().iter().any(|l| l.contains(&t))
        && agent.stdout_lines().iter().any(|l| l.contains(&t2)))
    {
        assert!(
            Instant::now() < deadline,
            "the console never printed traces {t} and {t2}; output:\n{}",
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.stop();
    let output = agent.output();
    // The trace log was on and saw the request: its first line up to the query.
    assert!(
        output.contains("GET /call/hello"),
        "RUST_LOG=trace must log the captured request; output:\n{output}"
    );
    for (what, value) in &secrets {
        assert!(
            !output.contains(value.as_str()),
            "the agent printed the {what} secret {value}; output:\n{output}"
        );
        assert!(
            !rx.raw_contains(value.as_bytes()),
            "the {what} secret {value} reached the collector"
        );
    }
    assert!(
        !output.contains(SET_COOKIE_VALUE),
        "the agent printed a Set-Cookie value; output:\n{output}"
    );
    assert!(!rx.raw_contains(SET_COOKIE_VALUE.as_bytes()));
}

/// Positive control: all three spans of the first trace (t) and the span of the second (t2)
/// arrived, the password's parameter is there with its value redacted.
fn check_spans(rx: &Receiver, t: &str, t2: &str) {
    let spans = rx.wait_for_named(
        "SERVER, CLIENT and downstream SERVER spans of the request, and the /setcookie span",
        |spans| {
            spans.iter().filter(|s| s.trace_id == t).count() >= 3
                && spans.iter().any(|s| s.trace_id == t2)
        },
        WAIT,
    );
    let of_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == t).collect();
    let entry = of_trace
        .iter()
        .find(|s| s.kind == "SERVER" && s.attr_str("url.path") == Some("/call/hello"))
        .expect("the traced service's SERVER span");
    assert_eq!(
        entry.attr_str("url.query"),
        Some("password=REDACTED&page=2"),
        "{entry}"
    );
    let client = of_trace
        .iter()
        .find(|s| s.kind == "CLIENT")
        .expect("the CLIENT span of the forwarded request");
    assert!(
        client
            .attr_str("url.full")
            .is_some_and(|u| u.ends_with("/hello?password=REDACTED&page=2")),
        "{client}"
    );
}

#[test]
fn trace_log_and_console_tree_show_no_credentials() {
    nothing_printed_shows_a_credential("tree");
}

#[test]
fn trace_log_and_console_json_show_no_credentials() {
    nothing_printed_shows_a_credential("json");
}
