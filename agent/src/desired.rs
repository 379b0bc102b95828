//! What this node should have, as a pure function of the cluster's snapshot and the node's own
//! allocations: sessions (with their policies), originated prefixes and their communities,
//! block blackholes, routes to peers, where BGP listens, the natOutgoing rules and the log
//! level. The controller applies the difference to what it applied last.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gingham_api::resources::{AffinityState, BGPConfigurationSpec, BindMode, CommunityValue, DEFAULT_NAME};
use ipnetwork::IpNetwork;

use crate::cluster::ClusterSnapshot;
use crate::peers::{self, DesiredPeer};

/// Who this node is, as its flags and detection say.
#[derive(Clone, Debug)]
pub struct Identity {
    pub node: String,
    /// The agent's namespace: BGPPeer password Secrets are read there.
    pub namespace: String,
    pub address: IpNetwork,
    pub address6: Option<IpNetwork>,
    pub hold_time: u16,
    pub restart_time: u16,
}

/// One address held by a pod on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// The container ID.
    pub handle: String,
    pub block: IpNetwork,
    /// Taken from a block affine to another node.
    pub borrowed: bool,
    /// The pod's namespace and name when the runtime gave them (they name its veth).
    pub namespace: Option<String>,
    pub pod: Option<String>,
}

pub type HeldMap = BTreeMap<IpAddr, Held>;

#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub peers: BTreeMap<IpAddr, DesiredPeer>,
    /// What we originate, with the communities `prefixAdvertisements` attach.
    pub exports: BTreeMap<IpNetwork, Vec<CommunityValue>>,
    /// Our blocks: each gets a blackhole so traffic to its free addresses stops here.
    pub blocks: BTreeSet<IpNetwork>,
    /// Routes to peers via their `reachableBy` gateway.
    pub statics: BTreeMap<IpNetwork, IpAddr>,
    pub listen: Vec<SocketAddr>,
    /// The GinghamNode's routeReflectorClusterID: set, this node reflects.
    pub cluster_id: Option<Ipv4Addr>,
    pub nat_script: String,
    pub log_filter: &'static str,
}

pub fn compute(id: &Identity, cluster: &ClusterSnapshot, held: &HeldMap) -> Result<Desired, String> {
    let me = cluster.nodes.get(&id.node).ok_or_else(|| format!("GinghamNode {} is gone", id.node))?;
    let config: BGPConfigurationSpec = cluster.configs.get(DEFAULT_NAME).map(|c| c.spec.clone()).unwrap_or_default();
    let nodes = cluster.nodes.to_vec();
    let bgp_peers = cluster.peers.to_vec();
    let filters = cluster.filters.to_vec();
    let pools: Vec<IpNetwork> = cluster.pools.values().filter(|p| !p.spec.disabled).filter_map(|p| p.spec.network()).collect();
    let secret = |name: &str, key: &str| -> Result<String, String> {
        let full = format!("{}/{name}", id.namespace);
        let found = cluster.secrets.get(&full).ok_or_else(|| format!("Secret {full} not found"))?;
        gingham_api::resources::core::secret_value(found, key).ok_or_else(|| format!("Secret {full} has no key {key:?}"))
    };
    let mut want = peers::desired(&peers::View {
        me,
        nodes: &nodes,
        peers: &bgp_peers,
        config: &config,
        filters: &filters,
        pools: &pools,
        secret: &secret,
    });
    for p in want.values_mut() {
        p.config.hold_time = id.hold_time;
        p.config.graceful_restart = p.config.graceful_restart.map(|_| id.restart_time);
    }

    // Our blocks: confirmed affinities, and the blocks our own pods' addresses came from (the
    // affinity may reach the cache a moment after the address is handed out).
    let mut blocks: BTreeSet<IpNetwork> = cluster
        .affinities
        .values()
        .filter(|a| a.spec.node == id.node && a.spec.state == AffinityState::Confirmed)
        .filter_map(|a| a.spec.cidr.parse().ok())
        .collect();
    blocks.extend(held.values().filter(|h| !h.borrowed).map(|h| h.block));
    let borrowed = held.keys().filter(|a| !blocks.iter().any(|b| b.contains(**a))).map(|a| IpNetwork::from(*a));
    // Service ranges go out from every node, as Calico does; no kernel route: kube-proxy
    // handles what arrives.
    let services = crate::service_routes::local_routes(
        &config,
        cluster.services.objects.values().map(|s| &**s),
        cluster.endpoint_slices.objects.values().map(|s| &**s),
        &id.node,
    );
    let exports = blocks
        .iter()
        .copied()
        .chain(borrowed)
        .chain(config.service_cidrs())
        .chain(services)
        .map(|p| (p, config.communities_for(&p)))
        .collect();
    let link_local_peers = want.values().any(|p| p.config.interface.is_some());
    let statics = want.iter().filter_map(|(addr, p)| p.reachable_by.map(|gw| (IpNetwork::from(*addr), gw))).collect();
    Ok(Desired {
        peers: want,
        exports,
        blocks,
        statics,
        // The GinghamNode's addresses are the truth (a patch moves the sockets); the detected
        // ones until it has them.
        listen: with_link_local_listener(
            listen_addresses(&config, me.bgp_network(false).unwrap_or(id.address), me.bgp_network(true).or(id.address6)),
            &config,
            link_local_peers,
        ),
        cluster_id: me.route_reflector_cluster_id(),
        nat_script: crate::nat::script(&cluster.pools.values().map(|p| p.spec.clone()).collect::<Vec<_>>()),
        log_filter: log_filter(config.log_severity_screen.as_deref()),
    })
}

/// Where BGP listens: every address (Calico's default `bindMode: None`) or the node's own.
pub fn listen_addresses(config: &BGPConfigurationSpec, address: IpNetwork, address6: Option<IpNetwork>) -> Vec<SocketAddr> {
    let port = config.effective_listen_port();
    let (v4, v6): (IpAddr, Option<IpAddr>) = match config.bind_mode {
        Some(BindMode::NodeIP) => (address.ip(), address6.map(|a| a.ip())),
        _ => (Ipv4Addr::UNSPECIFIED.into(), address6.map(|_| Ipv6Addr::UNSPECIFIED.into())),
    };
    std::iter::once(v4).chain(v6).map(|ip| SocketAddr::new(ip, port)).collect()
}

/// A link-local peer connects to the link's address, not the node's: with the wildcard bind
/// mode an IPv6 wildcard listener is added for it on a node without an IPv6 address. (With
/// `bindMode: NodeIP` only our own connections carry link-local sessions.)
fn with_link_local_listener(mut listen: Vec<SocketAddr>, config: &BGPConfigurationSpec, link_local_peers: bool) -> Vec<SocketAddr> {
    if link_local_peers && config.bind_mode != Some(BindMode::NodeIP) && !listen.iter().any(SocketAddr::is_ipv6) {
        listen.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), config.effective_listen_port()));
    }
    listen
}

/// Calico's severities as tracing filters (tracing has no Fatal: Error is the closest).
fn log_filter(severity: Option<&str>) -> &'static str {
    match severity {
        Some("Debug") => "debug",
        Some("Warning") => "warn",
        Some("Error") | Some("Fatal") => "error",
        _ => "info",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_api::resources::{
        BlockAffinity, BlockAffinitySpec, GinghamNode, GinghamNodeBgp, GinghamNodeSpec, IPPool, IPPoolSpec, PrefixAdvertisement,
    };
    use std::sync::Arc;

    /// Every kind empty, not yet synced.
    fn empty_cluster() -> ClusterSnapshot {
        fn empty<K>() -> Arc<gingham_api::cache::Snapshot<K>> {
            Arc::new(gingham_api::cache::Snapshot {
                objects: BTreeMap::new(),
                revision: gingham_api::datastore::Revision(String::new()),
                synced: false,
            })
        }
        ClusterSnapshot {
            nodes: empty(),
            peers: empty(),
            configs: empty(),
            filters: empty(),
            pools: empty(),
            affinities: empty(),
            secrets: empty(),
            services: empty(),
            endpoint_slices: empty(),
        }
    }

    fn snapshot<K: Clone>(items: Vec<(&str, K)>) -> Arc<gingham_api::cache::Snapshot<K>> {
        Arc::new(gingham_api::cache::Snapshot {
            objects: items.into_iter().map(|(n, k)| (n.to_string(), Arc::new(k))).collect(),
            revision: gingham_api::datastore::Revision("1".into()),
            synced: true,
        })
    }

    fn node(name: &str, addr: &str) -> GinghamNode {
        GinghamNode::new(
            name,
            GinghamNodeSpec {
                bgp: Some(GinghamNodeBgp { ipv4_address: Some(format!("{addr}/24")), ..Default::default() }),
                ..Default::default()
            },
        )
    }

    fn id() -> Identity {
        Identity {
            node: "a".into(),
            namespace: "gingham-system".into(),
            address: "198.18.0.11/24".parse().unwrap(),
            address6: None,
            hold_time: 9,
            restart_time: 30,
        }
    }

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn held(handle: &str, block: &str, borrowed: bool) -> Held {
        Held { handle: handle.into(), block: net(block), borrowed, namespace: None, pod: None }
    }

    fn cluster() -> ClusterSnapshot {
        let mut c = empty_cluster();
        c.nodes = snapshot(vec![("a", node("a", "198.18.0.11")), ("b", node("b", "198.18.0.12"))]);
        let affinity = |node: &str, cidr: &str, state| {
            BlockAffinity::new("x", BlockAffinitySpec { node: node.into(), cidr: cidr.into(), state, deleted: false })
        };
        c.affinities = snapshot(vec![
            ("a1", affinity("a", "198.19.0.0/26", AffinityState::Confirmed)),
            ("a2", affinity("a", "198.19.0.64/26", AffinityState::Pending)),
            ("b1", affinity("b", "198.19.1.0/26", AffinityState::Confirmed)),
        ]);
        c.pools =
            snapshot(vec![("p", IPPool::new("p", IPPoolSpec { cidr: "198.19.0.0/16".into(), nat_outgoing: true, ..Default::default() }))]);
        c
    }

    #[test]
    fn exports_our_blocks_and_borrowed_addresses_with_a_blackhole_per_block() {
        let held: HeldMap = [
            (IpAddr::from([198, 19, 0, 5]), held("c1", "198.19.0.0/26", false)),
            // The block was just claimed; its affinity is not in the cache yet.
            (IpAddr::from([198, 19, 0, 130]), held("c2", "198.19.0.128/26", false)),
            (IpAddr::from([198, 19, 1, 9]), held("c3", "198.19.1.0/26", true)),
        ]
        .into();
        let d = compute(&id(), &cluster(), &held).unwrap();
        assert_eq!(d.blocks, [net("198.19.0.0/26"), net("198.19.0.128/26")].into(), "pending affinities are not ours yet");
        assert_eq!(d.exports.keys().copied().collect::<Vec<_>>(), [net("198.19.0.0/26"), net("198.19.0.128/26"), net("198.19.1.9/32")]);
        assert_eq!(d.peers.len(), 1, "the mesh to b");
        assert_eq!(d.peers.values().next().unwrap().config.hold_time, 9);
        assert!(d.nat_script.contains("masquerade"));
        assert_eq!(d.listen, ["0.0.0.0:179".parse().unwrap()]);
    }

    #[test]
    fn service_ranges_are_advertised_by_every_node_without_a_kernel_route() {
        use gingham_api::resources::ServiceCidr;
        let mut c = cluster();
        let cidrs = |list: &[&str]| Some(list.iter().map(|c| ServiceCidr { cidr: c.to_string() }).collect());
        let cfg = BGPConfigurationSpec {
            service_cluster_ips: cidrs(&["198.18.96.0/20", "2001:db8:96::/112"]),
            service_external_ips: cidrs(&["198.18.112.0/24"]),
            service_load_balancer_ips: cidrs(&["198.18.113.0/24"]),
            prefix_advertisements: vec![PrefixAdvertisement { cidr: "198.18.96.0/20".into(), communities: vec!["64512:300".into()] }],
            ..Default::default()
        };
        c.configs = snapshot(vec![("default", gingham_api::resources::BGPConfiguration::new("default", cfg))]);
        let d = compute(&id(), &c, &HeldMap::new()).unwrap();
        for cidr in ["198.18.96.0/20", "2001:db8:96::/112", "198.18.112.0/24", "198.18.113.0/24"] {
            assert!(d.exports.contains_key(&net(cidr)), "{cidr} advertised: {:?}", d.exports);
        }
        assert_eq!(d.exports[&net("198.18.96.0/20")], [CommunityValue::Standard((64512 << 16) | 300)]);
        assert!(
            d.blocks.iter().all(|b| !b.to_string().starts_with("198.18.") && b.is_ipv4()),
            "no blackhole: kube-proxy takes service traffic"
        );
    }

    #[test]
    fn communities_and_a_missing_node() {
        let mut c = cluster();
        let cfg = BGPConfigurationSpec {
            prefix_advertisements: vec![PrefixAdvertisement { cidr: "198.19.0.0/16".into(), communities: vec!["64512:100".into()] }],
            bind_mode: Some(BindMode::NodeIP),
            log_severity_screen: Some("Warning".into()),
            ..Default::default()
        };
        c.configs = snapshot(vec![("default", gingham_api::resources::BGPConfiguration::new("default", cfg))]);
        let d = compute(&id(), &c, &HeldMap::new()).unwrap();
        assert_eq!(d.exports[&net("198.19.0.0/26")], [CommunityValue::Standard((64512 << 16) | 100)]);
        assert_eq!(d.listen, ["198.18.0.11:179".parse().unwrap()]);
        assert_eq!(d.log_filter, "warn");
        c.nodes = snapshot(vec![("b", node("b", "198.18.0.12"))]);
        assert!(compute(&id(), &c, &HeldMap::new()).unwrap_err().contains("GinghamNode a is gone"));
    }
}
