//! Next-hop resolution for learned routes, sans-IO: a BGP next hop that is not on a connected
//! subnet (multihop eBGP, a reflector's client in another rack) is looked up in the node's own
//! routes, longest prefix first, and the route is installed via the gateway found there.
//!
//! Routes of other protocols take part, and of ours only the static routes to peers
//! (`reachableBy`): resolving through one of our learned routes could make a route depend on
//! itself, and a blackhole of ours is no way to anywhere.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::plan::{Class, Hop, KernelRoute, KernelTable, RouteKey, RouteKind, RouteMetrics};

/// Why a wanted route is not in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Refusal {
    /// The next hop is one of this node's addresses: installing it would loop.
    NextHopIsLocal { next_hop: IpAddr },
    /// No route of the node's covers the next hop (or the covering one discards traffic).
    Unreachable { next_hop: IpAddr },
    /// A BGP path without a usable next hop.
    NoNextHop,
    /// Another protocol's route holds the same prefix and metric; it is never replaced.
    Occupied { protocol: u8 },
    /// The kernel refused the operation.
    Kernel { error: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NextHopIsLocal { next_hop } => write!(f, "next hop {next_hop} is an address of this node"),
            Refusal::Unreachable { next_hop } => write!(f, "next hop {next_hop} is not reachable through the node's routes"),
            Refusal::NoNextHop => write!(f, "no next hop"),
            Refusal::Occupied { protocol } => write!(f, "a route of protocol {protocol} holds this prefix and metric"),
            Refusal::Kernel { error } => write!(f, "the kernel refused it: {error}"),
        }
    }
}

impl Refusal {
    /// Every [`Refusal::label`]: the metric's series exist at 0 from the start, so a rate or an
    /// alert works before the first refusal.
    pub const LABELS: [&'static str; 5] = ["next-hop-local", "unreachable", "no-next-hop", "occupied", "kernel"];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NextHopIsLocal { .. } => "next-hop-local",
            Refusal::Unreachable { .. } => "unreachable",
            Refusal::NoNextHop => "no-next-hop",
            Refusal::Occupied { .. } => "occupied",
            Refusal::Kernel { .. } => "kernel",
        }
    }
}

/// The hops to install for BGP next hop `nh`.
pub fn resolve(nh: IpAddr, kernel: &KernelTable, metrics: &RouteMetrics) -> Result<Vec<Hop>, Refusal> {
    if kernel.local_addresses.contains(&nh) {
        return Err(Refusal::NextHopIsLocal { next_hop: nh });
    }
    let route = covering(nh, kernel, metrics).ok_or(Refusal::Unreachable { next_hop: nh })?;
    if route.kind != RouteKind::Unicast {
        return Err(Refusal::Unreachable { next_hop: nh });
    }
    if route.hops.is_empty() {
        // On a connected subnet: the next hop itself is the gateway, out of the subnet's device.
        return Ok(vec![Hop { via: nh, dev: route.oif }]);
    }
    // The kernel accepted these gateways for the covering route, so they resolve in one step.
    Ok(route.hops.iter().map(|h| Hop { via: h.via, dev: h.dev.or(route.oif) }).collect())
}

/// The node's route the kernel would use for `addr`: longest prefix, then lowest metric. Looked
/// up one prefix length at a time (33 or 129 lookups), never by a walk over the table: a node
/// holding a full table from its ToR resolves a next hop as fast as an empty one.
fn covering(addr: IpAddr, kernel: &KernelTable, metrics: &RouteMetrics) -> Option<KernelRoute> {
    let longest = if addr.is_ipv4() { 32 } else { 128 };
    (0..=longest).rev().find_map(|len| {
        let prefix = IpNetwork::new(IpNetwork::new(addr, len).ok()?.network(), len).ok()?;
        // Keys sort by prefix, then metric: the first foreign route of the prefix is its lowest.
        let slots = RouteKey { prefix, metric: 0 }..=RouteKey { prefix, metric: u32::MAX };
        let foreign = kernel.foreign.range(slots).next().map(|(_, r)| r.clone());
        let ours = kernel.our_route(&RouteKey { prefix, metric: metrics.of(&prefix, Class::Static) });
        foreign.into_iter().chain(ours).min_by_key(|r| r.metric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_label_is_listed() {
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        let all = [
            Refusal::NextHopIsLocal { next_hop: ip },
            Refusal::Unreachable { next_hop: ip },
            Refusal::NoNextHop,
            Refusal::Occupied { protocol: 4 },
            Refusal::Kernel { error: String::new() },
        ];
        assert_eq!(all.map(|r| r.label()), Refusal::LABELS);
    }
    use crate::fib::plan::KernelRoute;

    const METRICS: RouteMetrics = RouteMetrics { learned: 2048 };

    fn resolve(nh: IpAddr, kernel: &KernelTable) -> Result<Vec<Hop>, Refusal> {
        super::resolve(nh, kernel, &METRICS)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn r(prefix: &str, metric: u32, kind: RouteKind, oif: u32, gw: Option<&str>) -> KernelRoute {
        KernelRoute {
            prefix: prefix.parse().unwrap(),
            metric,
            protocol: 4,
            kind,
            scope: 0,
            oif: Some(oif),
            hops: gw.map(|g| Hop { via: ip(g), dev: Some(oif) }).into_iter().collect(),
            nh_id: None,
        }
    }

    fn table(routes: Vec<KernelRoute>) -> KernelTable {
        let mut t = KernelTable::default();
        for route in routes {
            t.insert(route, 80);
        }
        t.local_addresses.insert(ip("198.18.0.11"));
        t
    }

    #[test]
    fn connected_next_hops_are_used_as_they_are_out_of_the_subnets_device() {
        let t = table(vec![r("198.18.0.0/24", 0, RouteKind::Unicast, 2, None)]);
        assert_eq!(resolve(ip("198.18.0.12"), &t), Ok(vec![Hop { via: ip("198.18.0.12"), dev: Some(2) }]));
    }

    #[test]
    fn remote_next_hops_resolve_through_the_most_specific_route() {
        let t = table(vec![
            r("0.0.0.0/0", 0, RouteKind::Unicast, 2, Some("198.18.0.1")),
            r("198.18.0.0/24", 0, RouteKind::Unicast, 2, None),
            r("198.18.50.0/24", 10, RouteKind::Unicast, 2, Some("198.18.0.2")),
            r("198.18.50.0/24", 5, RouteKind::Unicast, 2, Some("198.18.0.3")),
        ]);
        assert_eq!(
            resolve(ip("198.18.50.7"), &t),
            Ok(vec![Hop { via: ip("198.18.0.3"), dev: Some(2) }]),
            "lowest metric of the longest match"
        );
        assert_eq!(resolve(ip("203.0.113.1"), &t), Ok(vec![Hop { via: ip("198.18.0.1"), dev: Some(2) }]), "the default route resolves too");
    }

    #[test]
    fn own_addresses_unreachable_and_discarding_routes_refuse() {
        let t = table(vec![r("198.18.0.0/24", 0, RouteKind::Unicast, 2, None), r("198.18.60.0/24", 0, RouteKind::Other(7), 0, None)]);
        assert_eq!(resolve(ip("198.18.0.11"), &t), Err(Refusal::NextHopIsLocal { next_hop: ip("198.18.0.11") }));
        assert_eq!(resolve(ip("198.18.70.1"), &t), Err(Refusal::Unreachable { next_hop: ip("198.18.70.1") }));
        assert_eq!(resolve(ip("198.18.60.1"), &t), Err(Refusal::Unreachable { next_hop: ip("198.18.60.1") }));
        assert_eq!(resolve(ip("2001:db8::1"), &t), Err(Refusal::Unreachable { next_hop: ip("2001:db8::1") }), "families do not mix");
    }

    #[test]
    fn our_learned_routes_never_resolve_a_next_hop_our_static_ones_do() {
        let mut t = table(vec![r("198.18.0.0/24", 0, RouteKind::Unicast, 2, None)]);
        let mut learned = r("198.18.50.0/24", 2048, RouteKind::Unicast, 2, Some("198.18.0.2"));
        learned.protocol = 80;
        t.insert(learned, 80);
        assert_eq!(resolve(ip("198.18.50.7"), &t), Err(Refusal::Unreachable { next_hop: ip("198.18.50.7") }));
        let mut to_peer = r("198.18.50.7/32", 2, RouteKind::Unicast, 2, Some("198.18.0.3"));
        to_peer.protocol = 80;
        t.insert(to_peer, 80);
        assert_eq!(resolve(ip("198.18.50.7"), &t), Ok(vec![Hop { via: ip("198.18.0.3"), dev: Some(2) }]), "reachableBy");
    }
}
