//! `manifests/gingham.yaml` as tests read it: its documents, and what its RBAC roles grant, so
//! a test can hold the grants against the calls the code made on the fake API server.

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Deserialize;

/// One permission: (API group, resource, verb).
pub type Grant = (String, String, String);

pub fn documents() -> Vec<serde_json::Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/gingham.yaml");
    let text = std::fs::read_to_string(path).expect("manifests/gingham.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Everything a `ClusterRole` or `Role` of that name grants.
pub fn grants(kind: &str, name: &str) -> BTreeSet<Grant> {
    let doc = documents()
        .into_iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in gingham.yaml"));
    let rules: Vec<PolicyRule> = serde_json::from_value(doc["rules"].clone()).expect("rules");
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}
