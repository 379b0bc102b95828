//! Builders for the unit tests of the pure rules.

use std::collections::BTreeMap;
use std::sync::Arc;

use gingham_api::cache::Snapshot;
use gingham_api::datastore::Revision;
use gingham_api::resources::core::{NodeMetadata, PodMetadata};
use gingham_api::resources::{GinghamNode, GinghamNodeSpec, Kind, OrchRef};

pub fn snapshot<K: Kind>(items: Vec<K>) -> Snapshot<K> {
    Snapshot { objects: items.into_iter().map(|k| (k.key(), Arc::new(k))).collect(), revision: Revision("1".into()), synced: true }
}

pub fn unsynced<K>() -> Snapshot<K> {
    Snapshot { objects: BTreeMap::new(), revision: Revision(String::new()), synced: false }
}

pub fn gingham(name: &str, kubernetes: bool) -> GinghamNode {
    let mut spec = GinghamNodeSpec::default();
    if kubernetes {
        spec.orch_refs.push(OrchRef { orchestrator: "k8s".into(), node_name: name.into() });
    }
    GinghamNode::new(name, spec)
}

pub fn node(name: &str, labels: &[(&str, &str)]) -> NodeMetadata {
    let mut n = NodeMetadata::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    n
}

pub fn pod(ns: &str, name: &str, uid: &str) -> PodMetadata {
    let mut p = PodMetadata::default();
    p.metadata.name = Some(name.into());
    p.metadata.namespace = Some(ns.into());
    p.metadata.uid = Some(uid.into());
    p
}
