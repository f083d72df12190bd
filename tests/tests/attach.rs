//! Root: the socket-level capture (`--capture socket`) and every socket-tuple family of the
//! syscall capture (`--attach`) either produce correct spans on this kernel, with the peer's real
//! port from the kernel's socket (also for a connection accepted before the agent started, whose
//! peer only the tuple can tell), or refuse to start with a message saying it is not available
//! here. `auto` and `tracepoint` must work everywhere. The kernel matrix (`cargo xtask vm-test`)
//! runs the same families on other kernels.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use tracer_tests::harness::{
    Agent, HttpConn, Receiver, Service, agent_binary, free_port, random_hex, root_test,
};

/// Each family and the agent flag that forces it.
const FAMILIES: [(&str, &str); 7] = [
    ("auto", "--attach"),
    ("socket", "--capture"),
    ("file-table", "--attach"),
    ("fentry", "--attach"),
    ("tp-btf", "--attach"),
    ("kprobe", "--attach"),
    ("tracepoint", "--attach"),
];
const WAIT: Duration = Duration::from_secs(20);

/// Starts the agent with `flag family` and reports whether it got ready, or the error it
/// exited with.
fn probe(flag: &str, family: &str, pid: u32) -> Result<String, String> {
    let mut child = Command::new(agent_binary())
        .args([
            flag,
            family,
            "--pid",
            &pid.to_string(),
            "--stdout",
            "off",
            "--metrics-addr",
            "off",
        ])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tracer-agent");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("agent ready") {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(line);
        }
    }
    let status = child.wait().expect("agent exit status");
    assert!(
        !status.success(),
        "{flag} {family}: agent neither got ready nor failed:\n{log}"
    );
    Err(log)
}

#[test]
fn every_attach_family_works_or_says_it_is_unavailable() {
    let _serial = root_test();
    let svc = Service::python(free_port(), None, &[]);
    let mut worked = Vec::new();
    for (family, flag) in FAMILIES {
        match probe(flag, family, svc.pid()) {
            Err(log) => {
                assert!(
                    family != "auto" && family != "tracepoint",
                    "{flag} {family} must work on every kernel:\n{log}"
                );
                assert!(
                    log.contains(&format!("{flag} {family} is not available on this kernel")),
                    "{flag} {family} failed without saying why:\n{log}"
                );
                println!("{flag} {family}: not available here");
            }
            Ok(ready) => {
                println!("{flag} {family}: {ready}");
                // A tuple family belongs to the syscall capture; auto may take either.
                let socket = ready.contains("capture=socket");
                if family != "auto" {
                    assert_eq!(
                        socket,
                        family == "socket",
                        "{flag} {family}: the plan names the wrong capture: {ready}"
                    );
                }
                check_spans(flag, family, &svc);
                worked.push(family);
            }
        }
    }
    println!("families working on this kernel: {worked:?}");
}

/// Spans under `flag family`: right ids and the peer port the client really used.
fn check_spans(flag: &str, family: &str, svc: &Service) {
    let rx = Receiver::start_blocking();
    // Accepted before the agent runs: no accept to learn the peer from, only the tuple.
    let mut early = HttpConn::connect(svc.port());
    let r = early.request("GET", "/hello", &[], None);
    assert_eq!(r.status, 200, "a first request before the agent starts");
    let _agent = Agent::start_for(&rx, "grpc", &[svc.pid()], &[flag, family]);
    // The server's thread was already waiting in a read of this connection when the agent
    // attached: that read's entry was never seen, so the request it returns is not followed
    // (its response is counted as an orphan). The next one is.
    assert_eq!(early.request("GET", "/hello", &[], None).status, 200);
    let mut conn = HttpConn::connect(svc.port());
    for (which, conn) in [("new", &mut conn), ("older than the agent", &mut early)] {
        let (t, s) = (random_hex(16), random_hex(8));
        let headers = [
            ("x-b3-traceid", t.as_str()),
            ("x-b3-spanid", s.as_str()),
            ("x-b3-sampled", "1"),
        ];
        let r = conn.request("GET", "/hello", &headers, None);
        assert_eq!(r.status, 200);
        let what = format!("{flag} {family}, {which} connection");
        let spans = rx.wait_for_named(
            &format!("{what}: SERVER span of trace {t}"),
            |spans| spans.iter().any(|x| x.kind == "SERVER" && x.trace_id == t),
            WAIT,
        );
        let span = spans
            .iter()
            .find(|x| x.kind == "SERVER" && x.trace_id == t)
            .expect("waited for it");
        assert_eq!(span.parent_span_id, s, "{what}: parent");
        assert_eq!(span.attr_str("url.path"), Some("/hello"), "{what}");
        assert_eq!(
            span.attr_i64("network.peer.port"),
            Some(i64::from(conn.local_port())),
            "{what}: the peer port must be the client's real port: {span:?}"
        );
        assert_eq!(
            span.attr_str("network.peer.address"),
            Some("127.0.0.1"),
            "{what}"
        );
    }
}
