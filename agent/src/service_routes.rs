//! Per-Service host routes, as Calico makes them. Traffic for a Service that must stay on the
//! node it reaches (`externalTrafficPolicy: Local`, which keeps the client's address; for
//! cluster IPs also `internalTrafficPolicy: Local`) may only go to nodes with a ready endpoint
//! of it: such a node advertises a /32 (/128) for each of the Service's addresses, more
//! specific than the range every node advertises, and withdraws it when its last local
//! endpoint goes. Addresses outside the configured ranges are never advertised.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use gingham_api::resources::core::{EndpointSlice, Service};
use gingham_api::resources::{BGPConfigurationSpec, ServiceCidr};
use ipnetwork::IpNetwork;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The host routes `node` advertises for the Local Services it has a ready endpoint of.
pub fn local_routes<'a>(
    config: &BGPConfigurationSpec,
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node: &str,
) -> BTreeSet<IpNetwork> {
    let ranges =
        |list: &Option<Vec<ServiceCidr>>| -> Vec<IpNetwork> { list.iter().flatten().filter_map(|c| c.cidr.parse().ok()).collect() };
    let (cluster, external, load_balancer) =
        (ranges(&config.service_cluster_ips), ranges(&config.service_external_ips), ranges(&config.service_load_balancer_ips));
    if cluster.is_empty() && external.is_empty() && load_balancer.is_empty() {
        return BTreeSet::new();
    }
    let here = ready_here(slices, node);
    let mut out = BTreeSet::new();
    for svc in services {
        let (Some(spec), Some(name)) = (&svc.spec, &svc.metadata.name) else { continue };
        if !here.contains(&(svc.metadata.namespace.clone().unwrap_or_default(), name.clone())) {
            continue;
        }
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let mut add = |ip: &str, inside: &[IpNetwork]| {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                if inside.iter().any(|r| r.contains(ip)) {
                    out.insert(IpNetwork::from(ip));
                }
            }
        };
        if external_local || internal_local {
            let ips = spec.cluster_ips.iter().flatten().chain(spec.cluster_ip.iter());
            for ip in ips {
                add(ip, &cluster);
            }
        }
        if external_local {
            for ip in spec.external_ips.iter().flatten() {
                add(ip, &external);
            }
            let ingress = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|lb| lb.ingress.as_ref());
            for ip in ingress.into_iter().flatten().filter_map(|i| i.ip.as_deref()) {
                add(ip, &load_balancer);
            }
        }
    }
    out
}

/// (namespace, Service name) of every Service with a ready endpoint on `node`. An endpoint
/// whose readiness is unknown counts as ready, as the EndpointSlice API says to read it.
fn ready_here<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>, node: &str) -> HashSet<(String, String)> {
    slices
        .into_iter()
        .filter(|s| {
            s.endpoints
                .iter()
                .flatten()
                .any(|e| e.node_name.as_deref() == Some(node) && e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        })
        .filter_map(|s| {
            let service = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
            Some((s.metadata.namespace.clone().unwrap_or_default(), service.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config() -> BGPConfigurationSpec {
        let cidrs = |list: &[&str]| Some(list.iter().map(|c| ServiceCidr { cidr: c.to_string() }).collect());
        BGPConfigurationSpec {
            service_cluster_ips: cidrs(&["10.96.0.0/12", "fd00:96::/108"]),
            service_external_ips: cidrs(&["198.18.112.0/24"]),
            service_load_balancer_ips: cidrs(&["198.18.113.0/24"]),
            ..Default::default()
        }
    }

    fn service(name: &str, external: &str, internal: &str) -> Service {
        Service {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("shop".into()), ..Default::default() },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                cluster_ip: Some("10.96.0.10".into()),
                cluster_ips: Some(vec!["10.96.0.10".into(), "fd00:96::10".into()]),
                external_ips: Some(vec!["198.18.112.10".into(), "203.0.113.9".into()]),
                external_traffic_policy: Some(external.into()),
                internal_traffic_policy: Some(internal.into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress { ip: Some("198.18.113.5".into()), ..Default::default() }]),
                }),
                ..Default::default()
            }),
        }
    }

    fn slice(service: &str, endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        let labels = [(SERVICE_NAME_LABEL.to_string(), service.to_string())].into();
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{service}-x")),
                namespace: Some("shop".into()),
                labels: Some(labels),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, (node, ready))| Endpoint {
                        addresses: vec![format!("198.19.0.{}", i + 1)],
                        node_name: Some(node.to_string()),
                        conditions: Some(EndpointConditions { ready: *ready, ..Default::default() }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn nets(list: &[&str]) -> BTreeSet<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_local_service_is_advertised_from_nodes_with_a_ready_endpoint_inside_the_ranges_only() {
        let svc = service("web", "Local", "Cluster");
        let slices = [slice("web", &[("node-1", Some(true)), ("node-2", Some(false)), ("node-3", None)])];
        let all = nets(&["10.96.0.10/32", "fd00:96::10/128", "198.18.112.10/32", "198.18.113.5/32"]);
        assert_eq!(local_routes(&config(), [&svc], &slices, "node-1"), all, "203.0.113.9 is outside every range");
        assert!(local_routes(&config(), [&svc], &slices, "node-2").is_empty(), "its endpoint is not ready");
        assert_eq!(local_routes(&config(), [&svc], &slices, "node-3"), all, "readiness unknown counts as ready");
        assert!(local_routes(&config(), [&svc], &slices, "node-4").is_empty(), "no endpoint there");
    }

    #[test]
    fn the_traffic_policies_decide_which_addresses_get_host_routes() {
        let slices = [slice("web", &[("node-1", Some(true))])];
        let cluster_wide = service("web", "Cluster", "Cluster");
        assert!(local_routes(&config(), [&cluster_wide], &slices, "node-1").is_empty(), "the ranges cover it from every node");
        let internal = service("web", "Cluster", "Local");
        assert_eq!(local_routes(&config(), [&internal], &slices, "node-1"), nets(&["10.96.0.10/32", "fd00:96::10/128"]));
    }

    #[test]
    fn nothing_without_ranges_or_from_another_namespace() {
        let svc = service("web", "Local", "Local");
        let slices = [slice("web", &[("node-1", Some(true))])];
        assert!(local_routes(&BGPConfigurationSpec::default(), [&svc], &slices, "node-1").is_empty());
        let mut elsewhere = slice("web", &[("node-1", Some(true))]);
        elsewhere.metadata.namespace = Some("other".into());
        assert!(local_routes(&config(), [&svc], [&elsewhere], "node-1").is_empty(), "another namespace's web");
    }
}
