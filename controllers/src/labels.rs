//! Node label sync: a Kubernetes Node's labels are mirrored onto its GinghamNode, so BGPPeer and
//! IPPool selectors can use `topology.kubernetes.io/zone`, rack labels and the like. Which labels
//! came from the Node is recorded in an annotation, as Calico does: a label removed from the Node
//! is removed from the GinghamNode, and labels set on the GinghamNode alone stay.

use std::collections::BTreeMap;

use gingham_api::resources::core::NodeMetadata;
use gingham_api::resources::GinghamNode;

/// The annotation holding the labels last mirrored from the Node (a JSON object).
pub const MIRRORED: &str = "gingham.io/kube-labels";

/// The GinghamNode with the Node's labels mirrored, or `None` when it already has them.
pub fn mirrored(gingham: &GinghamNode, node: &NodeMetadata) -> Option<GinghamNode> {
    let from_node = node.metadata.labels.clone().unwrap_or_default();
    let annotations = gingham.metadata.annotations.clone().unwrap_or_default();
    let before: BTreeMap<String, String> = annotations.get(MIRRORED).and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
    let mut labels = gingham.metadata.labels.clone().unwrap_or_default();
    for key in before.keys() {
        labels.remove(key);
    }
    labels.extend(from_node.clone());
    let record = serde_json::to_string(&from_node).expect("a string map serialises");
    if Some(&labels) == gingham.metadata.labels.as_ref() && annotations.get(MIRRORED) == Some(&record) {
        return None;
    }
    let mut out = gingham.clone();
    out.metadata.labels = Some(labels);
    out.metadata.annotations.get_or_insert_with(Default::default).insert(MIRRORED.into(), record);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{gingham, node};

    #[test]
    fn node_labels_are_mirrored_removed_and_the_operators_own_labels_stay() {
        let mut g = gingham("a", true);
        g.metadata.labels = Some(BTreeMap::from([("route-reflector".into(), "true".into())]));
        let n = node("a", &[("topology.kubernetes.io/zone", "z1"), ("rack", "r1")]);
        let g = mirrored(&g, &n).expect("labels to add");
        let labels = g.metadata.labels.clone().unwrap();
        assert_eq!(labels["topology.kubernetes.io/zone"], "z1");
        assert_eq!(labels["route-reflector"], "true");
        assert!(mirrored(&g, &n).is_none(), "nothing to do the second time");

        let n = node("a", &[("topology.kubernetes.io/zone", "z2")]);
        let g = mirrored(&g, &n).expect("a change");
        let labels = g.metadata.labels.clone().unwrap();
        assert_eq!(labels["topology.kubernetes.io/zone"], "z2");
        assert!(!labels.contains_key("rack"), "removed from the Node, removed here");
        assert_eq!(labels["route-reflector"], "true", "never came from the Node: kept");
    }
}
