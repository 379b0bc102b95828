//! The Loc-RIB's storage, shaped for memory: a prefix with one path (the common case) costs
//! one 16-octet entry under an 8-octet key, holding the best path and which peers (by slot)
//! currently hold the prefix from us; IPv4 entries sit in a [`PackedMap`] (24 octets a prefix,
//! no empty slots). Further paths of multi-path prefixes live on the side.
//! A prefix that lost its last path but is still held by a peer stays as a tombstone until
//! the withdrawal has been exported.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::packed_map::PackedMap;
use super::prefix_set::{v4_from_key, v4_key};
use super::PeerId;
use crate::wire::PathAttributes;

#[derive(Clone, Debug)]
pub(super) struct Path {
    pub(super) peer: PeerId,
    pub(super) attrs: Arc<PathAttributes>,
}

const TOMBSTONE: PeerId = PeerId::MAX;
/// Bit of `Dest::advertised` that marks a change the FIB stream has not taken yet; the other
/// 31 are peer slots.
const FIB_BIT: u32 = 1 << 31;
pub(super) const SLOTS: usize = 31;

/// Best path plus the Adj-RIB-Out bits of peers with a slot.
#[derive(Debug)]
struct Dest {
    attrs: Arc<PathAttributes>,
    peer: PeerId,
    advertised: u32,
}

impl Dest {
    fn live(&self) -> bool {
        self.peer != TOMBSTONE
    }
}

#[derive(Debug, Default)]
pub(super) struct Table {
    v4: PackedMap<Dest>,
    v6: HashMap<IpNetwork, Dest>,
    /// Second-best and further paths, best first.
    extra: HashMap<IpNetwork, Vec<Path>>,
    live: usize,
    /// Shared by every tombstone.
    empty: Arc<PathAttributes>,
    /// Prefixes marked with FIB_BIT, in marking order (IPv4 as compact keys); taken from the
    /// front a batch at a time, so a queue (a table arriving is 100k of them).
    fib_v4: VecDeque<u64>,
    fib_v6: VecDeque<IpNetwork>,
}

impl Table {
    fn dest(&self, p: &IpNetwork) -> Option<&Dest> {
        match p {
            IpNetwork::V4(v4) => self.v4.get(&v4_key(v4)),
            IpNetwork::V6(_) => self.v6.get(p),
        }
    }

    fn dest_mut(&mut self, p: &IpNetwork) -> Option<&mut Dest> {
        match p {
            IpNetwork::V4(v4) => self.v4.get_mut(&v4_key(v4)),
            IpNetwork::V6(_) => self.v6.get_mut(p),
        }
    }

    fn remove_dest(&mut self, p: &IpNetwork) -> Option<Dest> {
        let d = match p {
            IpNetwork::V4(v4) => self.v4.remove(&v4_key(v4)),
            IpNetwork::V6(_) => self.v6.remove(p),
        };
        if d.as_ref().is_some_and(Dest::live) {
            self.live -= 1;
        }
        d
    }

    fn insert_dest(&mut self, p: IpNetwork, d: Dest) {
        if d.live() {
            self.live += 1;
        }
        match p {
            IpNetwork::V4(v4) => {
                self.v4.insert(v4_key(&v4), d);
            }
            IpNetwork::V6(_) => {
                self.v6.insert(p, d);
            }
        }
    }

    /// Removes the prefix's paths (best first) and returns them with its advertised bits.
    pub(super) fn take(&mut self, p: &IpNetwork) -> (Vec<Path>, u32) {
        let Some(d) = self.remove_dest(p) else { return (Vec::new(), 0) };
        let mut paths = Vec::new();
        if d.live() {
            paths.push(Path { peer: d.peer, attrs: d.attrs });
            if let Some(rest) = self.extra.remove(p) {
                paths.extend(rest);
            }
        }
        (paths, d.advertised)
    }

    /// Stores `paths` (best first) and the advertised bits.
    pub(super) fn put(&mut self, p: IpNetwork, mut paths: Vec<Path>, advertised: u32) {
        if paths.is_empty() {
            if advertised != 0 {
                self.insert_dest(p, Dest { attrs: self.empty.clone(), peer: TOMBSTONE, advertised });
            }
            return;
        }
        let best = paths.remove(0);
        if !paths.is_empty() {
            self.extra.insert(p, paths);
        }
        self.insert_dest(p, Dest { attrs: best.attrs, peer: best.peer, advertised });
    }

    pub(super) fn best(&self, p: &IpNetwork) -> Option<Path> {
        self.dest(p).filter(|d| d.live()).map(|d| Path { peer: d.peer, attrs: d.attrs.clone() })
    }

    /// Every path of the prefix, best first.
    pub(super) fn paths(&self, p: &IpNetwork) -> Vec<Path> {
        let Some(best) = self.best(p) else { return Vec::new() };
        let mut v = vec![best];
        if let Some(rest) = self.extra.get(p) {
            v.extend(rest.iter().cloned());
        }
        v
    }

    pub(super) fn has_peer(&self, p: &IpNetwork, peer: PeerId) -> bool {
        self.dest(p).is_some_and(|d| d.peer == peer) || self.extra.get(p).is_some_and(|r| r.iter().any(|x| x.peer == peer))
    }

    /// Sets or clears a peer slot's bit; returns whether it was set.
    pub(super) fn set_advertised(&mut self, p: &IpNetwork, slot: u32, on: bool) -> bool {
        let bit = 1u32 << slot;
        let Some(d) = self.dest_mut(p) else { return false };
        let was = d.advertised & bit != 0;
        if on {
            d.advertised |= bit;
        } else {
            d.advertised &= !bit;
        }
        if !d.live() && d.advertised == 0 {
            self.remove_dest(p);
        }
        was
    }

    /// Clears a slot everywhere (its peer went away or asked for everything again).
    pub(super) fn clear_slot(&mut self, slot: u32) {
        let bit = 1u32 << slot;
        self.v4.values_mut().for_each(|d| d.advertised &= !bit);
        self.v6.values_mut().for_each(|d| d.advertised &= !bit);
        self.v4.retain(|_, d| d.live() || d.advertised != 0);
        self.v6.retain(|_, d| d.live() || d.advertised != 0);
    }

    /// Every prefix (tombstones included) whose slot bit is set.
    pub(super) fn slot_prefixes(&self, slot: u32) -> Vec<IpNetwork> {
        let bit = 1u32 << slot;
        let v4 = self.v4.iter().filter(|(_, d)| d.advertised & bit != 0).map(|(k, _)| v4_from_key(k));
        v4.chain(self.v6.iter().filter(|(_, d)| d.advertised & bit != 0).map(|(p, _)| *p)).collect()
    }

    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Queues a best-path change for the FIB stream, once per prefix until it is taken. A
    /// prefix that is gone stays as a tombstone until then, so its removal is reported too.
    pub(super) fn mark_fib(&mut self, p: IpNetwork) {
        match self.dest_mut(&p) {
            Some(d) if d.advertised & FIB_BIT != 0 => return,
            Some(d) => d.advertised |= FIB_BIT,
            None => self.insert_dest(p, Dest { attrs: self.empty.clone(), peer: TOMBSTONE, advertised: FIB_BIT }),
        }
        match p {
            IpNetwork::V4(v4) => self.fib_v4.push_back(v4_key(&v4)),
            IpNetwork::V6(_) => self.fib_v6.push_back(p),
        }
    }

    /// Takes up to `n` queued prefixes.
    pub(super) fn take_fib(&mut self, n: usize) -> Vec<IpNetwork> {
        let k4 = self.fib_v4.len().min(n);
        let mut out: Vec<IpNetwork> = self.fib_v4.drain(..k4).map(v4_from_key).collect();
        let k6 = self.fib_v6.len().min(n - out.len());
        out.extend(self.fib_v6.drain(..k6));
        if self.fib_v4.is_empty() {
            self.fib_v4.shrink_to(1024);
        }
        for p in &out {
            if let Some(d) = self.dest_mut(p) {
                d.advertised &= !FIB_BIT;
                if !d.live() && d.advertised == 0 {
                    self.remove_dest(p);
                }
            }
        }
        out
    }

    pub(super) fn fib_pending(&self) -> bool {
        !self.fib_v4.is_empty() || !self.fib_v6.is_empty()
    }

    /// Every path of every prefix, in no order.
    pub(super) fn all_paths(&self) -> impl Iterator<Item = (PeerId, &Arc<PathAttributes>)> + '_ {
        let best = self.v4.iter().map(|(_, d)| d).chain(self.v6.values()).filter(|d| d.live()).map(|d| (d.peer, &d.attrs));
        best.chain(self.extra.values().flatten().map(|p| (p.peer, &p.attrs)))
    }

    /// Prefixes with at least one path.
    pub(super) fn prefixes(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        let v4 = self.v4.iter().filter(|(_, d)| d.live()).map(|(k, _)| v4_from_key(k));
        v4.chain(self.v6.iter().filter(|(_, d)| d.live()).map(|(p, _)| *p))
    }
}
