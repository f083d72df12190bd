//! Root: `--kernel-log` brings the kernel programs' own diagnostics (aya-log) into the agent's
//! log, through `log` and `tracing`: why a socket was not taken for HTTP/1 (its first bytes),
//! and why an outgoing request head was left unedited (the write side's reason).

use std::io::Read as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tracer_tests::harness::{Agent, Service, free_port, python_script, random_hex, root_test};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn kernel_log_says_why_a_socket_is_not_traced_and_why_a_head_is_left_unedited() {
    let _serial = root_test();
    let server = Service::python(free_port(), None, &[]);
    let go = std::env::temp_dir().join(format!("kernel-log-go-{}", random_hex(4)));
    let mut client = python_script("kernel_log_client.py")
        .arg(server.port().to_string())
        .arg(&go)
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the kernel-log client");
    let pid = client.id();
    let agent = Agent::start([
        "--pid",
        &pid.to_string(),
        "--write-mode",
        "rewrite",
        "--kernel-log",
        "--metrics-addr",
        "off",
        "--stdout",
        "off",
    ]);
    assert!(
        agent
            .output()
            .contains("--kernel-log: the kernel programs' diagnostics follow"),
        "the agent says the kernel log is on:\n{}",
        agent.output()
    );
    // The client connects only now, so its sockets pass the connect hook as a selected one's.
    std::fs::write(&go, b"go").expect("writing the go file");
    let deadline = Instant::now() + WAIT;
    while client.try_wait().expect("kernel-log client").is_none() {
        assert!(
            Instant::now() < deadline,
            "the kernel-log client did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&go);
    let mut answer = String::new();
    client
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut answer)
        .expect("reading the client");
    assert!(
        answer.starts_with("HTTP/1."),
        "the request without context was answered: {answer:?}"
    );

    let needles = [
        // The TLS bytes, as the kernel read them from the client's write.
        "first bytes 1603010200010001fc are no HTTP/1 request or status line, no HTTP/2 preface: not traced",
        // Rewrite mode and no context in the head: nothing to rewrite (WRITE_SKIP_NO_CONTEXT).
        "outgoing request head left unedited, reason 7",
    ];
    let deadline = Instant::now() + WAIT;
    let out = loop {
        let out = agent.output();
        if needles.iter().all(|n| out.contains(n)) {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel's diagnostics did not reach the agent's log within {WAIT:?}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for needle in needles {
        let line = out
            .lines()
            .find(|l| l.contains(needle))
            .expect("waited for");
        assert!(
            line.contains(&format!("pid {pid} ")),
            "the kernel names the client's process: {line}"
        );
        assert!(
            line.contains("INFO") && line.contains("tracer::"),
            "a log record of the kernel programs (target tracer::...), through tracing: {line}"
        );
    }
}
