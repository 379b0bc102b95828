//! The FIB plan, sans-IO: what the agent wants in the kernel, what the kernel holds (ours and
//! everyone else's), and the operations that take the one to the other.
//!
//! Ownership rules, each a unit test below:
//!
//! | kernel holds at (prefix, metric)  | we want a route there | we do not            |
//! |-----------------------------------|-----------------------|----------------------|
//! | nothing                           | add (create, exclusive) | nothing            |
//! | our route, as wanted              | nothing               | delete (when not adopting) |
//! | our route, different              | replace               | delete (when not adopting) |
//! | a route of another protocol       | refuse, report        | nothing              |
//!
//! A route is ours when it carries our protocol number; a delete names the exact route (metric,
//! type, scope, device) so it can only ever match that one. Learned routes get a metric of their
//! own, higher than the node's usual ones, so a default or connected route of the node keeps
//! winning and the two never occupy the same slot. Next hops of learned routes are resolved
//! through the node's own routes (see [`super::resolve`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use gingham_bgp::rib::Gateway;
use ipnetwork::IpNetwork;

use super::resolve::{resolve, Refusal};
use super::store::Routes;
use crate::netlink::RTPROT_GINGHAM;
use gingham_bgp::rib::FastHash;

/// The main routing table: the only one we write.
pub const MAIN_TABLE: u32 = 254;

/// What asked for a route; the kernel metric follows from it, so the three never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// A pod's host route, out of its veth.
    Endpoint,
    /// The blackhole that covers one of our blocks (loses to the endpoint routes inside it).
    Blackhole,
    /// A route to a BGP peer via its `reachableBy` gateway (wins over a learned route).
    Static,
    /// A best path from BGP.
    Learned,
}

/// Where a prefix should go, as the agent says it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Via these next hops (ECMP when several), resolved through the kernel's routes. Shared:
    /// a full table from one ToR is 100k routes with one list of next hops.
    Gateways(Arc<[Gateway]>),
    /// Dropped: the aggregate of a block whose live addresses have host routes.
    Blackhole,
    /// Straight out of a local interface (a pod's host-side veth), by index.
    Device(u32),
}

/// One wanted route: a prefix for one [`Class`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WantKey {
    pub prefix: IpNetwork,
    pub class: Class,
}

/// A slot in the kernel's table: the kernel keeps one route per prefix and metric (and TOS,
/// which nobody here uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteKey {
    pub prefix: IpNetwork,
    pub metric: u32,
}

/// One next hop of a kernel route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hop {
    pub via: IpAddr,
    /// Needed for IPv6 link-local gateways; taken from the route we resolved through.
    pub dev: Option<u32>,
}

/// A route's next hops, shared between the routes that have the same ones (one allocation per
/// gateway, not per route).
pub type Hops = Arc<[Hop]>;

/// The one shared copy of `list` among those `seen` so far (added when new).
pub fn share<T: std::hash::Hash + Eq + Clone>(seen: &mut HashSet<Arc<[T]>>, list: &[T]) -> Arc<[T]> {
    match seen.get(list) {
        Some(shared) => shared.clone(),
        None => {
            let shared: Arc<[T]> = list.into();
            seen.insert(shared.clone());
            shared
        }
    }
}

/// What goes into the kernel for a wanted route once its next hops are resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Programmed {
    Via(Hops),
    /// Via these gateways, through our nexthop object `id` (which goes via them).
    Object {
        id: u32,
        hops: Hops,
    },
    Blackhole,
    Device(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    Unicast,
    Blackhole,
    /// Unreachable, prohibit, local, ...: never ours, and nothing resolves through them.
    Other(u8),
}

/// A route as the kernel reports it (main table only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRoute {
    pub prefix: IpNetwork,
    pub metric: u32,
    pub protocol: u8,
    pub kind: RouteKind,
    pub scope: u8,
    /// The output interface of a single-path route.
    pub oif: Option<u32>,
    /// Gateways, one per path; empty for a device (connected) or blackhole route. For a route
    /// through one of our nexthop objects, the object's gateways.
    pub hops: Hops,
    /// The nexthop object the route goes through (`RTA_NH_ID`).
    pub nh_id: Option<u32>,
}

impl KernelRoute {
    pub fn key(&self) -> RouteKey {
        RouteKey { prefix: self.prefix, metric: self.metric }
    }

    /// What the route is, apart from where and whose.
    pub fn form(&self) -> Form {
        Form { kind: self.kind, scope: self.scope, oif: self.oif, hops: self.hops.clone(), nh_id: self.nh_id }
    }
}

/// A route of ours without its slot: what the FIB's mirror of the kernel keeps per route (one
/// copy of each distinct form, shared by the routes that have it; see [`Routes`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Form {
    pub kind: RouteKind,
    pub scope: u8,
    pub oif: Option<u32>,
    pub hops: Hops,
    pub nh_id: Option<u32>,
}

impl Form {
    /// The whole route, in slot `key`.
    pub fn route(&self, key: RouteKey, protocol: u8) -> KernelRoute {
        KernelRoute {
            prefix: key.prefix,
            metric: key.metric,
            protocol,
            kind: self.kind,
            scope: self.scope,
            oif: self.oif,
            hops: self.hops.clone(),
            nh_id: self.nh_id,
        }
    }

    fn matches(&self, want: &Programmed) -> bool {
        match want {
            Programmed::Blackhole => self.kind == RouteKind::Blackhole,
            Programmed::Device(index) => self.kind == RouteKind::Unicast && self.hops.is_empty() && self.oif == Some(*index),
            Programmed::Via(hops) | Programmed::Object { hops, .. } => self.kind == RouteKind::Unicast && same_gateways(hops, &self.hops),
        }
    }
}

/// Whether every gateway of `a` is one of `b`'s (a handful at most: no sets built).
fn within(a: &[Hop], b: &[Hop]) -> bool {
    a.iter().all(|h| b.iter().any(|x| x.via == h.via))
}

/// The same set of gateways, in any order.
pub fn same_gateways(a: &[Hop], b: &[Hop]) -> bool {
    within(a, b) && within(b, a)
}

/// Whether going from `from` to `to` only adds gateways: every path the route has stays good.
pub fn only_gains(from: &[Hop], to: &[Hop]) -> bool {
    within(from, to) && !within(to, from)
}

/// The main table split by owner, the node's own addresses, and the routes the agent wants.
#[derive(Clone, Debug, Default)]
pub struct KernelTable {
    /// By slot: the route wanted there, and ours (with our protocol number) the kernel holds.
    pub routes: Routes,
    /// Routes of every other protocol. Two may share a slot (IPv6 device routes); one is kept,
    /// which is all "occupied" needs.
    pub foreign: BTreeMap<RouteKey, KernelRoute>,
    pub local_addresses: BTreeSet<IpAddr>,
}

impl KernelTable {
    /// Our route in slot `key`, whole.
    pub fn our_route(&self, key: &RouteKey) -> Option<KernelRoute> {
        self.routes.ours(key).map(|f| f.route(*key, RTPROT_GINGHAM))
    }

    /// Sorts a dumped route into ours or foreign.
    pub fn insert(&mut self, route: KernelRoute, our_protocol: u8) {
        let key = route.key();
        if route.protocol == our_protocol {
            self.routes.set_ours(key, Some(route.form()));
        } else {
            self.foreign.entry(key).or_insert(route);
        }
    }
}

/// The metric of each class, per family. Distinct values keep the classes in separate slots:
/// pod routes 0 (IPv6 1024), blackholes 1 (1025), static 2 (1026), learned as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMetrics {
    pub learned: u32,
}

impl RouteMetrics {
    pub fn of(&self, prefix: &IpNetwork, class: Class) -> u32 {
        // IPv6 turns metric 0 into 1024 (the user default), so local routes start there.
        let base = if prefix.is_ipv4() { 0 } else { 1024 };
        match class {
            Class::Endpoint => base,
            Class::Blackhole => base + 1,
            Class::Static => base + 2,
            Class::Learned => self.learned,
        }
    }

    pub fn key(&self, want: &WantKey) -> RouteKey {
        RouteKey { prefix: want.prefix, metric: self.of(&want.prefix, want.class) }
    }

    /// The class whose slot `key` is, if any.
    pub fn want_of(&self, key: &RouteKey) -> Option<WantKey> {
        [Class::Endpoint, Class::Blackhole, Class::Static, Class::Learned]
            .into_iter()
            .find(|c| self.of(&key.prefix, *c) == key.metric)
            .map(|class| WantKey { prefix: key.prefix, class })
    }
}

/// A kernel operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create where nothing is (exclusive: if someone took the slot meanwhile, the kernel says so).
    Add(RouteKey, Programmed),
    /// Overwrite our own route in that slot.
    Replace(RouteKey, Programmed),
    /// Remove exactly this route of ours.
    Delete(KernelRoute),
}

impl Op {
    pub fn key(&self) -> RouteKey {
        match self {
            Op::Add(k, _) | Op::Replace(k, _) => *k,
            Op::Delete(r) => r.key(),
        }
    }
}

/// Which wanted routes to plan for.
pub enum Scope<'a> {
    /// Everything wanted; routes of ours nobody wants are deleted unless `adopting` (after a
    /// restart, until BGP has resynchronised).
    Everything { adopting: bool },
    /// Just these (the ones a command changed); unwanted ones among them are deleted.
    Only(&'a BTreeSet<WantKey>),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub ops: Vec<Op>,
    /// Wanted routes that are not (or no longer) installed, and why.
    pub refused: Vec<(WantKey, Refusal)>,
}

pub fn plan<'w>(kernel: &'w KernelTable, metrics: &RouteMetrics, scope: Scope<'_>) -> Plan {
    let mut out = Plan::default();
    let mut resolved = Resolved::default();
    // Routes with the same next hops get the same resolved list (one allocation for all).
    let mut sets: HashMap<&'w [Gateway], Result<Hops, Refusal>, FastHash> = HashMap::default();
    let delete = |key: RouteKey, form: &Form| Op::Delete(form.route(key, RTPROT_GINGHAM));
    let mut one = |want: WantKey, target: Option<&'w Target>, out: &mut Plan| {
        let key = metrics.key(&want);
        let ours = kernel.routes.ours(&key);
        let Some(target) = target else {
            if let Some(r) = ours {
                out.ops.push(delete(key, r));
            }
            return;
        };
        let programmed = match target {
            Target::Blackhole => Ok(Programmed::Blackhole),
            Target::Device(index) => Ok(Programmed::Device(*index)),
            Target::Gateways(next_hops) => {
                sets.entry(next_hops).or_insert_with(|| resolve_all(next_hops, kernel, metrics, &mut resolved)).clone().map(Programmed::Via)
            }
        };
        let programmed = programmed.and_then(|p| match kernel.foreign.get(&key) {
            Some(other) => Err(Refusal::Occupied { protocol: other.protocol }),
            None => Ok(p),
        });
        match (programmed, ours) {
            (Err(why), ours) => {
                // A route of ours that can no longer be right (its next hop went) must not stay.
                if let Some(r) = ours {
                    out.ops.push(delete(key, r));
                }
                out.refused.push((want, why));
            }
            (Ok(p), Some(r)) if r.matches(&p) => {}
            (Ok(p), Some(_)) => out.ops.push(Op::Replace(key, p)),
            (Ok(p), None) => out.ops.push(Op::Add(key, p)),
        }
    };
    match scope {
        Scope::Only(keys) => {
            for want in keys {
                one(*want, kernel.routes.want(&metrics.key(want)), &mut out);
            }
        }
        Scope::Everything { adopting } => {
            for (key, target) in kernel.routes.wanted() {
                // A wanted slot is always some class's (the agent wants by class).
                if let Some(want) = metrics.want_of(&key) {
                    one(want, Some(target), &mut out);
                }
            }
            if !adopting {
                for (key, r) in kernel.routes.our_routes() {
                    if kernel.routes.want(&key).is_none() {
                        out.ops.push(delete(key, r));
                    }
                }
            }
            // The tables have no order; a plan has one (logs and tests read alike every time).
            out.ops.sort_unstable_by_key(Op::key);
            out.refused.sort_unstable_by_key(|(want, _)| *want);
        }
    }
    out
}

/// The gateways every one of `keys` (slots of our routes) is wanted via, when that is the same
/// set for all of them and each could be installed: what one group they all go through can be
/// changed to, in place of a change per route. `None` for no keys.
pub fn common_gateways(kernel: &KernelTable, metrics: &RouteMetrics, keys: impl IntoIterator<Item = RouteKey>) -> Option<Hops> {
    let mut resolved = Resolved::default();
    // Routes with the same next hops share one list: one resolution per list.
    let mut lists: HashMap<*const [Gateway], Option<Hops>, FastHash> = HashMap::default();
    let mut common: Option<Hops> = None;
    for key in keys {
        if kernel.foreign.contains_key(&key) {
            return None;
        }
        let Target::Gateways(next_hops) = kernel.routes.want(&key)? else { return None };
        let hops =
            lists.entry(Arc::as_ptr(next_hops)).or_insert_with(|| resolve_all(next_hops, kernel, metrics, &mut resolved).ok()).clone()?;
        match &common {
            Some(c) if !same_gateways(c, &hops) => return None,
            Some(_) => {}
            None => common = Some(hops),
        }
    }
    common
}

/// Next hops resolved so far, by address.
pub(super) type Resolved = HashMap<IpAddr, Result<Hops, Refusal>, FastHash>;

/// Resolves every BGP next hop; the route goes via those that resolve, and is refused only
/// when none does.
pub(super) fn resolve_all(
    next_hops: &[Gateway],
    kernel: &KernelTable,
    metrics: &RouteMetrics,
    cache: &mut Resolved,
) -> Result<Hops, Refusal> {
    if let [Gateway { addr, ifindex: None }] = next_hops {
        return cache.entry(*addr).or_insert_with(|| resolve(*addr, kernel, metrics).map(Hops::from)).clone();
    }
    let mut hops: Vec<Hop> = Vec::new();
    let mut first_error = None;
    for nh in next_hops {
        let found = match nh.ifindex {
            // A link-local next hop is on the link of the session it came over.
            Some(dev) => &Ok(Hops::from([Hop { via: nh.addr, dev: Some(dev) }])),
            None => cache.entry(nh.addr).or_insert_with(|| resolve(nh.addr, kernel, metrics).map(Hops::from)),
        };
        match found {
            Ok(found) => {
                for h in found.iter() {
                    if !hops.iter().any(|x| x.via == h.via) {
                        hops.push(*h);
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert_with(|| e.clone());
            }
        }
    }
    if hops.is_empty() {
        return Err(first_error.unwrap_or(Refusal::NoNextHop));
    }
    Ok(hops.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u8 = 80;
    const METRICS: RouteMetrics = RouteMetrics { learned: 2048 };

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn route(prefix: &str, metric: u32, protocol: u8, kind: RouteKind, oif: Option<u32>, gws: &[&str]) -> KernelRoute {
        KernelRoute {
            prefix: net(prefix),
            metric,
            protocol,
            kind,
            scope: if gws.is_empty() && kind == RouteKind::Unicast { 253 } else { 0 },
            oif,
            hops: gws.iter().map(|g| Hop { via: ip(g), dev: oif }).collect(),
            nh_id: None,
        }
    }

    /// A node as the issue found it: a default route (proto boot), its connected fabric subnet
    /// (proto kernel) and its address on it.
    fn node_table() -> KernelTable {
        let mut t = KernelTable::default();
        t.insert(route("0.0.0.0/0", 0, 3, RouteKind::Unicast, Some(2), &["198.18.0.1"]), US);
        t.insert(route("198.18.0.0/24", 0, 2, RouteKind::Unicast, Some(2), &[]), US);
        t.insert(route("198.18.9.0/24", 0, 4, RouteKind::Unicast, Some(2), &["198.18.0.254"]), US);
        t.local_addresses.insert(ip("198.18.0.11"));
        t
    }

    fn learned(prefix: &str, next_hops: &[&str]) -> (WantKey, Target) {
        (WantKey { prefix: net(prefix), class: Class::Learned }, Target::Gateways(next_hops.iter().map(|n| Gateway::new(ip(n))).collect()))
    }

    /// `t` with these routes wanted too.
    fn want<const N: usize>(mut t: KernelTable, routes: [(WantKey, Target); N]) -> KernelTable {
        for (key, target) in routes {
            t.routes.set_want(METRICS.key(&key), Some(target));
        }
        t
    }

    fn everything(t: &KernelTable) -> Plan {
        plan(t, &METRICS, Scope::Everything { adopting: false })
    }

    fn touches_foreign(p: &Plan, t: &KernelTable) -> bool {
        p.ops.iter().any(|op| match op {
            Op::Delete(r) => r.protocol != US,
            Op::Replace(k, _) => t.foreign.contains_key(k),
            Op::Add(k, _) => t.foreign.contains_key(k),
        })
    }

    #[test]
    fn a_learned_default_and_fabric_route_go_beside_the_nodes_own_never_over_them() {
        let t = want(node_table(), [learned("0.0.0.0/0", &["198.18.0.1"]), learned("198.18.0.0/24", &["198.18.0.1"])]);
        let p = everything(&t);
        assert!(!touches_foreign(&p, &t), "{p:?}");
        assert!(p.refused.is_empty());
        let hop = Programmed::Via(Hops::from([Hop { via: ip("198.18.0.1"), dev: Some(2) }]));
        assert_eq!(
            p.ops,
            [
                Op::Add(RouteKey { prefix: net("0.0.0.0/0"), metric: 2048 }, hop.clone()),
                Op::Add(RouteKey { prefix: net("198.18.0.0/24"), metric: 2048 }, hop)
            ]
        );
    }

    #[test]
    fn a_foreign_route_in_the_same_slot_is_refused_not_replaced() {
        let mut t = node_table();
        // Someone else put a default route at the metric of our learned routes.
        t.insert(route("0.0.0.0/0", 2048, 3, RouteKind::Unicast, Some(2), &["198.18.0.254"]), US);
        let default = learned("0.0.0.0/0", &["198.18.0.1"]);
        let t = want(t, [default.clone()]);
        let p = everything(&t);
        assert!(p.ops.is_empty(), "{p:?}");
        assert_eq!(p.refused, [(default.0, Refusal::Occupied { protocol: 3 })]);
    }

    #[test]
    fn unwanted_routes_go_only_if_ours_and_not_while_adopting() {
        let mut t = node_table();
        t.insert(route("198.19.5.0/26", 2048, US, RouteKind::Unicast, Some(2), &["198.18.0.12"]), US);
        t.insert(route("198.19.6.0/26", 1, US, RouteKind::Blackhole, None, &[]), US);
        let p = everything(&t);
        assert!(!touches_foreign(&p, &t));
        let deleted: Vec<IpNetwork> = p.ops.iter().map(|o| o.key().prefix).collect();
        assert_eq!(deleted, [net("198.19.5.0/26"), net("198.19.6.0/26")]);
        let adopting = plan(&t, &METRICS, Scope::Everything { adopting: true });
        assert!(adopting.ops.is_empty(), "a restarted agent keeps its routes until BGP has resynchronised");
    }

    #[test]
    fn routes_share_gateways_only_when_every_one_is_wanted_via_the_same_set() {
        let key = |p: &str| RouteKey { prefix: net(p), metric: 2048 };
        let both = ["198.18.0.12", "198.18.0.13"];
        let t = want(
            node_table(),
            [
                learned("198.19.5.0/26", &both),
                learned("198.19.6.0/26", &["198.18.0.13", "198.18.0.12"]),
                learned("198.19.7.0/26", &["198.18.0.12"]),
                learned("198.18.9.0/24", &both),
            ],
        );
        let common = common_gateways(&t, &METRICS, [key("198.19.5.0/26"), key("198.19.6.0/26")]);
        let vias: Vec<IpAddr> = common.expect("the same set, in another order").iter().map(|h| h.via).collect();
        assert_eq!(vias, [ip("198.18.0.12"), ip("198.18.0.13")]);
        assert_eq!(common_gateways(&t, &METRICS, [key("198.19.5.0/26"), key("198.19.7.0/26")]), None, "one fewer");
        assert_eq!(common_gateways(&t, &METRICS, [key("198.19.5.0/26"), key("198.19.8.0/26")]), None, "one not wanted");
        assert_eq!(common_gateways(&t, &METRICS, []), None);
        // Another protocol's route in a slot: ours there would be refused, not changed.
        let mut t = want(node_table(), [learned("198.19.5.0/26", &both), learned("198.19.9.0/26", &both)]);
        let keys = [key("198.19.5.0/26"), key("198.19.9.0/26")];
        assert!(common_gateways(&t, &METRICS, keys).is_some());
        t.insert(route("198.19.9.0/26", 2048, 4, RouteKind::Unicast, Some(2), &["198.18.0.12"]), US);
        assert_eq!(common_gateways(&t, &METRICS, keys), None);
    }

    #[test]
    fn only_gains_means_every_gateway_stays_and_one_more_comes() {
        let h = |vias: &[&str]| -> Vec<Hop> { vias.iter().map(|v| Hop { via: ip(v), dev: Some(2) }).collect() };
        assert!(only_gains(&h(&["198.18.0.12"]), &h(&["198.18.0.13", "198.18.0.12"])));
        assert!(!only_gains(&h(&["198.18.0.12"]), &h(&["198.18.0.12"])), "the same is no gain");
        assert!(!only_gains(&h(&["198.18.0.12", "198.18.0.14"]), &h(&["198.18.0.12", "198.18.0.13"])), "one lost");
        assert!(!only_gains(&h(&["198.18.0.12"]), &h(&["198.18.0.13"])));
    }

    #[test]
    fn drift_is_repaired_and_an_ecmp_change_replaces_our_route() {
        let mut t = node_table();
        t.insert(route("198.19.5.0/26", 2048, US, RouteKind::Unicast, Some(2), &["198.18.0.12"]), US);
        let mut t = want(t, [learned("198.19.5.0/26", &["198.18.0.12", "198.18.0.13"]), learned("198.19.7.0/26", &["198.18.0.13"])]);
        let p = everything(&t);
        assert!(matches!(&p.ops[0], Op::Replace(k, Programmed::Via(h)) if k.prefix == net("198.19.5.0/26") && h.len() == 2), "{p:?}");
        assert!(matches!(&p.ops[1], Op::Add(k, _) if k.prefix == net("198.19.7.0/26")), "{p:?}");
        // Once the kernel holds what is wanted there is nothing to do.
        t.insert(route("198.19.5.0/26", 2048, US, RouteKind::Unicast, None, &["198.18.0.13", "198.18.0.12"]), US);
        t.insert(route("198.19.7.0/26", 2048, US, RouteKind::Unicast, Some(2), &["198.18.0.13"]), US);
        assert_eq!(everything(&t), Plan::default());
    }

    #[test]
    fn pod_routes_blackholes_and_learned_routes_of_one_prefix_have_separate_slots() {
        let p32 = net("198.19.1.1/32");
        let t = want(
            node_table(),
            [
                (WantKey { prefix: p32, class: Class::Endpoint }, Target::Device(7)),
                (WantKey { prefix: p32, class: Class::Blackhole }, Target::Blackhole),
                (WantKey { prefix: p32, class: Class::Learned }, Target::Gateways(Arc::from([Gateway::new(ip("198.18.0.12"))]))),
            ],
        );
        let p = everything(&t);
        let metrics: Vec<u32> = p.ops.iter().map(|o| o.key().metric).collect();
        assert_eq!(metrics, [0, 1, 2048]);
        assert_eq!(METRICS.of(&net("2001:db8::/64"), Class::Endpoint), 1024, "IPv6 has no metric 0");
    }

    #[test]
    fn a_route_whose_next_hop_went_away_is_removed_and_reported() {
        let mut t = node_table();
        t.insert(route("198.19.5.0/26", 2048, US, RouteKind::Unicast, Some(2), &["198.18.0.12"]), US);
        t.foreign.retain(|k, _| k.prefix != net("198.18.0.0/24") && k.prefix != net("0.0.0.0/0"));
        let t = want(t, [learned("198.19.5.0/26", &["198.18.0.12"])]);
        let p = everything(&t);
        assert!(matches!(&p.ops[..], [Op::Delete(r)] if r.prefix == net("198.19.5.0/26")), "{p:?}");
        assert_eq!(p.refused[0].1, Refusal::Unreachable { next_hop: ip("198.18.0.12") });
    }

    #[test]
    fn only_the_touched_keys_are_planned() {
        let mut t = node_table();
        t.insert(route("198.19.5.0/26", 2048, US, RouteKind::Unicast, Some(2), &["198.18.0.12"]), US);
        t.insert(route("198.19.6.1/32", 0, US, RouteKind::Unicast, Some(9), &[]), US);
        let gone = WantKey { prefix: net("198.19.6.1/32"), class: Class::Endpoint };
        let p = plan(&t, &METRICS, Scope::Only(&[gone].into()));
        assert_eq!(p.ops, [Op::Delete(t.our_route(&RouteKey { prefix: gone.prefix, metric: 0 }).unwrap())]);
    }

    #[test]
    fn want_of_inverts_key() {
        for class in [Class::Endpoint, Class::Blackhole, Class::Static, Class::Learned] {
            for prefix in [net("198.19.0.0/26"), net("2001:db8::/122")] {
                let w = WantKey { prefix, class };
                assert_eq!(METRICS.want_of(&METRICS.key(&w)), Some(w));
            }
        }
    }
}
