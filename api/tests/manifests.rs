//! manifests/gingham.yaml: every document parses into its Kubernetes type, the DaemonSet has
//! what a node agent needs, and the ClusterRole grants exactly the calls the kubernetes backend
//! makes, as recorded by the fake API server while every operation runs on every kind.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;

use gingham_api::datastore::kubernetes::KubeStore;
use gingham_api::datastore::{Datastore, Revision};
use gingham_api::resources::{all_kinds, validate_value};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use support::fake_apiserver::FakeApiServer;

fn documents() -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/gingham.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text).map(|d| serde_json::Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

fn find<T: serde::de::DeserializeOwned>(kind: &str) -> T {
    let doc = documents().into_iter().find(|d| d["kind"] == kind).unwrap_or_else(|| panic!("no {kind} in gingham.yaml"));
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn every_document_parses_into_its_type() {
    let docs = documents();
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        let parsed = match kind {
            "Namespace" => serde_json::from_value::<Namespace>(doc.clone()).map(|_| ()),
            "ServiceAccount" => serde_json::from_value::<ServiceAccount>(doc.clone()).map(|_| ()),
            "ClusterRole" => serde_json::from_value::<ClusterRole>(doc.clone()).map(|_| ()),
            "ClusterRoleBinding" => serde_json::from_value::<ClusterRoleBinding>(doc.clone()).map(|_| ()),
            "ConfigMap" => serde_json::from_value::<ConfigMap>(doc.clone()).map(|_| ()),
            "DaemonSet" => serde_json::from_value::<DaemonSet>(doc.clone()).map(|_| ()),
            _ => {
                validate_value(doc).unwrap_or_else(|e| panic!("{kind}: {e}"));
                Ok(())
            }
        };
        parsed.unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "DaemonSet", "IPPool", "BGPConfiguration"] {
        assert!(kinds.contains(k), "{k} missing");
    }
}

#[test]
fn the_daemonset_runs_a_node_agent() {
    let ds: DaemonSet = find("DaemonSet");
    let spec = ds.spec.unwrap();
    assert_eq!(
        spec.update_strategy.unwrap().rolling_update.unwrap().max_unavailable.unwrap(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert!(pod.tolerations.unwrap().iter().any(|t| t.operator.as_deref() == Some("Exists")), "runs on every node");
    let init = &pod.init_containers.unwrap()[0];
    assert_eq!(init.name, "install-cni");
    let script = init.command.as_ref().unwrap().join(" ");
    assert!(script.contains("mv /host/opt/cni/bin/.gingham.tmp /host/opt/cni/bin/gingham"), "binary installed atomically");
    assert!(script.contains("mv /host/etc/cni/net.d/.10-gingham.conflist.tmp"), "conflist written atomically");
    let agent = &pod.containers[0];
    assert_eq!(agent.security_context.as_ref().unwrap().privileged, Some(true));
    let env = agent.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(node_name.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "spec.nodeName");
    for var in ["GINGHAM_DATASTORE", "GINGHAM_POOL_CIDR", "GINGHAM_BLOCK_SIZE", "GINGHAM_AS_NUMBER"] {
        assert!(env.iter().any(|e| e.name == var), "{var} missing");
    }
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap();
    assert_eq!(probe(&agent.liveness_probe), "/healthz");
    assert_eq!(probe(&agent.readiness_probe), "/readyz");
}

/// Runs every Datastore operation on every kind through the kubernetes backend and returns the
/// (verb, resource) pairs the API server saw.
async fn calls_the_backend_makes() -> BTreeSet<(String, String)> {
    let server = FakeApiServer::new();
    let store = KubeStore::new(server.client());
    for kind in all_kinds() {
        let name = "probe";
        let body = serde_json::json!({"apiVersion": "gingham.io/v1", "kind": kind.kind, "metadata": {"name": name}, "spec": {}});
        let created = store.create(*kind, name, body.clone()).await.unwrap();
        store.get(*kind, name).await.unwrap();
        let list = store.list(*kind).await.unwrap();
        let watch = store.watch(*kind, &list.revision).await.unwrap();
        drop(watch);
        let updated = store.update(*kind, name, body, &created.revision).await.unwrap();
        store.delete(*kind, name, &updated.revision).await.unwrap();
        let _ = store.delete(*kind, name, &Revision("1".into())).await;
    }
    server.requests().into_iter().collect()
}

#[test]
fn the_cluster_role_grants_exactly_what_the_backend_calls() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let used = rt.block_on(calls_the_backend_makes());
    let role: ClusterRole = find("ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        assert_eq!(rule.api_groups.as_deref(), Some(&["gingham.io".to_string()][..]), "only our own API group");
        for resource in rule.resources.unwrap_or_default() {
            for verb in &rule.verbs {
                granted.insert((verb.clone(), resource.clone()));
            }
        }
    }
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(missing.is_empty(), "calls the ClusterRole does not allow: {missing:?}");
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(unused.is_empty(), "grants the backend never uses: {unused:?}");
}
