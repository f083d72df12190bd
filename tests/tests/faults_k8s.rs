//! Root: the pod watch loses the API server. Two real services run in cgroups shaped like
//! containerd containers (so the agent maps them to pods by container id, as on a node); a fake
//! API server (`tracer_tests::kube_api`) serves the pods of a node, first only pod-a.
//!
//! While the API server is away the agent keeps running, keeps the pod metadata it had (spans of
//! pod-a's process still name pod-a), counts the failed calls (`tracer_k8s_watch_errors_total`)
//! and retries with backoff (a handful of calls in several seconds, not a busy loop). When the
//! API server is back on the same address with pod-b added, the agent lists again (its watch
//! position is gone: 410), and pod-b's process gets its pod on its next spans.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracer_tests::harness::{
    Agent, Receiver, Service, free_port, get_traced, random_hex, root_test,
};
use tracer_tests::kube_api::{FakeApi, kubeconfig, pod};

const NODE: &str = "faults-node";
const WAIT: Duration = Duration::from_secs(30);
/// How long the API server stays away.
const OUTAGE: Duration = Duration::from_secs(4);

/// A service moved into a cgroup v2 directory `tracer-faults-<rand>/cri-containerd-<id>.scope`,
/// as containerd lays out a container; on drop the service is stopped, then the cgroup removed.
struct Container {
    svc: Option<Service>,
    id: String,
    dir: PathBuf,
}

impl Container {
    fn new(parent: &Path, svc: Service) -> Self {
        let pid = svc.pid();
        let id = random_hex(32);
        let dir = parent.join(format!("cri-containerd-{id}.scope"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("creating the cgroup {}: {e}", dir.display()));
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving pid {pid} into {}: {e}", dir.display()));
        Self {
            svc: Some(svc),
            id,
            dir,
        }
    }

    fn svc(&self) -> &Service {
        self.svc
            .as_ref()
            .expect("the service lives as long as its container")
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killed and reaped first: a cgroup with a process in it cannot be removed.
        drop(self.svc.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// The cgroup v2 mount point (hybrid hosts have it at /sys/fs/cgroup/unified).
fn cgroup2_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("no cgroup v2 hierarchy mounted: the agent's write side needs it too")
}

/// `k8s.pod.name` of the SERVER span of a fresh request to `svc` ("" if the span has none).
fn pod_of_next_span(rx: &Receiver, svc: &Service, what: &str) -> String {
    let (trace, r) = get_traced(svc.port(), "/hello");
    assert_eq!(r.status, 200, "{what}: GET /hello");
    let spans = rx.wait_for_named(
        &format!("{what}: the SERVER span"),
        |_| rx.spans_of_trace(&trace).iter().any(|s| s.kind == "SERVER"),
        WAIT,
    );
    let span = spans
        .iter()
        .find(|s| s.trace_id == trace && s.kind == "SERVER")
        .expect("waited for");
    span.resource
        .get("k8s.pod.name")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Polls the counter `name` until `ok` holds; returns its value.
fn wait_counter(agent: &mut Agent, name: &str, ok: impl Fn(u64) -> bool, what: &str) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            agent.is_running(),
            "{what}: the agent exited; output:\n{}",
            agent.output()
        );
        let v = agent.counter(name);
        if ok(v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {name} is {v} after {WAIT:?}\n{}\nagent output:\n{}",
            agent.metrics(),
            agent.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn pod_watch_survives_losing_the_api_server() {
    let _serial = root_test();
    let parent = cgroup2_root().join(format!("tracer-faults-{}", random_hex(4)));
    let rx = Receiver::start_blocking();
    let ca = Container::new(&parent, Service::python(free_port(), None, &[]));
    let cb = Container::new(&parent, Service::python(free_port(), None, &[]));
    let (a, b) = (ca.svc(), cb.svc());
    let pod_a = pod(
        "pod-a",
        "00000000-0000-0000-0000-00000000000a",
        NODE,
        &ca.id,
    );
    let pod_b = pod(
        "pod-b",
        "00000000-0000-0000-0000-00000000000b",
        NODE,
        &cb.id,
    );

    let api = FakeApi::start(0, NODE, vec![pod_a.clone()], 1);
    let port = api.port();
    let dir = std::env::temp_dir().join(format!("tracer-faults-kube-{}", random_hex(4)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("kubeconfig");
    kubeconfig(&config, port);
    let config_str = config.to_string_lossy().into_owned();
    let mut agent = Agent::start_for_with_env(
        &rx,
        "grpc",
        &[a.pid(), b.pid()],
        &["--kubernetes", "on", "--node-name", NODE],
        &[("KUBECONFIG", &config_str)],
    );
    wait_counter(&mut agent, "tracer_k8s_pods", |n| n == 1, "initial list");
    assert_eq!(pod_of_next_span(&rx, a, "before the outage"), "pod-a");

    drop(api);
    let lost = Instant::now();
    let errors = wait_counter(
        &mut agent,
        "tracer_k8s_watch_errors_total",
        |n| n >= 2,
        "the API server is gone: failed calls counted",
    );
    assert_eq!(
        pod_of_next_span(&rx, a, "during the outage"),
        "pod-a",
        "the last known pod metadata is kept while the API server is away"
    );
    assert_eq!(
        pod_of_next_span(&rx, b, "during the outage"),
        "",
        "pod-b is not known yet"
    );
    while lost.elapsed() < OUTAGE {
        assert!(agent.is_running(), "the agent exited during the outage");
        std::thread::sleep(Duration::from_millis(200));
    }
    let errors_after = agent.counter("tracer_k8s_watch_errors_total");
    assert!(
        errors_after <= 10,
        "retries must back off: {errors_after} failed calls in {OUTAGE:?} (first 2 after {:?})",
        lost.elapsed()
    );
    assert!(errors_after >= errors, "the error counter only grows");
    assert_eq!(
        agent.counter("tracer_k8s_pods"),
        1,
        "the pods known stay known during the outage"
    );

    // Back on the same address, with pod-b added (and a newer resource version).
    let api = FakeApi::start(port, NODE, vec![pod_a, pod_b], 2);
    wait_counter(
        &mut agent,
        "tracer_k8s_pods",
        |n| n == 2,
        "the API server is back with pod-b",
    );
    assert!(
        api.calls().iter().any(|(_, uri)| !uri.contains("watch=")),
        "the agent lists again after the API server came back: {:?}",
        api.calls()
    );
    assert_eq!(
        pod_of_next_span(&rx, b, "after the API server came back"),
        "pod-b",
        "pod-b's process gets its pod once the API server tells about it"
    );
    assert_eq!(pod_of_next_span(&rx, a, "after the outage"), "pod-a");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
