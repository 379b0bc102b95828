//! The Kubernetes kinds Gingham reads besides its own, through the kubernetes backend against
//! the fake API server (namespaced paths, own-namespace lists, PartialObjectMetadata) and
//! through sqlite (where `ginghamctl` stores Secrets): keys are `namespace/name`, a Secret's
//! value decodes, and a metadata-only kind carries labels but never the spec or status.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use gingham_api::cache::{CacheOptions, Reflector};
use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::sqlite::SqliteStore;
use gingham_api::datastore::{Datastore, DatastoreError, Store};
use gingham_api::resources::core::{secret_value, Lease, NodeMetadata, PodMetadata, Secret};
use k8s_openapi::ByteString;
use serde_json::json;
use support::fake_apiserver::FakeApiServer;

fn secret(ns: &str, name: &str, password: &str) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(ns.into());
    s.data = Some(BTreeMap::from([("password".to_string(), ByteString(password.as_bytes().to_vec()))]));
    s
}

async fn secrets_round_trip<D: Datastore>(store: &Store<D>) {
    let created = store.create(&secret("gingham-system", "bgp", "s3cret")).await.unwrap();
    let got: Secret = store.get("gingham-system/bgp").await.unwrap().expect("readable by namespace/name");
    assert_eq!(secret_value(&got, "password").as_deref(), Some("s3cret"));
    assert_eq!(secret_value(&got, "other"), None);
    let mut rotated = created.clone();
    rotated.data = Some(BTreeMap::from([("password".to_string(), ByteString(b"n3w".to_vec()))]));
    let rotated = store.update(&rotated).await.unwrap();
    assert_eq!(secret_value(&store.get::<Secret>("gingham-system/bgp").await.unwrap().unwrap(), "password").as_deref(), Some("n3w"));
    let mut no_ns = secret("x", "y", "z");
    no_ns.metadata.namespace = None;
    let refused = store.create(&no_ns).await.unwrap_err();
    assert!(matches!(refused, DatastoreError::Invalid { .. }) && refused.to_string().contains("metadata.namespace"), "{refused}");
    store.delete(&rotated).await.unwrap();
    assert!(store.get::<Secret>("gingham-system/bgp").await.unwrap().is_none());
}

#[tokio::test]
async fn secrets_on_sqlite_and_kubernetes() {
    let dir = std::env::temp_dir().join(format!("gingham-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("store.db");
    secrets_round_trip(&Store::new(SqliteStore::open(&path).unwrap())).await;
    std::fs::remove_dir_all(&dir).unwrap();

    let server = FakeApiServer::new();
    secrets_round_trip(&Store::new(KubeStore::new(server.client_in("gingham-system")))).await;
    assert!(server.object("secrets", "gingham-system/bgp").is_none());
}

#[tokio::test]
async fn own_namespace_kinds_list_and_watch_only_that_namespace() {
    let server = FakeApiServer::new();
    let store = Store::new(KubeStore::new(server.client_in("gingham-system")));
    server.put("secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "gingham-system"}}));
    server.put("secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b", "namespace": "team-x"}}));
    let cache: Reflector<Secret> = Reflector::start(store.clone(), CacheOptions::default());
    let snap = cache.synced().await;
    assert_eq!(snap.objects.keys().collect::<Vec<_>>(), ["gingham-system/a"]);
    server.put("secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c", "namespace": "team-x"}}));
    server.put("secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "d", "namespace": "gingham-system"}}));
    let mut changed = cache.changed();
    let snap = tokio::time::timeout(Duration::from_secs(10), changed.wait_for(|s| s.objects.contains_key("gingham-system/d")))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert_eq!(snap.objects.keys().collect::<Vec<_>>(), ["gingham-system/a", "gingham-system/d"]);
    let used: Vec<_> = server.requests().into_iter().filter(|(_, p)| p == "secrets").collect();
    assert!(used.iter().all(|(v, _)| v == "list" || v == "watch"), "{used:?}");
}

#[tokio::test]
async fn metadata_only_kinds_carry_labels_not_status() {
    let server = FakeApiServer::new();
    let store = Store::new(KubeStore::new(server.client_in("gingham-system")));
    server.put(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
               "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.1"}], "images": [{"names": ["big"]}]}}),
    );
    server.put("pods", json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-x", "uid": "u-1"}, "spec": {"nodeName": "n1"}}));
    let nodes: Reflector<NodeMetadata> = Reflector::start(store.clone(), CacheOptions::default());
    let pods: Reflector<PodMetadata> = Reflector::start(store.clone(), CacheOptions::default());
    let n = nodes.synced().await;
    let node = n.get("n1").expect("node listed");
    assert_eq!(node.metadata.labels.as_ref().unwrap()["topology.kubernetes.io/zone"], "z1");
    let p = pods.synced().await;
    assert_eq!(p.get("team-x/p").unwrap().metadata.uid.as_deref(), Some("u-1"), "pods of every namespace, keyed namespace/name");

    server.remove("pods", "team-x/p");
    let mut changed = pods.changed();
    tokio::time::timeout(Duration::from_secs(10), changed.wait_for(|s| s.is_empty())).await.unwrap().unwrap();

    // Through the same backend, the full Node (for kubernetes-internal-ip) still has its status.
    let full: k8s_openapi::api::core::v1::Node = store.get("n1").await.unwrap().unwrap();
    assert_eq!(full.status.unwrap().addresses.unwrap()[0].address, "198.18.0.1");
    // A metadata-only kind is read by key too.
    let pod: Option<PodMetadata> = store.get("team-x/p").await.unwrap();
    assert!(pod.is_none());
}

#[tokio::test]
async fn leases_are_compare_and_swap() {
    let server = FakeApiServer::new();
    let store = Store::new(KubeStore::new(server.client_in("gingham-system")));
    let mut lease = Lease::default();
    lease.metadata.name = Some("gingham-controllers".into());
    lease.metadata.namespace = Some("gingham-system".into());
    let created = store.create(&lease).await.unwrap();
    let mut a = created.clone();
    a.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec { holder_identity: Some("a".into()), ..Default::default() });
    let mut b = created.clone();
    b.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec { holder_identity: Some("b".into()), ..Default::default() });
    store.update(&a).await.unwrap();
    assert!(matches!(store.update(&b).await, Err(DatastoreError::Conflict { .. })), "a second writer of the same revision loses");
}

/// A Service's status is written through `update_status`; on the API server that is the status
/// subresource, where a plain update would leave the status as it was.
async fn service_status_is_written_whole<D: Datastore>(store: &Store<D>) {
    use gingham_api::resources::core::Service;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus};
    let mut svc = Service::default();
    svc.metadata.name = Some("web".into());
    svc.metadata.namespace = Some("shop".into());
    svc.spec = Some(ServiceSpec { type_: Some("LoadBalancer".into()), ..Default::default() });
    let created = store.create(&svc).await.unwrap();
    let mut with_status = created.clone();
    with_status.status = Some(ServiceStatus {
        load_balancer: Some(LoadBalancerStatus {
            ingress: Some(vec![LoadBalancerIngress { ip: Some("198.18.113.1".into()), ..Default::default() }]),
        }),
        ..Default::default()
    });
    let written = store.update_status(&with_status).await.unwrap();
    let got: Service = store.get("shop/web").await.unwrap().unwrap();
    assert_eq!(got.status, with_status.status);
    assert_eq!(got.metadata.resource_version, written.metadata.resource_version);
    // Written from an old read: refused, as any update.
    let stale = store.update_status(&with_status).await.unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    store.delete(&got).await.unwrap();
}

#[tokio::test]
async fn service_status_on_sqlite_and_kubernetes() {
    let dir = std::env::temp_dir().join(format!("gingham-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    service_status_is_written_whole(&Store::new(SqliteStore::open(dir.join("store.db")).unwrap())).await;
    std::fs::remove_dir_all(&dir).unwrap();

    let server = FakeApiServer::new();
    let store = Store::new(KubeStore::new(server.client()));
    service_status_is_written_whole(&store).await;
    assert!(server.requests().contains(&("update".to_string(), "services/status".to_string())), "{:?}", server.requests());

    // The fake holds the API server's line: a plain update does not touch the status.
    use gingham_api::resources::core::Service;
    let mut svc = Service::default();
    svc.metadata.name = Some("db".into());
    svc.metadata.namespace = Some("shop".into());
    let created = store.create(&svc).await.unwrap();
    let mut changed = created.clone();
    changed.status = Some(Default::default());
    changed.metadata.labels = Some(BTreeMap::from([("tier".to_string(), "db".to_string())]));
    store.update(&changed).await.unwrap();
    let stored = server.object("services", "shop/db").unwrap();
    assert_eq!((stored.get("status"), &stored["metadata"]["labels"]["tier"]), (None, &json!("db")), "{stored}");
}
