//! This node in the datastore: its GinghamNode, written at start, and its router id.
//!
//! The GinghamNode is the truth for the node's AS, route-reflector cluster id and addresses (a
//! `ginghamctl patch node` takes effect while the agent runs); flags and detection only seed a
//! new GinghamNode or fill what it lacks, unless `--override-node-config` says they win, as
//! Calico's environment variables do.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::core::Node;
use gingham_api::resources::{GinghamNode, GinghamNodeBgp, GinghamNodeSpec, OrchRef, K8S_ORCHESTRATOR};
use ipnetwork::IpNetwork;

/// What the agent's flags and detection say about this node.
#[derive(Clone, Debug)]
pub struct Registration {
    pub node: String,
    pub address: IpNetwork,
    pub address6: Option<IpNetwork>,
    pub as_number: Option<u32>,
    pub labels: BTreeMap<String, String>,
    pub cluster_id: Option<String>,
    /// The node is a Kubernetes Node of the same name (the kubernetes datastore).
    pub kubernetes: bool,
    /// Flags replace what the GinghamNode says instead of only seeding it.
    pub override_existing: bool,
}

impl Registration {
    /// A node with this name and address and no other flag.
    pub fn new(node: &str, address: IpNetwork) -> Registration {
        Registration {
            node: node.into(),
            address,
            address6: None,
            as_number: None,
            labels: BTreeMap::new(),
            cluster_id: None,
            kubernetes: false,
            override_existing: false,
        }
    }
}

/// The GinghamNode `existing` becomes (or a new one): pure, so each rule is a unit test.
pub fn registered(existing: Option<&GinghamNode>, r: &Registration) -> GinghamNode {
    let mut obj = existing.cloned().unwrap_or_else(|| GinghamNode::new(&r.node, GinghamNodeSpec::default()));
    let flags_win = existing.is_none() || r.override_existing;
    let old = obj.spec.bgp.clone().unwrap_or_default();
    let bgp = obj.spec.bgp.get_or_insert_with(GinghamNodeBgp::default);
    // Addresses were chosen by the caller (the stored one while the host still has it).
    bgp.ipv4_address = Some(r.address.to_string());
    bgp.ipv6_address = r.address6.map(|a| a.to_string());
    // Otherwise flags only fill what the stored node lacks.
    (bgp.as_number, bgp.route_reflector_cluster_id) = match flags_win {
        true => (r.as_number, r.cluster_id.clone()),
        false => (old.as_number.or(r.as_number), old.route_reflector_cluster_id.or(r.cluster_id.clone())),
    };
    if r.kubernetes && obj.k8s_node_name().is_none() {
        obj.spec.orch_refs.push(OrchRef { orchestrator: K8S_ORCHESTRATOR.into(), node_name: r.node.clone() });
    }
    let mut labels = obj.metadata.labels.clone().unwrap_or_default();
    labels.extend(r.labels.clone());
    obj.metadata.labels = Some(labels);
    obj
}

/// Which address to register: the stored one while the host still has it (the GinghamNode is
/// the truth; an operator may have patched it), unless flags override; else the detected one.
pub fn keep_or_detect(stored: Option<IpNetwork>, host: &[IpNetwork], override_existing: bool) -> Option<IpNetwork> {
    stored.filter(|s| !override_existing && host.iter().any(|h| h.ip() == s.ip()))
}

/// Writes (or refreshes) this node's GinghamNode; idempotent across restarts, retried on
/// conflicts, and keeps labels someone else added.
pub async fn register_node(store: &Store<AnyDatastore>, r: &Registration) -> anyhow::Result<GinghamNode> {
    for _ in 0..20 {
        let existing = store.get::<GinghamNode>(&r.node).await?;
        let obj = registered(existing.as_ref(), r);
        let result = match existing {
            Some(e) if e.spec == obj.spec && e.metadata.labels == obj.metadata.labels => return Ok(e),
            Some(_) => store.update(&obj).await,
            None => store.create(&obj).await,
        };
        match result {
            Ok(o) => return Ok(o),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not write GinghamNode {}: too many conflicting writes", r.node)
}

/// The Kubernetes Node's InternalIP addresses (for `--ip kubernetes-internal-ip`).
pub async fn internal_ips(store: &Store<AnyDatastore>, node: &str) -> anyhow::Result<Vec<IpAddr>> {
    let found: Node = store
        .get(node)
        .await?
        .ok_or_else(|| anyhow::anyhow!("kubernetes-internal-ip: Node {node:?} not found (the kubernetes datastore is needed)"))?;
    let addresses = found.status.and_then(|s| s.addresses).unwrap_or_default();
    Ok(addresses.into_iter().filter(|a| a.type_ == "InternalIP").filter_map(|a| a.address.parse().ok()).collect())
}

/// The node's router id: its IPv4 address.
pub fn router_id(address: IpNetwork) -> Ipv4Addr {
    match address.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::new(198, 18, 255, 255),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(as_number: Option<u32>, cluster: Option<&str>, override_existing: bool) -> Registration {
        Registration {
            as_number,
            cluster_id: cluster.map(String::from),
            kubernetes: true,
            override_existing,
            ..Registration::new("n1", "198.18.0.11/24".parse().unwrap())
        }
    }

    #[test]
    fn flags_seed_a_new_node_and_the_stored_node_wins_afterwards() {
        let new = registered(None, &reg(Some(65001), Some("224.0.0.1"), false));
        let bgp = new.spec.bgp.clone().unwrap();
        assert_eq!((bgp.as_number, bgp.route_reflector_cluster_id.as_deref()), (Some(65001), Some("224.0.0.1")));
        assert_eq!(new.k8s_node_name(), Some("n1"));

        // The operator patched the AS and removed the reflector role; a restart with no flags
        // keeps that, and a restart with the old flags does not undo it either.
        let mut patched = new.clone();
        patched.spec.bgp.as_mut().unwrap().as_number = Some(65002);
        patched.spec.bgp.as_mut().unwrap().route_reflector_cluster_id = Some("224.0.0.9".into());
        let again = registered(Some(&patched), &reg(None, None, false));
        assert_eq!(again.spec.bgp.as_ref().unwrap().as_number, Some(65002));
        assert_eq!(again.spec.bgp.as_ref().unwrap().route_reflector_cluster_id.as_deref(), Some("224.0.0.9"));
        assert_eq!(again.spec.orch_refs.len(), 1, "one k8s reference, not one per start");
        let with_flags = registered(Some(&patched), &reg(Some(65001), None, false));
        assert_eq!(with_flags.spec.bgp.as_ref().unwrap().as_number, Some(65002), "a flag only seeds");

        // --override-node-config: the flags win.
        let forced = registered(Some(&patched), &reg(Some(65001), None, true));
        assert_eq!(forced.spec.bgp.as_ref().unwrap().as_number, Some(65001));
        assert_eq!(forced.spec.bgp.as_ref().unwrap().route_reflector_cluster_id, None);
    }

    #[test]
    fn a_stored_address_is_kept_while_the_host_has_it() {
        let host: Vec<IpNetwork> = vec!["198.18.0.11/24".parse().unwrap(), "198.18.1.11/24".parse().unwrap()];
        let stored = Some("198.18.1.11/24".parse().unwrap());
        assert_eq!(keep_or_detect(stored, &host, false), stored);
        assert_eq!(keep_or_detect(stored, &host, true), None, "override: detect again");
        assert_eq!(keep_or_detect(Some("198.18.2.11/24".parse().unwrap()), &host, false), None, "gone from the host");
    }
}
