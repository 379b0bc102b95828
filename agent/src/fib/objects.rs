//! The FIB's work with kernel nexthop objects ([`super::nexthop`] is the model and the
//! messages): routes through gateways made to go through groups, a gone gateway's object
//! deleted at once, a new or returning gateway taken into a group in place ([`super::widen`]),
//! objects no route uses deleted, and the model read back from the kernel.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use gingham_bgp::rib::Gateway;

use super::plan::{self, Class, Form, Hop, Hops, KernelTable, Op, Programmed, RouteKey, RouteMetrics, Scope, Target, WantKey};
use super::{nexthop, Evaluated, Fib};
use crate::netlink::RTPROT_GINGHAM;

impl Fib {
    /// Reads our nexthop objects, and gives each route through one the object's gateways
    /// (whether or not the kernel's dump lists them beside its id).
    pub(super) fn read_nexthops(&mut self) {
        let (Some(objects), Some(writers)) = (self.nexthops.as_mut(), self.batcher.as_mut()) else { return };
        match writers.here().dump_nexthops() {
            Ok(listed) => objects.load(listed, RTPROT_GINGHAM),
            Err(e) => {
                tracing::warn!(error = %e, "reading nexthop objects failed; keeping the last known ones");
                return;
            }
        }
        self.table.routes.rewrite_forms(|form| {
            let hops = form.nh_id.and_then(|id| objects.hops_of(id))?;
            (hops != form.hops).then(|| Form { hops, ..form.clone() })
        });
    }

    /// Takes out of `ops` the replaces that only add gateways to a route through one of our
    /// groups, and holds them ([`widen`]). Returns the rest, and the slots held.
    pub(super) fn hold_widenings(&mut self, ops: Vec<Op>, now: Instant) -> (Vec<Op>, Vec<RouteKey>) {
        let Some(objects) = self.nexthops.as_ref().filter(|_| !self.releasing) else { return (ops, Vec::new()) };
        let (table, widening) = (&self.table, &mut self.widening);
        let mut held = Vec::new();
        let ops = ops
            .into_iter()
            .filter(|op| {
                let Op::Replace(key, Programmed::Via(hops)) = op else { return true };
                let Some(form) = table.routes.ours(key) else { return true };
                match form.nh_id {
                    Some(group)
                        if objects.is_group(group)
                            && nexthop::eligible(key.prefix.is_ipv4(), hops)
                            && plan::only_gains(&form.hops, hops) =>
                    {
                        widening.hold(group, *key, now);
                        held.push(*key);
                        false
                    }
                    _ => true,
                }
            })
            .collect();
        (ops, held)
    }

    /// Has each group whose routes all want the same other gateways take them in place.
    pub(super) fn grow_complete_groups(&mut self) {
        if !self.widening.is_holding() {
            return;
        }
        let routes = &self.table.routes;
        for group in self.widening.complete(|g| routes.count_ours_where(|f| f.nh_id == Some(g))) {
            // A group gone (its last gateway with it): its routes' changes are planned again
            // when due.
            let Some(current) = self.nexthops.as_ref().filter(|o| o.is_group(group)).and_then(|o| o.hops_of(group)) else {
                self.widening.refused(group);
                continue;
            };
            let through = self.table.routes.our_routes().filter(|(_, f)| f.nh_id == Some(group)).map(|(key, _)| key);
            let Some(hops) = plan::common_gateways(&self.table, &self.metrics, through) else { continue };
            // Every route wants what it has: nothing waits.
            if plan::same_gateways(&hops, &current) {
                self.widening.settled(group);
                continue;
            }
            let ipv4 = current.first().is_some_and(|h| h.via.is_ipv4());
            if !nexthop::eligible(ipv4, &hops) {
                self.widening.refused(group);
                continue;
            }
            if self.regroup(group, hops) {
                self.widening.settled(group);
            } else {
                self.widening.refused(group);
            }
        }
    }

    /// Gives group `group` the objects of `hops` as its members: every route through it goes
    /// via them from then on. Returns whether it did; when not, the held changes are carried
    /// out one by one when due.
    fn regroup(&mut self, group: u32, hops: Hops) -> bool {
        let (Some(objects), Some(writers)) = (self.nexthops.as_mut(), self.batcher.as_mut()) else { return false };
        let (members, create) = objects.prepare_regroup(&hops);
        if !create.is_empty() {
            let results = writers
                .here()
                .nexthop_requests(create.len(), |buf, seq, i| nexthop::encode_new(buf, seq, create[i].0, &create[i].1, RTPROT_GINGHAM));
            let mut refused = false;
            for ((id, kind), result) in create.iter().zip(results) {
                if let Err(errno) = result {
                    let error = std::io::Error::from_raw_os_error(errno);
                    tracing::warn!(id, ?kind, %error, "the kernel refused a nexthop object; routes gaining its gateway move one by one");
                    objects.forget(*id);
                    refused = true;
                }
            }
            if refused {
                return false;
            }
        }
        let result = writers.here().nexthop_requests(1, |buf, seq, _| nexthop::encode_regroup(buf, seq, group, &members, RTPROT_GINGHAM));
        if let Some(Err(errno)) = result.first() {
            let error = std::io::Error::from_raw_os_error(*errno);
            tracing::warn!(group, %error, "the kernel refused new members for a group; its routes move one by one");
            return false;
        }
        objects.regrouped(group, members, hops.clone());
        let routes = self.table.routes.count_ours_where(|f| f.nh_id == Some(group));
        self.table.routes.rewrite_forms(|form| (form.nh_id == Some(group)).then(|| Form { hops: hops.clone(), ..form.clone() }));
        self.stats.regrouped += routes as u64;
        tracing::info!(group, gateways = ?hops, routes, "a group took the gateways all its routes gained: one change for all of them");
        true
    }

    /// The held changes are due: what no group took is carried out one route at a time.
    pub(super) async fn release_widenings(&mut self) {
        self.grow_complete_groups();
        let (left, routes) = self.widening.release();
        if left.is_empty() {
            return;
        }
        tracing::info!(groups = ?left, "routes gaining gateways move one by one: not every route of their group gained the same");
        // Against the model, not a new read: the held changes are what differs from it (and,
        // when every route is planned, routes waiting for a retry, which stay waiting).
        // Leftovers are the resync's business.
        self.releasing = true;
        let done = match routes {
            Some(routes) => {
                let wants: BTreeSet<WantKey> = routes.iter().filter_map(|k| self.metrics.want_of(k)).collect();
                let plan = plan::plan(&self.table, &self.metrics, Scope::Only(&wants));
                self.execute(plan, Evaluated::Only(&routes)).await
            }
            None => {
                let plan = plan::plan(&self.table, &self.metrics, Scope::Everything { adopting: true });
                self.execute(plan, Evaluated::All).await
            }
        };
        self.releasing = false;
        self.stats.programmed += done.installed;
        self.stats.removed += done.removed;
    }

    /// Has each route through gateways go through the group object for them, making the
    /// objects that are missing first. A route whose object the kernel refused keeps its
    /// gateways.
    pub(super) fn through_objects(&mut self, mut ops: Vec<Op>) -> Vec<Op> {
        let (Some(objects), Some(writers)) = (self.nexthops.as_mut(), self.batcher.as_mut()) else { return ops };
        // Routes with the same gateways share one list: one lookup per list.
        let mut chosen: HashMap<*const [Hop], u32> = HashMap::new();
        let mut create: Vec<(u32, nexthop::Kind)> = Vec::new();
        for op in &ops {
            if let Op::Add(key, Programmed::Via(hops)) | Op::Replace(key, Programmed::Via(hops)) = op {
                if nexthop::eligible(key.prefix.is_ipv4(), hops) {
                    chosen.entry(Arc::as_ptr(hops)).or_insert_with(|| {
                        let (id, new) = objects.prepare(hops);
                        create.extend(new);
                        id
                    });
                }
            }
        }
        if !create.is_empty() {
            let results = writers
                .here()
                .nexthop_requests(create.len(), |buf, seq, i| nexthop::encode_new(buf, seq, create[i].0, &create[i].1, RTPROT_GINGHAM));
            for ((id, kind), result) in create.iter().zip(results) {
                match result {
                    Ok(()) => tracing::debug!(id, ?kind, "nexthop object made"),
                    Err(errno) => {
                        let error = std::io::Error::from_raw_os_error(errno);
                        tracing::warn!(id, ?kind, %error, "the kernel refused a nexthop object; its routes carry their gateways");
                        objects.forget(*id);
                    }
                }
            }
        }
        for op in &mut ops {
            if let Op::Add(_, p) | Op::Replace(_, p) = op {
                if let Programmed::Via(hops) = p {
                    if let Some(&id) = chosen.get(&Arc::as_ptr(hops)) {
                        if objects.hops_of(id).is_some() {
                            *p = Programmed::Object { id, hops: hops.clone() };
                        }
                    }
                }
            }
        }
        ops
    }

    /// Deletes the objects of gateways no BGP path has any more. The kernel takes each out of
    /// every group and deletes the routes that only had it: one operation for all the routes
    /// of a session that ended. A gateway some other wanted route still goes via (a static
    /// route to a peer, a next hop that resolves through it) stays, and its routes change one
    /// by one as the speaker's changes arrive.
    pub(super) fn gateways_gone(&mut self, gone: &[Gateway]) {
        let (Some(objects), Some(writers)) = (self.nexthops.as_mut(), self.batcher.as_mut()) else { return };
        let candidates: Vec<(Gateway, Vec<u32>)> =
            gone.iter().map(|g| (*g, objects.via(g.addr, g.ifindex))).filter(|(_, ids)| !ids.is_empty()).collect();
        if candidates.is_empty() {
            return;
        }
        let still_used = still_used_vias(&self.table, &self.metrics, gone);
        let ids: Vec<u32> = candidates.into_iter().filter(|(g, _)| !still_used.contains(&g.addr)).flat_map(|(_, ids)| ids).collect();
        if ids.is_empty() {
            return;
        }
        let results = writers.here().nexthop_requests(ids.len(), |buf, seq, i| nexthop::encode_delete(buf, seq, ids[i]));
        let mut removed = 0u64;
        for (id, result) in ids.iter().zip(results) {
            match result {
                Ok(()) | Err(libc::ENOENT) => {}
                Err(errno) => {
                    let error = std::io::Error::from_raw_os_error(errno);
                    tracing::warn!(id, %error, "deleting a gone gateway's nexthop object failed; its routes change one by one");
                    continue;
                }
            }
            let (shrunk, groups_gone) = objects.deleted(*id);
            let before = self.table.routes.ours_len();
            self.table.routes.retain_ours(|_, r| r.nh_id.is_none_or(|n| n != *id && !groups_gone.contains(&n)));
            removed += (before - self.table.routes.ours_len()) as u64;
            if !shrunk.is_empty() {
                let shrunk: HashMap<u32, Hops> = shrunk.into_iter().collect();
                self.table.routes.rewrite_forms(|form| {
                    let hops = form.nh_id.and_then(|n| shrunk.get(&n))?;
                    Some(Form { hops: hops.clone(), ..form.clone() })
                });
            }
        }
        tracing::info!(gateways = ?gone, objects = ids.len(), routes_removed = removed, "gone gateways' nexthop objects deleted");
        self.stats.removed += removed;
    }

    /// Deletes our nexthop objects that no route goes through any more (not even another
    /// protocol's: an object is never pulled from under a route).
    pub(super) fn delete_unused_objects(&mut self) {
        let (Some(objects), Some(writers)) = (self.nexthops.as_mut(), self.batcher.as_mut()) else { return };
        if objects.is_empty() {
            return;
        }
        let foreign = self.table.foreign.values().filter_map(|r| r.nh_id);
        let used: HashSet<u32> = self.table.routes.forms().filter_map(|f| f.nh_id).chain(foreign).collect();
        let unused = objects.unused(&used);
        if unused.is_empty() {
            return;
        }
        let results = writers.here().nexthop_requests(unused.len(), |buf, seq, i| nexthop::encode_delete(buf, seq, unused[i]));
        for (id, result) in unused.iter().zip(results) {
            match result {
                Ok(()) | Err(libc::ENOENT) => objects.forget(*id),
                Err(errno) => tracing::debug!(id, error = %std::io::Error::from_raw_os_error(errno), "an unused nexthop object stays"),
            }
        }
    }
}

/// The gateways (resolved) that wanted routes go via, leaving out the learned routes whose BGP
/// next hops include one of `gone` (their changes are on the way).
fn still_used_vias(kernel: &KernelTable, metrics: &RouteMetrics, gone: &[Gateway]) -> HashSet<std::net::IpAddr> {
    let mut vias = HashSet::new();
    let mut seen: HashSet<(*const [Gateway], bool)> = HashSet::new();
    let mut resolved = plan::Resolved::default();
    for (key, target) in kernel.routes.wanted() {
        let Target::Gateways(next_hops) = target else { continue };
        let learned = key.metric == metrics.of(&key.prefix, Class::Learned);
        if !seen.insert((Arc::as_ptr(next_hops), learned)) {
            continue;
        }
        if learned && next_hops.iter().any(|g| gone.contains(g)) {
            continue;
        }
        if let Ok(hops) = plan::resolve_all(next_hops, kernel, metrics, &mut resolved) {
            vias.extend(hops.iter().map(|h| h.via));
        }
    }
    vias
}
