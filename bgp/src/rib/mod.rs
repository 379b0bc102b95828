//! Sans-IO routing tables: Adj-RIB-In (the paths each peer sent, after import checks), the
//! Loc-RIB with the decision process, and an Adj-RIB-Out per peer with update packing. Route
//! reflection (RFC 4456) and the iBGP/eBGP rules live in [`export`].
//!
//! Memory: attribute sets are interned (`Arc`), so thousands of routes sharing one set cost a
//! pointer each; a path is a peer id and that pointer.

pub mod decision;
mod dests;
pub mod export;
mod fast_hash;
mod groups;
mod interner;
pub mod pack;
mod packed_map;
pub mod policy;
mod prefix_set;
mod table;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::wire::{Family, MpReach, NextHop, PathAttributes, SessionCodec, Update};
use decision::{compare, Candidate, DecisionConfig};
pub use export::ExportDecision;
/// The hasher of the RIB's integer-keyed tables, for others' tables of the same kind.
pub use fast_hash::FastHash;
/// Values numbered once and counted, for others' large tables of few distinct values.
pub use interner::Interner;
/// The map of the RIB's IPv4 table, for others' large tables keyed by packed prefixes.
pub use packed_map::PackedMap;
use policy::{Policy, RouteSource, Verdict};
pub use prefix_set::PrefixSet;
use table::{Path, Table};

/// Names a peer inside the RIB; [`LOCAL`] is us (originated routes).
pub type PeerId = u32;
pub const LOCAL: PeerId = 0;

/// What the RIB needs to know about an Established peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibPeer {
    pub address: IpAddr,
    /// Our address on this session: the next hop when we are the next hop.
    pub local_address: IpAddr,
    /// The peer's BGP identifier.
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    pub peer_as: u32,
    pub rr_client: bool,
    /// On eBGP, pass the next hop through instead of setting ourselves.
    pub keep_original_next_hop: bool,
    /// Set ourselves as next hop on everything sent to this peer (reflected routes too).
    pub next_hop_self: bool,
    /// How many times our own AS may appear in a received AS_PATH.
    pub allow_own_as: u8,
    pub families: Vec<Family>,
    pub codec: SessionCodec,
    /// Applied to every route the peer sends, after the loop checks.
    pub import: Option<Arc<Policy>>,
    /// Applied to every route before it leaves for the peer, before the iBGP/eBGP rules.
    pub export: Option<Arc<Policy>>,
    /// Routes learned from this peer are [`RouteSource::External`] to policies.
    pub external: bool,
    /// Both sides negotiated RFC 8950: IPv4 routes may go with an IPv6 next hop.
    pub extended_next_hop: bool,
    /// The interface index of a session over IPv6 link-local addresses: link-local next hops
    /// the peer sends are on this link.
    pub link: Option<u32>,
}

impl RibPeer {
    pub fn ebgp(&self) -> bool {
        self.local_as != self.peer_as
    }

    /// What routes learned from this peer are to policies.
    pub fn source(&self) -> RouteSource {
        if self.external {
            RouteSource::External
        } else {
            RouteSource::Internal
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RibConfig {
    pub router_id: Ipv4Addr,
    /// Set: we are a route reflector with this cluster id.
    pub cluster_id: Option<Ipv4Addr>,
    /// Paths equal up to the MED step form an ECMP set.
    pub multipath: bool,
    pub decision: DecisionConfig,
}

/// A next hop as the FIB installs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gateway {
    pub addr: IpAddr,
    /// The interface of a link-local next hop (the link of the session it came over).
    pub ifindex: Option<u32>,
}

impl Gateway {
    pub fn new(addr: IpAddr) -> Gateway {
        Gateway { addr, ifindex: None }
    }
}

/// Outgoing attributes per (best path's attribute set, its source, IPv4), within one export.
type ExportCache = HashMap<(*const PathAttributes, PeerId, bool), Option<Arc<PathAttributes>>, FastHash>;

/// Stands for "any member" of an update group in the export rules; no peer has this id.
const GROUP_TARGET: PeerId = PeerId::MAX - 1;

/// What one update group is sent for a set of changed prefixes.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupExport {
    pub members: Vec<PeerId>,
    /// The session codec every member shares, for encoding `common` once.
    pub codec: SessionCodec,
    /// For every member not listed in `individual`.
    pub common: Vec<Update>,
    /// Members that are the source of some of the prefixes: they are not sent those back.
    pub individual: Vec<(PeerId, Vec<Update>)>,
}

impl GroupExport {
    /// What `peer` is sent, if it is a member.
    pub fn for_peer(&self, peer: PeerId) -> Option<&[Update]> {
        if !self.members.contains(&peer) {
            return None;
        }
        Some(self.individual.iter().find(|(m, _)| *m == peer).map_or(&self.common[..], |(_, u)| &u[..]))
    }
}

/// The best path for a prefix as the FIB needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestRoute {
    /// Next hops of the ECMP set, best path's first; empty for locally originated routes.
    pub next_hops: Vec<Gateway>,
    pub attrs: Arc<PathAttributes>,
    /// Where the best path came from (LOCAL for our own).
    pub peer: PeerId,
}

/// The outcome of applying one UPDATE.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportResult {
    /// Prefixes whose best path (or ECMP set) changed.
    pub changed: Vec<IpNetwork>,
    /// Announcements refused by the import checks (loops, our own next hop) or the policy.
    pub rejected: usize,
}

pub struct Rib {
    config: RibConfig,
    peers: HashMap<PeerId, RibPeer, FastHash>,
    /// Paths per prefix, best first (the decision process keeps them sorted).
    table: Table,
    /// Accepted paths per peer: [IPv4, IPv6].
    accepted: HashMap<PeerId, [usize; 2], FastHash>,
    /// Prefixes a peer announces that the import checks refused (usually none).
    rejected: HashMap<PeerId, PrefixSet, FastHash>,
    /// Adj-RIB-Out, per update group: which prefixes the group's members hold from us. The
    /// attributes they hold follow from the current best path, and every change of that is
    /// re-sent, so only membership is kept (it decides between a withdrawal and nothing).
    groups: groups::Groups,
    interner: HashSet<Arc<PathAttributes>>,
}

impl Rib {
    pub fn new(config: RibConfig) -> Rib {
        Rib {
            config,
            peers: HashMap::default(),
            table: Table::default(),
            accepted: HashMap::default(),
            rejected: HashMap::default(),
            groups: groups::Groups::default(),
            interner: HashSet::new(),
        }
    }

    /// Makes this RIB a route reflector of `cluster_id` (or stops it reflecting). Routes already
    /// sent were decided under the old role: the caller restarts the sessions.
    pub fn set_cluster_id(&mut self, cluster_id: Option<Ipv4Addr>) {
        self.config.cluster_id = cluster_id;
    }

    pub fn config(&self) -> &RibConfig {
        &self.config
    }

    /// One shared copy of `attrs`.
    pub fn intern(&mut self, attrs: PathAttributes) -> Arc<PathAttributes> {
        if let Some(a) = self.interner.get(&attrs) {
            return a.clone();
        }
        let a = Arc::new(attrs);
        self.interner.insert(a.clone());
        a
    }

    /// Drops interned sets nothing refers to any more.
    pub fn collect_garbage(&mut self) {
        self.interner.retain(|a| Arc::strong_count(a) > 1);
    }

    pub fn interned_sets(&self) -> usize {
        self.interner.len()
    }

    pub fn prefix_count(&self) -> usize {
        self.table.len()
    }

    pub fn accepted(&self, peer: PeerId) -> usize {
        self.accepted.get(&peer).map_or(0, |[v4, v6]| v4 + v6)
    }

    /// Accepted paths of one family (IPv4 when `v4`).
    pub fn accepted_family(&self, peer: PeerId, v4: bool) -> usize {
        self.accepted.get(&peer).map_or(0, |n| n[usize::from(!v4)])
    }

    /// Prefixes the peer announces now, accepted or not.
    pub fn received(&self, peer: PeerId) -> usize {
        self.accepted(peer) + self.rejected.get(&peer).map_or(0, PrefixSet::len)
    }

    /// The prefixes `peer` holds from us (its group's, less those whose best path is its own).
    pub fn advertised(&self, peer: PeerId) -> usize {
        let Some(g) = self.groups.group_of(peer) else { return 0 };
        self.groups.held(g, &self.table).iter().filter(|p| self.table.best(p).is_none_or(|b| b.peer != peer)).count()
    }

    /// A peer reached Established and joins the update group of its export key; call
    /// [`Rib::export_all`] for its first table.
    pub fn peer_up(&mut self, id: PeerId, peer: RibPeer) {
        let key = groups::ExportKey::of(&peer);
        self.peers.insert(id, peer);
        self.groups.join(id, key);
    }

    /// A peer's session ended but its paths stay (graceful restart): nothing more is exported
    /// to it, and [`Rib::peer_down`] removes the paths later.
    pub fn peer_retire(&mut self, id: PeerId) {
        self.groups.leave(id, &mut self.table);
    }

    /// The prefixes of `family` for which `peer` has a path.
    pub fn prefixes_from(&self, peer: PeerId, family: Family) -> Vec<IpNetwork> {
        let v4 = family == Family::IPV4_UNICAST;
        self.table.prefixes().filter(|p| p.is_ipv4() == v4 && self.table.has_peer(p, peer)).collect()
    }

    /// Removes one path; returns whether the prefix's best path changed.
    pub fn withdraw_path(&mut self, prefix: IpNetwork, peer: PeerId) -> bool {
        self.remove_path(prefix, peer)
    }

    /// A peer went away: its paths go, and the prefixes whose best changed are returned.
    pub fn peer_down(&mut self, id: PeerId) -> Vec<IpNetwork> {
        let mut changed = Vec::new();
        let prefixes: Vec<IpNetwork> = self.table.prefixes().filter(|p| self.table.has_peer(p, id)).collect();
        for prefix in prefixes {
            if self.remove_path(prefix, id) {
                changed.push(prefix);
            }
        }
        self.peers.remove(&id);
        self.peer_retire(id);
        self.accepted.remove(&id);
        self.rejected.remove(&id);
        changed
    }

    /// Applies an UPDATE from `peer` (already RFC 7606-cleaned).
    pub fn apply_update(&mut self, peer: PeerId, update: &Update) -> ImportResult {
        let mut result = ImportResult::default();
        for prefix in update.withdrawn_prefixes() {
            if let Some(r) = self.rejected.get_mut(&peer) {
                r.remove(&prefix);
            }
            if self.remove_path(prefix, peer) {
                result.changed.push(prefix);
            }
        }
        let a = &update.attributes;
        let mut base = a.clone();
        base.mp_reach = None;
        base.mp_unreach = None;
        let v4_attrs = (!update.nlri.is_empty()).then(|| base.clone());
        let mp_attrs = a.mp_reach.as_ref().map(|mp| {
            let mut m = base.clone();
            m.next_hop = None;
            m.mp_reach = Some(MpReach { family: mp.family, next_hop: mp.next_hop, nlri: Vec::new() });
            m
        });
        for (attrs, prefixes) in [
            (v4_attrs, update.nlri.iter().map(|p| IpNetwork::V4(*p)).collect::<Vec<_>>()),
            (mp_attrs, a.mp_reach.as_ref().map(|m| m.nlri.clone()).unwrap_or_default()),
        ] {
            let Some(attrs) = attrs else { continue };
            if prefixes.is_empty() {
                continue;
            }
            let acceptable = self.import_ok(peer, &attrs);
            let policy = self.peers.get(&peer).and_then(|p| p.import.clone());
            let source = self.peers.get(&peer).map_or(RouteSource::Internal, RibPeer::source);
            let interned = self.intern(attrs);
            for prefix in prefixes {
                let verdict = match (&policy, acceptable) {
                    (_, false) => Verdict::Reject,
                    (None, true) => Verdict::Accept,
                    (Some(policy), true) => policy.evaluate(&prefix, &interned, source),
                };
                let attrs = match verdict {
                    Verdict::Reject => None,
                    Verdict::Accept => Some(interned.clone()),
                    Verdict::Modified(a) => Some(self.intern(*a)),
                };
                let changed = if let Some(attrs) = attrs {
                    if let Some(r) = self.rejected.get_mut(&peer) {
                        r.remove(&prefix);
                    }
                    self.add_path(prefix, Path { peer, attrs })
                } else {
                    result.rejected += 1;
                    self.rejected.entry(peer).or_default().insert(prefix);
                    self.remove_path(prefix, peer)
                };
                if changed {
                    result.changed.push(prefix);
                }
            }
        }
        result
    }

    /// Originates `prefix` from this speaker.
    pub fn originate(&mut self, prefix: IpNetwork, attrs: PathAttributes) -> bool {
        let attrs = self.intern(attrs);
        self.add_path(prefix, Path { peer: LOCAL, attrs })
    }

    pub fn withdraw_local(&mut self, prefix: IpNetwork) -> bool {
        self.remove_path(prefix, LOCAL)
    }

    /// RFC 4271 9.1.2 (loops), RFC 4456 8 (reflection loops), and routes pointing at us.
    fn import_ok(&self, peer: PeerId, attrs: &PathAttributes) -> bool {
        let Some(p) = self.peers.get(&peer) else {
            return false;
        };
        if let Some(path) = &attrs.as_path {
            let own = path.segments.iter().flat_map(|s| s.asns.iter()).filter(|&&a| a == p.local_as).count();
            if own > usize::from(p.allow_own_as) {
                return false;
            }
        }
        if attrs.originator_id == Some(self.config.router_id) {
            return false;
        }
        let cluster = self.config.cluster_id.unwrap_or(self.config.router_id);
        if attrs.cluster_list.contains(&cluster) {
            return false;
        }
        next_hop(attrs) != Some(p.local_address)
    }

    fn candidate<'a>(&'a self, path: &'a Path) -> Candidate<'a> {
        match self.peers.get(&path.peer) {
            Some(p) => Candidate { attrs: &path.attrs, ebgp: p.ebgp(), local: false, router_id: p.router_id, neighbor: p.address },
            None => Candidate {
                attrs: &path.attrs,
                ebgp: false,
                local: path.peer == LOCAL,
                router_id: self.config.router_id,
                neighbor: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        }
    }

    fn signature(paths: &[Path], ecmp: usize) -> Vec<(PeerId, *const PathAttributes)> {
        paths.iter().take(ecmp.max(1)).map(|p| (p.peer, Arc::as_ptr(&p.attrs))).collect()
    }

    /// Adds or replaces `peer`'s path; returns whether the best path or ECMP set changed.
    fn add_path(&mut self, prefix: IpNetwork, path: Path) -> bool {
        let (mut paths, advertised) = self.table.take(&prefix);
        let before = Self::signature(&paths, self.ecmp_len(&paths));
        match paths.iter_mut().find(|p| p.peer == path.peer) {
            Some(existing) => {
                if Arc::ptr_eq(&existing.attrs, &path.attrs) {
                    self.table.put(prefix, paths, advertised);
                    return false;
                }
                *existing = path;
            }
            None => {
                self.accepted.entry(path.peer).or_default()[usize::from(!prefix.is_ipv4())] += 1;
                paths.push(path);
            }
        }
        self.sort(&mut paths);
        let after = Self::signature(&paths, self.ecmp_len(&paths));
        self.table.put(prefix, paths, advertised);
        before != after
    }

    fn remove_path(&mut self, prefix: IpNetwork, peer: PeerId) -> bool {
        let (mut paths, advertised) = self.table.take(&prefix);
        if paths.is_empty() {
            self.table.put(prefix, paths, advertised);
            return false;
        }
        let before = Self::signature(&paths, self.ecmp_len(&paths));
        let len = paths.len();
        paths.retain(|p| p.peer != peer);
        if paths.len() != len {
            if let Some(n) = self.accepted.get_mut(&peer) {
                let n = &mut n[usize::from(!prefix.is_ipv4())];
                *n = n.saturating_sub(1);
            }
        }
        let after = Self::signature(&paths, self.ecmp_len(&paths));
        self.table.put(prefix, paths, advertised);
        before != after
    }

    fn sort(&self, paths: &mut [Path]) {
        if paths.len() < 2 {
            return;
        }
        paths.sort_by(|a, b| compare(&self.candidate(a), &self.candidate(b), &self.config.decision).0);
    }

    /// How many leading paths form the ECMP set.
    fn ecmp_len(&self, paths: &[Path]) -> usize {
        let Some(best) = paths.first() else { return 0 };
        if !self.config.multipath || best.peer == LOCAL {
            return 1;
        }
        1 + paths[1..]
            .iter()
            .take_while(|p| {
                let (ord, step) = compare(&self.candidate(best), &self.candidate(p), &self.config.decision);
                ord == std::cmp::Ordering::Equal || step.allows_multipath()
            })
            .count()
    }

    /// The best route for `prefix`, with its ECMP next hops.
    pub fn best(&self, prefix: &IpNetwork) -> Option<BestRoute> {
        let best = self.table.best(prefix)?;
        let mut next_hops: Vec<Gateway> = Vec::new();
        if best.peer != LOCAL {
            let paths: Vec<Path> = self.table.paths(prefix);
            let n = self.ecmp_len(&paths);
            for p in &paths[..n] {
                if let Some(nh) = gateway(&p.attrs, self.peers.get(&p.peer).and_then(|r| r.link)) {
                    if !next_hops.contains(&nh) {
                        next_hops.push(nh);
                    }
                }
            }
        }
        Some(BestRoute { next_hops, attrs: best.attrs, peer: best.peer })
    }

    /// The prefixes whose best path is one we originate.
    pub fn local_prefixes(&self) -> Vec<IpNetwork> {
        self.table.prefixes().filter(|p| self.table.best(p).is_some_and(|b| b.peer == LOCAL)).collect()
    }

    /// Every prefix with its best route, for dumps.
    pub fn routes(&self, family: Family) -> Vec<(IpNetwork, BestRoute)> {
        let v4 = family == Family::IPV4_UNICAST;
        let mut out: Vec<(IpNetwork, BestRoute)> =
            self.table.prefixes().filter(|p| p.is_ipv4() == v4).filter_map(|p| self.best(&p).map(|b| (p, b))).collect();
        out.sort_by_key(|(p, _)| *p);
        out
    }

    /// Brings every update group's Adj-RIB-Out in line with the Loc-RIB for `prefixes` (whose
    /// best path changed) and returns what each group is sent: one set of UPDATEs for all of
    /// its members, and one of their own for members that are the source of some prefixes.
    pub fn export(&mut self, prefixes: &[IpNetwork]) -> Vec<GroupExport> {
        self.groups.ids().into_iter().filter_map(|g| self.export_group(g, prefixes)).collect()
    }

    fn export_group(&mut self, g: groups::GroupId, prefixes: &[IpNetwork]) -> Option<GroupExport> {
        let members = self.groups.members(g);
        // Members share the key: any one of them stands for the group in the export rules,
        // under an id no peer has, so no route is held back as "learned from this peer".
        let leader = self.peers.get(members.first()?)?.clone();
        let mut announce = Vec::new();
        let mut withdraw = Vec::new();
        // Per source member: its prefixes (held back from it) and the ones it may hold.
        let mut sources: BTreeMap<PeerId, (PrefixSet, Vec<IpNetwork>)> = BTreeMap::new();
        let mut cache = ExportCache::default();
        for prefix in prefixes {
            let best = self.table.best(prefix);
            let desired = best.as_ref().and_then(|b| self.desired(&leader, GROUP_TARGET, prefix, b, &mut cache));
            let source = best.map(|b| b.peer).filter(|s| self.groups.is_member(g, *s));
            let had = self.groups.set(g, &mut self.table, prefix, desired.is_some());
            match desired {
                Some(d) => {
                    announce.push((*prefix, d));
                    if let Some(s) = source {
                        let entry = sources.entry(s).or_default();
                        entry.0.insert(*prefix);
                        if had {
                            entry.1.push(*prefix);
                        }
                    }
                }
                None if had => withdraw.push(*prefix),
                None => {}
            }
        }
        let codec = leader.codec;
        let individual = sources
            .into_iter()
            .map(|(member, (own, own_withdraw))| {
                let a = announce.iter().filter(|(p, _)| !own.contains(p)).cloned().collect();
                let w = withdraw.iter().copied().chain(own_withdraw).collect();
                (member, pack::pack(a, w, &codec))
            })
            .collect();
        Some(GroupExport { members, codec, common: pack::pack(announce, withdraw, &codec), individual })
    }

    /// What `target` (as `target_id`) is sent for `prefix` whose best path is `best`, if
    /// anything. The outgoing attributes depend only on the best path's attribute set, its
    /// source and the family; thousands of prefixes share one, so `cache` keeps each result.
    fn desired(
        &mut self,
        target: &RibPeer,
        target_id: PeerId,
        prefix: &IpNetwork,
        best: &Path,
        cache: &mut ExportCache,
    ) -> Option<Arc<PathAttributes>> {
        match self.export_verdict(target, prefix, best) {
            Verdict::Reject => None,
            Verdict::Modified(attrs) => {
                let best = Path { peer: best.peer, attrs: Arc::new(*attrs) };
                self.transform(target, target_id, prefix, &best).map(|a| self.intern(a))
            }
            Verdict::Accept => {
                let key = (Arc::as_ptr(&best.attrs), best.peer, prefix.is_ipv4());
                if let Some(done) = cache.get(&key) {
                    return done.clone();
                }
                let out = self.transform(target, target_id, prefix, best).map(|a| self.intern(a));
                cache.insert(key, out.clone());
                out
            }
        }
    }

    /// The announcements of `prefixes` for `peer` alone (its first table, a route refresh, our
    /// own prefixes while deferring). Its group's Adj-RIB-Out gains what is sent and loses
    /// nothing: the other members may still hold a prefix this peer is not sent.
    pub fn export_to(&mut self, peer: PeerId, prefixes: &[IpNetwork]) -> Vec<Update> {
        let (Some(target), Some(g)) = (self.peers.get(&peer).cloned(), self.groups.group_of(peer)) else {
            return Vec::new();
        };
        let mut announce = Vec::new();
        let mut cache = ExportCache::default();
        for prefix in prefixes {
            let Some(best) = self.table.best(prefix) else { continue };
            if let Some(d) = self.desired(&target, peer, prefix, &best, &mut cache) {
                self.groups.set(g, &mut self.table, prefix, true);
                announce.push((*prefix, d));
            }
        }
        pack::pack(announce, Vec::new(), &target.codec)
    }

    /// The whole table for a peer that just came up or asked for it again (End-of-RIB is the
    /// caller's).
    pub fn export_all(&mut self, peer: PeerId) -> Vec<Update> {
        let prefixes: Vec<IpNetwork> = self.table.prefixes().collect();
        self.export_to(peer, &prefixes)
    }

    /// The target's export policy on the best path (accept when it has none).
    fn export_verdict(&self, target: &RibPeer, prefix: &IpNetwork, best: &Path) -> Verdict {
        let Some(policy) = &target.export else { return Verdict::Accept };
        let source =
            if best.peer == LOCAL { RouteSource::Local } else { self.peers.get(&best.peer).map_or(RouteSource::Internal, RibPeer::source) };
        policy.evaluate(prefix, &best.attrs, source)
    }

    /// Replaces a peer's policies in place (no session reset). Returns the updates that bring
    /// its Adj-RIB-Out in line with the new export policy; routes the new import policy would
    /// treat differently need the peer to send them again (route refresh).
    pub fn set_policies(&mut self, id: PeerId, import: Option<Arc<Policy>>, export: Option<Arc<Policy>>) -> Vec<Update> {
        let Some(p) = self.peers.get_mut(&id) else { return Vec::new() };
        let before = groups::ExportKey::of(p);
        p.import = import;
        p.export = export;
        let key = groups::ExportKey::of(p);
        if key == before {
            return Vec::new();
        }
        // The peer moves to the group of its new key; what it held under the old one and is not
        // sent under the new one is withdrawn.
        let held = self.groups.group_of(id).map(|g| self.groups.held(g, &self.table)).unwrap_or_default();
        self.groups.leave(id, &mut self.table);
        self.groups.join(id, key);
        let mut updates = self.export_all(id);
        let mut now = PrefixSet::default();
        now.extend(updates.iter().flat_map(|u| u.announced().collect::<Vec<_>>()));
        let gone: Vec<IpNetwork> = held.into_iter().filter(|p| !now.contains(p)).collect();
        let codec = self.peers.get(&id).map(|p| p.codec).unwrap_or_default();
        updates.extend(pack::pack(Vec::new(), gone, &codec));
        updates
    }

    /// What `best` looks like when it leaves for `target`, if it leaves at all.
    fn transform(&self, target: &RibPeer, target_id: PeerId, prefix: &IpNetwork, best: &Path) -> Option<PathAttributes> {
        let family = if prefix.is_ipv4() { Family::IPV4_UNICAST } else { Family::IPV6_UNICAST };
        let source = self.peers.get(&best.peer);
        export::transform(&self.config, family, &best.attrs, best.peer, source, target_id, target).into_attrs()
    }

    /// Queues `prefix` for the FIB stream (its best path changed).
    pub fn mark_fib(&mut self, prefix: IpNetwork) {
        self.table.mark_fib(prefix);
    }

    /// Takes up to `n` prefixes queued for the FIB stream; read each one's [`Rib::best`] now.
    pub fn take_fib(&mut self, n: usize) -> Vec<IpNetwork> {
        self.table.take_fib(n)
    }

    pub fn fib_pending(&self) -> bool {
        self.table.fib_pending()
    }

    /// The gateways of `id`'s paths that no other peer's path has: what [`Rib::peer_down`]
    /// would leave no path through. Told to the FIB before the paths go, it can move the
    /// traffic off them in one step, before the work per prefix. One pass over the table,
    /// looking at each peer's attribute set once (a peer's paths share a few).
    pub fn gateways_only_of(&self, id: PeerId) -> Vec<Gateway> {
        let mut seen: HashSet<(*const PathAttributes, PeerId), FastHash> = HashSet::default();
        let (mut mine, mut others): (HashSet<Gateway>, HashSet<Gateway>) = Default::default();
        for (peer, attrs) in self.table.all_paths() {
            if !seen.insert((Arc::as_ptr(attrs), peer)) {
                continue;
            }
            if let Some(g) = gateway(attrs, self.peers.get(&peer).and_then(|r| r.link)) {
                if peer == id {
                    mine.insert(g)
                } else {
                    others.insert(g)
                };
            }
        }
        let mut gone: Vec<Gateway> = mine.difference(&others).copied().collect();
        gone.sort_by_key(|g| (g.addr, g.ifindex));
        gone
    }

    /// Those of `candidates` that no path goes through (a hint held back while the FIB was
    /// busy must not name a gateway that came back meanwhile).
    pub fn unused_gateways(&self, mut candidates: Vec<Gateway>) -> Vec<Gateway> {
        let mut seen: HashSet<(*const PathAttributes, PeerId), FastHash> = HashSet::default();
        for (peer, attrs) in self.table.all_paths() {
            if candidates.is_empty() {
                break;
            }
            if !seen.insert((Arc::as_ptr(attrs), peer)) {
                continue;
            }
            if let Some(g) = gateway(attrs, self.peers.get(&peer).and_then(|r| r.link)) {
                candidates.retain(|c| *c != g);
            }
        }
        candidates
    }

    pub fn peer(&self, id: PeerId) -> Option<&RibPeer> {
        self.peers.get(&id)
    }

    pub fn peer_mut(&mut self, id: PeerId) -> Option<&mut RibPeer> {
        self.peers.get_mut(&id)
    }
}

/// The next hop a path's attributes carry (IPv4 NEXT_HOP or the MP_REACH global address;
/// the link-local one when the "global" field holds none).
pub fn next_hop(attrs: &PathAttributes) -> Option<IpAddr> {
    if let Some(mp) = &attrs.mp_reach {
        return Some(match mp.next_hop {
            NextHop::V4(a) => IpAddr::V4(a),
            NextHop::V6 { global, link_local } if global.is_unspecified() || global.is_unicast_link_local() => {
                IpAddr::V6(link_local.unwrap_or(global))
            }
            NextHop::V6 { global, .. } => IpAddr::V6(global),
        });
    }
    attrs.next_hop.map(IpAddr::V4)
}

/// Where to send a path's traffic. Over a link-local session the link-local next hop is
/// preferred (it is on the link by construction, RFC 2545 3); without a link to scope it, a
/// link-local next hop is unusable.
pub fn gateway(attrs: &PathAttributes, link: Option<u32>) -> Option<Gateway> {
    if let Some(MpReach { next_hop: NextHop::V6 { global, link_local }, .. }) = &attrs.mp_reach {
        let ll = if global.is_unicast_link_local() { Some(*global) } else { *link_local };
        return match (ll, link) {
            (Some(ll), Some(ifindex)) => Some(Gateway { addr: IpAddr::V6(ll), ifindex: Some(ifindex) }),
            _ if global.is_unspecified() || global.is_unicast_link_local() => None,
            _ => Some(Gateway::new(IpAddr::V6(*global))),
        };
    }
    next_hop(attrs).map(Gateway::new)
}
