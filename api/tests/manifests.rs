//! manifests/gingham.yaml: every document parses into its Kubernetes type, the DaemonSet has
//! what a node agent needs and the Deployment what the controllers need. (The RBAC rules are
//! held against the calls the code makes in `integration/tests/rbac.rs` and
//! `integration/tests/controllers.rs`.)

use std::collections::BTreeSet;
use std::path::PathBuf;

use gingham_api::resources::validate_value;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Deserialize;

fn documents() -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/gingham.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text).map(|d| serde_json::Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
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
            "Role" => serde_json::from_value::<Role>(doc.clone()).map(|_| ()),
            "RoleBinding" => serde_json::from_value::<RoleBinding>(doc.clone()).map(|_| ()),
            "Deployment" => serde_json::from_value::<Deployment>(doc.clone()).map(|_| ()),
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
    for k in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "IPPool",
        "BGPConfiguration",
    ] {
        assert!(kinds.contains(k), "{k} missing");
    }
}

#[test]
fn the_daemonset_runs_a_node_agent() {
    let ds: DaemonSet = find("DaemonSet");
    let spec = ds.spec;
    let template_meta = spec.template.metadata.clone();
    assert_eq!(
        spec.update_strategy.unwrap().rolling_update.unwrap().max_unavailable.unwrap(),
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert!(pod.tolerations.unwrap().iter().any(|t| t.operator.as_deref() == Some("Exists")), "runs on every node");
    let init = &pod.init_containers.unwrap()[0];
    assert_eq!(init.name, "install-cni");
    // gingham-cni's install step (atomic writes; unit-tested in gingham-cni, run from the image
    // by integration/tests/image.rs with this very command).
    let command = init.command.as_ref().unwrap().join(" ");
    assert_eq!(
        command,
        "/usr/local/bin/gingham-cni install --bin-dir /host/opt/cni/bin --conf-dir /host/etc/cni/net.d --conflist /config/10-gingham.conflist"
    );
    let agent = &pod.containers[0];
    assert_eq!(agent.security_context.as_ref().unwrap().privileged, Some(true));
    let env = agent.env.as_ref().unwrap();
    let node_name = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(node_name.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "spec.nodeName");
    for var in ["GINGHAM_DATASTORE", "GINGHAM_POOL_CIDR", "GINGHAM_BLOCK_SIZE", "POD_NAMESPACE", "GINGHAM_METRICS_ADDR"] {
        assert!(env.iter().any(|e| e.name == var), "{var} missing");
    }
    // The AS comes from BGPConfiguration or the GinghamNode; a DaemonSet value would reset
    // every node's AS at each start.
    assert!(!env.iter().any(|e| e.name == "GINGHAM_AS_NUMBER"), "the DaemonSet must not set an AS");
    let metrics = env.iter().find(|e| e.name == "GINGHAM_METRICS_ADDR").unwrap().value.clone().unwrap();
    assert_eq!(metrics, "$(NODE_IP):9091", "metrics on the node's address");
    let annotations = template_meta.and_then(|m| m.annotations).unwrap_or_default();
    assert_eq!(annotations.get("prometheus.io/scrape").map(String::as_str), Some("true"));
    assert_eq!(annotations.get("prometheus.io/port").map(String::as_str), Some("9091"));
    let probe = |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap();
    assert_eq!(probe(&agent.liveness_probe), "/healthz");
    assert_eq!(probe(&agent.readiness_probe), "/readyz");
}

#[test]
fn the_controllers_run_as_one_active_replica_on_the_host_network() {
    let deployment: Deployment = find("Deployment");
    let spec = deployment.spec;
    assert!(spec.replicas.unwrap_or(1) >= 1);
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true), "works before the pod network does");
    let c = &pod.containers[0];
    assert_eq!(c.command.as_ref().unwrap()[0], "/usr/local/bin/gingham-controllers");
    let env = c.env.as_ref().unwrap();
    let from = |name: &str| env.iter().find(|e| e.name == name)?.value_from.as_ref()?.field_ref.as_ref().map(|f| f.field_path.clone());
    assert_eq!(from("POD_NAMESPACE").as_deref(), Some("metadata.namespace"), "the Lease's namespace");
    assert_eq!(from("POD_NAME").as_deref(), Some("metadata.name"), "the Lease holder's identity");
}
