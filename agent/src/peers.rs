//! The peer set a node should have, computed from the datastore's view (sans-IO, so every rule
//! is a unit test): the node-to-node mesh, route-reflector clusters and the BGPPeers that
//! select this node. The agent applies the result to the speaker as a diff.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use gingham_api::resources::{BGPConfigurationSpec, BGPFilter, BGPPeer, BfdSpec, GinghamNode, MaxPrefixAction, NextHopMode, SourceAddress};
use gingham_api::selector::Selector;
use gingham_bgp::session::TtlMode;
use gingham_bgp::speaker::{self, NeighborConfig};
use ipnetwork::IpNetwork;

use crate::policy;

/// How a peer came to be, for `node status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    Mesh,
    /// We reflect to it, or it reflects to us.
    RouteReflector,
    /// A BGPPeer without `node`/`nodeSelector`.
    Global,
    /// A BGPPeer for this node only or selecting it.
    Node,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredPeer {
    pub kind: PeerKind,
    pub config: NeighborConfig,
    /// The BGPPeer's `reachableBy`: a route to the peer via this gateway is wanted.
    pub reachable_by: Option<IpAddr>,
    /// Configuration the session runs without, and why (a BGPFilter that does not exist).
    pub problems: Vec<String>,
    /// Why the session must not start at all (its password's Secret or key is missing): the
    /// peer stays down rather than come up unauthenticated.
    pub blocked: Option<String>,
    /// A BFD session beside it (`BGPPeer.spec.bfd`, `nodeToNodeMeshBFD` for node-to-node ones).
    pub bfd: Option<gingham_bfd::driver::Peering>,
}

/// The BFD session for a BGP session with `n`, and whether BGP waits for it.
fn with_bfd(n: &mut NeighborConfig, spec: Option<&BfdSpec>) -> Option<gingham_bfd::driver::Peering> {
    let spec = spec?;
    let (min_rx, min_tx, multiplier) = spec.effective();
    n.wait_for_bfd = spec.wait_for_up;
    Some(gingham_bfd::driver::Peering { local: n.local_address, min_tx, min_rx, multiplier })
}

pub struct View<'a> {
    pub me: &'a GinghamNode,
    pub nodes: &'a [GinghamNode],
    pub peers: &'a [BGPPeer],
    pub config: &'a BGPConfigurationSpec,
    pub filters: &'a [BGPFilter],
    /// The enabled IP pools: no external router may announce addresses inside them.
    pub pools: &'a [IpNetwork],
    /// Resolves a BGPPeer's `password.secretKeyRef` (Secret name, key) in the agent's namespace;
    /// the error says what is missing.
    pub secret: &'a dyn Fn(&str, &str) -> Result<String, String>,
}

fn node_as(node: &GinghamNode, config: &BGPConfigurationSpec) -> u32 {
    node.spec.bgp.as_ref().and_then(|b| b.as_number).unwrap_or(config.effective_as_number())
}

fn address_of(node: &GinghamNode, v6: bool) -> Option<IpAddr> {
    node.bgp_addresses().into_iter().find(|a| a.is_ipv6() == v6)
}

/// Every session this node should have, keyed by peer address.
pub fn desired(view: &View<'_>) -> BTreeMap<IpAddr, DesiredPeer> {
    let mut out = BTreeMap::new();
    let me = view.me;
    let my_name = me.metadata.name.clone().unwrap_or_default();
    let my_as = node_as(me, view.config);
    let my_cluster = me.route_reflector_cluster_id();
    let others = view.nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(my_name.as_str()));

    for v6 in [false, true] {
        let Some(my_addr) = address_of(me, v6) else { continue };
        for other in others.clone() {
            let Some(addr) = address_of(other, v6) else { continue };
            let their_cluster = other.route_reflector_cluster_id();
            let (kind, rr_client) = match (my_cluster, their_cluster) {
                // We reflect: nodes outside our cluster are our clients; fellow reflectors are not.
                (Some(mine), theirs) => (PeerKind::RouteReflector, theirs != Some(mine)),
                // They reflect for us.
                (None, Some(_)) => (PeerKind::RouteReflector, false),
                (None, None) if view.config.mesh_enabled() => (PeerKind::Mesh, false),
                (None, None) => continue,
            };
            let mut n = NeighborConfig::new(addr, node_as(other, view.config));
            // The speaker's AS is the one it started with; the GinghamNode's, which can change
            // while the agent runs, is set per session.
            n.local_as = Some(my_as);
            n.local_address = Some(my_addr);
            n.port = view.config.effective_listen_port();
            n.rr_client = rr_client;
            // One direction per pair (Calico): the lower address listens, the higher dials, so a
            // connection attempt never aborts the other side's graceful restart.
            n.passive = my_addr < addr;
            n.export = Some(policy::export(&[], false));
            let bfd = with_bfd(&mut n, view.config.node_to_node_mesh_bfd.as_ref());
            out.insert(addr, DesiredPeer { kind, config: n, reachable_by: None, problems: Vec::new(), blocked: None, bfd });
        }
    }

    let labels = me.labels();
    for peer in view.peers {
        let spec = &peer.spec;
        let selects_me = match (&spec.node, &spec.node_selector) {
            (Some(node), _) => *node == my_name,
            (None, Some(sel)) => Selector::from_str(sel).is_ok_and(|s| s.matches(&labels)),
            (None, None) => true,
        };
        if !selects_me {
            continue;
        }
        let kind = if spec.node.is_some() || spec.node_selector.is_some() { PeerKind::Node } else { PeerKind::Global };
        let (password, blocked) = match spec.password.as_ref().map(|p| (&p.literal, &p.secret_key_ref)) {
            Some((Some(l), _)) => (Some(l.clone()), None),
            Some((None, Some(r))) => match (view.secret)(&r.name, &r.key) {
                Ok(key) => (Some(key), None),
                Err(why) => (None, Some(format!("password: {why}"))),
            },
            _ => (None, None),
        };
        let restart = spec
            .max_restart_time
            .as_deref()
            .and_then(gingham_api::resources::validate::parse_duration)
            .map(|d: Duration| d.as_secs().min(4095) as u16);
        let mut problems = Vec::new();
        let filters: Vec<_> = spec
            .filters
            .iter()
            .filter_map(|name| {
                let found = view.filters.iter().find(|f| f.metadata.name.as_deref() == Some(name.as_str()));
                if found.is_none() {
                    problems.push(format!("BGPFilter {name:?} does not exist; the session runs without it"));
                }
                found.map(|f| &f.spec)
            })
            .collect();
        let keepalive = spec
            .keepalive_time
            .as_deref()
            .and_then(gingham_api::resources::validate::parse_duration)
            .map(|d| d.as_secs().clamp(1, u64::from(u16::MAX)) as u16);
        let max_prefixes = spec.max_prefixes.as_ref().map(|m| speaker::MaxPrefixes {
            limit: m.limit as usize,
            action: match m.action {
                MaxPrefixAction::Warn => speaker::MaxPrefixAction::WarnOnly,
                MaxPrefixAction::Teardown => {
                    speaker::MaxPrefixAction::TearDown { restart: m.restart_seconds.map(|s| Duration::from_secs(s.into())) }
                }
            },
        });
        let reachable_by = spec.reachable_by.as_deref().and_then(|g| g.parse().ok());
        let mut targets: Vec<(IpAddr, u16, u32)> = Vec::new();
        if let Some(Ok(sock)) = spec.peer_socket() {
            targets.push((sock.ip(), sock.port(), spec.as_number.unwrap_or(my_as)));
        } else if let Some(sel) = spec.peer_selector.as_deref().and_then(|s| Selector::from_str(s).ok()) {
            for other in others.clone().filter(|n| sel.matches(&n.labels())) {
                for addr in other.bgp_addresses() {
                    targets.push((addr, view.config.effective_listen_port(), spec.as_number.unwrap_or(node_as(other, view.config))));
                }
            }
        }
        let interface = spec.peer_interface();
        for (addr, port, asn) in targets {
            let mut n = NeighborConfig::new(addr, asn);
            n.port = port;
            match &interface {
                // An unnumbered link: the session runs between the link's own link-local
                // addresses, whatever addresses the node has.
                Some(link) => n.interface = Some(link.clone()),
                None => {
                    let Some(local) = address_of(me, addr.is_ipv6()) else { continue };
                    if spec.source_address != Some(SourceAddress::None) {
                        n.local_address = Some(local);
                    }
                }
            }
            n.md5_key = password.clone();
            n.keep_original_next_hop = spec.keep_original_next_hop || spec.next_hop_mode == Some(NextHopMode::Keep);
            n.next_hop_self = spec.next_hop_mode == Some(NextHopMode::NextHopSelf);
            n.local_as = spec.local_as_number.or(Some(my_as));
            n.keepalive_time = keepalive;
            n.allow_own_as = spec.num_allowed_local_as_numbers.unwrap_or(0);
            n.max_prefixes = max_prefixes;
            n.rr_client = spec.route_reflector_client;
            n.extended_next_hop = spec.extended_next_hop && addr.is_ipv6();
            // A BGPPeer that names another node is part of the cluster; any other is a router.
            n.external = !view.nodes.iter().any(|node| node.bgp_addresses().contains(&addr));
            n.export = Some(policy::export(&filters, n.external));
            n.import = policy::import(&filters, n.external, view.pools);
            if let Some(hops) = spec.ttl_security {
                n.ttl = TtlMode::Gtsm { hops };
            }
            if restart.is_some() {
                n.graceful_restart = restart;
            }
            // An explicit BGPPeer wins over the mesh entry for the same address.
            let reachable_by = reachable_by.filter(|_| spec.peer_ip.is_some());
            let bfd = with_bfd(&mut n, spec.bfd.as_ref());
            out.insert(addr, DesiredPeer { kind, config: n, reachable_by, problems: problems.clone(), blocked: blocked.clone(), bfd });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gingham_api::resources::{BGPPeerSpec, GinghamNodeBgp, GinghamNodeSpec};

    fn node(name: &str, addr: &str, cluster: Option<&str>, labels: &[(&str, &str)]) -> GinghamNode {
        let mut n = GinghamNode::new(
            name,
            GinghamNodeSpec {
                bgp: Some(GinghamNodeBgp {
                    ipv4_address: Some(format!("{addr}/24")),
                    route_reflector_cluster_id: cluster.map(String::from),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        n.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        n
    }

    fn no_secret(name: &str, _: &str) -> Result<String, String> {
        Err(format!("Secret {name:?} not found"))
    }

    fn compute(me: usize, nodes: &[GinghamNode], peers: &[BGPPeer], config: &BGPConfigurationSpec) -> BTreeMap<IpAddr, DesiredPeer> {
        desired(&View { me: &nodes[me], nodes, peers, config, filters: &[], pools: &[], secret: &no_secret })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mesh_peers_with_everyone_else_one_direction_per_pair() {
        let nodes = [node("a", "198.18.0.11", None, &[]), node("b", "198.18.0.12", None, &[]), node("c", "198.18.0.13", None, &[])];
        let peers = compute(1, &nodes, &[], &BGPConfigurationSpec::default());
        assert_eq!(peers.keys().copied().collect::<Vec<_>>(), [ip("198.18.0.11"), ip("198.18.0.13")]);
        assert!(!peers[&ip("198.18.0.11")].config.passive, "b (.12) dials a (.11)");
        assert!(peers[&ip("198.18.0.13")].config.passive, "b (.12) waits for c (.13)");
        assert_eq!(peers[&ip("198.18.0.11")].config.local_address, Some(ip("198.18.0.12")));
        assert_eq!(peers[&ip("198.18.0.11")].config.peer_as, 64512);
        let off = BGPConfigurationSpec { node_to_node_mesh_enabled: Some(false), ..Default::default() };
        assert!(compute(1, &nodes, &[], &off).is_empty());
    }

    #[test]
    fn reflectors_serve_clients_and_clients_see_only_reflectors() {
        let off = BGPConfigurationSpec { node_to_node_mesh_enabled: Some(false), ..Default::default() };
        let nodes =
            [node("rr", "198.18.0.11", Some("224.0.0.1"), &[]), node("b", "198.18.0.12", None, &[]), node("c", "198.18.0.13", None, &[])];
        let rr = compute(0, &nodes, &[], &off);
        assert_eq!(rr.len(), 2);
        assert!(rr.values().all(|p| p.config.rr_client && p.kind == PeerKind::RouteReflector));
        let b = compute(1, &nodes, &[], &off);
        assert_eq!(b.keys().copied().collect::<Vec<_>>(), [ip("198.18.0.11")]);
        assert!(!b[&ip("198.18.0.11")].config.rr_client);
    }

    #[test]
    fn bgp_peers_select_nodes_and_targets() {
        let nodes = [node("a", "198.18.0.11", None, &[("rack", "r1")]), node("b", "198.18.0.12", None, &[("rack", "r2")])];
        let tor = BGPPeer::new(
            "tor",
            BGPPeerSpec {
                node_selector: Some("rack == 'r1'".into()),
                peer_ip: Some("198.18.0.1".into()),
                as_number: Some(65001),
                ttl_security: Some(1),
                ..Default::default()
            },
        );
        let a = compute(0, &nodes, std::slice::from_ref(&tor), &BGPConfigurationSpec::default());
        let t = &a[&ip("198.18.0.1")];
        assert_eq!((t.kind, t.config.peer_as, t.config.ttl), (PeerKind::Node, 65001, TtlMode::Gtsm { hops: 1 }));
        let b = compute(1, &nodes, &[tor], &BGPConfigurationSpec::default());
        assert!(!b.contains_key(&ip("198.18.0.1")), "rack r2 is not selected");
    }

    #[test]
    fn bfd_comes_from_the_mesh_setting_and_from_each_bgp_peer() {
        use gingham_api::resources::BGPPeerSpec;
        let nodes = [node("a", "198.18.0.11", None, &[]), node("b", "198.18.0.12", None, &[])];
        let config = BGPConfigurationSpec {
            node_to_node_mesh_bfd: Some(BfdSpec { min_rx_ms: Some(100), multiplier: Some(5), ..Default::default() }),
            ..Default::default()
        };
        let tor = BGPPeer::new(
            "tor",
            BGPPeerSpec {
                peer_ip: Some("198.18.0.1".into()),
                as_number: Some(65001),
                bfd: Some(BfdSpec { wait_for_up: true, ..Default::default() }),
                ..Default::default()
            },
        );
        let plain = BGPPeer::new("plain", BGPPeerSpec { peer_ip: Some("198.18.0.2".into()), as_number: Some(65001), ..Default::default() });
        let got = compute(0, &nodes, &[tor, plain], &config);
        let mesh = &got[&ip("198.18.0.12")];
        let b = mesh.bfd.expect("the mesh session has BFD");
        assert_eq!((b.min_rx, b.min_tx, b.multiplier), (Duration::from_millis(100), Duration::from_millis(300), 5));
        assert_eq!(b.local, Some(ip("198.18.0.11")), "from the node's BGP address, as the session");
        assert!(!mesh.config.wait_for_bfd);
        let t = &got[&ip("198.18.0.1")];
        assert_eq!(t.bfd.map(|b| (b.min_rx, b.multiplier)), Some((Duration::from_millis(300), 3)), "defaults 300 ms x 3");
        assert!(t.config.wait_for_bfd);
        assert!(got[&ip("198.18.0.2")].bfd.is_none());
        assert!(compute(0, &nodes, &[], &BGPConfigurationSpec::default()).values().all(|p| p.bfd.is_none()));
    }

    #[test]
    fn passwords_come_from_literals_or_secrets_and_a_missing_secret_blocks_the_session() {
        use gingham_api::resources::{PeerPassword, SecretKeyRef};
        let nodes = [node("a", "198.18.0.11", None, &[])];
        let peer = |name: &str, ip: &str, password: PeerPassword| {
            BGPPeer::new(
                name,
                BGPPeerSpec { peer_ip: Some(ip.into()), as_number: Some(65001), password: Some(password), ..Default::default() },
            )
        };
        let from = |name: &str, key: &str| PeerPassword {
            literal: None,
            secret_key_ref: Some(SecretKeyRef { name: name.into(), key: key.into() }),
        };
        let peers = [
            peer("lit", "198.18.0.1", PeerPassword { literal: Some("plain".into()), secret_key_ref: None }),
            peer("sec", "198.18.0.2", from("bgp", "tor")),
            peer("nokey", "198.18.0.3", from("bgp", "other")),
            peer("nosecret", "198.18.0.4", from("gone", "tor")),
        ];
        let secrets = |name: &str, key: &str| match (name, key) {
            ("bgp", "tor") => Ok("from-secret".to_string()),
            ("bgp", _) => Err(format!("Secret \"bgp\" has no key {key:?}")),
            _ => Err(format!("Secret {name:?} not found")),
        };
        let view = View {
            me: &nodes[0],
            nodes: &nodes,
            peers: &peers,
            config: &BGPConfigurationSpec::default(),
            filters: &[],
            pools: &[],
            secret: &secrets,
        };
        let got = desired(&view);
        let key = |a: &str| (got[&ip(a)].config.md5_key.clone(), got[&ip(a)].blocked.clone());
        assert_eq!(key("198.18.0.1"), (Some("plain".into()), None));
        assert_eq!(key("198.18.0.2"), (Some("from-secret".into()), None));
        assert_eq!(key("198.18.0.3"), (None, Some("password: Secret \"bgp\" has no key \"other\"".into())));
        assert_eq!(key("198.18.0.4"), (None, Some("password: Secret \"gone\" not found".into())));
    }

    #[test]
    fn peer_options_reach_the_speaker_and_routers_are_external() {
        use gingham_api::resources::{BGPFilterSpec, MaxPrefixes};
        let nodes = [node("a", "198.18.0.11", None, &[]), node("b", "198.18.0.12", None, &[])];
        let tor = BGPPeer::new(
            "tor",
            BGPPeerSpec {
                peer_ip: Some("198.18.0.1".into()),
                as_number: Some(65001),
                local_as_number: Some(65100),
                next_hop_mode: Some(NextHopMode::NextHopSelf),
                keepalive_time: Some("7s".into()),
                num_allowed_local_as_numbers: Some(2),
                reachable_by: Some("198.18.0.254".into()),
                max_prefixes: Some(MaxPrefixes { limit: 5, action: MaxPrefixAction::Teardown, restart_seconds: Some(30) }),
                filters: vec!["allow-one".into(), "missing".into()],
                ..Default::default()
            },
        );
        let to_b = BGPPeer::new(
            "to-b",
            BGPPeerSpec { node: Some("a".into()), peer_ip: Some("198.18.0.12".into()), as_number: Some(64512), ..Default::default() },
        );
        let filters = [BGPFilter::new("allow-one", BGPFilterSpec::default())];
        let pools = ["198.19.0.0/16".parse().unwrap()];
        let view = View {
            me: &nodes[0],
            nodes: &nodes,
            peers: &[tor, to_b],
            config: &BGPConfigurationSpec::default(),
            filters: &filters,
            pools: &pools,
            secret: &no_secret,
        };
        let got = desired(&view);
        let t = &got[&ip("198.18.0.1")];
        let c = &t.config;
        assert_eq!((c.local_as, c.next_hop_self, c.keepalive_time, c.allow_own_as), (Some(65100), true, Some(7), 2));
        assert_eq!(c.max_prefixes.unwrap().action, speaker::MaxPrefixAction::TearDown { restart: Some(Duration::from_secs(30)) });
        assert!(c.external && c.import.is_some(), "a router: no transit, no pool prefixes");
        assert_eq!(t.reachable_by, Some(ip("198.18.0.254")));
        assert_eq!(t.problems.len(), 1, "{:?}", t.problems);
        assert!(t.problems[0].contains("missing"));
        let b = &got[&ip("198.18.0.12")].config;
        assert!(!b.external && b.import.is_none(), "a BGPPeer naming another node stays inside the cluster");
    }
}
