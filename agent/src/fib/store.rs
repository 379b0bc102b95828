//! The FIB's large table, shaped for memory: by kernel slot, the route the agent wants there
//! and our route the kernel holds there. A node learning a full table from its ToR holds
//! 100,000 of each, nearly all of them saying the same thing (via the ToR, through one nexthop
//! object): so each distinct value is kept once, numbered, with a count of the routes that
//! have it ([`Interner`]), and a slot is its key and the two numbers. An IPv4 key is packed
//! into 64 bits, and those keys live in a [`PackedMap`] (a sorted array). A route costs 16
//! bytes this way, where two tables of the same kind took 12 each, hash maps 22 each and
//! ordered maps of full entries 83 and 166 (counted by the allocator:
//! `agent/tests/fib_memory.rs`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::num::{NonZeroU32, NonZeroU64};

use gingham_bgp::rib::{FastHash, Interner, PackedMap};
use ipnetwork::{IpNetwork, Ipv4Network};

use super::plan::{Form, RouteKey, Target};

fn v4(prefix: &IpNetwork) -> Option<(u64, u64)> {
    match prefix {
        IpNetwork::V4(p) => Some((u64::from(u32::from(p.ip())), u64::from(p.prefix()))),
        IpNetwork::V6(_) => None,
    }
}

fn v4_prefix(addr: u64, len: u64) -> IpNetwork {
    // Only ever unpacked from what `pack` made of a valid prefix.
    IpNetwork::V4(Ipv4Network::new(Ipv4Addr::from(addr as u32), len as u8).expect("a packed prefix length is at most 32"))
}

/// Metrics below this pack (every class's default and any sane configured one); others take
/// the wide map.
const PACKED_METRICS: u32 = 1 << 26;

/// An IPv4 slot packs into 64 bits; others take the wide map.
impl RouteKey {
    fn pack(&self) -> Option<u64> {
        if self.metric >= PACKED_METRICS {
            return None;
        }
        v4(&self.prefix).map(|(addr, len)| (addr << 32) | (len << 26) | u64::from(self.metric))
    }

    fn unpack(bits: u64) -> Self {
        RouteKey { prefix: v4_prefix(bits >> 32, (bits >> 26) & 0x3f), metric: (bits as u32) & (PACKED_METRICS - 1) }
    }
}

/// A slot's two numbers: the wanted route's target (high half) and our route's form in the
/// kernel (low half), 0 for none. A slot with neither is not kept, so the whole is never 0.
#[derive(Clone, Copy, Debug)]
struct Slot(NonZeroU64);

impl Slot {
    fn of(want: Option<NonZeroU32>, ours: Option<NonZeroU32>) -> Option<Slot> {
        let half = |n: Option<NonZeroU32>| u64::from(n.map_or(0, NonZeroU32::get));
        NonZeroU64::new((half(want) << 32) | half(ours)).map(Slot)
    }

    fn want(self) -> Option<NonZeroU32> {
        NonZeroU32::new((self.0.get() >> 32) as u32)
    }

    fn ours(self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.0.get() as u32)
    }
}

/// Both of the FIB's large tables in one, by kernel slot: what the agent wants there (a
/// [`Target`]) and what our route there is (a [`Form`]), each value kept once and numbered. A
/// node's wanted routes and ours in the kernel are nearly the same set of slots, so one key
/// serves both: 16 octets a route, where two tables took 12 each. Iteration order is
/// unspecified.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    packed: PackedMap<Slot>,
    wide: HashMap<RouteKey, Slot, FastHash>,
    targets: Interner<Target>,
    forms: Interner<Form>,
    wanted: usize,
    ours: usize,
}

impl Routes {
    fn slot(&self, key: &RouteKey) -> Option<Slot> {
        match key.pack() {
            Some(bits) => self.packed.get(&bits).copied(),
            None => self.wide.get(key).copied(),
        }
    }

    fn put(&mut self, key: RouteKey, slot: Option<Slot>) {
        match (key.pack(), slot) {
            (Some(bits), Some(s)) => drop(self.packed.insert(bits, s)),
            (Some(bits), None) => drop(self.packed.remove(&bits)),
            (None, Some(s)) => drop(self.wide.insert(key, s)),
            (None, None) => drop(self.wide.remove(&key)),
        }
    }

    /// What is wanted in slot `key`.
    pub fn want(&self, key: &RouteKey) -> Option<&Target> {
        self.slot(key)?.want().map(|n| self.targets.get(n))
    }

    /// Sets (or with `None` clears) what is wanted in slot `key`.
    pub fn set_want(&mut self, key: RouteKey, target: Option<Target>) {
        let slot = self.slot(&key);
        let old = slot.and_then(Slot::want);
        let new = target.map(|t| self.targets.hold(t));
        if let Some(old) = old {
            self.targets.release(old);
        }
        self.wanted = self.wanted + usize::from(new.is_some()) - usize::from(old.is_some());
        self.put(key, Slot::of(new, slot.and_then(Slot::ours)));
    }

    /// Every wanted route.
    pub fn wanted(&self) -> impl Iterator<Item = (RouteKey, &Target)> {
        self.slots().filter_map(|(key, s)| Some((key, self.targets.get(s.want()?))))
    }

    pub fn wanted_len(&self) -> usize {
        self.wanted
    }

    /// Our route in slot `key`.
    pub fn ours(&self, key: &RouteKey) -> Option<&Form> {
        self.slot(key)?.ours().map(|n| self.forms.get(n))
    }

    /// Records (or with `None` forgets) our route in slot `key`.
    pub fn set_ours(&mut self, key: RouteKey, form: Option<Form>) {
        let slot = self.slot(&key);
        let old = slot.and_then(Slot::ours);
        let new = form.map(|f| self.forms.hold(f));
        if let Some(old) = old {
            self.forms.release(old);
        }
        self.ours = self.ours + usize::from(new.is_some()) - usize::from(old.is_some());
        self.put(key, Slot::of(slot.and_then(Slot::want), new));
    }

    /// Every route of ours.
    pub fn our_routes(&self) -> impl Iterator<Item = (RouteKey, &Form)> {
        self.slots().filter_map(|(key, s)| Some((key, self.forms.get(s.ours()?))))
    }

    pub fn ours_len(&self) -> usize {
        self.ours
    }

    /// Each distinct form of our routes once.
    pub fn forms(&self) -> impl Iterator<Item = &Form> {
        self.forms.iter()
    }

    /// How many of our routes have a form that `matches`: a count per distinct form, without
    /// a walk over the routes.
    pub fn count_ours_where(&self, mut matches: impl FnMut(&Form) -> bool) -> usize {
        self.forms.counted().filter(|(f, _)| matches(f)).map(|(_, n)| n as usize).sum()
    }

    /// Forgets our routes for which `keep` says no (what is wanted stays).
    pub fn retain_ours(&mut self, mut keep: impl FnMut(&RouteKey, &Form) -> bool) {
        let (forms, ours) = (&mut self.forms, &mut self.ours);
        let mut check = |key: RouteKey, slot: &mut Slot| {
            let Some(n) = slot.ours() else { return true };
            if keep(&key, forms.get(n)) {
                return true;
            }
            forms.release(n);
            *ours -= 1;
            match Slot::of(slot.want(), None) {
                Some(s) => {
                    *slot = s;
                    true
                }
                None => false,
            }
        };
        self.packed.retain(|bits, slot| check(RouteKey::unpack(bits), slot));
        self.wide.retain(|key, slot| check(*key, slot));
    }

    /// Forgets every route of ours, before the kernel's are read again.
    pub fn forget_ours(&mut self) {
        self.retain_ours(|_, _| false);
    }

    /// Changes forms wherever they are (every route with the form sees the new one), without
    /// a walk over the routes.
    pub fn rewrite_forms(&mut self, change: impl FnMut(&Form) -> Option<Form>) {
        self.forms.rewrite(change)
    }

    /// Gives back what deletions left: a full table gone leaves its maps' capacity.
    pub fn shrink_to_fit(&mut self) {
        self.packed.shrink_to_fit();
        self.wide.shrink_to_fit();
    }

    fn slots(&self) -> impl Iterator<Item = (RouteKey, Slot)> + '_ {
        let packed = self.packed.iter().map(|(bits, s)| (RouteKey::unpack(bits), *s));
        packed.chain(self.wide.iter().map(|(k, s)| (*k, *s)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use gingham_bgp::rib::Gateway;

    use super::*;
    use crate::fib::plan::RouteKind;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn key(i: u32) -> RouteKey {
        RouteKey { prefix: IpNetwork::new(Ipv4Addr::from((10u32 << 24) | (i << 8)).into(), 24).unwrap(), metric: 2048 }
    }

    fn via(gw: &str) -> Target {
        Target::Gateways(Arc::from([Gateway::new(gw.parse().unwrap())]))
    }

    fn form(nh_id: u32) -> Form {
        Form { kind: RouteKind::Unicast, scope: 0, oif: Some(2), hops: Arc::from([]), nh_id: Some(nh_id) }
    }

    #[test]
    fn keys_pack_and_unpack_to_themselves_and_others_take_the_wide_map() {
        for metric in [0, 1, 2, 2048, PACKED_METRICS - 1] {
            for prefix in ["0.0.0.0/0", "198.19.255.255/32", "255.255.255.0/24"] {
                let k = RouteKey { prefix: net(prefix), metric };
                assert_eq!(RouteKey::unpack(k.pack().unwrap()), k);
            }
        }
        assert_eq!(RouteKey { prefix: net("198.19.4.0/22"), metric: PACKED_METRICS }.pack(), None);
        assert_eq!(RouteKey { prefix: net("2001:db8::/64"), metric: 1024 }.pack(), None);
        let mut r = Routes::default();
        let wide = RouteKey { prefix: net("198.19.4.0/22"), metric: u32::MAX };
        let v6 = RouteKey { prefix: net("2001:db8::/64"), metric: 1024 };
        let packed = RouteKey { prefix: net("198.19.4.0/22"), metric: 2048 };
        for k in [wide, v6, packed] {
            r.set_want(k, Some(Target::Blackhole));
            r.set_ours(k, Some(form(1)));
        }
        let mut keys: Vec<RouteKey> = r.wanted().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, [packed, wide, v6]);
        assert_eq!((r.want(&wide), r.ours(&v6)), (Some(&Target::Blackhole), Some(&form(1))));
    }

    #[test]
    fn a_slots_two_columns_come_and_go_apart() {
        let mut r = Routes::default();
        for i in 0..10 {
            r.set_want(key(i), Some(via("198.18.0.1")));
        }
        r.set_ours(key(3), Some(form(7)));
        r.set_ours(key(42), Some(form(7)));
        assert_eq!((r.wanted_len(), r.ours_len()), (10, 2));
        // Clearing one column leaves the other; a slot with neither is gone.
        r.set_want(key(3), None);
        assert_eq!((r.want(&key(3)), r.ours(&key(3))), (None, Some(&form(7))));
        r.set_ours(key(3), None);
        assert!(r.slot(&key(3)).is_none());
        r.set_ours(key(4), Some(form(8)));
        assert_eq!(r.forms().count(), 2);
        r.retain_ours(|_, f| f.nh_id == Some(7));
        assert_eq!((r.ours(&key(4)), r.want(&key(4))), (None, Some(&via("198.18.0.1"))), "what is wanted stays");
        r.forget_ours();
        assert_eq!((r.ours_len(), r.our_routes().count(), r.forms().count()), (0, 0, 0));
        assert!(r.slot(&key(42)).is_none(), "a slot of ours alone goes with it");
        assert_eq!(r.wanted_len(), 9);
        for i in 0..10 {
            r.set_want(key(i), None);
        }
        assert_eq!((r.wanted().count(), r.packed.len()), (0, 0));
    }

    #[test]
    fn a_value_lives_while_a_route_has_it_and_rewrites_reach_every_route() {
        let mut r = Routes::default();
        for i in 0..10 {
            r.set_ours(key(i), Some(form(1)));
        }
        r.set_ours(key(10), Some(form(2)));
        assert_eq!(r.count_ours_where(|f| f.nh_id == Some(1)), 10);
        // Overwriting releases the old value; the last route takes it out.
        r.set_ours(key(10), Some(form(1)));
        assert_eq!(r.forms().collect::<Vec<_>>(), [&form(1)]);
        r.rewrite_forms(|f| (f.nh_id == Some(1)).then(|| form(3)));
        assert!(r.our_routes().all(|(_, f)| *f == form(3)));
        assert_eq!(r.ours_len(), 11);
    }
}
