//! Node garbage collection: a GinghamNode that is a Kubernetes Node (its `orchRefs` say so)
//! whose Node is gone is retired with everything it held: its pods' addresses, its blocks and
//! affinities, the GinghamNode itself (and with it every other node's session to it).

use gingham_api::cache::Snapshot;
use gingham_api::resources::core::NodeMetadata;
use gingham_api::resources::GinghamNode;

/// The GinghamNodes to retire, by name.
pub fn gone(ginghams: &Snapshot<GinghamNode>, nodes: &Snapshot<NodeMetadata>) -> Vec<String> {
    // No Node at all means a broken view (the controllers run on a Node), never "delete all".
    if !nodes.synced || !ginghams.synced || nodes.is_empty() {
        return Vec::new();
    }
    ginghams
        .objects
        .iter()
        .filter(|(_, g)| g.k8s_node_name().is_some_and(|n| nodes.get(n).is_none()))
        .map(|(name, _)| name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{gingham, node, snapshot};

    #[test]
    fn only_kubernetes_nodes_whose_node_is_gone() {
        let ginghams = snapshot(vec![gingham("a", true), gingham("b", true), gingham("rr-outside", false)]);
        let nodes = snapshot(vec![node("a", &[])]);
        assert_eq!(gone(&ginghams, &nodes), ["b"]);
        assert!(gone(&ginghams, &snapshot(vec![])).is_empty(), "an empty Node list retires nothing");
    }
}
