use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;

use super::*;
use crate::{
    metrics::Metrics,
    procs::resource::{Container, build_resource},
};

const CID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const CID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const CID_C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

/// A pod as the API server returns it (the fields k8s-openapi requires, plus ours).
fn pod_json(name: &str, uid: &str, cid: &str, labels: &str, owner: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","resourceVersion":"1","labels":{{{labels}}},"ownerReferences":[{owner}]}},"spec":{{"nodeName":"node-1","containers":[{{"name":"main"}}]}},"status":{{"containerStatuses":[{{"name":"main","containerID":"containerd://{cid}","image":"img","imageID":"id","ready":true,"restartCount":0}}]}}}}"#
    )
}

fn deployment_pod(name: &str, uid: &str, cid: &str) -> String {
    pod_json(
        name,
        uid,
        cid,
        r#""app.kubernetes.io/name":"cart","pod-template-hash":"5d8f7c""#,
        r#"{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"cart-5d8f7c","uid":"rs","controller":true}"#,
    )
}

fn pod(json: &str) -> Pod {
    serde_json::from_str(json).expect("pod fixture")
}

fn cg(cid: &str) -> CgroupInfo {
    CgroupInfo {
        container_id: Some(cid.to_owned()),
        pod_uid: None,
    }
}

#[test]
fn pod_maps_to_semantic_convention_attributes() {
    let meta =
        PodMeta::from_pod(&pod(&deployment_pod("cart-5d8f7c-x2x9z", "uid-a", CID_A))).unwrap();
    assert_eq!(meta.service_name(), Some("cart"));
    let attrs: BTreeMap<String, String> = meta
        .attributes(Some(CID_A))
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    assert_eq!(attrs["k8s.pod.name"], "cart-5d8f7c-x2x9z");
    assert_eq!(attrs["k8s.pod.uid"], "uid-a");
    assert_eq!(attrs["k8s.namespace.name"], "shop");
    assert_eq!(attrs["k8s.node.name"], "node-1");
    assert_eq!(attrs["k8s.container.name"], "main");
    assert_eq!(attrs["k8s.replicaset.name"], "cart-5d8f7c");
    assert_eq!(attrs["k8s.deployment.name"], "cart");

    let sts = PodMeta::from_pod(&pod(&pod_json(
        "db-0",
        "uid-s",
        CID_B,
        r#""app":"db""#,
        r#"{"apiVersion":"apps/v1","kind":"StatefulSet","name":"db","uid":"s","controller":true}"#,
    )))
    .unwrap();
    assert_eq!(sts.service_name(), Some("db"));
    assert!(
        sts.attributes(None)
            .contains(&("k8s.statefulset.name".into(), AttrValue::Str("db".into())))
    );
}

#[test]
fn resource_prefers_the_process_env_then_pod_labels() {
    let meta = PodMeta::from_pod(&pod(&deployment_pod("cart-1", "uid-a", CID_A))).unwrap();
    let container = Container {
        id: Some(CID_A),
        pod: Some(&meta),
    };
    let r = build_resource(7, "python3", b"HOME=/\0", "node-1", &container);
    assert_eq!(
        r.service_name, "cart",
        "pod label when the process names nothing"
    );
    assert!(
        r.attributes
            .contains(&("container.id".into(), AttrValue::Str(CID_A.into())))
    );
    assert!(
        r.attributes
            .contains(&("k8s.deployment.name".into(), AttrValue::Str("cart".into())))
    );
    let r = build_resource(
        7,
        "python3",
        b"OTEL_SERVICE_NAME=own\0",
        "node-1",
        &container,
    );
    assert_eq!(r.service_name, "own", "the process's own setting wins");
}

#[test]
fn store_indexes_by_container_and_uid_and_replaces_on_relist() {
    let store = PodStore::default();
    store.apply(&pod(&deployment_pod("a", "uid-a", CID_A)));
    assert_eq!(store.lookup(&cg(CID_A)).unwrap().name, "a");
    let by_uid = CgroupInfo {
        container_id: Some(CID_C.into()),
        pod_uid: Some("uid-a".into()),
    };
    assert_eq!(
        store.lookup(&by_uid).unwrap().name,
        "a",
        "falls back to the pod uid"
    );
    let g = store.generation();
    store.replace_all(&[pod(&deployment_pod("b", "uid-b", CID_B))]);
    assert!(store.generation() > g);
    assert!(store.lookup(&cg(CID_A)).is_none());
    assert_eq!(store.lookup(&cg(CID_B)).unwrap().name, "b");
    store.delete(&pod(&deployment_pod("b", "uid-b", CID_B)));
    assert_eq!(store.len(), 0);
}

#[test]
fn filter_by_namespace_and_labels() {
    let meta = PodMeta::from_pod(&pod(&deployment_pod("a", "uid-a", CID_A))).unwrap();
    let f = |ns: &[&str], ex: &[&str], sel: &str| {
        PodFilter::new(
            ns.iter().map(|s| (*s).to_owned()).collect(),
            ex.iter().map(|s| (*s).to_owned()).collect(),
            sel,
        )
        .unwrap()
        .matches(&meta)
    };
    assert!(f(&[], &["kube-system"], ""));
    assert!(!f(&[], &["shop"], ""));
    assert!(f(&["shop"], &[], "app.kubernetes.io/name=cart"));
    assert!(!f(&["other"], &[], ""));
    assert!(!f(&[], &[], "app.kubernetes.io/name!=cart"));
    assert!(f(&[], &[], "pod-template-hash,!sidecar.istio.io/inject"));
    assert!(!f(&[], &[], "tier==web"));
    assert!(PodFilter::new(vec![], vec![], "a b=c").is_err());
    assert!(PodFilter::new(vec![], vec![], "=x").is_err());
}

type MockBody = BoxBody<Bytes, Infallible>;

fn full(body: String) -> Response<MockBody> {
    Response::new(Full::new(Bytes::from(body)).boxed())
}

/// A watch response whose events the test sends one by one.
fn streaming() -> (mpsc::UnboundedSender<String>, Response<MockBody>) {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok(Frame::data(Bytes::from(line + "\n"))), rx))
    });
    (tx, Response::new(StreamBody::new(stream).boxed()))
}

fn list(items: &[String], rv: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"PodList","metadata":{{"resourceVersion":"{rv}"}},"items":[{}]}}"#,
        items.join(",")
    )
}

fn event(kind: &str, object: &str) -> String {
    format!(r#"{{"type":"{kind}","object":{object}}}"#)
}

async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<MockBody>>;

/// Answers the next request, checking it is a list (or a watch) of node-1's pods.
async fn expect(handle: &mut Handle, watch: bool, response: Response<MockBody>) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(20), handle.next_request())
        .await
        .expect("the watcher should call the API")
        .expect("mock closed");
    let uri = req.uri().to_string();
    assert!(uri.starts_with("/api/v1/pods?"), "{uri}");
    assert!(
        uri.contains("fieldSelector=spec.nodeName%3Dnode-1"),
        "only this node's pods: {uri}"
    );
    assert_eq!(uri.contains("watch=true"), watch, "{uri}");
    send.send_response(response);
}

fn start(store: &Arc<PodStore>) -> (Handle, &'static Metrics) {
    let (service, handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<MockBody>>();
    let client = kube::Client::new(service, "default");
    let metrics: &'static Metrics = Box::leak(Box::default());
    tokio::spawn(watch::run(client, "node-1".into(), store.clone(), metrics));
    (handle, metrics)
}

#[tokio::test]
async fn watch_follows_add_modify_delete_and_resyncs_after_410() {
    let store = Arc::new(PodStore::default());
    let (mut api, _metrics) = start(&store);
    expect(
        &mut api,
        false,
        full(list(&[deployment_pod("a", "uid-a", CID_A)], "100")),
    )
    .await;
    eventually("initial list", || {
        store.synced() && store.lookup(&cg(CID_A)).is_some()
    })
    .await;

    let (events, body) = streaming();
    expect(&mut api, true, body).await;
    let relabelled = pod_json("a", "uid-a", CID_A, r#""app":"cart-v2""#, "");
    events.send(event("MODIFIED", &relabelled)).unwrap();
    eventually("modify", || {
        store
            .lookup(&cg(CID_A))
            .is_some_and(|p| p.service_name() == Some("cart-v2"))
    })
    .await;
    events
        .send(event("ADDED", &deployment_pod("b", "uid-b", CID_B)))
        .unwrap();
    eventually("add", || store.lookup(&cg(CID_B)).is_some()).await;
    events.send(event("DELETED", &relabelled)).unwrap();
    eventually("delete", || store.lookup(&cg(CID_A)).is_none()).await;

    // The API server forgot our resource version: the watcher must list again (resync).
    events
        .send(event(
            "ERROR",
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}"#,
        ))
        .unwrap();
    let relist = list(
        &[
            deployment_pod("b", "uid-b", CID_B),
            deployment_pod("c", "uid-c", CID_C),
        ],
        "200",
    );
    expect(&mut api, false, full(relist)).await;
    eventually("resync", || {
        store.lookup(&cg(CID_C)).is_some() && store.len() == 2
    })
    .await;
}

#[tokio::test]
async fn unreachable_api_server_keeps_what_is_known_and_counts_errors() {
    let store = Arc::new(PodStore::default());
    let (mut api, metrics) = start(&store);
    expect(
        &mut api,
        false,
        full(list(&[deployment_pod("a", "uid-a", CID_A)], "100")),
    )
    .await;
    eventually("initial list", || store.lookup(&cg(CID_A)).is_some()).await;
    // From now on every call fails, as when the API server is gone.
    for _ in 0..2 {
        let (_, send) = tokio::time::timeout(Duration::from_secs(20), api.next_request())
            .await
            .expect("the watcher retries")
            .expect("mock open");
        send.send_error(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "API server down",
        ));
    }
    eventually("errors counted", || {
        metrics.k8s_watch_errors.load(Relaxed) >= 2
    })
    .await;
    assert_eq!(
        store.lookup(&cg(CID_A)).unwrap().name,
        "a",
        "last known pods are kept"
    );
}

#[tokio::test]
async fn nothing_waits_for_an_api_server_that_never_answers() {
    let store = Arc::new(PodStore::default());
    let (_api, _metrics) = start(&store);
    // The first list hangs forever: lookups answer at once, with nothing known.
    let begin = Instant::now();
    assert!(store.lookup(&cg(CID_A)).is_none());
    assert!(!store.synced());
    assert!(begin.elapsed() < Duration::from_millis(50));
}
