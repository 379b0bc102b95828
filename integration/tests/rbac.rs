//! The agent's RBAC in manifests/gingham.yaml against the calls its code makes on the fake API
//! server: every datastore operation on every Gingham kind (the IPAM, registration and CLI
//! paths use all of them), the agent's watch cache (which lists and watches Secrets in its own
//! namespace), and its Node read for `kubernetes-internal-ip`. Namespaced calls must be
//! granted by the namespaced Role, cluster-wide ones by the ClusterRole, and nothing more is
//! granted than is called. (gingham-controllers' roles are checked the same way at the end of
//! `tests/controllers.rs`, after a scenario that exercises all of their work.)

#[allow(dead_code)]
#[path = "../../api/tests/support/fake_apiserver.rs"]
mod fake_apiserver;

use fake_apiserver::{needed_grants, FakeApiServer};
use gingham_api::cache::CacheOptions;
use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::{AnyDatastore, Datastore, Revision, Store};
use gingham_api::resources::all_kinds;
use gingham_integration::manifests::grants;
use serde_json::json;

#[tokio::test]
async fn the_agent_roles_grant_exactly_what_the_agent_calls() {
    let server = FakeApiServer::new();
    let kube = KubeStore::new(server.client_as("gingham-system", "agent"));
    for kind in all_kinds() {
        let name = "probe";
        let body = json!({"apiVersion": "gingham.io/v1", "kind": kind.kind, "metadata": {"name": name}, "spec": {}});
        let created = kube.create(*kind, name, body.clone()).await.unwrap();
        kube.get(*kind, name).await.unwrap();
        let list = kube.list(*kind).await.unwrap();
        drop(kube.watch(*kind, &list.revision).await.unwrap());
        let updated = kube.update(*kind, name, body, &created.revision).await.unwrap();
        kube.delete(*kind, name, &updated.revision).await.unwrap();
        let _ = kube.delete(*kind, name, &Revision("1".into())).await;
    }
    let store = Store::new(AnyDatastore::Kubernetes(kube));
    // The agent's cache, as it starts it.
    let cache = gingham_agent::cluster::ClusterCache::start(&store, CacheOptions::default());
    cache.synced().await;
    // `--ip kubernetes-internal-ip`.
    server.put(
        "nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                               "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.1"}]}}),
    );
    let ips = gingham_agent::node::internal_ips(&store, "n1").await.unwrap();
    assert_eq!(ips, ["198.18.0.1".parse::<std::net::IpAddr>().unwrap()]);

    let (cluster, namespaced) = needed_grants(&server.calls("agent"), "gingham-system");
    assert_eq!(cluster, grants("ClusterRole", "gingham-agent"), "ClusterRole gingham-agent vs the calls");
    assert_eq!(namespaced, grants("Role", "gingham-agent"), "Role gingham-agent vs the calls");
    assert!(namespaced.iter().any(|(_, r, _)| r == "secrets"), "Secrets through the namespaced Role");
    assert!(!cluster.iter().any(|(_, r, _)| r == "secrets"), "never cluster-wide Secret access");
}
