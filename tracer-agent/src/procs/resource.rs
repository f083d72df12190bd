//! Who a traced process is: the OpenTelemetry resource of its spans, read once from /proc.
//!
//! service.name comes from the process's own `OTEL_SERVICE_NAME`, else `service.name` in its
//! `OTEL_RESOURCE_ATTRIBUTES`, else its pod's `app.kubernetes.io/name` or `app` label, else its
//! command name. Entries are revalidated against the process start time so a recycled pid gets
//! a fresh resource, and rebuilt once the pod of a containerised process becomes known.

use std::{
    fs,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use super::k8s::{PodMeta, PodStore, cgroup};
use crate::idhash::IdMap;
use crate::trace::{
    sink::Resources,
    span::{AttrValue, Resource},
};

const REVALIDATE: Duration = Duration::from_secs(10);
const MAX_ENTRIES: usize = 8192;

struct Entry {
    start_time: Option<u64>,
    checked: Instant,
    resource: Arc<Resource>,
    /// Set when the process is in a container whose pod was not known yet: the store
    /// generation at build time, to rebuild once the store changes.
    awaiting_pod: Option<u64>,
}

pub struct ProcessCache {
    proc_root: PathBuf,
    host_name: String,
    entries: IdMap<u32, Entry>,
    pods: Option<Arc<PodStore>>,
}

impl ProcessCache {
    #[must_use]
    pub fn new(proc_root: PathBuf, host_name: String, pods: Option<Arc<PodStore>>) -> Self {
        Self {
            proc_root,
            host_name,
            entries: IdMap::default(),
            pods,
        }
    }

    pub fn resource(&mut self, pid: u32) -> Arc<Resource> {
        let now = Instant::now();
        let generation = self.pods.as_ref().map(|p| p.generation());
        if let Some(entry) = self.entries.get_mut(&pid) {
            // A process waiting for its pod is rebuilt as soon as the store changed: the pod may
            // be known now (the same process, so the start-time check below must not keep it).
            let pod_news = entry.awaiting_pod.is_some() && entry.awaiting_pod != generation;
            if !pod_news {
                if now.duration_since(entry.checked) < REVALIDATE {
                    return entry.resource.clone();
                }
                let start = start_time(&self.proc_root, pid);
                // A vanished process keeps its last resource: its last spans still need one.
                if start.is_none() || start == entry.start_time {
                    entry.checked = now;
                    return entry.resource.clone();
                }
            }
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries
                .retain(|_, e| now.duration_since(e.checked) < REVALIDATE);
        }
        let (resource, waiting) =
            read_resource(&self.proc_root, pid, &self.host_name, self.pods.as_deref());
        let resource = Arc::new(resource);
        self.entries.insert(
            pid,
            Entry {
                start_time: start_time(&self.proc_root, pid),
                checked: now,
                resource: resource.clone(),
                awaiting_pod: if waiting { generation } else { None },
            },
        );
        resource
    }
}

impl Resources for ProcessCache {
    fn resource(&mut self, pid: u32) -> Arc<Resource> {
        ProcessCache::resource(self, pid)
    }
}

fn start_time(proc_root: &std::path::Path, pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Reads comm, environ and cgroup of `pid` and builds its resource. The flag says the process
/// is in a container whose pod is not (yet) in the store.
fn read_resource(
    proc_root: &std::path::Path,
    pid: u32,
    host_name: &str,
    pods: Option<&PodStore>,
) -> (Resource, bool) {
    let dir = proc_root.join(pid.to_string());
    let comm = fs::read_to_string(dir.join("comm"))
        .map_or_else(|_| format!("pid-{pid}"), |s| s.trim_end().to_owned());
    let environ = fs::read(dir.join("environ")).unwrap_or_default();
    let cg = cgroup::of_process(proc_root, pid);
    let pod = pods.and_then(|p| p.lookup(&cg));
    let waiting = pods.is_some() && cg.container_id.is_some() && pod.is_none();
    let container = Container {
        id: cg.container_id.as_deref(),
        pod: pod.as_deref(),
    };
    (
        build_resource(pid, &comm, &environ, host_name, &container),
        waiting,
    )
}

/// Where a process runs, when it runs in a container.
#[derive(Clone, Copy, Debug, Default)]
pub struct Container<'a> {
    pub id: Option<&'a str>,
    pub pod: Option<&'a PodMeta>,
}

/// Builds a resource from the raw `/proc/PID/environ` contents (NUL-separated).
#[must_use]
pub fn build_resource(
    pid: u32,
    comm: &str,
    environ: &[u8],
    host_name: &str,
    container: &Container<'_>,
) -> Resource {
    let mut service_env = None;
    let mut attrs_env = None;
    for var in environ.split(|b| *b == 0) {
        if let Some(v) = var.strip_prefix(b"OTEL_SERVICE_NAME=") {
            service_env = Some(String::from_utf8_lossy(v).trim().to_owned());
        } else if let Some(v) = var.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
            attrs_env = Some(String::from_utf8_lossy(v).into_owned());
        }
    }
    let mut attributes: Vec<(String, AttrValue)> = Vec::new();
    let mut service_from_attrs = None;
    for (k, v) in attrs_env
        .as_deref()
        .map(parse_key_values)
        .unwrap_or_default()
    {
        if k == "service.name" {
            service_from_attrs = Some(v.clone());
        }
        attributes.retain(|(existing, _)| *existing != k);
        attributes.push((k, AttrValue::from(v)));
    }
    let service_name = service_env
        .filter(|s| !s.is_empty())
        .or(service_from_attrs)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            container
                .pod
                .and_then(PodMeta::service_name)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| comm.to_owned());
    let mut platform: Vec<(String, AttrValue)> = Vec::new();
    if let Some(id) = container.id {
        platform.push(("container.id".to_owned(), AttrValue::from(id.to_owned())));
    }
    if let Some(pod) = container.pod {
        platform.extend(pod.attributes(container.id));
    }
    let own = [
        ("service.name", AttrValue::from(service_name.clone())),
        ("process.pid", AttrValue::Int(i64::from(pid))),
        ("process.executable.name", AttrValue::from(comm.to_owned())),
        ("host.name", AttrValue::from(host_name.to_owned())),
    ];
    let own = own
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(platform);
    for (k, v) in own {
        attributes.retain(|(existing, _)| *existing != k);
        attributes.push((k, v));
    }
    Resource {
        service_name,
        pid,
        attributes,
    }
}

/// `key1=value1,key2=value2` with percent-encoded values (W3C baggage octets), as the
/// OpenTelemetry SDK environment specification defines it for `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS`. Malformed pairs are skipped.
#[must_use]
pub fn parse_key_values(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            if k.is_empty() {
                return None;
            }
            Some((k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 3 <= bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
                && let Ok(byte) = u8::try_from(hi * 16 + lo)
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The node's host name, as `host.name`.
#[must_use]
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr<'a>(r: &'a Resource, k: &str) -> Option<&'a AttrValue> {
        r.attributes
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v)
    }

    #[test]
    fn service_name_precedence() {
        let env = b"PATH=/bin\0OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs,deployment.environment=prod%20eu\0OTEL_SERVICE_NAME=from-env\0";
        let r = build_resource(42, "python3", env, "node-1", &Container::default());
        assert_eq!(r.service_name, "from-env");
        assert_eq!(
            attr(&r, "service.name"),
            Some(&AttrValue::Str("from-env".into()))
        );
        assert_eq!(
            attr(&r, "deployment.environment"),
            Some(&AttrValue::Str("prod eu".into()))
        );
        assert_eq!(attr(&r, "process.pid"), Some(&AttrValue::Int(42)));
        assert_eq!(
            attr(&r, "host.name"),
            Some(&AttrValue::Str("node-1".into()))
        );

        let r = build_resource(
            1,
            "node",
            b"OTEL_RESOURCE_ATTRIBUTES=service.name=svc-b\0",
            "h",
            &Container::default(),
        );
        assert_eq!(r.service_name, "svc-b");
        let r = build_resource(1, "server", b"HOME=/root\0", "h", &Container::default());
        assert_eq!(r.service_name, "server");
        assert_eq!(
            attr(&r, "process.executable.name"),
            Some(&AttrValue::Str("server".into()))
        );
    }

    #[test]
    fn malformed_resource_attributes_are_skipped() {
        assert_eq!(
            parse_key_values("a=1,,=x,novalue,b=%zz,c=%41"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "%zz".into()),
                ("c".into(), "A".into())
            ]
        );
    }

    #[test]
    fn reads_this_process() {
        let mut cache = ProcessCache::new(PathBuf::from("/proc"), "h".into(), None);
        let r = cache.resource(std::process::id());
        assert_eq!(r.pid, std::process::id());
        assert!(!r.service_name.is_empty());
        assert!(Arc::ptr_eq(&r, &cache.resource(std::process::id())));
    }
}
