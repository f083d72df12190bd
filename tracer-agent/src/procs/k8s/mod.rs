//! Kubernetes metadata: which pod a traced process runs in, and whether its pod is selected.
//!
//! A background watch keeps a [`PodStore`] of the pods on this node (field selector on the node
//! name, so a node agent never holds the whole cluster). Processes are matched to pods by the
//! container id in their cgroup ([`cgroup`]). Lookups never wait for the API server: a span
//! whose pod is not known yet goes out with what is known, and later spans get the pod.

pub mod cgroup;
pub mod watch;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
};

use k8s_openapi::api::core::v1::Pod;

use self::cgroup::CgroupInfo;
use crate::trace::span::AttrValue;

/// Most pods kept (a node runs about a hundred; this only guards against a runaway selector).
const MAX_PODS: usize = 10_000;

/// What the tracer needs of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Controller owner: (kind, name).
    pub owner: Option<(String, String)>,
    /// (container id without runtime scheme, container name).
    pub containers: Vec<(String, String)>,
}

impl PodMeta {
    #[must_use]
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let owner = meta.owner_references.as_ref().and_then(|owners| {
            owners
                .iter()
                .find(|o| o.controller == Some(true))
                .or_else(|| owners.first())
                .map(|o| (o.kind.clone(), o.name.clone()))
        });
        let mut containers = Vec::new();
        if let Some(status) = &pod.status {
            let all = [
                &status.container_statuses,
                &status.init_container_statuses,
                &status.ephemeral_container_statuses,
            ];
            for statuses in all.into_iter().flatten() {
                for c in statuses {
                    if let Some(id) = &c.container_id {
                        containers
                            .push((cgroup::strip_runtime_scheme(id).to_owned(), c.name.clone()));
                    }
                }
            }
        }
        Some(Self {
            name: meta.name.clone()?,
            namespace: meta
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_owned()),
            uid: meta.uid.clone()?,
            node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            labels: meta.labels.clone().unwrap_or_default(),
            owner,
            containers,
        })
    }

    /// `app.kubernetes.io/name`, else `app`: what the workload calls itself.
    #[must_use]
    pub fn service_name(&self) -> Option<&str> {
        self.labels
            .get("app.kubernetes.io/name")
            .or_else(|| self.labels.get("app"))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Resource attributes after the OpenTelemetry Kubernetes semantic conventions.
    #[must_use]
    pub fn attributes(&self, container_id: Option<&str>) -> Vec<(String, AttrValue)> {
        let mut attrs = vec![
            (
                "k8s.pod.name".to_owned(),
                AttrValue::from(self.name.clone()),
            ),
            ("k8s.pod.uid".to_owned(), AttrValue::from(self.uid.clone())),
            (
                "k8s.namespace.name".to_owned(),
                AttrValue::from(self.namespace.clone()),
            ),
        ];
        if let Some(node) = &self.node {
            attrs.push(("k8s.node.name".to_owned(), AttrValue::from(node.clone())));
        }
        if let Some(name) = container_id
            .and_then(|id| self.containers.iter().find(|(c, _)| c == id))
            .map(|(_, name)| name)
        {
            attrs.push((
                "k8s.container.name".to_owned(),
                AttrValue::from(name.clone()),
            ));
        }
        if let Some((kind, name)) = &self.owner {
            for (key, value) in workload(kind, name, &self.labels) {
                attrs.push((key.to_owned(), AttrValue::from(value)));
            }
        }
        attrs
    }
}

/// The workload attributes implied by a pod's controller. A `ReplicaSet` made by a Deployment is
/// named `<deployment>-<pod-template-hash>`; the hash is also the pod's label.
fn workload(
    kind: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<(&'static str, String)> {
    match kind {
        "ReplicaSet" => {
            let mut out = vec![("k8s.replicaset.name", name.to_owned())];
            if let Some(deployment) = labels
                .get("pod-template-hash")
                .and_then(|hash| name.strip_suffix(&format!("-{hash}")))
            {
                out.push(("k8s.deployment.name", deployment.to_owned()));
            }
            out
        }
        "StatefulSet" => vec![("k8s.statefulset.name", name.to_owned())],
        "DaemonSet" => vec![("k8s.daemonset.name", name.to_owned())],
        "Job" => vec![("k8s.job.name", name.to_owned())],
        _ => Vec::new(),
    }
}

#[derive(Default)]
struct Inner {
    by_uid: HashMap<String, Arc<PodMeta>>,
    by_container: HashMap<String, Arc<PodMeta>>,
}

impl Inner {
    fn insert(&mut self, meta: PodMeta) {
        self.remove(&meta.uid);
        let meta = Arc::new(meta);
        for (id, _) in &meta.containers {
            self.by_container.insert(id.clone(), meta.clone());
        }
        self.by_uid.insert(meta.uid.clone(), meta);
    }

    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.by_uid.remove(uid) {
            for (id, _) in &old.containers {
                self.by_container.remove(id);
            }
        }
    }
}

/// The pods of this node, shared by the process selection and the span resources.
#[derive(Default)]
pub struct PodStore {
    inner: RwLock<Inner>,
    /// Bumped on every change, so caches know when to look again.
    generation: AtomicU64,
    synced: AtomicBool,
    pub dropped: AtomicU64,
}

impl PodStore {
    fn changed(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    pub fn apply(&self, pod: &Pod) {
        let Some(meta) = PodMeta::from_pod(pod) else {
            return;
        };
        let mut inner = self.inner.write().expect("pod store lock");
        if inner.by_uid.len() >= MAX_PODS && !inner.by_uid.contains_key(&meta.uid) {
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        inner.insert(meta);
        drop(inner);
        self.changed();
    }

    pub fn delete(&self, pod: &Pod) {
        if let Some(uid) = &pod.metadata.uid {
            self.inner.write().expect("pod store lock").remove(uid);
            self.changed();
        }
    }

    /// A full relist: the store becomes exactly these pods.
    pub fn replace_all(&self, pods: &[Pod]) {
        let mut fresh = Inner::default();
        for meta in pods.iter().filter_map(PodMeta::from_pod).take(MAX_PODS) {
            fresh.insert(meta);
        }
        *self.inner.write().expect("pod store lock") = fresh;
        self.synced.store(true, Relaxed);
        self.changed();
    }

    /// The pod of a process, by container id, else by pod uid.
    #[must_use]
    pub fn lookup(&self, cg: &CgroupInfo) -> Option<Arc<PodMeta>> {
        let inner = self.inner.read().expect("pod store lock");
        cg.container_id
            .as_ref()
            .and_then(|id| inner.by_container.get(id))
            .or_else(|| cg.pod_uid.as_ref().and_then(|uid| inner.by_uid.get(uid)))
            .cloned()
    }

    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    #[must_use]
    pub fn synced(&self) -> bool {
        self.synced.load(Relaxed)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.read().expect("pod store lock").by_uid.len()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("pod selector `{0}`: expected comma-separated key=value, key!=value, key or !key")]
pub struct SelectorError(String);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// Which pods are traced: by namespace (the equivalent of adding a namespace to the mesh) and
/// by a label selector in the equality-based Kubernetes syntax.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFilter {
    namespaces: Vec<String>,
    exclude_namespaces: Vec<String>,
    selector: Vec<Requirement>,
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

impl PodFilter {
    pub fn new(
        namespaces: Vec<String>,
        exclude_namespaces: Vec<String>,
        selector: &str,
    ) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in selector.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let err = || SelectorError(selector.to_owned());
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(k.trim().to_owned())
            } else {
                Requirement::Exists(part.to_owned())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if !valid_key(key) || part.contains(' ') {
                return Err(err());
            }
            reqs.push(req);
        }
        Ok(Self {
            namespaces,
            exclude_namespaces,
            selector: reqs,
        })
    }

    #[must_use]
    pub fn matches(&self, pod: &PodMeta) -> bool {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&pod.namespace) {
            return false;
        }
        if self.exclude_namespaces.contains(&pod.namespace) {
            return false;
        }
        self.selector.iter().all(|r| match r {
            Requirement::Equals(k, v) => pod.labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => pod.labels.get(k) != Some(v),
            Requirement::Exists(k) => pod.labels.contains_key(k),
            Requirement::Absent(k) => !pod.labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests;
