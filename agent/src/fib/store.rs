//! The FIB's large table, shaped for memory: by kernel slot, the route the agent wants there
//! and our route the kernel holds there. A node learning a full table from its ToR holds
//! 100,000 of each, nearly all of them saying the same thing (via the ToR, through one nexthop
//! object): so each distinct value is kept once, numbered, with a count of the routes that
//! have it ([`Interner`]), and a slot is its key and the two numbers. An IPv4 key is packed
//! into 64 bits, and those keys live in a [`PackedMap`] (a sorted array). A route costs 12
//! bytes this way, where two tables of the same kind took 12 each, hash maps 22 each and
//! ordered maps of full entries 83 and 166 (counted by the allocator:
//! `agent/tests/fib_memory.rs`).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;

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

/// A slot's two numbers: the wanted route's target and our route's form in the kernel.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    want: Option<NonZeroU32>,
    ours: Option<NonZeroU32>,
}

impl Slot {
    fn is_empty(self) -> bool {
        self.want.is_none() && self.ours.is_none()
    }
}

/// A slot in 32 bits, for the sorted array: each number in 16 (0 for none), which leaves an
/// entry 12 octets with its key. Numbers are handed out again once free, so they stay about as
/// low as the count of distinct values (one per pod and a few more); a slot with a higher one
/// takes the wide map. A slot with neither number is not kept, so the whole is never 0.
#[derive(Clone, Copy, Debug)]
struct Narrow(NonZeroU32);

impl Narrow {
    fn of(slot: Slot) -> Option<Narrow> {
        let half = |n: Option<NonZeroU32>| -> Option<u32> {
            let n = n.map_or(0, NonZeroU32::get);
            (n <= u32::from(u16::MAX)).then_some(n)
        };
        NonZeroU32::new((half(slot.want)? << 16) | half(slot.ours)?).map(Narrow)
    }

    fn slot(self) -> Slot {
        Slot { want: NonZeroU32::new(self.0.get() >> 16), ours: NonZeroU32::new(self.0.get() & 0xffff) }
    }
}

/// Both of the FIB's large tables in one, by kernel slot: what the agent wants there (a
/// [`Target`]) and what our route there is (a [`Form`]), each value kept once and numbered. A
/// node's wanted routes and ours in the kernel are nearly the same set of slots, so one key
/// serves both: 12 octets a route, where two tables took 12 each. Iteration order is
/// unspecified.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    packed: PackedMap<Narrow>,
    /// Slots whose key does not pack (IPv6, a large metric) or whose numbers do not fit in
    /// [`Narrow`]; a key is here or in `packed`, never in both.
    wide: HashMap<RouteKey, Slot, FastHash>,
    targets: Column<Target>,
    forms: Column<Form>,
}

/// One of a slot's two values: each distinct one numbered, and how many slots have one.
#[derive(Clone, Debug)]
struct Column<T> {
    values: Interner<T>,
    slots: usize,
}

impl<T> Default for Column<T> {
    fn default() -> Self {
        Column { values: Interner::default(), slots: 0 }
    }
}

impl<T: Clone + Eq + Hash> Column<T> {
    /// Holds `new` in a slot in place of the value numbered `old` (either may be none); the new
    /// number.
    fn replace(&mut self, old: Option<NonZeroU32>, new: Option<T>) -> Option<NonZeroU32> {
        let n = new.map(|v| self.values.hold(v));
        if let Some(old) = old {
            self.values.release(old);
        }
        self.slots = self.slots + usize::from(n.is_some()) - usize::from(old.is_some());
        n
    }
}

impl Routes {
    fn slot(&self, key: &RouteKey) -> Slot {
        if let Some(n) = key.pack().and_then(|bits| self.packed.get(&bits)) {
            return n.slot();
        }
        if self.wide.is_empty() {
            return Slot::default();
        }
        self.wide.get(key).copied().unwrap_or_default()
    }

    fn put(&mut self, key: RouteKey, slot: Slot) {
        let bits = key.pack();
        if let (Some(bits), Some(narrow)) = (bits, Narrow::of(slot)) {
            self.packed.insert(bits, narrow);
            if !self.wide.is_empty() {
                self.wide.remove(&key);
            }
            return;
        }
        if let Some(bits) = bits {
            self.packed.remove(&bits);
        }
        if !slot.is_empty() {
            self.wide.insert(key, slot);
        } else if !self.wide.is_empty() {
            self.wide.remove(&key);
        }
    }

    /// What is wanted in slot `key`.
    pub fn want(&self, key: &RouteKey) -> Option<&Target> {
        self.slot(key).want.map(|n| self.targets.values.get(n))
    }

    /// Sets (or with `None` clears) what is wanted in slot `key`.
    pub fn set_want(&mut self, key: RouteKey, target: Option<Target>) {
        let slot = self.slot(&key);
        let want = self.targets.replace(slot.want, target);
        self.put(key, Slot { want, ..slot });
    }

    /// Every wanted route.
    pub fn wanted(&self) -> impl Iterator<Item = (RouteKey, &Target)> {
        self.slots().filter_map(|(key, s)| Some((key, self.targets.values.get(s.want?))))
    }

    pub fn wanted_len(&self) -> usize {
        self.targets.slots
    }

    /// Our route in slot `key`.
    pub fn ours(&self, key: &RouteKey) -> Option<&Form> {
        self.slot(key).ours.map(|n| self.forms.values.get(n))
    }

    /// Records (or with `None` forgets) our route in slot `key`.
    pub fn set_ours(&mut self, key: RouteKey, form: Option<Form>) {
        let slot = self.slot(&key);
        let ours = self.forms.replace(slot.ours, form);
        self.put(key, Slot { ours, ..slot });
    }

    /// Every route of ours.
    pub fn our_routes(&self) -> impl Iterator<Item = (RouteKey, &Form)> {
        self.slots().filter_map(|(key, s)| Some((key, self.forms.values.get(s.ours?))))
    }

    pub fn ours_len(&self) -> usize {
        self.forms.slots
    }

    /// Each distinct form of our routes once.
    pub fn forms(&self) -> impl Iterator<Item = &Form> {
        self.forms.values.iter()
    }

    /// How many of our routes have a form that `matches`: a count per distinct form, without
    /// a walk over the routes.
    pub fn count_ours_where(&self, mut matches: impl FnMut(&Form) -> bool) -> usize {
        self.forms.values.counted().filter(|(f, _)| matches(f)).map(|(_, n)| n as usize).sum()
    }

    /// Forgets our routes for which `keep` says no (what is wanted stays).
    pub fn retain_ours(&mut self, mut keep: impl FnMut(&RouteKey, &Form) -> bool) {
        let forms = &mut self.forms;
        // The slot without our route, or `None` to drop it.
        let mut check = |key: RouteKey, slot: Slot| -> Option<Slot> {
            let Some(n) = slot.ours else { return Some(slot) };
            if keep(&key, forms.values.get(n)) {
                return Some(slot);
            }
            forms.replace(Some(n), None);
            slot.want.map(|_| Slot { ours: None, ..slot })
        };
        self.packed.retain(|bits, narrow| match check(RouteKey::unpack(bits), narrow.slot()) {
            // Its numbers were narrow and one went: still narrow.
            Some(slot) => Narrow::of(slot).map(|n| *narrow = n).is_some(),
            None => false,
        });
        self.wide.retain(|key, slot| match check(*key, *slot) {
            Some(kept) => {
                *slot = kept;
                true
            }
            None => false,
        });
    }

    /// Forgets every route of ours, before the kernel's are read again.
    pub fn forget_ours(&mut self) {
        self.retain_ours(|_, _| false);
    }

    /// Changes forms wherever they are (every route with the form sees the new one), without
    /// a walk over the routes.
    pub fn rewrite_forms(&mut self, change: impl FnMut(&Form) -> Option<Form>) {
        self.forms.values.rewrite(change)
    }

    /// Gives back what deletions left: a full table gone leaves its maps' capacity.
    pub fn shrink_to_fit(&mut self) {
        self.packed.shrink_to_fit();
        self.wide.shrink_to_fit();
    }

    fn slots(&self) -> impl Iterator<Item = (RouteKey, Slot)> + '_ {
        let packed = self.packed.iter().map(|(bits, n)| (RouteKey::unpack(bits), n.slot()));
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
        assert!(r.slot(&key(3)).is_empty());
        r.set_ours(key(4), Some(form(8)));
        assert_eq!(r.forms().count(), 2);
        r.retain_ours(|_, f| f.nh_id == Some(7));
        assert_eq!((r.ours(&key(4)), r.want(&key(4))), (None, Some(&via("198.18.0.1"))), "what is wanted stays");
        r.forget_ours();
        assert_eq!((r.ours_len(), r.our_routes().count(), r.forms().count()), (0, 0, 0));
        assert!(r.slot(&key(42)).is_empty() && r.packed.len() == 9, "a slot of ours alone goes with it");
        assert_eq!(r.wanted_len(), 9);
        for i in 0..10 {
            r.set_want(key(i), None);
        }
        assert_eq!((r.wanted().count(), r.packed.len()), (0, 0));
    }

    #[test]
    fn slots_with_numbers_past_16_bits_take_the_wide_map_and_come_back() {
        let mut r = Routes::default();
        let many = u32::from(u16::MAX) + 10;
        for i in 0..many {
            r.set_want(key(i), Some(Target::Device(i)));
        }
        assert_eq!((r.wide.len(), r.packed.len()), (10, many as usize - 10));
        r.set_ours(key(many - 1), Some(form(1)));
        assert!((0..many).all(|i| r.want(&key(i)) == Some(&Target::Device(i))));
        assert_eq!((r.wanted().count(), r.ours(&key(many - 1))), (many as usize, Some(&form(1))));
        // A low number freed and taken again: the slot moves to the array.
        r.set_want(key(0), None);
        r.set_want(key(many - 1), Some(Target::Device(u32::MAX)));
        assert_eq!((r.wide.len(), r.want(&key(many - 1)), r.ours(&key(many - 1))), (9, Some(&Target::Device(u32::MAX)), Some(&form(1))));
        r.forget_ours();
        for i in 1..many {
            r.set_want(key(i), None);
        }
        assert_eq!((r.wide.len(), r.packed.len(), r.wanted_len()), (0, 0, 0));
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
