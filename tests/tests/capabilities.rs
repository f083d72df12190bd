//! Root: the agent runs with exactly the capabilities the `DaemonSet` and the systemd unit grant
//! (`CAP_BPF`, `CAP_PERFMON`, `CAP_SYS_PTRACE`, `CAP_DAC_READ_SEARCH`, `CAP_SYS_RESOURCE`; every other one
//! dropped from the bounding set with capsh) and traces correctly; without one of the two it
//! cannot work without, it stops and names it.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use tracer_tests::harness::{
    HttpConn, Receiver, Service, agent_binary, free_port, random_hex, root_test,
};

/// Capability names 0..=40 in the kernel's numbering, as capsh spells them.
const ALL: [&str; 41] = [
    "cap_chown",
    "cap_dac_override",
    "cap_dac_read_search",
    "cap_fowner",
    "cap_fsetid",
    "cap_kill",
    "cap_setgid",
    "cap_setuid",
    "cap_setpcap",
    "cap_linux_immutable",
    "cap_net_bind_service",
    "cap_net_broadcast",
    "cap_net_admin",
    "cap_net_raw",
    "cap_ipc_lock",
    "cap_ipc_owner",
    "cap_sys_module",
    "cap_sys_rawio",
    "cap_sys_chroot",
    "cap_sys_ptrace",
    "cap_sys_pacct",
    "cap_sys_admin",
    "cap_sys_boot",
    "cap_sys_nice",
    "cap_sys_resource",
    "cap_sys_time",
    "cap_sys_tty_config",
    "cap_mknod",
    "cap_lease",
    "cap_audit_write",
    "cap_audit_control",
    "cap_setfcap",
    "cap_mac_override",
    "cap_mac_admin",
    "cap_syslog",
    "cap_wake_alarm",
    "cap_block_suspend",
    "cap_audit_read",
    "cap_perfmon",
    "cap_bpf",
    "cap_checkpoint_restore",
];

const DOCUMENTED: [&str; 5] = [
    "cap_bpf",
    "cap_perfmon",
    "cap_sys_ptrace",
    "cap_dac_read_search",
    "cap_sys_resource",
];

/// The agent as root with only `keep` left in its bounding set (hence in its effective set).
fn agent_with(keep: &[&str], args: &[String]) -> (Child, mpsc::Receiver<String>) {
    let last: usize = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let drop: Vec<&str> = ALL[..=last.min(ALL.len() - 1)]
        .iter()
        .copied()
        .filter(|c| !keep.contains(c))
        .collect();
    let mut child = Command::new("capsh")
        .arg(format!("--drop={}", drop.join(",")))
        .args(["--", "-c", "exec \"$0\" \"$@\""])
        .arg(agent_binary())
        .args(args)
        .env("NO_COLOR", "1")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capsh (libcap2-bin) runs the agent");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Lines until `agent ready` (Ok) or the agent's exit (Err with its log).
fn wait_ready(child: &mut Child, rx: &mpsc::Receiver<String>) -> Result<String, String> {
    let mut log = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("agent ready") {
            return Ok(log);
        }
    }
    let status = child.wait().expect("exit status");
    assert!(
        !status.success(),
        "the agent neither got ready nor failed:\n{log}"
    );
    Err(log)
}

#[test]
fn documented_capabilities_are_enough() {
    let _serial = root_test();
    let rx = Receiver::start_blocking();
    let svc = Service::python(free_port(), None, &[("OTEL_SERVICE_NAME", "caps-svc")]);
    let args: Vec<String> = [
        "--otlp-endpoint",
        &rx.grpc_endpoint(),
        "--pid",
        &svc.pid().to_string(),
        "--metrics-addr",
        &format!("127.0.0.1:{}", free_port()),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let (mut agent, lines) = agent_with(&DOCUMENTED, &args);
    let log = wait_ready(&mut agent, &lines)
        .unwrap_or_else(|log| panic!("agent failed with the documented capabilities:\n{log}"));
    let (t, s) = (random_hex(16), random_hex(8));
    let r = HttpConn::connect(svc.port()).request(
        "GET",
        "/hello",
        &[
            ("x-b3-traceid", t.as_str()),
            ("x-b3-spanid", s.as_str()),
            ("x-b3-sampled", "1"),
        ],
        None,
    );
    assert_eq!(r.status, 200);
    let spans = rx.wait_for_named(
        "SERVER span traced with the documented capabilities",
        |spans| spans.iter().any(|x| x.kind == "SERVER" && x.trace_id == t),
        Duration::from_secs(20),
    );
    let span = spans
        .iter()
        .find(|x| x.trace_id == t)
        .expect("waited for it");
    assert_eq!(span.parent_span_id, s);
    assert_eq!(
        span.service_name(),
        "caps-svc",
        "the service's environment was readable"
    );
    unsafe { libc::kill(i32::try_from(agent.id()).expect("pid"), libc::SIGTERM) };
    let status = agent.wait().expect("agent exit");
    assert!(
        status.success(),
        "agent exit after SIGTERM: {status}\n{log}"
    );
}

#[test]
fn a_missing_required_capability_is_named() {
    let _serial = root_test();
    for missing in ["cap_bpf", "cap_perfmon"] {
        let keep: Vec<&str> = DOCUMENTED
            .iter()
            .copied()
            .filter(|c| *c != missing)
            .collect();
        let (mut agent, lines) = agent_with(&keep, &["--metrics-addr".into(), "off".into()]);
        match wait_ready(&mut agent, &lines) {
            Ok(log) => {
                let _ = agent.kill();
                panic!("the agent started without {missing}:\n{log}");
            }
            Err(log) => {
                let name = missing.to_uppercase();
                assert!(log.contains(&name), "the error must name {name}:\n{log}");
                assert!(
                    log.contains("setcap") || log.contains("sudo"),
                    "and say how to fix it:\n{log}"
                );
            }
        }
    }
}
