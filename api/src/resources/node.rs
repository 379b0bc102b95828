//! GinghamNode: a node's BGP identity (address, AS override, route-reflector cluster) and the
//! labels that BGPPeer and IPPool selectors match. The agent writes it at start-up.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{self, Check, ValidationError};
use super::{Kind, KindInfo};

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(group = "gingham.io", version = "v1", kind = "GinghamNode", plural = "ginghamnodes")]
#[serde(rename_all = "camelCase")]
pub struct GinghamNodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<GinghamNodeBgp>,
    /// The orchestrator's objects this node is (Calico's field): `{orchestrator: k8s, nodeName}`
    /// when the agent runs on the kubernetes datastore. gingham-controllers removes a
    /// GinghamNode, its addresses and its blocks when that Node is deleted, and mirrors the
    /// Node's labels onto it; a GinghamNode without one (a route reflector outside Kubernetes,
    /// sqlite mode) is never touched by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrchRef {
    /// `k8s`, the only orchestrator Gingham knows.
    pub orchestrator: String,
    pub node_name: String,
}

/// The orchestrator name of Kubernetes in `orchRefs`.
pub const K8S_ORCHESTRATOR: &str = "k8s";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GinghamNodeBgp {
    /// The node's address with its subnet, e.g. `198.18.0.11/24`: sessions are sourced from it
    /// and it is the next hop of the node's blocks.
    #[serde(default, rename = "ipv4Address", skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(default, rename = "ipv6Address", skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// Overrides BGPConfiguration `default`'s AS for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    /// Makes the node a route reflector of this cluster (an IPv4-formatted id).
    #[serde(default, rename = "routeReflectorClusterID", skip_serializing_if = "Option::is_none")]
    pub route_reflector_cluster_id: Option<String>,
}

impl GinghamNode {
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata.labels.clone().unwrap_or_default()
    }

    /// The node's BGP addresses (without prefix), IPv4 first.
    pub fn bgp_addresses(&self) -> Vec<IpAddr> {
        let Some(bgp) = &self.spec.bgp else { return Vec::new() };
        [&bgp.ipv4_address, &bgp.ipv6_address]
            .into_iter()
            .flatten()
            .filter_map(|a| a.parse::<ipnetwork::IpNetwork>().ok())
            .map(|n| n.ip())
            .collect()
    }

    /// The node's BGP address of one family with its subnet, as stored.
    pub fn bgp_network(&self, v6: bool) -> Option<ipnetwork::IpNetwork> {
        let bgp = self.spec.bgp.as_ref()?;
        let text = if v6 { bgp.ipv6_address.as_deref() } else { bgp.ipv4_address.as_deref() };
        text?.parse().ok()
    }

    pub fn route_reflector_cluster_id(&self) -> Option<Ipv4Addr> {
        self.spec.bgp.as_ref()?.route_reflector_cluster_id.as_deref()?.parse().ok()
    }

    /// The Kubernetes Node this node is, when it is one.
    pub fn k8s_node_name(&self) -> Option<&str> {
        self.spec.orch_refs.iter().find(|r| r.orchestrator == K8S_ORCHESTRATOR).map(|r| r.node_name.as_str())
    }
}

impl Kind for GinghamNode {
    const INFO: KindInfo = super::GINGHAM_NODE;

    fn validate(&self) -> Check {
        validate::object_name("metadata.name", self.metadata.name.as_deref().unwrap_or_default())?;
        for (i, r) in self.spec.orch_refs.iter().enumerate() {
            if r.orchestrator != K8S_ORCHESTRATOR {
                return Err(ValidationError::new(format!("spec.orchRefs[{i}].orchestrator"), format!("{:?} is not k8s", r.orchestrator)));
            }
            validate::object_name(&format!("spec.orchRefs[{i}].nodeName"), &r.node_name)?;
        }
        let Some(bgp) = &self.spec.bgp else { return Ok(()) };
        if let Some(a) = &bgp.ipv4_address {
            if !validate::address_with_prefix("spec.bgp.ipv4Address", a)?.is_ipv4() {
                return Err(ValidationError::new("spec.bgp.ipv4Address", format!("{a:?} is not IPv4")));
            }
        }
        if let Some(a) = &bgp.ipv6_address {
            if !validate::address_with_prefix("spec.bgp.ipv6Address", a)?.is_ipv6() {
                return Err(ValidationError::new("spec.bgp.ipv6Address", format!("{a:?} is not IPv6")));
            }
        }
        if let Some(asn) = bgp.as_number {
            validate::as_number("spec.bgp.asNumber", asn)?;
        }
        if let Some(id) = &bgp.route_reflector_cluster_id {
            if id.parse::<Ipv4Addr>().is_err() {
                return Err(ValidationError::new(
                    "spec.bgp.routeReflectorClusterID",
                    format!("{id:?} is not an IPv4-formatted id like 224.0.0.1"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_cluster_id_are_checked() {
        let mut n = GinghamNode::new(
            "node-1",
            GinghamNodeSpec {
                bgp: Some(GinghamNodeBgp {
                    ipv4_address: Some("198.18.0.11/24".into()),
                    ipv6_address: Some("2001:db8:18::11/64".into()),
                    ..Default::default()
                }),
                orch_refs: vec![OrchRef { orchestrator: "k8s".into(), node_name: "node-1".into() }],
            },
        );
        assert!(n.validate().is_ok());
        assert_eq!(n.bgp_addresses(), vec!["198.18.0.11".parse::<IpAddr>().unwrap(), "2001:db8:18::11".parse().unwrap()]);
        n.spec.bgp.as_mut().unwrap().ipv4_address = Some("2001:db8::1/64".into());
        assert_eq!(n.validate().unwrap_err().field, "spec.bgp.ipv4Address");
        n.spec.bgp.as_mut().unwrap().ipv4_address = None;
        n.spec.bgp.as_mut().unwrap().route_reflector_cluster_id = Some("rr-1".into());
        assert_eq!(n.validate().unwrap_err().field, "spec.bgp.routeReflectorClusterID");
        n.spec.bgp = None;
        assert_eq!(n.k8s_node_name(), Some("node-1"));
        n.spec.orch_refs[0].orchestrator = "mesos".into();
        assert_eq!(n.validate().unwrap_err().field, "spec.orchRefs[0].orchestrator");
    }
}
