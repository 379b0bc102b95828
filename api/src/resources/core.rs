//! The Kubernetes kinds Gingham reads besides its own: Secrets (BGP passwords), Services and
//! EndpointSlices (which Service addresses a node advertises), Nodes and Pods (what
//! `gingham-controllers` garbage-collects against) and Leases (its leader election).
//! They are the `k8s-openapi` types, stored and watched through the same [`Datastore`]
//! contract as Gingham's kinds; in sqlite mode, where there is no API server, Secrets, Services
//! and EndpointSlices are kept in the datastore itself ([`stored_kinds`]) so `ginghamctl apply`
//! can provide them.
//!
//! [`Datastore`]: crate::datastore::Datastore

use kube::core::PartialObjectMeta;

use super::validate::{Check, ValidationError};
use super::{Kind, KindInfo, Scope, Watched};

pub type Secret = k8s_openapi::api::core::v1::Secret;
pub type Service = k8s_openapi::api::core::v1::Service;
pub type EndpointSlice = k8s_openapi::api::discovery::v1::EndpointSlice;
pub type Node = k8s_openapi::api::core::v1::Node;
pub type Lease = k8s_openapi::api::coordination::v1::Lease;
/// A Node's metadata only: labels and existence are all the controllers need, and a full Node
/// carries kilobytes of status (images, conditions) per node.
pub type NodeMetadata = PartialObjectMeta<Node>;
/// A Pod's metadata only: namespace, name and UID are what an IPAM handle records.
pub type PodMetadata = PartialObjectMeta<k8s_openapi::api::core::v1::Pod>;

pub const SECRET: KindInfo = KindInfo {
    kind: "Secret",
    plural: "secrets",
    aliases: &["secret"],
    api_version: "v1",
    scope: Scope::Namespaced(Watched::OwnNamespace),
    metadata_only: false,
};
pub const SERVICE: KindInfo = KindInfo {
    kind: "Service",
    plural: "services",
    aliases: &["service", "svc"],
    api_version: "v1",
    scope: Scope::Namespaced(Watched::AllNamespaces),
    metadata_only: false,
};
pub const ENDPOINT_SLICE: KindInfo = KindInfo {
    kind: "EndpointSlice",
    plural: "endpointslices",
    aliases: &["endpointslice"],
    api_version: "discovery.k8s.io/v1",
    scope: Scope::Namespaced(Watched::AllNamespaces),
    metadata_only: false,
};
pub const NODE: KindInfo =
    KindInfo { kind: "Node", plural: "nodes", aliases: &[], api_version: "v1", scope: Scope::Cluster, metadata_only: false };
pub const NODE_METADATA: KindInfo = KindInfo { metadata_only: true, ..NODE };
pub const POD_METADATA: KindInfo = KindInfo {
    kind: "Pod",
    plural: "pods",
    aliases: &[],
    api_version: "v1",
    scope: Scope::Namespaced(Watched::AllNamespaces),
    metadata_only: true,
};
pub const LEASE: KindInfo = KindInfo {
    kind: "Lease",
    plural: "leases",
    aliases: &[],
    api_version: "coordination.k8s.io/v1",
    scope: Scope::Namespaced(Watched::OwnNamespace),
    metadata_only: false,
};

/// The Kubernetes kinds `ginghamctl` stores in a sqlite datastore.
pub fn stored_kinds() -> &'static [KindInfo] {
    &[SECRET, SERVICE, ENDPOINT_SLICE]
}

impl Kind for Secret {
    const INFO: KindInfo = SECRET;

    fn validate(&self) -> Check {
        let keys = self.data.iter().flat_map(|d| d.keys()).chain(self.string_data.iter().flat_map(|d| d.keys()));
        for key in keys {
            // The API server's rule for Secret keys.
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                return Err(ValidationError::new(format!("data.{key}"), "a key consists of alphanumerics, '-', '_' or '.'"));
            }
        }
        Ok(())
    }
}

/// What the API server would refuse in the fields Gingham reads; the rest is Kubernetes' own
/// business.
impl Kind for Service {
    const INFO: KindInfo = SERVICE;

    fn validate(&self) -> Check {
        let Some(spec) = &self.spec else { return Ok(()) };
        let one_of = |field: &str, value: Option<&String>, allowed: &[&str]| match value {
            Some(v) if !allowed.contains(&v.as_str()) => Err(ValidationError::new(field, format!("{v:?} is not one of {allowed:?}"))),
            _ => Ok(()),
        };
        one_of("spec.type", spec.type_.as_ref(), &["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"])?;
        one_of("spec.externalTrafficPolicy", spec.external_traffic_policy.as_ref(), &["Cluster", "Local"])?;
        one_of("spec.internalTrafficPolicy", spec.internal_traffic_policy.as_ref(), &["Cluster", "Local"])?;
        let address = |field: String, text: &str| {
            text.parse::<std::net::IpAddr>().map(|_| ()).map_err(|_| ValidationError::new(field, format!("{text:?} is not an IP address")))
        };
        if let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") {
            address("spec.clusterIP".into(), ip)?;
        }
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate().filter(|(_, ip)| ip.as_str() != "None") {
            address(format!("spec.clusterIPs[{i}]"), ip)?;
        }
        for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
            address(format!("spec.externalIPs[{i}]"), ip)?;
        }
        if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty()) {
            address("spec.loadBalancerIP".into(), ip)?;
        }
        let ingress = self.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
        for (i, ing) in ingress.into_iter().flatten().enumerate() {
            if let Some(ip) = &ing.ip {
                address(format!("status.loadBalancer.ingress[{i}].ip"), ip)?;
            }
        }
        Ok(())
    }
}

impl Kind for EndpointSlice {
    const INFO: KindInfo = ENDPOINT_SLICE;

    fn validate(&self) -> Check {
        let v6 = match self.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            "FQDN" => return Ok(()),
            other => return Err(ValidationError::new("addressType", format!("{other:?} is not IPv4, IPv6 or FQDN"))),
        };
        for (i, e) in self.endpoints.iter().flatten().enumerate() {
            for (j, a) in e.addresses.iter().enumerate() {
                if !a.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_ipv6() == v6) {
                    return Err(ValidationError::new(
                        format!("endpoints[{i}].addresses[{j}]"),
                        format!("{a:?} is not an {} address", self.address_type),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Kind for Node {
    const INFO: KindInfo = NODE;

    fn validate(&self) -> Check {
        Ok(())
    }
}

impl Kind for NodeMetadata {
    const INFO: KindInfo = NODE_METADATA;

    fn validate(&self) -> Check {
        Ok(())
    }
}

impl Kind for PodMetadata {
    const INFO: KindInfo = POD_METADATA;

    fn validate(&self) -> Check {
        Ok(())
    }
}

impl Kind for Lease {
    const INFO: KindInfo = LEASE;

    fn validate(&self) -> Check {
        let spec = self.spec.as_ref();
        if spec.and_then(|s| s.lease_duration_seconds).is_some_and(|d| d <= 0) {
            return Err(ValidationError::new("spec.leaseDurationSeconds", "must be positive"));
        }
        Ok(())
    }
}

/// The value of `key` in a Secret: `data` (base64 on the wire, decoded by the type) or, as
/// sqlite mode stores what `ginghamctl apply` was given, `stringData`.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret.string_data.as_ref().and_then(|d| d.get(key)).cloned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::resources::validate_value;

    fn service(spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})
    }

    fn slice(address_type: &str, address: &str) -> serde_json::Value {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-1", "namespace": "shop"},
               "addressType": address_type, "endpoints": [{"addresses": [address], "nodeName": "node-1"}]})
    }

    #[test]
    fn services_and_endpoint_slices_are_checked_where_gingham_reads_them() {
        let good = json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "externalIPs": ["198.18.112.10"],
                          "externalTrafficPolicy": "Local", "loadBalancerIP": "198.18.113.5"});
        assert!(validate_value(&service(good)).is_ok());
        assert!(validate_value(&service(json!({"clusterIP": "None"}))).is_ok(), "a headless Service");
        for (spec, field) in [
            (json!({"externalTrafficPolicy": "local"}), "spec.externalTrafficPolicy"),
            (json!({"internalTrafficPolicy": "Nowhere"}), "spec.internalTrafficPolicy"),
            (json!({"type": "Balancer"}), "spec.type"),
            (json!({"externalIPs": ["198.18.112.300"]}), "spec.externalIPs[0]"),
            (json!({"clusterIPs": ["10.96.0.10", "fd00::x"]}), "spec.clusterIPs[1]"),
            (json!({"loadBalancerIP": "lb"}), "spec.loadBalancerIP"),
        ] {
            assert_eq!(validate_value(&service(spec.clone())).unwrap_err().field, field, "{spec}");
        }
        let mut no_namespace = service(json!({}));
        no_namespace["metadata"].as_object_mut().unwrap().remove("namespace");
        assert_eq!(validate_value(&no_namespace).unwrap_err().field, "metadata.namespace");

        assert!(validate_value(&slice("IPv4", "198.19.0.5")).is_ok());
        assert!(validate_value(&slice("IPv6", "fd00:19::5")).is_ok());
        assert_eq!(validate_value(&slice("IPv6", "198.19.0.5")).unwrap_err().field, "endpoints[0].addresses[0]");
        assert_eq!(validate_value(&slice("IPX", "198.19.0.5")).unwrap_err().field, "addressType");
    }
}
