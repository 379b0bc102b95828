//! Sans-IO routing tables: Adj-RIB-In (the paths each peer sent, after import checks), the
//! Loc-RIB with the decision process, and an Adj-RIB-Out per peer with update packing. Route
//! reflection (RFC 4456) and the iBGP/eBGP rules live in [`export`].
//!
//! Memory: attribute sets are interned (`Arc`), so thousands of routes sharing one set cost a
//! pointer each; a path is a peer id and that pointer.

pub mod decision;
pub mod export;
pub mod pack;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use crate::wire::{Family, MpReach, NextHop, PathAttributes, SessionCodec, Update};
use decision::{compare, Candidate, DecisionConfig};
pub use export::ExportDecision;

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
    /// How many times our own AS may appear in a received AS_PATH.
    pub allow_own_as: u8,
    pub families: Vec<Family>,
    pub codec: SessionCodec,
}

impl RibPeer {
    pub fn ebgp(&self) -> bool {
        self.local_as != self.peer_as
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

#[derive(Clone, Debug)]
struct Path {
    peer: PeerId,
    attrs: Arc<PathAttributes>,
}

/// The best path for a prefix as the FIB needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BestRoute {
    /// Next hops of the ECMP set, best path's first; empty for locally originated routes.
    pub next_hops: Vec<IpAddr>,
    pub attrs: Arc<PathAttributes>,
    /// Where the best path came from (LOCAL for our own).
    pub peer: PeerId,
}

/// The outcome of applying one UPDATE.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportResult {
    /// Prefixes whose best path (or ECMP set) changed.
    pub changed: Vec<IpNetwork>,
    /// Announcements refused by the import checks (loops, our own next hop).
    pub rejected: usize,
}

pub struct Rib {
    config: RibConfig,
    peers: HashMap<PeerId, RibPeer>,
    /// Paths per prefix, best first (the decision process keeps them sorted).
    table: HashMap<IpNetwork, Vec<Path>>,
    accepted: HashMap<PeerId, usize>,
    adj_out: HashMap<PeerId, HashMap<IpNetwork, Arc<PathAttributes>>>,
    interner: HashSet<Arc<PathAttributes>>,
}

impl Rib {
    pub fn new(config: RibConfig) -> Rib {
        Rib {
            config,
            peers: HashMap::new(),
            table: HashMap::new(),
            accepted: HashMap::new(),
            adj_out: HashMap::new(),
            interner: HashSet::new(),
        }
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
        self.accepted.get(&peer).copied().unwrap_or(0)
    }

    pub fn advertised(&self, peer: PeerId) -> usize {
        self.adj_out.get(&peer).map_or(0, HashMap::len)
    }

    /// A peer reached Established. Its Adj-RIB-Out starts empty; call [`Rib::export_all`].
    pub fn peer_up(&mut self, id: PeerId, peer: RibPeer) {
        self.peers.insert(id, peer);
        self.adj_out.insert(id, HashMap::new());
    }

    /// A peer went away: its paths go, and the prefixes whose best changed are returned.
    pub fn peer_down(&mut self, id: PeerId) -> Vec<IpNetwork> {
        let mut changed = Vec::new();
        let prefixes: Vec<IpNetwork> = self
            .table
            .iter()
            .filter(|(_, paths)| paths.iter().any(|p| p.peer == id))
            .map(|(p, _)| *p)
            .collect();
        for prefix in prefixes {
            if self.remove_path(prefix, id) {
                changed.push(prefix);
            }
        }
        self.peers.remove(&id);
        self.adj_out.remove(&id);
        self.accepted.remove(&id);
        changed
    }

    /// Applies an UPDATE from `peer` (already RFC 7606-cleaned).
    pub fn apply_update(&mut self, peer: PeerId, update: &Update) -> ImportResult {
        let mut result = ImportResult::default();
        for prefix in update.withdrawn_prefixes() {
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
            m.mp_reach = Some(MpReach {
                family: mp.family,
                next_hop: mp.next_hop,
                nlri: Vec::new(),
            });
            m
        });
        for (attrs, prefixes) in [
            (
                v4_attrs,
                update
                    .nlri
                    .iter()
                    .map(|p| IpNetwork::V4(*p))
                    .collect::<Vec<_>>(),
            ),
            (
                mp_attrs,
                a.mp_reach
                    .as_ref()
                    .map(|m| m.nlri.clone())
                    .unwrap_or_default(),
            ),
        ] {
            let Some(attrs) = attrs else { continue };
            if prefixes.is_empty() {
                continue;
            }
            let acceptable = self.import_ok(peer, &attrs);
            let interned = self.intern(attrs);
            for prefix in prefixes {
                let changed = if acceptable {
                    self.add_path(
                        prefix,
                        Path {
                            peer,
                            attrs: interned.clone(),
                        },
                    )
                } else {
                    result.rejected += 1;
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
            let own = path
                .segments
                .iter()
                .flat_map(|s| s.asns.iter())
                .filter(|&&a| a == p.local_as)
                .count();
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
            Some(p) => Candidate {
                attrs: &path.attrs,
                ebgp: p.ebgp(),
                router_id: p.router_id,
                neighbor: p.address,
            },
            None => Candidate {
                attrs: &path.attrs,
                ebgp: false,
                router_id: self.config.router_id,
                neighbor: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        }
    }

    fn signature(paths: &[Path], ecmp: usize) -> Vec<(PeerId, *const PathAttributes)> {
        paths
            .iter()
            .take(ecmp.max(1))
            .map(|p| (p.peer, Arc::as_ptr(&p.attrs)))
            .collect()
    }

    /// Adds or replaces `peer`'s path; returns whether the best path or ECMP set changed.
    fn add_path(&mut self, prefix: IpNetwork, path: Path) -> bool {
        let mut paths = self.table.remove(&prefix).unwrap_or_default();
        let before = Self::signature(&paths, self.ecmp_len(&paths));
        match paths.iter_mut().find(|p| p.peer == path.peer) {
            Some(existing) => {
                if Arc::ptr_eq(&existing.attrs, &path.attrs) {
                    self.table.insert(prefix, paths);
                    return false;
                }
                *existing = path;
            }
            None => {
                *self.accepted.entry(path.peer).or_default() += 1;
                paths.push(path);
            }
        }
        self.sort(&mut paths);
        let after = Self::signature(&paths, self.ecmp_len(&paths));
        self.table.insert(prefix, paths);
        before != after
    }

    fn remove_path(&mut self, prefix: IpNetwork, peer: PeerId) -> bool {
        let Some(mut paths) = self.table.remove(&prefix) else {
            return false;
        };
        let before = Self::signature(&paths, self.ecmp_len(&paths));
        let len = paths.len();
        paths.retain(|p| p.peer != peer);
        if paths.len() != len {
            if let Some(n) = self.accepted.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
        }
        let after = Self::signature(&paths, self.ecmp_len(&paths));
        if !paths.is_empty() {
            self.table.insert(prefix, paths);
        }
        before != after || (len > 0 && before.is_empty() != after.is_empty())
    }

    fn sort(&self, paths: &mut [Path]) {
        if paths.len() < 2 {
            return;
        }
        let mut idx: Vec<usize> = (0..paths.len()).collect();
        idx.sort_by(|&a, &b| {
            compare(
                &self.candidate(&paths[a]),
                &self.candidate(&paths[b]),
                &self.config.decision,
            )
            .0
        });
        let sorted: Vec<Path> = idx.iter().map(|&i| paths[i].clone()).collect();
        paths.clone_from_slice(&sorted);
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
                let (ord, step) = compare(
                    &self.candidate(best),
                    &self.candidate(p),
                    &self.config.decision,
                );
                ord == std::cmp::Ordering::Equal || step.allows_multipath()
            })
            .count()
    }

    /// The best route for `prefix`, with its ECMP next hops.
    pub fn best(&self, prefix: &IpNetwork) -> Option<BestRoute> {
        let paths = self.table.get(prefix)?;
        let best = paths.first()?;
        let n = self.ecmp_len(paths);
        let mut next_hops: Vec<IpAddr> = Vec::new();
        if best.peer != LOCAL {
            for p in &paths[..n] {
                if let Some(nh) = next_hop(&p.attrs) {
                    if !next_hops.contains(&nh) {
                        next_hops.push(nh);
                    }
                }
            }
        }
        Some(BestRoute {
            next_hops,
            attrs: best.attrs.clone(),
            peer: best.peer,
        })
    }

    /// Every prefix with its best route, for dumps.
    pub fn routes(&self, family: Family) -> Vec<(IpNetwork, BestRoute)> {
        let v4 = family == Family::IPV4_UNICAST;
        let mut out: Vec<(IpNetwork, BestRoute)> = self
            .table
            .keys()
            .filter(|p| p.is_ipv4() == v4)
            .filter_map(|p| self.best(p).map(|b| (*p, b)))
            .collect();
        out.sort_by_key(|(p, _)| *p);
        out
    }

    /// Brings `peer`'s Adj-RIB-Out in line with the Loc-RIB for `prefixes` and returns the
    /// UPDATEs that carry the difference, packed.
    pub fn export(&mut self, peer: PeerId, prefixes: &[IpNetwork]) -> Vec<Update> {
        let Some(target) = self.peers.get(&peer).cloned() else {
            return Vec::new();
        };
        let mut announce = Vec::new();
        let mut withdraw = Vec::new();
        for prefix in prefixes {
            let desired = self.desired_export(&target, peer, prefix);
            let desired = desired.map(|a| self.intern(a));
            let Some(out) = self.adj_out.get_mut(&peer) else {
                return Vec::new();
            };
            match (desired, out.get(prefix)) {
                (Some(d), Some(cur)) if Arc::ptr_eq(&d, cur) => {}
                (Some(d), _) => {
                    out.insert(*prefix, d.clone());
                    announce.push((*prefix, d));
                }
                (None, Some(_)) => {
                    out.remove(prefix);
                    withdraw.push(*prefix);
                }
                (None, None) => {}
            }
        }
        pack::pack(announce, withdraw, &target.codec)
    }

    /// The whole table for a peer that just came up (End-of-RIB is the caller's).
    pub fn export_all(&mut self, peer: PeerId) -> Vec<Update> {
        let prefixes: Vec<IpNetwork> = self.table.keys().copied().collect();
        self.export(peer, &prefixes)
    }

    /// Forgets what was advertised to `peer` so the next export resends it (route refresh).
    pub fn reset_adj_out(&mut self, peer: PeerId) {
        if let Some(out) = self.adj_out.get_mut(&peer) {
            out.clear();
        }
    }

    fn desired_export(
        &self,
        target: &RibPeer,
        target_id: PeerId,
        prefix: &IpNetwork,
    ) -> Option<PathAttributes> {
        let paths = self.table.get(prefix)?;
        let best = paths.first()?;
        let family = if prefix.is_ipv4() {
            Family::IPV4_UNICAST
        } else {
            Family::IPV6_UNICAST
        };
        let source = self.peers.get(&best.peer);
        export::transform(
            &self.config,
            family,
            &best.attrs,
            best.peer,
            source,
            target_id,
            target,
        )
        .into_attrs()
    }

    pub fn peer(&self, id: PeerId) -> Option<&RibPeer> {
        self.peers.get(&id)
    }
}

/// The next hop a path's attributes carry (IPv4 NEXT_HOP or the MP_REACH global address).
pub fn next_hop(attrs: &PathAttributes) -> Option<IpAddr> {
    if let Some(mp) = &attrs.mp_reach {
        return Some(match mp.next_hop {
            NextHop::V4(a) => IpAddr::V4(a),
            NextHop::V6 { global, .. } => IpAddr::V6(global),
        });
    }
    attrs.next_hop.map(IpAddr::V4)
}
