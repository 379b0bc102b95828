//! The Loc-RIB's storage, shaped for memory. A path is a peer and an attribute set, and a full
//! table from a ToR is 100,000 prefixes with a handful of those: each distinct one is kept once
//! (an [`Interner`]) and a prefix holds its number. A prefix with one path (the common case) costs
//! one entry under an 8-octet key, holding the best path's number and which update groups (by
//! slot) currently hold the prefix from us; IPv4 entries sit in sorted arrays (`dests.rs`: 12
//! octets a prefix when its entry fits in 32 bits, as nearly all do, 16 when not; no empty
//! slots). A second path (a node under two ToRs has one for every prefix)
//! sits in a second sorted array, 12 octets more; a third and further paths live in a hash
//! table. A prefix that lost its last path but is still held by a peer stays as a tombstone
//! until the withdrawal has been exported.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ipnetwork::IpNetwork;

use super::dests::{Dest, Source, V4Dests, FIB_BIT, TOMBSTONE};
use super::interner::Interner;
use super::packed_map::PackedMap;
use super::prefix_set::{v4_from_key, v4_key};
use super::PeerId;
use crate::wire::PathAttributes;

#[derive(Clone, Debug)]
pub(super) struct Path {
    pub(super) peer: PeerId,
    pub(super) attrs: Arc<PathAttributes>,
}

/// A path is told by its peer and its attribute set's address: the RIB interns attribute sets,
/// so equal sets share one, and a set's address is not reused while a path holds it.
impl PartialEq for Path {
    fn eq(&self, other: &Path) -> bool {
        self.peer == other.peer && Arc::ptr_eq(&self.attrs, &other.attrs)
    }
}

impl Eq for Path {}

impl Hash for Path {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.peer.hash(state);
        Arc::as_ptr(&self.attrs).hash(state);
    }
}

// A path's number (`Source`) names a path among the table's sources: each distinct path is
// kept once, with the number of prefixes that hold it. A source costs about 55 octets (its slot
// and its hash entry) besides its attribute set: a table whose every prefix has an attribute
// set of its own (not a data centre's) pays about 51 octets a prefix more than with its paths
// held in place (12 + 55 against 16, and its entries full: 16 + 55 against 24).

#[derive(Debug, Default)]
pub(super) struct Table {
    v4: V4Dests,
    v6: HashMap<IpNetwork, Dest>,
    /// Second-best paths of IPv4 prefixes.
    second_v4: PackedMap<Source>,
    sources: Interner<Path>,
    /// The paths after those: an IPv4 prefix's third and further, an IPv6 prefix's second and
    /// further; best first.
    extra: HashMap<IpNetwork, Vec<Path>>,
    live: usize,
    /// Prefixes marked with FIB_BIT, in marking order (IPv4 as compact keys); taken from the
    /// front a batch at a time, so a queue (a table arriving is 100k of them).
    fib_v4: VecDeque<u64>,
    fib_v6: VecDeque<IpNetwork>,
}

impl Table {
    fn dest(&self, p: &IpNetwork) -> Option<Dest> {
        match p {
            IpNetwork::V4(v4) => self.v4.get(v4_key(v4)),
            IpNetwork::V6(_) => self.v6.get(p).copied(),
        }
    }

    fn remove_dest(&mut self, p: &IpNetwork) -> Option<Dest> {
        let d = match p {
            IpNetwork::V4(v4) => self.v4.remove(v4_key(v4)),
            IpNetwork::V6(_) => self.v6.remove(p),
        };
        if d.as_ref().is_some_and(Dest::live) {
            self.live -= 1;
        }
        d
    }

    /// Inserts or replaces the prefix's entry.
    fn set_dest(&mut self, p: IpNetwork, d: Dest) {
        let old = match p {
            IpNetwork::V4(v4) => self.v4.set(v4_key(&v4), d),
            IpNetwork::V6(_) => self.v6.insert(p, d),
        };
        self.live = self.live + usize::from(d.live()) - usize::from(old.is_some_and(|o| o.live()));
    }

    /// Stores a changed entry, or drops it when it no longer holds anything.
    fn update_dest(&mut self, p: IpNetwork, d: Dest) {
        if !d.live() && d.advertised == 0 {
            self.remove_dest(&p);
        } else {
            self.set_dest(p, d);
        }
    }

    /// Removes the prefix's paths (best first) and returns them with its advertised bits.
    pub(super) fn take(&mut self, p: &IpNetwork) -> (Vec<Path>, u32) {
        let Some(d) = self.remove_dest(p) else { return (Vec::new(), 0) };
        let mut paths = Vec::new();
        if d.live() {
            paths.push(self.sources.release(d.best));
            if let IpNetwork::V4(v4) = p {
                if let Some(second) = self.second_v4.remove(&v4_key(v4)) {
                    paths.push(self.sources.release(second));
                }
            }
            if let Some(rest) = self.extra.remove(p) {
                paths.extend(rest);
            }
        }
        (paths, d.advertised)
    }

    /// Stores `paths` (best first) and the advertised bits.
    pub(super) fn put(&mut self, p: IpNetwork, paths: Vec<Path>, advertised: u32) {
        let mut paths = paths.into_iter();
        let Some(best) = paths.next() else {
            if advertised != 0 {
                self.set_dest(p, Dest { best: TOMBSTONE, advertised });
            }
            return;
        };
        if let IpNetwork::V4(v4) = p {
            if let Some(second) = paths.next() {
                let second = self.sources.hold(second);
                self.second_v4.insert(v4_key(&v4), second);
            }
        }
        // Collected in place: the taken paths' own allocation, when there is one.
        let rest: Vec<Path> = paths.collect();
        if !rest.is_empty() {
            self.extra.insert(p, rest);
        }
        let best = self.sources.hold(best);
        self.set_dest(p, Dest { best, advertised });
    }

    pub(super) fn best(&self, p: &IpNetwork) -> Option<Path> {
        self.dest(p).filter(|d| d.live()).map(|d| self.sources.get(d.best).clone())
    }

    /// Every path of the prefix, best first.
    pub(super) fn paths(&self, p: &IpNetwork) -> Vec<Path> {
        let Some(best) = self.best(p) else { return Vec::new() };
        let mut v = vec![best];
        v.extend(self.second(p).cloned());
        if let Some(rest) = self.extra.get(p) {
            v.extend(rest.iter().cloned());
        }
        v
    }

    pub(super) fn has_peer(&self, p: &IpNetwork, peer: PeerId) -> bool {
        self.dest(p).is_some_and(|d| d.live() && self.sources.get(d.best).peer == peer)
            || self.second(p).is_some_and(|x| x.peer == peer)
            || self.extra.get(p).is_some_and(|r| r.iter().any(|x| x.peer == peer))
    }

    fn second(&self, p: &IpNetwork) -> Option<&Path> {
        match p {
            IpNetwork::V4(v4) => self.second_v4.get(&v4_key(v4)).map(|n| self.sources.get(*n)),
            IpNetwork::V6(_) => None,
        }
    }

    /// Sets or clears a peer slot's bit; returns whether it was set.
    pub(super) fn set_advertised(&mut self, p: &IpNetwork, slot: u32, on: bool) -> bool {
        let bit = 1u32 << slot;
        let Some(mut d) = self.dest(p) else { return false };
        let was = d.advertised & bit != 0;
        if was != on {
            d.advertised ^= bit;
            self.update_dest(*p, d);
        }
        was
    }

    /// Clears a slot everywhere (its peer went away or asked for everything again).
    pub(super) fn clear_slot(&mut self, slot: u32) {
        let bit = 1u32 << slot;
        let clear = |d: &mut Dest| {
            d.advertised &= !bit;
            d.live() || d.advertised != 0
        };
        self.v4.retain(|_, d| clear(d));
        self.v6.retain(|_, d| clear(d));
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
        match self.dest(&p) {
            Some(d) if d.advertised & FIB_BIT != 0 => return,
            Some(d) => self.set_dest(p, Dest { advertised: d.advertised | FIB_BIT, ..d }),
            None => self.set_dest(p, Dest { best: TOMBSTONE, advertised: FIB_BIT }),
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
            if let Some(d) = self.dest(p) {
                self.update_dest(*p, Dest { advertised: d.advertised & !FIB_BIT, ..d });
            }
        }
        out
    }

    pub(super) fn fib_pending(&self) -> bool {
        !self.fib_v4.is_empty() || !self.fib_v6.is_empty()
    }

    /// Every path of every prefix, in no order; a path that several prefixes share may come
    /// once or several times.
    pub(super) fn all_paths(&self) -> impl Iterator<Item = (PeerId, &Arc<PathAttributes>)> + '_ {
        self.sources.iter().chain(self.extra.values().flatten()).map(|p| (p.peer, &p.attrs))
    }

    /// Prefixes with at least one path.
    pub(super) fn prefixes(&self) -> impl Iterator<Item = IpNetwork> + '_ {
        let v4 = self.v4.iter().filter(|(_, d)| d.live()).map(|(k, _)| v4_from_key(k));
        v4.chain(self.v6.iter().filter(|(_, d)| d.live()).map(|(p, _)| *p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(peer: PeerId) -> Path {
        Path { peer, attrs: Arc::new(PathAttributes { local_pref: Some(peer), ..Default::default() }) }
    }

    fn peers(paths: &[Path]) -> Vec<PeerId> {
        paths.iter().map(|p| p.peer).collect()
    }

    #[test]
    fn every_path_of_a_prefix_comes_back_in_order_whichever_store_holds_it() {
        let mut t = Table::default();
        for (prefix, n) in [("10.0.0.0/24", 1), ("10.0.1.0/24", 2), ("10.0.2.0/24", 4), ("2001:db8::/64", 3)] {
            let p: IpNetwork = prefix.parse().unwrap();
            let paths: Vec<Path> = (1..=n).map(path).collect();
            t.put(p, paths, 0b101);
            assert_eq!(peers(&t.paths(&p)), (1..=n).collect::<Vec<_>>(), "{prefix}");
            assert!(t.has_peer(&p, n) && !t.has_peer(&p, n + 1), "{prefix}");
        }
        assert_eq!(t.len(), 4);
        let mut all: Vec<PeerId> = t.all_paths().map(|(peer, _)| peer).collect();
        all.sort();
        assert_eq!(all, [1, 1, 1, 1, 2, 2, 2, 3, 3, 4]);

        let p: IpNetwork = "10.0.2.0/24".parse().unwrap();
        let (paths, advertised) = t.take(&p);
        assert_eq!((peers(&paths), advertised), (vec![1, 2, 3, 4], 0b101));
        assert!(t.paths(&p).is_empty() && !t.has_peer(&p, 2), "taken with its second and further paths");
        // Back with fewer paths: nothing of the old ones stays beside it.
        t.put(p, paths.into_iter().skip(2).collect(), 0);
        assert_eq!(peers(&t.paths(&p)), [3, 4]);
        assert_eq!(t.all_paths().count(), 8);
    }

    #[test]
    fn prefixes_with_the_same_path_share_it_until_the_last_one_goes() {
        let mut t = Table::default();
        let (a, b) = (path(1), path(2));
        let prefixes: Vec<IpNetwork> = (0..100).map(|i| format!("10.1.{i}.0/24").parse().unwrap()).collect();
        for p in &prefixes {
            t.put(*p, vec![a.clone(), b.clone()], 0);
        }
        assert_eq!(t.all_paths().count(), 2, "one source per distinct path");
        assert_eq!(t.sources.iter().count(), 2);
        for p in &prefixes[..99] {
            let (paths, _) = t.take(p);
            assert!(Arc::ptr_eq(&paths[0].attrs, &a.attrs) && Arc::ptr_eq(&paths[1].attrs, &b.attrs));
        }
        let last = prefixes[99];
        assert_eq!(peers(&t.paths(&last)), [1, 2], "the last prefix keeps both paths");
        t.take(&last);
        assert_eq!(t.all_paths().count(), 0, "released with the last prefix");
        assert_eq!(Arc::strong_count(&a.attrs), 1, "the table holds no reference any more");
        // A tombstone is no source.
        t.put(last, vec![b.clone()], 0);
        t.mark_fib(prefixes[0]);
        assert!(t.dest(&last).is_some_and(|d| d.best.get() <= 2), "a freed number is handed out again");
        assert_eq!(peers(&t.paths(&last)), [2]);
        assert!(!t.has_peer(&prefixes[0], 1) && t.best(&prefixes[0]).is_none());
    }
}
