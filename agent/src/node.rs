//! This node in the datastore: its GinghamNode, written at start, and its router id.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use gingham_api::datastore::{AnyDatastore, Store};
use gingham_api::resources::{GinghamNode, GinghamNodeBgp, GinghamNodeSpec};
use ipnetwork::IpNetwork;

/// Writes (or refreshes) this node's GinghamNode; idempotent across restarts and keeps labels
/// someone else added.
pub async fn register_node(
    store: &Store<AnyDatastore>,
    node: &str,
    address: IpNetwork,
    address6: Option<IpNetwork>,
    as_number: Option<u32>,
    labels: &BTreeMap<String, String>,
    cluster_id: Option<&str>,
) -> anyhow::Result<GinghamNode> {
    for _ in 0..20 {
        let existing = store.get::<GinghamNode>(node).await?;
        let mut obj = existing.clone().unwrap_or_else(|| GinghamNode::new(node, GinghamNodeSpec::default()));
        let bgp = obj.spec.bgp.get_or_insert_with(GinghamNodeBgp::default);
        bgp.ipv4_address = Some(address.to_string());
        bgp.ipv6_address = address6.map(|a| a.to_string());
        if as_number.is_some() {
            bgp.as_number = as_number;
        }
        if cluster_id.is_some() {
            bgp.route_reflector_cluster_id = cluster_id.map(String::from);
        }
        let mut all = obj.metadata.labels.clone().unwrap_or_default();
        all.extend(labels.clone());
        obj.metadata.labels = Some(all);
        let result = match existing {
            Some(_) => store.update(&obj).await,
            None => store.create(&obj).await,
        };
        match result {
            Ok(o) => return Ok(o),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("could not write GinghamNode {node}: too many conflicting writes")
}

/// The node's router id: its IPv4 address.
pub fn router_id(address: IpNetwork) -> Ipv4Addr {
    match address.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::new(198, 18, 255, 255),
    }
}
